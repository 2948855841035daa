//! Builds the router from its config and serves it: S3 (s3s, SigV4 against the same keys
//! as the cache nodes) plus `/healthz`, `/readyz` and `/metrics`.

use std::future::Future;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use lakecache_cache_node::server::{configure_s3, method_label, serve_http, text};
use lakecache_common::config::Validate;
use metrics_exporter_prometheus::PrometheusHandle;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use crate::config::RouterConfig;
use crate::membership::Fleet;
use crate::proxy::Router;

pub const ROUTER_S3_REQUESTS: &str = "router_s3_requests_total";
pub const ROUTER_S3_LATENCY: &str = "router_s3_request_duration_milliseconds";

pub struct RouterNode {
    pub fleet: Arc<Fleet>,
    admin_token: Option<String>,
    s3: S3Service,
    metrics: PrometheusHandle,
}

impl RouterNode {
    pub fn build(cfg: RouterConfig) -> anyhow::Result<Arc<Self>> {
        cfg.validate()?;
        let metrics = lakecache_cache_node::metrics::install();
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
        Ok(Arc::new(RouterNode { fleet, admin_token: cfg.admin.token.clone(), s3: b.build(), metrics }))
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<s3s::Body> {
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
            "/_lakecache/admin/nodes" => return self.admin_nodes(req).await,
            "/_lakecache/admin/pins" => return self.admin_pins(req).await,
            _ => {}
        }
        let method = method_label(req.method());
        let started = std::time::Instant::now();
        match hyper::service::Service::call(&self.s3, req).await {
            Ok(r) => {
                metrics::counter!(ROUTER_S3_REQUESTS, "method" => method, "status" => r.status().as_str().to_string())
                    .increment(1);
                metrics::histogram!(ROUTER_S3_LATENCY, "method" => method)
                    .record(lakecache_cache_node::metrics::ms_since(started));
                r
            }
            Err(e) => {
                tracing::error!(error = ?e, "S3 service failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
            }
        }
    }
}

impl RouterNode {
    // The error is the response to send; it is built once per refused request.
    #[allow(clippy::result_large_err)]
    fn authorized(&self, req: &Request<Incoming>) -> Result<(), Response<s3s::Body>> {
        let Some(token) = &self.admin_token else {
            return Err(json(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "the admin API is disabled: set [admin] token"}),
            ));
        };
        let presented = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let ok = presented
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| lakecache_cache_node::admin::constant_time_eq(t.as_bytes(), token.as_bytes()));
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
    async fn admin_pins(&self, req: Request<Incoming>) -> Response<s3s::Body> {
        use http_body_util::BodyExt;
        if let Err(r) = self.authorized(&req) {
            return r;
        }
        let method = req.method().clone();
        let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return json(StatusCode::BAD_REQUEST, serde_json::json!({"error": e.to_string()})),
        };
        let v: serde_json::Value = if body.is_empty() {
            serde_json::Value::Null
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": format!("invalid JSON: {e}")}),
                    );
                }
            }
        };
        let (status, answer) = self.fleet.pins(method, &v).await;
        json(status, answer)
    }

    /// `GET` lists the members and their health; `PUT` with `[{"id","url","weight"}]`
    /// replaces the membership without dropping in-flight requests.
    async fn admin_nodes(&self, req: Request<Incoming>) -> Response<s3s::Body> {
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
                match self.fleet.set_nodes(nodes) {
                    Ok(()) => json(StatusCode::OK, serde_json::json!({"nodes": self.fleet.members().len()})),
                    Err(e) => json(StatusCode::BAD_REQUEST, serde_json::json!({"error": e.to_string()})),
                }
            }
            _ => json(StatusCode::METHOD_NOT_ALLOWED, serde_json::json!({"error": "use GET or PUT"})),
        }
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<s3s::Body> {
    let mut r = text(status, v.to_string());
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

pub async fn serve(listener: TcpListener, node: Arc<RouterNode>, shutdown: impl Future<Output = ()>) {
    serve_http(listener, move |req| node.clone().handle(req), shutdown).await;
}
