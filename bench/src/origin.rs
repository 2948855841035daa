//! `origin`: a real S3 server over HTTP (`s3s-fs` on a local folder) standing in for S3 in
//! benchmarks and in the Python client tests.
//!
//! With no keys every request is anonymous and allowed (s3s skips authentication and access
//! checks when no auth provider is set), which is also what lets nginx proxy plain
//! `GET /bucket/key` with `Range`. With `--access-key/--secret-key` requests must be SigV4
//! signed with them. `--delay-ms` adds a fixed delay before every request is handled, to
//! stand in for S3's tens of milliseconds on cold-path runs; it exists only here, never in
//! the product.
//!
//! On start it prints `listening on http://ADDR` on stdout (the bound address, useful with
//! port 0), then serves until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder holding the buckets (one sub-folder per bucket); created if missing.
    #[arg(long)]
    root: PathBuf,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Delay added before handling each request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Access key; with `--secret-key`, requires SigV4-signed requests.
    #[arg(long, requires = "secret_key")]
    access_key: Option<String>,
    /// Secret key matching `--access-key`.
    #[arg(long, requires = "access_key")]
    secret_key: Option<String>,
}

/// How long in-flight requests get to finish after the shutdown signal.
const GRACEFUL_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(args: Args) -> anyhow::Result<()> {
    let keys = args.access_key.zip(args.secret_key);
    let authenticated = keys.is_some();
    let service = service(&args.root, keys)?;

    let listener =
        TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let local_addr = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{local_addr}")?;
        stdout.flush()?;
    }
    tracing::info!(%local_addr, root = %args.root.display(), delay_ms = args.delay_ms, authenticated, "origin started");

    serve(listener, service, Duration::from_millis(args.delay_ms), lakecache_common::shutdown::signal())
        .await;
    tracing::info!("origin stopped");
    Ok(())
}

/// The S3 service over `root` (created if missing); with `keys`, requests must be signed
/// with them, without, every request is anonymous and allowed.
pub fn service(root: &Path, keys: Option<(String, String)>) -> anyhow::Result<S3Service> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let fs = s3s_fs::FileSystem::new(root)
        .map_err(|e| anyhow!("opening s3s-fs root {}: {e:?}", root.display()))?;
    let mut builder = S3ServiceBuilder::new(fs);
    if let Some((access_key, secret_key)) = keys {
        builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
    }
    Ok(builder.build())
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish for a bounded time.
pub async fn serve(
    listener: TcpListener,
    service: S3Service,
    delay: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Accept errors (EMFILE, ECONNABORTED) are transient; back off briefly.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, %peer, "set_nodelay failed");
        }
        let service = service.clone();
        let delayed = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let service = service.clone();
            async move {
                // One line a request with RUST_LOG=lakecache_bench::origin=debug: which reads a
                // cold query makes, by key and range.
                tracing::debug!(
                    method = %req.method(),
                    uri = %req.uri(),
                    range = req.headers().get(http::header::RANGE).and_then(|v| v.to_str().ok()).unwrap_or("-"),
                    "origin request"
                );
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                hyper::service::Service::call(&service, req).await
            }
        });
        let conn = http.serve_connection(TokioIo::new(stream), delayed).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%err, %peer, "connection ended with an error");
            }
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(GRACEFUL_SHUTDOWN_TIMEOUT) => {
            tracing::warn!("in-flight requests did not finish in time; exiting anyway");
        }
    }
}
