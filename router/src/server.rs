//! Builds the router from its config and serves it: S3 (s3s, SigV4 against the same keys
//! as the cache nodes) plus `/healthz`, `/readyz` and `/metrics`.

use std::future::Future;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use lakecache_cache_node::server::{AllowAnonymous, Hosts, serve_http, text};
use lakecache_common::config::Validate;
use metrics_exporter_prometheus::PrometheusHandle;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use crate::config::RouterConfig;
use crate::membership::Fleet;
use crate::proxy::Router;

pub struct RouterNode {
    pub fleet: Arc<Fleet>,
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
        if !cfg.auth.keys.is_empty() {
            let mut auth = SimpleAuth::new();
            for k in &cfg.auth.keys {
                auth.register(k.access_key.clone(), k.secret_key.clone().into());
            }
            b.set_auth(auth);
            if cfg.auth.anonymous {
                b.set_access(AllowAnonymous);
            }
        }
        b.set_host(Hosts { domains: cfg.server.virtual_host_domains.clone() });
        Ok(Arc::new(RouterNode { fleet, s3: b.build(), metrics }))
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
            _ => {}
        }
        match hyper::service::Service::call(&self.s3, req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = ?e, "S3 service failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
            }
        }
    }
}

pub async fn serve(listener: TcpListener, node: Arc<RouterNode>, shutdown: impl Future<Output = ()>) {
    serve_http(listener, move |req| node.clone().handle(req), shutdown).await;
}
