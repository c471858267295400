//! How the CLI prints results and errors, for people and for programs.

use std::io::Write;

use atomic_store::{Error, ErrorKind, Operation};
use serde_json::{json, Value};

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_NEGATIVE: u8 = 3;

/// `println!` that never panics: see [`say_line`].
macro_rules! say {
    () => {
        $crate::output::say_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::say_line(format_args!($($arg)*))
    };
}

/// Print one line on stdout. When the reader has gone (`| head -2`), the
/// command ends here, before its next operation, with exit code 1, and the
/// line goes to stderr instead: a value already handed out is never lost.
pub fn say_line(line: std::fmt::Arguments) {
    if let Err(e) = try_line(line) {
        let _ = writeln!(
            std::io::stderr(),
            "error: stdout is closed ({}); stopped before the next operation. Not printed:\n{line}",
            e.kind()
        );
        std::process::exit(EXIT_ERROR.into());
    }
}

/// Print one line on stdout, or say why it could not be.
pub fn try_line(line: std::fmt::Arguments) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").and_then(|()| stdout.flush())
}

/// Where results go: plain lines, or one JSON object.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
}

impl Out {
    /// Print a result: `text` for people, `object` for `--json`.
    pub fn result(&self, text: impl AsRef<str>, object: Value) {
        if self.json {
            say!("{object}");
        } else {
            let text = text.as_ref();
            if !text.is_empty() {
                say!("{text}");
            }
        }
    }

    /// Print a store error and return the exit code: 2 for an argument the
    /// store refused (a key, TTL or URL), 1 for anything else.
    pub fn error(&self, e: &Error) -> u8 {
        let hint = hint(e);
        if self.json {
            say!(
                "{}",
                json!({"error": {
                    "kind": e.kind().as_str(),
                    "backend": e.backend(),
                    "operation": e.operation().as_str(),
                    "temporary": e.is_temporary(),
                    "message": e.to_string(),
                    "hint": hint,
                }})
            );
        } else {
            eprintln!("error: {e}");
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
        }
        if e.kind() == ErrorKind::InvalidArgument {
            EXIT_USAGE
        } else {
            EXIT_ERROR
        }
    }

    /// Print a failure that is not a store error (bad input to a command,
    /// failed worker) and return the exit code: 2 for kind
    /// `invalid_argument`, 1 for anything else.
    pub fn failure(&self, kind: &str, message: &str) -> u8 {
        if self.json {
            say!("{}", json!({"error": {"kind": kind, "message": message}}));
        } else {
            eprintln!("error: {message}");
        }
        if kind == "invalid_argument" {
            EXIT_USAGE
        } else {
            EXIT_ERROR
        }
    }

    /// Print a command line clap refused, and return its exit code (2);
    /// `--help` and `--version` print as usual and return 0.
    pub fn usage(&self, e: &clap::Error) -> u8 {
        use clap::error::ErrorKind as Clap;
        if !self.json || matches!(e.kind(), Clap::DisplayHelp | Clap::DisplayVersion) {
            let _ = e.print();
            return e.exit_code().try_into().unwrap_or(EXIT_USAGE);
        }
        // clap's text up to its usage block, on one line.
        let text = e.render().to_string();
        let message = text
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        let message = message.trim_start_matches("error: ");
        say!(
            "{}",
            json!({"error": {
                "kind": "usage",
                "message": message,
                "hint": "see `atomic-store --help` and the command's --help",
            }})
        );
        EXIT_USAGE
    }
}

fn hint(e: &Error) -> Option<&'static str> {
    // The nonce commands' node, not the store.
    if e.backend() == "json-rpc" {
        return Some("check --rpc: the node must be reachable and answer Ethereum JSON-RPC");
    }
    if e.operation() == Operation::Open && e.kind() == ErrorKind::InvalidArgument {
        return Some("check --url (or $ATOMIC_STORE_URL): e.g. sqlite://app.db, memory://, redis://127.0.0.1:6379");
    }
    Some(match e.kind() {
        ErrorKind::InvalidArgument => "check the arguments: keys are 1-1024 bytes without NUL, values at most 256 KiB, TTLs from 1ms to 365d",
        ErrorKind::NotAnInteger => "the key holds a value that is not a decimal integer; inspect it with `get` and reset it with `set`",
        ErrorKind::Overflow => "the counter is at i64::MAX; reset it with `set` if that is intended",
        ErrorKind::Unsupported => "this backend lacks the operation; see the backend table in the README",
        ErrorKind::FeatureDisabled => "rebuild atomic-store-cli with the cargo feature the message names (`--features NAME`)",
        ErrorKind::Unavailable => "check that the server is running and that --url (or $ATOMIC_STORE_URL) points at it",
        ErrorKind::Configuration => "the server is up but refused these settings: fix what the message names in --url (or on the server); retrying will not help",
        ErrorKind::Timeout => "the store was busy or slow; retry, or raise the timeout in the URL",
        ErrorKind::OutcomeUnknown => "the operation may or may not have been applied; inspect the key before retrying",
        _ => return None,
    })
}

/// Ask `question` before a destructive step, unless `yes`: `None` to go
/// on, or the exit code to end with (2 when stdin is not a terminal to ask
/// on, 3 when the answer is no).
pub fn confirm(question: &str, yes: bool, out: Out) -> Option<u8> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return None;
    }
    if !std::io::stdin().is_terminal() {
        out.failure(
            "confirmation_needed",
            "refusing without confirmation: stdin is not a terminal; pass --yes",
        );
        return Some(EXIT_USAGE);
    }
    // On stderr, so the prompt is seen when stdout goes to a pipe (`| jq`).
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{question} [y/N] ").and_then(|()| stderr.flush());
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        return None;
    }
    out.result("left as it is", json!({ "outcome": "cancelled" }));
    Some(EXIT_NEGATIVE)
}
