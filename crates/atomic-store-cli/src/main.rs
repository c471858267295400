//! `atomic-store`: operate, benchmark and verify an atomic-store deployment.

#[macro_use]
mod output;
mod args;
mod bench;
mod commands;
#[cfg(feature = "fault-injection")]
mod fault;
mod store;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ExitCode::from(commands::run(args::Cli::parse()))
}
