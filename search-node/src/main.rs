//! `search-node`: loads the config and serves the search API until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use lakecache_search_node::config::SearchConfig;

/// mimalloc: lance, DataFusion and the fleet client allocate and free many small buffers per
/// query; under glibc's allocator that was a quarter of the search node's CPU at refine 5,
/// and mimalloc answered 22% more queries (commit e08e48e; the profile with it is in
/// bench/results/profile-search.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// lakecache search node: vector, full-text, hybrid and SQL search over Lance tables read
/// through the cache fleet, with a LanceDB-compatible REST API. Keys are documented in
/// config/search-node.toml.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML).
    #[arg(long, short, env = "LAKECACHE_SEARCH_CONFIG")]
    config: PathBuf,
    /// Address to listen on ([server] listen).
    #[arg(long, env = "LAKECACHE_SEARCH_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Check the config, print it and exit.
    #[arg(long)]
    check_config: bool,
}

/// Stack of every runtime thread. Planning and evaluating an expression recurse once per
/// level, and a stack overflow aborts the whole process. `expr` bounds what a request may
/// send (256 levels); the API tests answer expressions at that bound on tokio's default
/// 2 MiB test threads, so this leaves an eightfold margin for paths they do not reach.
/// Stack a thread never touches is never committed.
const WORKER_STACK_BYTES: usize = 16 << 20;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(WORKER_STACK_BYTES)
        .build()
        .context("start the tokio runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    lakecache_common::telemetry::init("info,lance=warn,datafusion=warn");
    let args = Args::parse();
    let mut cfg: SearchConfig = lakecache_common::config::load_toml(&args.config)?;
    if let Some(l) = args.listen {
        cfg.server.listen = l;
    }
    if args.check_config {
        lakecache_common::config::Validate::validate(&cfg)?;
        print!("{}", lakecache_common::config::redacted_debug(&cfg));
        return Ok(());
    }
    let (listen, flight_listen) = (cfg.server.listen, cfg.server.flight_listen);
    let node = lakecache_search_node::SearchNode::build(cfg)?;
    node.join_fleet().await?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("bind {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "search node listening");
    if let Some(addr) = flight_listen {
        let flight = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
        tracing::info!(addr = %flight.local_addr()?, "Flight SQL listening");
        let service = node.flight();
        tokio::spawn(async move {
            if let Err(e) = service.serve(flight, lakecache_common::shutdown::signal()).await {
                tracing::error!(error = %e, "Flight SQL server stopped");
            }
        });
    }
    node.serve(listener, lakecache_common::shutdown::signal()).await?;
    Ok(())
}
