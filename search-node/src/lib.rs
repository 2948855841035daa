//! lakecache search node: Lance tables read through the cache fleet, served over a REST API
//! that follows LanceDB's remote protocol (vector, full-text, hybrid and filtered queries,
//! table and index management) plus SQL over a namespace's tables.

pub mod api;
pub mod config;
pub mod engine;
pub mod error;
pub mod store;

use engine::{sql, tables};
use store::{blocks, iostats};

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use lakecache_common::config::Validate;

use crate::config::SearchConfig;

/// Creates the search node's counters with fixed labels at zero (see ops/METRICS.md).
fn register_metrics() {
    for outcome in ["ok", "error"] {
        metrics::counter!(sql::SQL_QUERIES, "outcome" => outcome).absolute(0);
        for method in ["get_flight_info", "poll_flight_info", "do_get"] {
            metrics::counter!(api::flight::FLIGHT_REQUESTS, "method" => method, "outcome" => outcome)
                .absolute(0);
        }
    }
    for result in ["hit", "miss"] {
        metrics::counter!(blocks::SEARCH_PAGE_CACHE_READS, "result" => result).absolute(0);
    }
    for c in [
        blocks::SEARCH_PAGE_CACHE_BYTES,
        blocks::SEARCH_PAGE_CACHE_FILL_BYTES,
        iostats::OBJECTSTORE_READ_BYTES,
    ] {
        metrics::counter!(c).absolute(0);
    }
    for op in ["get", "head", "put", "list"] {
        metrics::counter!(iostats::OBJECTSTORE_REQUESTS, "op" => op, "outcome" => "error").absolute(0);
    }
}

/// A built search node: its tables and its HTTP application.
pub struct SearchNode {
    pub tables: Arc<tables::Tables>,
    state: Arc<api::AppState>,
    pub app: Router,
    limits: lakecache_s3::listener::ConnLimits,
}

pub const LANCE_CACHE_HITS: &str = "searchnode_lance_cache_hits_total";
pub const LANCE_CACHE_MISSES: &str = "searchnode_lance_cache_misses_total";
pub const LANCE_CACHE_BYTES: &str = "searchnode_lance_cache_bytes";
pub const LANCE_CACHE_ENTRIES: &str = "searchnode_lance_cache_entries";

/// Lance's own caches of decoded structures (index: IVF centroids, PQ codebooks, HNSW graphs,
/// FTS postings; metadata: manifests, file footers) as the scrape finds them.
async fn publish_lance_caches(session: &lance::session::Session) {
    for (cache, s) in
        [("index", session.index_cache_stats().await), ("metadata", session.metadata_cache_stats().await)]
    {
        metrics::counter!(LANCE_CACHE_HITS, "cache" => cache).absolute(s.hits);
        metrics::counter!(LANCE_CACHE_MISSES, "cache" => cache).absolute(s.misses);
        metrics::gauge!(LANCE_CACHE_BYTES, "cache" => cache).set(s.size_bytes as f64);
        metrics::gauge!(LANCE_CACHE_ENTRIES, "cache" => cache).set(s.num_entries as f64);
    }
}

impl SearchNode {
    pub fn build(cfg: SearchConfig) -> anyhow::Result<SearchNode> {
        cfg.validate()?;
        let metrics = lakecache_common::metrics::install();
        register_metrics();
        let tables = tables::Tables::new(&cfg)?;
        let state = Arc::new(api::AppState {
            tables: tables.clone(),
            api_keys: cfg.auth.api_keys.clone(),
            anonymous: cfg.auth.anonymous,
            request_timeout: cfg.server.request_timeout,
            metrics: Some(metrics.clone()),
            sql_runtime: sql::runtime(&cfg.limits)?,
            limits: cfg.limits.clone(),
        });
        let ops = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(|| async { "ready\n" }))
            .route(
                "/metrics",
                get({
                    let session = tables.session.clone();
                    move || {
                        let (m, session) = (metrics.clone(), session.clone());
                        async move {
                            publish_lance_caches(&session).await;
                            (StatusCode::OK, m.render()).into_response()
                        }
                    }
                }),
            );
        let app = ops.merge(api::router(state.clone(), cfg.server.max_body.as_u64() as usize));
        Ok(SearchNode { tables, state, app, limits: cfg.server.conn_limits() })
    }

    /// SQL over Arrow Flight SQL, on the same tables, keys and limits as the REST API; serve
    /// it on its own listener (`[server] flight_listen`).
    pub fn flight(&self) -> api::flight::FlightSql {
        api::flight::FlightSql::new(self.state.clone())
    }

    /// Joins the fleet: adopts (or checks) the cache nodes' key rules. Call before serving.
    pub async fn join_fleet(&self) -> anyhow::Result<()> {
        self.tables.stores.join_fleet().await
    }

    /// Serves until `shutdown` resolves (in-flight requests then get 10 s to finish), with
    /// the fleet's connection limits (`[server]` header/body/send timeouts, max connections).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.app;
        let handler = move |req: axum::http::Request<lakecache_s3::listener::TimedBody>| {
            let app = app.clone();
            async move {
                let req = req.map(axum::body::Body::new);
                match tower::ServiceExt::oneshot(app, req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                }
            }
        };
        lakecache_s3::listener::serve_http(listener, self.limits, "searchnode", handler, None, shutdown)
            .await;
        Ok(())
    }
}
