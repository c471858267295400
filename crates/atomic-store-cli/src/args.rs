//! The command line: every clap type, and the value parsers they use.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::bench::report::Workload;

/// The store when neither --url nor $ATOMIC_STORE_URL is given.
pub const DEFAULT_URL: &str = "sqlite://atomic-store.db";
/// The file of [`DEFAULT_URL`], in the current directory.
pub const DEFAULT_FILE: &str = "atomic-store.db";

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (the message says what went wrong and what to do)
  2  bad arguments: a usage error, or a key, TTL, URL or address the store
     refuses; also --force without --yes when not interactive
  3  negative outcome: key not found, lock not acquired, lock not held,
     compare-and-set not applied, nonce doctor finding the store ahead of
     the chain, a rewind or unlock not done";

/// Atomic counters, fenced locks and key/value state shared by every
/// instance of a service.
#[derive(Debug, Parser)]
#[command(name = "atomic-store", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Store URL: sqlite://PATH, memory://, redis:// or rediss://HOST:PORT,
    /// redis+cluster:// (rediss+cluster://), redis+sentinel://S1,S2/PRIMARY,
    /// postgres://, etcd:// (etcds://),
    /// zk://, dynamodb://TABLE, mongodb://, mysql://. Parameters: ?prefix= for all;
    /// ?timeout= and ?connect_timeout= on network stores; ?ca_file= (rediss,
    /// etcds), ?busy_timeout= and ?synchronous= (sqlite), ?session_timeout=
    /// (zk). Falls back to $ATOMIC_STORE_URL, then to sqlite://atomic-store.db.
    #[arg(long, global = true, env = "ATOMIC_STORE_URL", default_value = DEFAULT_URL, hide_env_values = true)]
    pub url: String,

    /// Print one JSON object on stdout instead of plain lines.
    #[arg(long, global = true)]
    pub json: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics while the command
    /// runs (for bench: every worker's, added up). Logs go to stderr as
    /// RUST_LOG asks, e.g. RUST_LOG=atomic_store=debug.
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    #[command(subcommand)]
    pub command: Command,

    /// True when --url fell back to [`DEFAULT_URL`].
    #[arg(skip)]
    pub url_is_default: bool,
}

impl Cli {
    /// Parse the command line, noting whether the URL is the default.
    pub fn try_parse_args() -> Result<Cli, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().try_get_matches()?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        cli.url_is_default =
            matches.value_source("url") == Some(clap::parser::ValueSource::DefaultValue);
        Ok(cli)
    }

    /// True for commands that only read, or change only what exists: on a
    /// store that does not exist yet they have nothing to act on.
    pub fn needs_existing_store(&self) -> bool {
        matches!(
            self.command,
            Command::Get { .. }
                | Command::Inspect { .. }
                | Command::Keys { .. }
                | Command::Del { .. }
                | Command::Unlock { .. }
                | Command::Extend { .. }
                | Command::Nonce(NonceArgs {
                    action: Some(NonceAction::Doctor { .. } | NonceAction::Rewind { .. }),
                    ..
                })
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
        /// Increment this many times, printing each value. With --json:
        /// {"value": LAST, "values": [ALL]}, whatever the count.
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
        /// Give the new value this TTL. Without it the new value has no
        /// TTL: a TTL the old value had is removed.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },

    /// Take the lock KEY for --ttl; prints the lock id and fencing token.
    #[command(after_help = "Example: atomic-store lock deploy:lock --ttl 30s")]
    Lock {
        key: String,
        /// How long the lock lives unless extended (500ms, 30s, 5m; 1ms to 365d).
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
        /// With --force, also delete a key whose value is not a lock id (a
        /// counter or a plain value). Without it, such a key is left alone.
        #[arg(long, requires = "force")]
        any_value: bool,
    },

    /// Show KEY's value and remaining TTL and, when the value is a lock id,
    /// its holder and last fencing token.
    #[command(after_help = "Example: atomic-store inspect deploy:lock")]
    Inspect { key: String },

    /// List live keys that start with --prefix (where the backend can).
    #[command(after_help = "Example: atomic-store keys --prefix nonce:1480: --limit 20")]
    Keys {
        /// List only keys that start with this (without the store's own
        /// ?prefix=); empty lists every key.
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many keys, 1 to 1000000; a cut list says so.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        limit: u64,
    },

    /// Extend the lock KEY held by ID to expire --ttl from now.
    #[command(after_help = "Example: atomic-store extend deploy:lock 3f2a… --ttl 30s")]
    Extend {
        key: String,
        id: String,
        /// The new time to live, counted from now (1ms to 365d).
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
    Bench(BenchArgs),

    /// One worker process of `bench` (internal).
    #[command(hide = true)]
    BenchWorker(WorkerArgs),
}

#[derive(Debug, Args)]
pub struct NonceArgs {
    #[command(subcommand)]
    pub action: Option<NonceAction>,
    /// The key of the last used nonce.
    #[arg(required = true)]
    pub key: Option<String>,
    /// The chain's pending transaction count for the account.
    #[arg(long, required = true)]
    pub pending: Option<u64>,
    /// Assign this many nonces, printing each. With --json:
    /// {"nonce": LAST, "nonces": [ALL]}, whatever the count.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
}

/// The account and the node.
#[derive(Debug, Args)]
pub struct ChainArgs {
    /// JSON-RPC URL of a node of the chain.
    #[arg(long)]
    pub rpc: String,
    /// The chain id (part of the store's key).
    #[arg(long)]
    pub chain_id: u64,
    /// The account, checksummed or lowercase.
    #[arg(long)]
    pub address: String,
}

#[derive(Debug, Subcommand)]
pub enum NonceAction {
    /// Hand out the account's next nonce(s): read the node's pending count,
    /// then one atomic store step.
    #[command(
        after_help = "Example: atomic-store nonce next --rpc http://127.0.0.1:8545 --chain-id 31337 --address 0x7099…"
    )]
    Next {
        #[command(flatten)]
        chain: ChainArgs,
        /// Hand out this many.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        /// Also send a zero-value transaction to itself with each nonce
        /// (`eth_sendTransaction`: for dev nodes that hold the key, e.g.
        /// anvil). A send the node refuses gives the nonce back.
        #[arg(long)]
        send_self_tx: bool,
    },
    /// Send transactions from the account, each with a leased nonce whose
    /// fate the node's answer decides: confirmed, released (refused before
    /// broadcast: the next send reuses it) or burned (unknown: the chain may
    /// wait on it). Signs with the key in $ATOMIC_STORE_SIGNER_KEY when it
    /// is set (it must be --address's key); otherwise the node signs
    /// (`eth_sendTransaction`, for nodes that hold the account's key, such
    /// as anvil). With --json, one line per transaction: {"nonce", "hash",
    /// "fate", "error"}.
    #[command(
        after_help = "Example: atomic-store --json nonce send --rpc http://127.0.0.1:8545 --chain-id 31337 --address 0x7099… --count 5\n\nExit status: 0 when every transaction was taken, 3 when some were refused (their nonces released), 1 when an outcome is unknown (a nonce burned) or the store or node failed."
    )]
    Send {
        #[command(flatten)]
        chain: ChainArgs,
        /// The recipient (default: the account itself).
        #[arg(long)]
        to: Option<String>,
        /// Wei to send with each transaction.
        #[arg(long, default_value_t = 0)]
        value: u128,
        /// Send this many, one after the other.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        /// Max fee per gas, in wei (default: the node's choice).
        #[arg(long)]
        max_fee_per_gas: Option<u128>,
        /// Max priority fee per gas, in wei (default: the node's choice).
        #[arg(long)]
        max_priority_fee_per_gas: Option<u128>,
        /// Pause between each lease and its send (tests kill a sender here).
        #[arg(long, value_parser = parse_duration, hide = true)]
        pause_after_lease: Option<Duration>,
        /// Send through alloy's nonce filler backed by the store, instead
        /// of `send` (tests share one account across processes this way).
        #[arg(long, hide = true)]
        through_filler: bool,
    },
    /// Compare the store's nonce state with the chain's and explain any gap.
    #[command(
        after_help = "Example: atomic-store nonce doctor --rpc http://127.0.0.1:8545 --chain-id 1480 --address 0x7099…"
    )]
    Doctor {
        #[command(flatten)]
        chain: ChainArgs,
        /// Fill each nonce the chain waits on with a 0-value self-transfer
        /// (signed with $ATOMIC_STORE_SIGNER_KEY, else by the node), under
        /// the account's lock, until the chain is past the store's last
        /// nonce as it was when the repair began.
        #[arg(long)]
        repair: bool,
        /// With --repair: how long a nonce that is not on the free list
        /// (it may belong to a sender about to send) gets to arrive first.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        grace: Duration,
    },
    /// Give back NONCE if it is still the last one handed out and the node
    /// holds no transaction with it (it was never broadcast).
    Rewind {
        #[command(flatten)]
        chain: ChainArgs,
        nonce: u64,
    },
    /// Set the last used nonce to the chain's confirmed count − 1, under the
    /// account's lock. Asks first, as it drops what the store handed out.
    Reset {
        #[command(flatten)]
        chain: ChainArgs,
        /// Do not ask for confirmation (needed when not interactive).
        #[arg(long)]
        yes: bool,
    },
}

const BENCH_HELP: &str = "\
Workers are OS processes of this same binary; each connects, then runs
--concurrency tasks for --duration. Afterwards the command checks what the
workers did: for incr, that every value from 1 to the total was handed out
exactly once; for nonce, every nonce from 0; for the others, that every
lock was held and released and every read saw its own write; for
lock-contended, that one task held the lock at a time (with --permits N, at
most N) and the store refused a second holder. It deletes the keys it wrote.

Exit status 0 only when the run is verified: at least one operation
completed, none failed, every worker reported and every check passed.
Otherwise the exit status is 1, `verified` is false in --json, and the
reason is printed (a failed operation's outcome is unknown, so a run with
errors is never verified).

Examples:
  atomic-store bench
  atomic-store --url redis://127.0.0.1:6379 bench --workload nonce --concurrency 64 --processes 1
  atomic-store --json bench --workload get-set --duration 10s
  atomic-store bench --workload lock-contended --permits 4 --concurrency 16";

/// Arguments of `bench`.
#[derive(Debug, Args)]
#[command(after_help = BENCH_HELP)]
pub struct BenchArgs {
    /// What each task does.
    #[arg(long, value_enum, default_value_t = Workload::Incr)]
    pub workload: Workload,
    /// Worker OS processes [default: 4; 1 for nonce].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub processes: Option<u32>,
    /// Concurrent tasks per process (with --sweep, give the list there).
    #[arg(long, default_value_t = 1, conflicts_with = "sweep", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// How long the workers run (500ms, 3s, 1m).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Run once per concurrency in this list (e.g. 1,8,64) instead of once.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub sweep: Option<Vec<u32>>,
    /// Also run the raw baseline on the same server, same commands and
    /// concurrency, and print our ratio to it: redis-benchmark and redis-rs
    /// (Redis), pgbench (PostgreSQL), the bare client the store is built on
    /// (etcd, ZooKeeper, DynamoDB, MongoDB). Its keys are removed after.
    #[arg(long)]
    pub baseline: bool,
    /// Draw throughput against concurrency and the latency percentiles as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
    /// With --workload lock-contended: contend for a semaphore of N permits
    /// instead of the lock; the check then proves at most N holders at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub permits: Option<u32>,
    /// Open the workers' stores without the tracing layer (a baseline for
    /// its cost).
    #[arg(long, hide = true)]
    pub no_layer: bool,
}

/// Arguments of the hidden worker command.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// Key namespace of this run.
    #[arg(long)]
    pub base: String,
    #[arg(long)]
    pub concurrency: u32,
    #[arg(long, value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long)]
    pub permits: Option<u32>,
    #[arg(long)]
    pub no_layer: bool,
    /// Send metrics to the parent on stdout.
    #[arg(long)]
    pub relay_metrics: bool,
}

/// A duration as the library reads them (500ms, 5s, 2m, 1h).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    atomic_store::parse_duration(text)
}
