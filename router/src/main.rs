//! `router`: loads the config and serves until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use lakecache_router::config::RouterConfig;

/// mimalloc: a read allocates a few dozen small buffers, which glibc's allocator made a tenth
/// of the process's CPU (bench/results/profile-router.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// lakecache router: the S3 surface in front of a fleet of cache nodes, placing every page
/// on its owner by consistent hashing. Keys are documented in config/router.toml.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML).
    #[arg(long, short, env = "LAKECACHE_ROUTER_CONFIG")]
    config: PathBuf,
    /// Address to listen on ([server] listen).
    #[arg(long, env = "LAKECACHE_ROUTER_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Check the config, print it and exit.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lakecache_common::telemetry::init("info");
    let args = Args::parse();
    let mut cfg: RouterConfig = lakecache_common::config::load_toml(&args.config)?;
    if let Some(l) = args.listen {
        cfg.server.listen = l;
    }
    if args.check_config {
        lakecache_common::config::Validate::validate(&cfg)?;
        print!("{}", lakecache_common::config::redacted_debug(&cfg));
        return Ok(());
    }
    let listen = cfg.server.listen;
    let node = lakecache_router::server::RouterNode::build(cfg)?;
    node.fleet.adopt_node_rules().await?;
    // SIGHUP: reread the config file and replace the membership (new nodes with other key
    // rules are refused, as through the admin API).
    #[cfg(unix)]
    {
        let fleet = node.fleet.clone();
        let path = args.config.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let reload = async {
                    let c: RouterConfig = lakecache_common::config::load_toml(&path)?;
                    let unchecked = fleet.check_new_nodes(&c.nodes).await?;
                    fleet.set_nodes(c.nodes)?;
                    anyhow::Ok(unchecked)
                };
                match reload.await {
                    Ok(unchecked) => {
                        tracing::info!(config = %path.display(), ?unchecked, "membership reloaded")
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "reload failed; membership unchanged")
                    }
                }
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("bind {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "router listening");
    lakecache_router::server::serve(listener, node, lakecache_common::shutdown::signal()).await;
    Ok(())
}
