//! Assembles a cache node from its config and serves it: `Node::build` wires origin,
//! tiers, read path and S3 surface; `serve(listener, node, shutdown)` runs HTTP/1.1 and
//! HTTP/2 on a bound listener until `shutdown` resolves, then drains open connections.
//! Besides S3 it answers `/healthz`, `/readyz`, `/metrics` and `/_lakecache/admin/*`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use lakecache_common::config::Validate;
use lakecache_common::page::{ByteRange, PageGeometry};
use metrics_exporter_prometheus::PrometheusHandle;
use s3s::auth::SimpleAuth;
use s3s::host::{S3Host, VirtualHost};
use s3s::route::S3Route;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3Request, S3Response, S3Result, s3_error};
use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::cache::{Cache, ReadPathConfig};
use crate::config::Config;
use crate::listener::{ConnLimits, TimedBody};
use crate::metrics as m;
use crate::origin::Origins;
use crate::origin::multipart::Staging;
use crate::policy::PinRules;
use crate::s3::LakeS3;
use crate::tier::disk::{DiskTier, DiskTierConfig};
use crate::tier::memory::MemoryTier;

/// A running cache node's shared state.
pub struct Node {
    pub cache: Arc<Cache>,
    s3: S3Service,
    admin: Admin,
    metrics: PrometheusHandle,
    ready: AtomicBool,
    limits: ConnLimits,
    /// Folders whose file systems /metrics reports free space of, by role.
    state_dirs: Vec<(&'static str, PathBuf)>,
}

impl Node {
    pub async fn build(cfg: Config) -> anyhow::Result<Arc<Self>> {
        cfg.validate()?;
        let metrics = m::install();
        m::register_cache_node();
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
            limits: cfg.server.conn_limits(),
            state_dirs,
            cache: cache.clone(),
            s3: b.build(),
            admin: Admin::new(cache.clone(), cfg.admin.token.clone()),
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
        if path.starts_with("/_lakecache/") {
            return self.admin.handle(req).await;
        }
        let op = method_label(req.method());
        let started = std::time::Instant::now();
        match self.s3.call(req.map(s3s::Body::http_body)).await {
            Ok(resp) => {
                metrics::counter!(m::S3_REQUESTS, "method" => op, "status" => resp.status().as_str().to_string()).increment(1);
                metrics::histogram!(m::S3_LATENCY, "method" => op).record(m::ms_since(started));
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

/// Authentication (SigV4 against the configured keys, anonymous access if allowed) and
/// host parsing, shared by the cache node and the router.
pub fn configure_s3(
    b: &mut S3ServiceBuilder,
    auth: &crate::config::AuthConfig,
    server: &crate::config::ServerConfig,
) {
    if !auth.keys.is_empty() {
        let mut simple = SimpleAuth::new();
        for k in &auth.keys {
            simple.register(k.access_key.clone(), k.secret_key.clone().into());
        }
        b.set_auth(simple);
        if auth.anonymous {
            b.set_access(AllowAnonymous);
        }
    }
    b.set_host(Hosts { domains: server.virtual_host_domains.clone() });
}

/// A method as a metric label: a fixed set, since the token comes from the client.
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

pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

pub fn text(status: StatusCode, body: impl Into<String>) -> Response<s3s::Body> {
    let mut r = Response::new(s3s::Body::from(body.into()));
    *r.status_mut() = status;
    r
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
    crate::listener::serve_http(listener, limits, "cachenode", move |req| n.clone().handle(req), shutdown)
        .await;
    node.set_ready(false);
    if let Some(d) = &node.cache.disk {
        d.close().await;
    }
    Ok(())
}

/// `LakeS3` behind an `Arc`, so the custom route can share it.
struct SharedS3(Arc<LakeS3>);

#[async_trait::async_trait]
impl s3s::S3 for SharedS3 {
    async fn get_object(
        &self,
        r: S3Request<s3s::dto::GetObjectInput>,
    ) -> S3Result<S3Response<s3s::dto::GetObjectOutput>> {
        self.0.get_object(r).await
    }
    async fn head_object(
        &self,
        r: S3Request<s3s::dto::HeadObjectInput>,
    ) -> S3Result<S3Response<s3s::dto::HeadObjectOutput>> {
        self.0.head_object(r).await
    }
    async fn list_objects_v2(
        &self,
        r: S3Request<s3s::dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<s3s::dto::ListObjectsV2Output>> {
        self.0.list_objects_v2(r).await
    }
    async fn list_objects(
        &self,
        r: S3Request<s3s::dto::ListObjectsInput>,
    ) -> S3Result<S3Response<s3s::dto::ListObjectsOutput>> {
        self.0.list_objects(r).await
    }
    async fn list_buckets(
        &self,
        r: S3Request<s3s::dto::ListBucketsInput>,
    ) -> S3Result<S3Response<s3s::dto::ListBucketsOutput>> {
        self.0.list_buckets(r).await
    }
    async fn head_bucket(
        &self,
        r: S3Request<s3s::dto::HeadBucketInput>,
    ) -> S3Result<S3Response<s3s::dto::HeadBucketOutput>> {
        self.0.head_bucket(r).await
    }
    async fn get_bucket_location(
        &self,
        r: S3Request<s3s::dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<s3s::dto::GetBucketLocationOutput>> {
        self.0.get_bucket_location(r).await
    }
    async fn put_object(
        &self,
        r: S3Request<s3s::dto::PutObjectInput>,
    ) -> S3Result<S3Response<s3s::dto::PutObjectOutput>> {
        self.0.put_object(r).await
    }
    async fn delete_object(
        &self,
        r: S3Request<s3s::dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<s3s::dto::DeleteObjectOutput>> {
        self.0.delete_object(r).await
    }
    async fn delete_objects(
        &self,
        r: S3Request<s3s::dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<s3s::dto::DeleteObjectsOutput>> {
        self.0.delete_objects(r).await
    }
    async fn copy_object(
        &self,
        r: S3Request<s3s::dto::CopyObjectInput>,
    ) -> S3Result<S3Response<s3s::dto::CopyObjectOutput>> {
        self.0.copy_object(r).await
    }
    async fn create_multipart_upload(
        &self,
        r: S3Request<s3s::dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<s3s::dto::CreateMultipartUploadOutput>> {
        self.0.create_multipart_upload(r).await
    }
    async fn upload_part(
        &self,
        r: S3Request<s3s::dto::UploadPartInput>,
    ) -> S3Result<S3Response<s3s::dto::UploadPartOutput>> {
        self.0.upload_part(r).await
    }
    async fn complete_multipart_upload(
        &self,
        r: S3Request<s3s::dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<s3s::dto::CompleteMultipartUploadOutput>> {
        self.0.complete_multipart_upload(r).await
    }
    async fn abort_multipart_upload(
        &self,
        r: S3Request<s3s::dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<s3s::dto::AbortMultipartUploadOutput>> {
        self.0.abort_multipart_upload(r).await
    }
    async fn list_parts(
        &self,
        r: S3Request<s3s::dto::ListPartsInput>,
    ) -> S3Result<S3Response<s3s::dto::ListPartsOutput>> {
        self.0.list_parts(r).await
    }
    async fn upload_part_copy(
        &self,
        r: S3Request<s3s::dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<s3s::dto::UploadPartCopyOutput>> {
        self.0.upload_part_copy(r).await
    }
}

/// Anonymous requests are allowed (signed ones were still verified by s3s).
pub struct AllowAnonymous;

#[async_trait::async_trait]
impl s3s::access::S3Access for AllowAnonymous {
    async fn check(&self, _cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        Ok(())
    }
}

/// Virtual-host style for `<bucket>.<domain>`; any other Host is path style.
pub struct Hosts {
    pub domains: Vec<String>,
}

pub fn host_bucket<'a>(domains: &[String], host: &'a str) -> Option<&'a str> {
    let name = host.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(host, |(h, _)| h);
    domains.iter().find_map(|d| {
        name.strip_suffix(d.as_str()).and_then(|b| b.strip_suffix('.')).filter(|b| !b.is_empty())
    })
}

impl S3Host for Hosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match host_bucket(&self.domains, host) {
            Some(b) => VirtualHost::new(host).with_bucket(b),
            None => VirtualHost::new(host),
        })
    }
}

/// A GET whose Range header S3 would ignore — several ranges, or not a valid byte range —
/// gets the whole object with 200, as S3 answers. (s3s would reject the header instead.)
struct IgnoredRangeRoute {
    s3: Arc<LakeS3>,
    domains: Vec<String>,
    anonymous: bool,
}

impl IgnoredRangeRoute {
    fn bucket_key(&self, uri: &http::Uri, headers: &http::HeaderMap) -> Option<(String, String)> {
        let path = percent_decode(uri.path().strip_prefix('/')?)?;
        let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        match host_bucket(&self.domains, host) {
            Some(b) if !path.is_empty() => Some((b.to_string(), path)),
            Some(_) => None,
            None => {
                let (b, k) = path.split_once('/')?;
                (!b.is_empty() && !k.is_empty()).then(|| (b.to_string(), k.to_string()))
            }
        }
    }
}

pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether S3 would ignore this GET's Range header and answer the whole object: a plain
/// GetObject (no sub-resource in the query) whose Range is not one satisfiable-or-not
/// byte range s3s can parse (several ranges, `bytes=5-2`, another unit, garbage, numbers
/// past 2^63). s3s would refuse such a header with 400 instead.
pub fn range_is_ignored(method: &Method, uri: &http::Uri, headers: &http::HeaderMap) -> bool {
    let plain_get = uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()).all(|p| {
        let name = p.split('=').next().unwrap_or("");
        name == "x-id" || name.starts_with("X-Amz-") || name.starts_with("response-")
    });
    if method != Method::GET || !plain_get {
        return false;
    }
    let Some(r) = headers.get(http::header::RANGE) else { return false };
    r.to_str().map_or(true, |r| s3s::dto::Range::parse(r).is_err())
}

/// The conditional headers of a request s3s did not parse itself.
pub struct HeaderConditions {
    if_match: Option<s3s::dto::ETagCondition>,
    if_none_match: Option<s3s::dto::ETagCondition>,
    if_modified_since: Option<s3s::dto::Timestamp>,
    if_unmodified_since: Option<s3s::dto::Timestamp>,
}

impl HeaderConditions {
    pub fn parse(h: &http::HeaderMap) -> S3Result<Self> {
        let header = |name: http::header::HeaderName| h.get(name).map(|v| v.as_bytes());
        let bad = |what: &str| s3_error!(InvalidArgument, "Invalid {what} header");
        let etag_cond = |name| {
            header(name)
                .map(|v| s3s::dto::ETagCondition::parse_http_header(v).map_err(|_| bad("ETag condition")))
                .transpose()
        };
        let date = |name| {
            header(name)
                .map(|v| {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|t| s3s::dto::Timestamp::parse(s3s::dto::TimestampFormat::HttpDate, t).ok())
                        .ok_or_else(|| bad("date"))
                })
                .transpose()
        };
        Ok(Self {
            if_match: etag_cond(http::header::IF_MATCH)?,
            if_none_match: etag_cond(http::header::IF_NONE_MATCH)?,
            if_modified_since: date(http::header::IF_MODIFIED_SINCE)?,
            if_unmodified_since: date(http::header::IF_UNMODIFIED_SINCE)?,
        })
    }

    pub fn as_conditions(&self) -> crate::s3::conditional::Conditions<'_> {
        crate::s3::conditional::Conditions {
            if_match: self.if_match.as_ref(),
            if_none_match: self.if_none_match.as_ref(),
            if_modified_since: self.if_modified_since.as_ref(),
            if_unmodified_since: self.if_unmodified_since.as_ref(),
        }
    }
}

/// The headers of a 200 answer with the whole object.
pub fn whole_object_headers(
    size: u64,
    etag: Option<&str>,
    last_modified: std::time::SystemTime,
    content_type: Option<&str>,
) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    let mut put = |k: http::header::HeaderName, v: String| {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    };
    put(http::header::CONTENT_LENGTH, size.to_string());
    put(http::header::ACCEPT_RANGES, "bytes".into());
    put(http::header::CONTENT_TYPE, content_type.unwrap_or("application/octet-stream").to_string());
    if let Some(e) = etag {
        put(http::header::ETAG, format!("\"{e}\""));
    }
    put(http::header::LAST_MODIFIED, httpdate(last_modified));
    headers
}

#[async_trait::async_trait]
impl S3Route for IgnoredRangeRoute {
    fn is_match(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        _: &mut http::Extensions,
    ) -> bool {
        range_is_ignored(method, uri, headers) && self.bucket_key(uri, headers).is_some()
    }

    async fn check_access(&self, req: &mut S3Request<s3s::Body>) -> S3Result<()> {
        if req.credentials.is_some() || self.anonymous {
            Ok(())
        } else {
            Err(s3_error!(AccessDenied, "Signature is required"))
        }
    }

    async fn call(&self, req: S3Request<s3s::Body>) -> S3Result<S3Response<s3s::Body>> {
        let (bucket, key) =
            self.bucket_key(&req.uri, &req.headers).ok_or_else(|| s3_error!(InvalidRequest))?;
        let obj = self.s3.cache.object(&bucket, &key).await.map_err(crate::s3::cache_err)?;
        // The conditional headers still apply (s3s parses them only for its own operations).
        HeaderConditions::parse(&req.headers)?.as_conditions().check(&obj.meta)?;
        let size = obj.meta.size;
        let mut headers = whole_object_headers(
            size,
            obj.meta.etag.as_deref(),
            obj.meta.last_modified,
            obj.meta.attrs.content_type.as_deref(),
        );
        crate::s3::attr_headers(&obj.meta.attrs, &mut headers);
        let stream = self
            .s3
            .cache
            .read_started(obj, ByteRange { start: 0, end: size })
            .await
            .map_err(crate::s3::cache_err)?;
        let body = s3s::Body::http_body(http_body_util::StreamBody::new(
            stream.map(|r| r.map(hyper::body::Frame::data)),
        ));
        let mut resp = S3Response::with_headers(body, headers);
        resp.status = Some(StatusCode::OK);
        Ok(resp)
    }
}

fn httpdate(t: std::time::SystemTime) -> String {
    let ts = s3s::dto::Timestamp::from(t);
    let mut buf = Vec::new();
    let _ = ts.format(s3s::dto::TimestampFormat::HttpDate, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_host_bucket_is_parsed_only_under_configured_domains() {
        let d = vec!["s3.local".to_string()];
        assert_eq!(host_bucket(&d, "media.s3.local:9000"), Some("media"));
        assert_eq!(host_bucket(&d, "media.s3.local"), Some("media"));
        assert_eq!(host_bucket(&d, "s3.local:9000"), None);
        assert_eq!(host_bucket(&d, "127.0.0.1:9000"), None);
        assert_eq!(host_bucket(&[], "media.s3.local"), None);
    }
}
