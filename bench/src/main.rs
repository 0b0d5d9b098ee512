//! `agentry-bench`: runs the real `agentry` binary against Postgres and prints throughput
//! and p50/p99 next to ceilings measured in the same run, so each figure is a ratio that
//! survives a noisy machine. `scripts/bench` builds everything and provides Postgres.

mod collector;
mod context;
mod cpu;
mod execution;
mod load;
mod observability;
mod peers;
mod pgbench;
mod scale;
mod scale_lists;
mod scale_plans;
mod server;
mod stats;

use clap::{Parser, Subcommand};

/// The load generator allocates for every response it decodes (a 1 KiB document is a
/// few dozen strings); mimalloc, as in the server, keeps the harness's own cost per call
/// low, so that more of the machine measures the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Agentry benchmarks")]
struct Cli {
    /// Admin URL of a Postgres server where this user may CREATE DATABASE.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The server binary (a release build).
    #[arg(long, default_value = "target/release/agentry")]
    binary: String,
    /// The pgbench binary.
    #[arg(long, env = "PGBENCH", default_value = "pgbench")]
    pgbench: String,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// WriteContext and ReadContext at 1 and 32 clients; pgbench and empty-call ceilings;
    /// storage per version.
    Context,
    /// ExecutionService: pickup, event and cancel delivery latency at light load; runs/s
    /// of no-op runs with W workers vs pgbench running the same SQL per run.
    Execution(execution::Args),
    /// Agentry beside etcd (CAS writes, head reads) and graphile-worker (no-op runs) on
    /// the same machine and Postgres, alternating, with the pgbench floors.
    Peers(peers::Args),
    /// The cost of traces and metrics: a server with both on against one with both off,
    /// in alternating slices, on the empty call and ReadContext at 32 clients.
    Observability(observability::Args),
    /// How waiters' cost grows: idle WatchContext streams (CPU idle, unrelated writes)
    /// and waiting PollTask long-polls (pickup, CPU per run), at several sizes.
    Scale(scale::Args),
    /// ListRuns pages (depth 0, middle, end; a status filter matching few runs) and
    /// GetRunStats at 10k, 100k and 1M runs in one project, before and after ANALYZE.
    ScaleLists(scale_lists::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Context => context::run(&cli).await,
        Command::Execution(ref args) => execution::run(&cli, args).await,
        Command::Peers(ref args) => peers::run(&cli, args).await,
        Command::Observability(ref args) => observability::run(&cli, args).await,
        Command::Scale(ref args) => scale::run(&cli, args).await,
        Command::ScaleLists(ref args) => scale_lists::run(&cli, args).await,
    }
}
