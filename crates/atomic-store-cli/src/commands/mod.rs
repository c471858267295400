//! The subcommands: `run` picks one; each lives in a function of its own.

mod cleanup;
mod counter;
mod kv;
mod lock;
mod nonce;
mod verify;

use crate::args::{Cli, Command, NonceArgs};
use crate::bench;
use crate::output::{Out, EXIT_NEGATIVE};

/// Run the command line's subcommand; the process's exit code.
pub fn run(cli: Cli) -> u8 {
    // Before the runtime: the exporter then serves from a thread of its
    // own, not from a one-thread bench worker's runtime.
    if let Some(addr) = cli.metrics_listen {
        if let Err(message) = crate::observe::serve_metrics(addr) {
            let kind = if cfg!(feature = "metrics") {
                "unavailable"
            } else {
                "feature_disabled"
            };
            return Out { json: cli.json }.failure(kind, &message);
        }
        crate::store::record_metrics(true);
    }
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
            return 1;
        }
    };
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> u8 {
    let out = Out { json: cli.json };
    if cli.url_is_default {
        let exists = std::path::Path::new(crate::args::DEFAULT_FILE).exists();
        if !exists && cli.needs_existing_store() {
            let message = format!(
                "no store here: ./{} does not exist, and no --url or $ATOMIC_STORE_URL was given",
                crate::args::DEFAULT_FILE
            );
            out.failure("not_found", &message);
            return EXIT_NEGATIVE;
        }
        if !cli.needs_existing_store() {
            eprintln!(
                "note: using {} (the default): pass --url or set ATOMIC_STORE_URL for another store",
                crate::args::DEFAULT_URL
            );
        }
    }
    // bench opens its stores itself, in the parent and in each worker.
    match cli.command {
        Command::Bench(args) => return bench::run(&cli.url, args, out).await,
        Command::BenchWorker(args) => return bench::worker::run(&cli.url, args).await,
        _ => {}
    }
    let store = match crate::store::open(&cli.url) {
        Ok(store) => store,
        Err(e) => return out.error(&e),
    };
    if matches!(
        atomic_store::Scheme::of(&cli.url),
        Ok(atomic_store::Scheme::Memory)
    ) {
        eprintln!(
            "warning: memory:// keeps its data in this process: it is gone when the command ends"
        );
    }
    let result = match cli.command {
        Command::Verify => return verify::run(store, out).await,
        Command::Get { key } => kv::get(&*store, &key, out).await,
        Command::Set { key, value, ttl } => kv::set(&*store, &key, &value, ttl, out).await,
        Command::Del { key } => kv::del(&*store, &key, out).await,
        Command::Cas {
            key,
            expect,
            absent: _,
            new,
            ttl,
        } => kv::cas(&*store, &key, expect.as_deref(), &new, ttl, out).await,
        Command::Inspect { key } => kv::inspect(&*store, &key, out).await,
        Command::Keys { prefix, limit } => kv::keys(&*store, &prefix, limit, out).await,
        Command::Incr { key, count } => counter::incr(&*store, &key, count, out).await,
        Command::Nonce(NonceArgs {
            action: Some(action),
            ..
        }) => nonce::run(store, &cli.url, action, out).await,
        Command::Nonce(NonceArgs {
            action: None,
            key,
            pending,
            count,
        }) => {
            let (key, pending) = (key.unwrap_or_default(), pending.unwrap_or_default());
            counter::assign_nonce(&*store, &key, pending, count, out).await
        }
        Command::Lock { key, ttl } => lock::lock(&*store, &key, ttl, out).await,
        Command::Unlock {
            key,
            force: true,
            yes,
            any_value,
            ..
        } => lock::force_unlock(&*store, &key, lock::Force { yes, any_value }, out).await,
        Command::Unlock { key, id, .. } => {
            lock::unlock(&*store, &key, &id.unwrap_or_default(), out).await
        }
        Command::Extend { key, id, ttl } => lock::extend(&*store, &key, &id, ttl, out).await,
        Command::Bench(_) | Command::BenchWorker(_) => unreachable!("handled before opening"),
    };
    result.unwrap_or_else(|e| out.error(&e))
}
