//! `atomic-store`: operate, benchmark and verify an atomic-store deployment.

#[macro_use]
mod output;
mod args;
mod bench;
mod commands;
#[cfg(feature = "fault-injection")]
mod fault;
mod observe;
mod store;

use std::process::ExitCode;

fn main() -> ExitCode {
    observe::init_tracing();
    match args::Cli::try_parse_args() {
        Ok(cli) => ExitCode::from(commands::run(cli)),
        Err(e) => {
            // `--json` asks for JSON errors, usage errors too.
            let json = std::env::args_os().skip(1).any(|a| a == "--json");
            ExitCode::from(output::Out { json }.usage(&e))
        }
    }
}
