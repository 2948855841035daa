//! Assembles a cache node from its config and serves it: `Node::build` wires origin,
//! tiers, read path and S3 surface; `serve(listener, node, shutdown)` runs HTTP/1.1 and
//! HTTP/2 on a bound listener until `shutdown` resolves, then drains open connections.
//! Besides S3 it answers `/healthz`, `/readyz`, `/metrics` and `/_lakecache/admin/*`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use lakecache_common::config::Validate;
use lakecache_common::page::PageGeometry;
use lakecache_s3::request::PlainRead;
use lakecache_s3::response::text;
use lakecache_s3::service::{RequestStats, configure_s3, method_label};
use metrics_exporter_prometheus::PrometheusHandle;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::cache::{Cache, ReadPathConfig};
use crate::config::Config;
use crate::listener::{ConnLimits, TimedBody};
use crate::metrics as m;
use crate::origin::Origins;
use crate::origin::multipart::Staging;
use crate::policy::{KeyClass, PinRules};
use crate::s3::LakeS3;
use crate::s3::route::{IgnoredRangeRoute, SharedS3};
use crate::tier::disk::{DiskTier, DiskTierConfig};
use crate::tier::memory::MemoryTier;
use lakecache_s3::fast::{FastFuture, FastHandler};

/// A running cache node's shared state.
pub struct Node {
    pub cache: Arc<Cache>,
    s3: S3Service,
    admin: Admin,
    fleet: crate::fleet_api::FleetApi,
    metrics: PrometheusHandle,
    ready: AtomicBool,
    limits: ConnLimits,
    /// Folders whose file systems /metrics reports free space of, by role.
    state_dirs: Vec<(&'static str, PathBuf)>,
    /// Plain object reads, answered without s3s (`PlainRead`).
    domains: Vec<String>,
    anonymous: bool,
    stats: RequestStats,
}

impl Node {
    pub async fn build(cfg: Config) -> anyhow::Result<Arc<Self>> {
        cfg.validate()?;
        let metrics = m::install();
        m::register_cache_node();
        metrics::gauge!(m::PRICE_GETS).set(cfg.pricing.get_per_1000);
        metrics::gauge!(m::PRICE_TRANSFER).set(cfg.pricing.transfer_per_gib);
        let geometry = PageGeometry::new(cfg.cache.page_size.as_u64())
            .ok_or_else(|| anyhow::anyhow!("invalid page size"))?;
        let disk = if cfg.disk.enabled {
            if let Some(dir) = cfg.disk.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let d = DiskTier::open(DiskTierConfig {
                path: cfg.disk.path.clone(),
                capacity_bytes: cfg.disk.capacity.as_u64(),
                page_size_bytes: geometry.page_size_bytes(),
                io_engine: cfg.disk.io_engine,
                rings: cfg.disk.rings,
                queue_depth: cfg.disk.queue_depth,
                registered_buffers: cfg.disk.registered_buffers,
            })
            .await
            .map_err(|e| anyhow::anyhow!("disk tier at {}: {e}", cfg.disk.path.display()))?;
            tracing::info!(engine = d.engine_name(), pages = d.page_count(), path = %cfg.disk.path.display(), "disk tier open");
            let tier = Arc::new(d);
            let (journal, recovered) =
                crate::cache::journal::Journal::open(&cfg.disk.path, |h| tier.holds_object(h))
                    .map_err(|e| anyhow::anyhow!("object journal beside {}: {e}", cfg.disk.path.display()))?;
            Some(crate::cache::DiskState { tier, journal: Arc::new(journal), recovered })
        } else {
            None
        };
        let origins = Arc::new(Origins::new(cfg.origins.clone(), cfg.cache.origin_timeout));
        let rules = crate::policy::key_rules(&cfg.cache).map_err(anyhow::Error::msg)?;
        let pins = Arc::new(PinRules::load(&cfg.pins.rules, &cfg.pins.state_file)?);
        let ps = geometry.page_size_bytes();
        let cache = Cache::new(
            ReadPathConfig {
                geometry,
                max_fetch_pages: (cfg.cache.max_fetch.as_u64() / ps).max(1),
                readahead_pages: (cfg.cache.readahead.as_u64() / ps).max(1),
                metadata_ttl: cfg.cache.metadata_ttl,
                pin_budget_bytes: cfg.pins.budget.as_u64(),
                disk_write_queue: cfg.disk.write_queue,
            },
            MemoryTier::new(cfg.cache.memory_capacity.as_u64()),
            disk,
            origins,
            rules,
            pins,
        );
        crate::origin::multipart::sweep(&cfg.cache.multipart_dir, Duration::from_secs(7 * 24 * 3600));
        let staging = Arc::new(Staging::new(cfg.cache.multipart_dir.clone())?);
        let lake = Arc::new(LakeS3::new(
            cache.clone(),
            staging,
            cfg.cache.list_ttl,
            cfg.server.region.clone(),
            cfg.server.body_timeout,
        ));
        let mut b = S3ServiceBuilder::new(SharedS3(lake.clone()));
        configure_s3(&mut b, &cfg.auth, &cfg.server);
        b.set_route(IgnoredRangeRoute {
            s3: lake,
            domains: cfg.server.virtual_host_domains.clone(),
            anonymous: cfg.auth.anonymous,
        });
        let prewarm_rules: Vec<_> = if cfg.pins.prewarm_on_start {
            cfg.pins.rules.iter().filter(|r| !r.bucket.contains(['*', '?', '[', '{'])).cloned().collect()
        } else {
            Vec::new()
        };
        let mut state_dirs = vec![("multipart", cfg.cache.multipart_dir.clone())];
        if cfg.disk.enabled {
            let dir = cfg.disk.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            state_dirs.push(("pagestore", dir.to_path_buf()));
        }
        let node = Arc::new(Node {
            domains: cfg.server.virtual_host_domains.clone(),
            anonymous: cfg.auth.allows_anonymous(),
            stats: RequestStats::new(m::S3_REQUESTS, m::S3_LATENCY),
            limits: cfg.server.conn_limits(),
            state_dirs,
            cache: cache.clone(),
            s3: b.build(),
            admin: Admin::new(cache.clone(), cfg.admin.token.clone()),
            fleet: crate::fleet_api::FleetApi::new(cache.clone(), cfg.fleet.secret.as_deref()),
            metrics,
            // With pins to prewarm, the node is ready (`/readyz`) once they are on disk, so a
            // rollout waits for a warm node.
            ready: AtomicBool::new(prewarm_rules.is_empty()),
        });
        if !prewarm_rules.is_empty() {
            let n = node.clone();
            tokio::spawn(async move {
                for r in &prewarm_rules {
                    let Ok(g) = crate::policy::compile_glob(&r.key) else { continue };
                    let prefix = r.key[..r.key.find(['*', '?', '[', '{']).unwrap_or(r.key.len())].to_string();
                    match crate::admin::prewarm(&n.cache, &r.bucket, &prefix, |k| g.is_match(k)).await {
                        Ok((o, b)) => {
                            tracing::info!(bucket = %r.bucket, key = %r.key, objects = o, bytes = b, "prewarmed")
                        }
                        Err(_) => tracing::warn!(bucket = %r.bucket, key = %r.key, "prewarm failed"),
                    }
                }
                n.set_ready(true);
                tracing::info!("prewarm done; ready");
            });
        }
        Ok(node)
    }

    /// The HTTP/1.1 fast path's part of `handle`: the page endpoint and plain object reads
    /// (a read the plain path gives up on goes to hyper and s3s as if never seen).
    fn fast(self: &Arc<Self>, req: Request<()>) -> Option<FastFuture<s3s::Body>> {
        let path = req.uri().path();
        if crate::fleet_api::is_fleet_path(path) {
            let node = Arc::clone(self);
            return Some(Box::pin(async move { Some(node.fleet.handle(req).await) }));
        }
        if path.starts_with("/_lakecache/") {
            return None;
        }
        let (plain, class) = self.plain_of(&req)?;
        let node = Arc::clone(self);
        Some(Box::pin(async move {
            let started = std::time::Instant::now();
            let resp = crate::s3::read::plain_read(&node.cache, &plain, class).await?;
            node.stats.record(method_label(req.method()), resp.status(), started);
            Some(resp)
        }))
    }

    /// A read the plain path may answer (`PlainRead`) and its key's class. Never-cached keys
    /// (mutable pointers) go to s3s: a fallback from the plain path would cost them a second
    /// origin HEAD.
    fn plain_of<B>(&self, req: &Request<B>) -> Option<(PlainRead, KeyClass)> {
        let plain = PlainRead::of(req, &self.domains, self.anonymous)?;
        let class = self.cache.classify(&plain.key);
        (class != KeyClass::NeverCache).then_some((plain, class))
    }

    async fn handle(self: Arc<Self>, req: Request<TimedBody>) -> Response<s3s::Body> {
        let path = req.uri().path();
        let plain = req.uri().query().is_none() && req.method() == Method::GET;
        if plain && path == "/healthz" {
            return text(StatusCode::OK, "ok\n");
        }
        if plain && path == "/readyz" {
            return if self.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            };
        }
        if plain && path == "/metrics" {
            self.cache.publish_metrics();
            for (role, dir) in &self.state_dirs {
                if let Some((avail, size)) = filesystem_space(dir) {
                    metrics::gauge!(m::FS_AVAIL_BYTES, "role" => *role).set(avail as f64);
                    metrics::gauge!(m::FS_SIZE_BYTES, "role" => *role).set(size as f64);
                }
            }
            let mut r = text(StatusCode::OK, self.metrics.render());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return r;
        }
        if crate::fleet_api::is_fleet_path(path) {
            return self.fleet.handle(req).await;
        }
        if path.starts_with("/_lakecache/") {
            return self.admin.handle(req).await;
        }
        let op = method_label(req.method());
        let started = std::time::Instant::now();
        if let Some((plain, class)) = self.plain_of(&req)
            && let Some(resp) = crate::s3::read::plain_read(&self.cache, &plain, class).await
        {
            self.stats.record(op, resp.status(), started);
            return resp;
        }
        match self.s3.call(req.map(s3s::Body::http_body)).await {
            Ok(resp) => {
                self.stats.record(op, resp.status(), started);
                resp
            }
            Err(e) => {
                tracing::error!(error = ?e, "S3 service failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
            }
        }
    }

    /// Marks the node not ready (load balancers stop sending) before shutdown.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// Free space (for unprivileged users) and size of the file system holding `dir`.
fn filesystem_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` is written by statvfs before use.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize;
    Some((st.f_bavail * frsize, st.f_blocks * frsize))
}

/// Serves `node` on `listener` until `shutdown` resolves; in-flight requests get up to
/// 10 s to finish.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let n = node.clone();
    let limits = node.limits;
    let fast_node = node.clone();
    let fast: FastHandler<s3s::Body> = Arc::new(move |req| fast_node.fast(req));
    crate::listener::serve_http(
        listener,
        limits,
        "cachenode",
        move |req| n.clone().handle(req),
        Some(fast),
        shutdown,
    )
    .await;
    node.set_ready(false);
    if let Some(d) = &node.cache.disk {
        d.close().await;
    }
    Ok(())
}

/// Serves only the internal page endpoint (and `/healthz`) on a listener of its own
/// (`[fleet] listen`), until `shutdown` resolves.
pub async fn serve_fleet(listener: TcpListener, node: Arc<Node>, shutdown: impl Future<Output = ()>) {
    let limits = node.limits;
    let fast_node = node.clone();
    let fleet_fast: FastHandler<s3s::Body> = Arc::new(move |req: Request<()>| {
        if !crate::fleet_api::is_fleet_path(req.uri().path()) {
            return None;
        }
        let node = fast_node.clone();
        Some(Box::pin(async move { Some(node.fleet.handle(req).await) }) as FastFuture<s3s::Body>)
    });
    crate::listener::serve_http(
        listener,
        limits,
        "cachenode_fleet",
        move |req: Request<TimedBody>| {
            let n = node.clone();
            async move {
                let path = req.uri().path();
                if crate::fleet_api::is_fleet_path(path) {
                    n.fleet.handle(req).await
                } else if path == "/healthz" && req.method() == Method::GET {
                    text(StatusCode::OK, "ok\n")
                } else {
                    text(StatusCode::NOT_FOUND, "this listener serves only the fleet endpoint\n")
                }
            }
        },
        Some(fleet_fast),
        shutdown,
    )
    .await;
}
