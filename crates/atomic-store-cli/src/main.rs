//! `atomic-store`: operate, benchmark and verify an atomic-store deployment.

mod baseline;
mod bench;
mod cleanup;
mod commands;
#[cfg(feature = "fault-injection")]
mod fault;
mod nonce_cmd;
mod output;
mod plot;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub(crate) const DEFAULT_URL: &str = "sqlite://atomic-store.db";

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (the message says what went wrong and what to do)
  2  usage error (bad arguments; --force without --yes when not interactive)
  3  negative outcome: key not found, lock not acquired, lock not held,
     compare-and-set not applied";

/// Atomic counters, fenced locks and key/value state shared by every
/// instance of a service.
#[derive(Debug, Parser)]
#[command(name = "atomic-store", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// Store URL: sqlite://PATH, memory://, redis://HOST:PORT, ... Falls back
    /// to $ATOMIC_STORE_URL, then to sqlite://atomic-store.db.
    #[arg(long, global = true, env = "ATOMIC_STORE_URL", default_value = DEFAULT_URL, hide_env_values = true)]
    url: String,

    /// Print one JSON object on stdout instead of plain lines.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the value of KEY.
    #[command(after_help = "Example: atomic-store get config:mode")]
    Get { key: String },

    /// Store VALUE under KEY, optionally with a TTL.
    #[command(after_help = "Example: atomic-store set session:42 active --ttl 30m")]
    Set {
        key: String,
        value: String,
        /// Expire after this long (500ms, 5s, 2m, 1h).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },

    /// Atomically add 1 to the counter KEY and print the new value.
    #[command(after_help = "Example: atomic-store incr jobs:next-id --count 3")]
    Incr {
        key: String,
        /// Increment this many times, printing each value.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
    },

    /// Delete KEY (no error if it is missing).
    #[command(after_help = "Example: atomic-store del session:42")]
    Del { key: String },

    /// Replace KEY's value with NEW only if it equals --expect (or is absent).
    #[command(after_help = "Example: atomic-store cas nonce:last --expect 41 42")]
    Cas {
        key: String,
        /// The value KEY must hold now.
        #[arg(long, conflicts_with = "absent", required_unless_present = "absent")]
        expect: Option<String>,
        /// KEY must be missing (or expired) now.
        #[arg(long)]
        absent: bool,
        new: String,
        /// Give the new value this TTL.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },

    /// Take the lock KEY for --ttl; prints the lock id and fencing token.
    #[command(after_help = "Example: atomic-store lock deploy:lock --ttl 30s")]
    Lock {
        key: String,
        #[arg(long, value_parser = parse_duration)]
        ttl: Duration,
    },

    /// Release the lock KEY held by ID; or, with --force, whoever holds it.
    #[command(
        after_help = "Examples:\n  atomic-store unlock deploy:lock 3f2a…\n  atomic-store unlock deploy:lock --force --yes   # a stuck lock, after printing its holder"
    )]
    Unlock {
        key: String,
        /// The holder id (not needed with --force).
        #[arg(required_unless_present = "force")]
        id: Option<String>,
        /// Release the lock whoever holds it (prints the holder first).
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation (needed with --force when not interactive).
        #[arg(long, requires = "force")]
        yes: bool,
    },

    /// Show KEY's value, remaining TTL and, for a lock, its holder and last
    /// fencing token.
    #[command(after_help = "Example: atomic-store inspect deploy:lock")]
    Inspect { key: String },

    /// List live keys that start with --prefix (where the backend can).
    #[command(after_help = "Example: atomic-store keys --prefix nonce:1480: --limit 20")]
    Keys {
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        limit: u64,
    },

    /// Extend the lock KEY held by ID to expire --ttl from now.
    #[command(after_help = "Example: atomic-store extend deploy:lock 3f2a… --ttl 30s")]
    Extend {
        key: String,
        id: String,
        #[arg(long, value_parser = parse_duration)]
        ttl: Duration,
    },

    /// Assign the next nonce under KEY given the chain's pending count, or
    /// manage an account's nonces against a node (next, doctor, rewind, reset).
    #[command(
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true,
        after_help = "Examples:\n  atomic-store nonce nonce:1480:0xabc:lastUsed --pending 17\n  atomic-store nonce doctor --rpc http://127.0.0.1:8545 --chain-id 1480 --address 0x7099…"
    )]
    Nonce(NonceArgs),

    /// Run the conformance suite against --url and report each check.
    #[command(after_help = "Example: atomic-store --url redis://127.0.0.1:6379 verify")]
    Verify,

    /// Benchmark the store with worker processes, and verify what they did.
    Bench(bench::BenchArgs),

    /// One worker process of `bench` (internal).
    #[command(hide = true)]
    BenchWorker(bench::WorkerArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct NonceArgs {
    #[command(subcommand)]
    action: Option<nonce_cmd::NonceAction>,
    /// The key of the last used nonce.
    #[arg(required = true)]
    key: Option<String>,
    /// The chain's pending transaction count for the account.
    #[arg(long, required = true)]
    pending: Option<u64>,
    /// Assign this many nonces, printing each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
}

/// An RPC URL fit to print: without credentials.
#[cfg(feature = "nonce")]
pub(crate) fn redact_rpc(url: &str) -> String {
    atomic_store::redact(url)
}

/// Open the store at `url`; in a test build with
/// `ATOMIC_STORE_CLI_TEST_BREAK` set, a deliberately broken one.
pub(crate) fn open_store(
    url: &str,
) -> atomic_store::Result<std::sync::Arc<dyn atomic_store::AtomicStore>> {
    let store = atomic_store::open(url)?;
    #[cfg(feature = "fault-injection")]
    let store = fault::wrap(store)?;
    Ok(store)
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    atomic_store::parse_duration(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A bench worker is one thread, like redis-benchmark and pgbench: more
    // cores are used by more worker processes.
    let mut builder = if matches!(cli.command, Command::BenchWorker(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(commands::run(cli));
    ExitCode::from(code)
}
