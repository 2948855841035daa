//! `cache-node`: loads the config file, applies environment variables and flags on top,
//! and serves until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use bytesize::ByteSize;
use clap::Parser;
use lakecache_cache_node::config::{AccessKey, Config, OriginConfig};
use lakecache_cache_node::tier::disk::IoEngineChoice;

/// mimalloc: a read allocates a few dozen small buffers, which glibc's allocator made a tenth
/// of the process's CPU (bench/results/profile-router.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// lakecache cache node: an S3-compatible read-through page cache (memory → NVMe → origin).
///
/// Settings come from the TOML file (every key is documented in config/cache-node.toml);
/// each flag below overrides its key, and each flag can also be given as the environment
/// variable shown.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML). Without one, built-in defaults apply.
    #[arg(long, short, env = "LAKECACHE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on ([server] listen).
    #[arg(long, env = "LAKECACHE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Serve the local directory DIR as origin for every bucket (adds [[origins]] bucket="*" kind="local").
    #[arg(long, env = "LAKECACHE_ORIGIN_DIR")]
    origin_dir: Option<PathBuf>,
    /// Memory tier size, e.g. "2 GiB" ([cache] memory_capacity).
    #[arg(long, env = "LAKECACHE_MEMORY_CAPACITY")]
    memory_capacity: Option<ByteSize>,
    /// Page size, e.g. "1 MiB" ([cache] page_size).
    #[arg(long, env = "LAKECACHE_PAGE_SIZE")]
    page_size: Option<ByteSize>,
    /// Keep this node's state under DIR: the page file, pin rules added at run time and
    /// multipart staging ([disk] path, [pins] state_file, [cache] multipart_dir).
    #[arg(long, env = "LAKECACHE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Page file of the disk tier ([disk] path).
    #[arg(long, env = "LAKECACHE_DISK_PATH")]
    disk_path: Option<PathBuf>,
    /// Disk tier size ([disk] capacity).
    #[arg(long, env = "LAKECACHE_DISK_CAPACITY")]
    disk_capacity: Option<ByteSize>,
    /// Turn the disk tier off ([disk] enabled = false).
    #[arg(long, env = "LAKECACHE_NO_DISK")]
    no_disk: bool,
    /// I/O engine of the disk tier: auto, uring or pread ([disk] io_engine).
    #[arg(long, env = "LAKECACHE_IO_ENGINE", value_parser = parse_engine)]
    io_engine: Option<IoEngineChoice>,
    /// Accept unsigned requests ([auth] anonymous = true).
    #[arg(long, env = "LAKECACHE_ANONYMOUS")]
    anonymous: bool,
    /// Add an access key, as ACCESS_KEY:SECRET_KEY ([[auth.keys]]).
    #[arg(long = "access-key", env = "LAKECACHE_ACCESS_KEY")]
    access_keys: Vec<String>,
    /// Bearer token of the admin API ([admin] token).
    #[arg(long, env = "LAKECACHE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The fleet secret of the internal page protocol (`fleet.secret`).
    #[arg(long, env = "LAKECACHE_FLEET_SECRET", hide_env_values = true)]
    fleet_secret: Option<String>,
    /// Check the config, print it and exit.
    #[arg(long)]
    check_config: bool,
}

fn parse_engine(s: &str) -> Result<IoEngineChoice, String> {
    match s {
        "auto" => Ok(IoEngineChoice::Auto),
        "uring" => Ok(IoEngineChoice::Uring),
        "pread" => Ok(IoEngineChoice::Pread),
        other => Err(format!("unknown io engine {other:?} (auto, uring, pread)")),
    }
}

fn apply(args: &Args, cfg: &mut Config) -> anyhow::Result<()> {
    if let Some(l) = args.listen {
        cfg.server.listen = l;
    }
    if let Some(dir) = &args.origin_dir {
        cfg.origins.retain(|o| o.bucket != "*");
        cfg.origins.push(OriginConfig::local("*", dir.clone()));
    }
    if let Some(v) = args.memory_capacity {
        cfg.cache.memory_capacity = v;
    }
    if let Some(v) = args.page_size {
        cfg.cache.page_size = v;
    }
    if let Some(dir) = &args.state_dir {
        cfg.disk.path = dir.join("pages.bin");
        cfg.pins.state_file = dir.join("pins.json");
        cfg.cache.multipart_dir = dir.join("multipart");
    }
    if let Some(v) = &args.disk_path {
        cfg.disk.path = v.clone();
    }
    if let Some(v) = args.disk_capacity {
        cfg.disk.capacity = v;
    }
    if args.no_disk {
        cfg.disk.enabled = false;
    }
    if let Some(v) = args.io_engine {
        cfg.disk.io_engine = v;
    }
    if args.anonymous {
        cfg.auth.anonymous = true;
    }
    for k in &args.access_keys {
        let (a, s) = k.split_once(':').context("--access-key takes ACCESS_KEY:SECRET_KEY")?;
        cfg.auth.keys.push(AccessKey { access_key: a.into(), secret_key: s.into() });
    }
    if let Some(t) = &args.admin_token {
        cfg.admin.token = Some(t.clone());
    }
    if let Some(s) = &args.fleet_secret {
        cfg.fleet.secret = Some(s.clone());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lakecache_common::telemetry::init("info");
    let args = Args::parse();
    let mut cfg: Config = match &args.config {
        Some(p) => lakecache_common::config::load_toml(p)?,
        None => Config::default(),
    };
    apply(&args, &mut cfg)?;
    if args.check_config {
        lakecache_common::config::Validate::validate(&cfg)?;
        print!("{}", lakecache_common::config::redacted_debug(&cfg));
        return Ok(());
    }
    let listen = cfg.server.listen;
    let fleet_listen = cfg.fleet.listen;
    let node = lakecache_cache_node::Node::build(cfg).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("bind {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "cache node listening");
    let shutdown = futures::FutureExt::shared(Box::pin(lakecache_common::shutdown::signal()));
    if let Some(addr) = fleet_listen {
        let l =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind fleet.listen {addr}"))?;
        tracing::info!(addr = %l.local_addr()?, "fleet endpoint listening");
        tokio::spawn(lakecache_cache_node::serve_fleet(l, node.clone(), shutdown.clone()));
    }
    lakecache_cache_node::serve(listener, node, shutdown).await?;
    tracing::info!("cache node stopped");
    Ok(())
}
