//! Builds the router from its config and serves it: S3 (s3s, SigV4 against the same keys
//! as the cache nodes) plus `/healthz`, `/readyz` and `/metrics`.

use std::future::Future;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use lakecache_common::config::Validate;
use lakecache_s3::fast::{FastFuture, FastHandler};
use lakecache_s3::listener::{ConnLimits, TimedBody};
use lakecache_s3::response::text;
use lakecache_s3::service::{RequestStats, configure_s3, method_label};
use metrics_exporter_prometheus::PrometheusHandle;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use crate::config::RouterConfig;
use crate::proxy::Router;
use lakecache_fleet::membership::Fleet;
use lakecache_s3::request::PlainRead;

pub const ROUTER_S3_REQUESTS: &str = "router_s3_requests_total";
pub const ROUTER_S3_LATENCY: &str = "router_s3_request_duration_milliseconds";

pub struct RouterNode {
    pub fleet: Arc<Fleet>,
    admin_token: Option<String>,
    s3: S3Service,
    /// Plain object reads, answered without s3s (`PlainRead`).
    reads: Router,
    domains: Vec<String>,
    anonymous: bool,
    stats: RequestStats,
    metrics: PrometheusHandle,
    limits: ConnLimits,
    /// Verifies fleet members' requests for the rules this router applies.
    fleet_key: lakecache_common::wire::FleetKey,
}

impl RouterNode {
    pub fn build(cfg: RouterConfig) -> anyhow::Result<Arc<Self>> {
        cfg.validate()?;
        let metrics = lakecache_common::metrics::install();
        let fleet = Fleet::new(cfg.nodes.clone(), cfg.fleet.clone(), cfg.server.region.clone())?;
        fleet.spawn_health_checks();
        let mut b = S3ServiceBuilder::new(Router::new(fleet.clone())?);
        configure_s3(&mut b, &cfg.auth, &cfg.server);
        b.set_route(crate::forward::Passthrough::new(
            fleet.clone(),
            cfg.server.region.clone(),
            cfg.server.virtual_host_domains.clone(),
            cfg.auth.anonymous,
        )?);
        Ok(Arc::new(RouterNode {
            reads: Router::new(fleet.clone())?,
            domains: cfg.server.virtual_host_domains.clone(),
            anonymous: cfg.auth.allows_anonymous(),
            stats: RequestStats::new(ROUTER_S3_REQUESTS, ROUTER_S3_LATENCY),
            fleet,
            admin_token: cfg.admin.token.clone(),
            s3: b.build(),
            metrics,
            limits: cfg.server.conn_limits(),
            fleet_key: lakecache_common::wire::FleetKey::new(&cfg.fleet.secret),
        }))
    }

    async fn handle(self: Arc<Self>, req: Request<TimedBody>) -> Response<s3s::Body> {
        let plain = req.uri().query().is_none() && req.method() == Method::GET;
        match req.uri().path() {
            "/healthz" if plain => return text(StatusCode::OK, "ok\n"),
            "/readyz" if plain => {
                return if self.fleet.members().iter().any(|m| m.healthy()) {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "no healthy cache node\n")
                };
            }
            "/metrics" if plain => return text(StatusCode::OK, self.metrics.render()),
            lakecache_common::wire::RULES_PATH => return self.fleet_rules(&req),
            "/_lakecache/admin/nodes" => return self.admin_nodes(req).await,
            "/_lakecache/admin/pins" => return self.admin_pins(req).await,
            "/_lakecache/admin/stats" => return self.admin_stats(req).await,
            "/_lakecache/admin/prewarm" => return self.admin_prewarm(req).await,
            _ => {}
        }
        let method = method_label(req.method());
        let started = std::time::Instant::now();
        let answer = if let Some(plain) = self.plain_of(&req) {
            self.reads.plain_read(&plain).await
        } else {
            match self.s3.call(req.map(s3s::Body::http_body)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = ?e, "S3 service failed");
                    return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
                }
            }
        };
        self.stats.record(method, answer.status(), started);
        answer
    }
}

impl RouterNode {
    /// A plain object read (`PlainRead`) this router answers without s3s; never one of the
    /// router's own paths.
    fn plain_of<B>(&self, req: &Request<B>) -> Option<PlainRead> {
        let path = req.uri().path();
        if path.starts_with("/_lakecache/") || matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return None;
        }
        PlainRead::of(req, &self.domains, self.anonymous)
    }

    /// The HTTP/1.1 fast path's part of `handle`: plain object reads.
    fn fast(self: &Arc<Self>, req: Request<()>) -> Option<FastFuture<s3s::Body>> {
        let plain = self.plain_of(&req)?;
        let node = Arc::clone(self);
        Some(Box::pin(async move {
            let started = std::time::Instant::now();
            let answer = node.reads.plain_read(&plain).await;
            node.stats.record(method_label(req.method()), answer.status(), started);
            Some(answer)
        }))
    }

    /// The key rules and page size this router applies (adopted from the nodes), for a
    /// fleet member behind it — a search node in router mode — in the nodes' own answer
    /// shape; asked with the fleet secret, as of a node.
    fn fleet_rules(&self, req: &Request<TimedBody>) -> Response<s3s::Body> {
        use lakecache_common::wire::{FLEET_AUTH, RULES_PATH};
        use lakecache_s3::response::fleet_error;
        if req.method() != Method::GET {
            return fleet_error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "GET only");
        }
        let presented = req.headers().get(FLEET_AUTH).map(|v| v.as_bytes());
        if let Err(e) = self.fleet_key.verify(presented, "GET", RULES_PATH, "", "") {
            let (status, code, message) = e.answer();
            return fleet_error(status, code, message);
        }
        json(
            StatusCode::OK,
            serde_json::json!({
                "page_size": self.fleet.cfg.page_size.as_u64(),
                "rules": self.fleet.meta.rules().spec(),
            }),
        )
    }

    // The error is the response to send; it is built once per refused request.
    #[allow(clippy::result_large_err)]
    fn authorized(&self, req: &Request<TimedBody>) -> Result<(), Response<s3s::Body>> {
        let Some(token) = &self.admin_token else {
            return Err(json(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "the admin API is disabled: set [admin] token"}),
            ));
        };
        let presented = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let ok = presented
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| lakecache_common::auth::constant_time_eq(t.as_bytes(), token.as_bytes()));
        if ok {
            Ok(())
        } else {
            Err(json(StatusCode::UNAUTHORIZED, serde_json::json!({"error": "missing or wrong bearer token"})))
        }
    }

    /// Pin rules reach every node (each pins the pages it owns); `"prewarm": true` then
    /// reads the matching objects through the ring, so every page lands — pinned — on its
    /// owner. `GET` sums the nodes' pinned bytes. Each node checks the rule against its own
    /// budget, counting whole objects: conservative for a fleet, where it holds a share.
    async fn admin_pins(&self, req: Request<TimedBody>) -> Response<s3s::Body> {
        if let Err(r) = self.authorized(&req) {
            return r;
        }
        let method = req.method().clone();
        let v = match json_body(req).await {
            Ok(v) => v,
            Err(r) => return r,
        };
        let (status, answer) = self.fleet.pins(method, &v).await;
        json(status, answer)
    }

    /// `GET`: every node's stats (memory, disk, pins) and their sums over the nodes that
    /// answered.
    async fn admin_stats(&self, req: Request<TimedBody>) -> Response<s3s::Body> {
        if let Err(r) = self.authorized(&req) {
            return r;
        }
        if req.method() != Method::GET {
            return json(StatusCode::METHOD_NOT_ALLOWED, serde_json::json!({"error": "use GET"}));
        }
        json(StatusCode::OK, self.fleet.stats().await)
    }

    /// `POST {"bucket","prefix"}`: reads every object under the prefix through the ring,
    /// so each page lands on its owner.
    async fn admin_prewarm(&self, req: Request<TimedBody>) -> Response<s3s::Body> {
        if let Err(r) = self.authorized(&req) {
            return r;
        }
        if req.method() != Method::POST {
            return json(StatusCode::METHOD_NOT_ALLOWED, serde_json::json!({"error": "use POST"}));
        }
        let v = match json_body(req).await {
            Ok(v) => v,
            Err(r) => return r,
        };
        let (Some(bucket), prefix) = (
            v.get("bucket").and_then(|b| b.as_str()),
            v.get("prefix").and_then(|p| p.as_str()).unwrap_or(""),
        ) else {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "expected {\"bucket\": ..., \"prefix\": ...}"}),
            );
        };
        match self.fleet.prewarm_prefix(bucket, prefix).await {
            Ok((objects, bytes)) => {
                json(StatusCode::OK, serde_json::json!({"objects": objects, "bytes": bytes}))
            }
            Err(e) => json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"error": e})),
        }
    }

    /// `GET` lists the members and their health; `PUT` with `[{"id","url","weight"}]`
    /// replaces the membership without dropping in-flight requests.
    async fn admin_nodes(&self, req: Request<TimedBody>) -> Response<s3s::Body> {
        if let Err(r) = self.authorized(&req) {
            return r;
        }
        match *req.method() {
            Method::GET => {
                let nodes: Vec<_> = self
                    .fleet
                    .members()
                    .iter()
                    .map(|m| serde_json::json!({"id": m.cfg.id, "url": m.cfg.url, "weight": m.cfg.weight, "healthy": m.healthy()}))
                    .collect();
                json(StatusCode::OK, serde_json::json!({ "nodes": nodes }))
            }
            Method::PUT => {
                use http_body_util::BodyExt;
                let body = match http_body_util::Limited::new(req.into_body(), 1 << 20).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        return json(StatusCode::BAD_REQUEST, serde_json::json!({"error": e.to_string()}));
                    }
                };
                let nodes: Vec<crate::config::NodeConfig> = match serde_json::from_slice(&body) {
                    Ok(n) => n,
                    Err(e) => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            serde_json::json!({"error": format!("invalid JSON: {e}")}),
                        );
                    }
                };
                // A node with other key rules is refused before it joins.
                let unchecked = match self.fleet.check_new_nodes(&nodes).await {
                    Ok(u) => u,
                    Err(e) => {
                        return json(StatusCode::CONFLICT, serde_json::json!({"error": format!("{e:#}")}));
                    }
                };
                match self.fleet.set_nodes(nodes) {
                    Ok(()) => json(
                        StatusCode::OK,
                        serde_json::json!({"nodes": self.fleet.members().len(), "unchecked": unchecked}),
                    ),
                    Err(e) => json(StatusCode::BAD_REQUEST, serde_json::json!({"error": e.to_string()})),
                }
            }
            _ => json(StatusCode::METHOD_NOT_ALLOWED, serde_json::json!({"error": "use GET or PUT"})),
        }
    }
}

/// A JSON request body of at most 64 KiB (`null` when empty), or the error answer.
#[allow(clippy::result_large_err)]
async fn json_body(req: Request<TimedBody>) -> Result<serde_json::Value, Response<s3s::Body>> {
    use http_body_util::BodyExt;
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(json(StatusCode::BAD_REQUEST, serde_json::json!({"error": e.to_string()}))),
    };
    if body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&body).map_err(|e| {
        json(StatusCode::BAD_REQUEST, serde_json::json!({"error": format!("invalid JSON: {e}")}))
    })
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<s3s::Body> {
    let mut r = text(status, v.to_string());
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

pub async fn serve(listener: TcpListener, node: Arc<RouterNode>, shutdown: impl Future<Output = ()>) {
    let limits = node.limits;
    let fast_node = node.clone();
    let fast: FastHandler<s3s::Body> = Arc::new(move |req| fast_node.fast(req));
    lakecache_s3::listener::serve_http(
        listener,
        limits,
        "router",
        move |req| node.clone().handle(req),
        Some(fast),
        shutdown,
    )
    .await;
}
