//! `lakecache-bench`: load generators, dataset generators and the bench origin, one
//! subcommand per workload. Results are JSON lines on stdout; logs go to stderr (`RUST_LOG`).

mod content;
mod gen_objects;
mod http_range;
mod http_report;
mod origin;
mod pagestore;
mod ring;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The cache node's allocator: the `pagestore` workload measures the page store as it runs
/// inside that binary, whose reads allocate (the copied-out bytes, the read's future).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "lakecache-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a folder as S3 over HTTP (s3s-fs), optionally with a per-request delay.
    Origin(origin::Args),
    /// Write deterministic objects for the load generators to read and check.
    GenObjects(gen_objects::Args),
    /// Ranged GETs against an S3-style HTTP endpoint, checking every byte.
    HttpRange(http_range::Args),
    /// Markdown tables from `http-range` JSON lines.
    HttpReport(http_report::Args),
    /// The page store alone against fio.
    Pagestore(pagestore::Args),
    /// The ring's balance, movement and lookup cost, next to a Maglev table.
    Ring(ring::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Origin(args) => multi_thread()?.block_on(origin::run(args)),
        Command::GenObjects(args) => gen_objects::run(args),
        // The load generator is pinned to one core: one thread avoids cross-thread wake-ups
        // that would cost the client, not the server, time.
        Command::HttpRange(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(http_range::run(args)),
        Command::HttpReport(args) => http_report::run(args),
        Command::Pagestore(args) => multi_thread()?.block_on(pagestore::run(args)),
        Command::Ring(args) => ring::run(args),
    }
}

fn multi_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}

/// Logs to stderr so stdout carries only results.
fn init_logging() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,lakecache_bench=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
