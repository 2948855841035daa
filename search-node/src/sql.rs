//! `POST /v1/sql`: SQL over a namespace's tables through DataFusion — SELECT with WHERE,
//! GROUP BY, ORDER BY, LIMIT and joins between tables. Every table of the namespace is
//! registered under its name at its current version; filters and projections are pushed
//! into lance scans (and so use scalar indexes). Read-only: DDL and DML are refused.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use datafusion::prelude::{SessionConfig, SessionContext};
use lance::datafusion::LanceTableProvider;
use serde::Deserialize;

use crate::api::{AppState, batch_response};
use crate::error::{ApiError, ApiResult, from_datafusion};

pub const SQL_QUERIES: &str = "searchnode_sql_requests_total";
pub const SQL_LATENCY: &str = "searchnode_sql_duration_milliseconds";

#[derive(Deserialize)]
struct SqlBody {
    sql: String,
    #[serde(default)]
    namespace: String,
}

pub async fn sql(State(st): State<Arc<AppState>>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    let body: SqlBody = serde_json::from_slice(&b).map_err(|e| {
        ApiError::bad_request(format!("Invalid body: expected {{\"sql\": \"SELECT ...\"}} ({e})"))
    })?;
    let started = std::time::Instant::now();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(false));
    for (name, ds) in st.tables.all(&body.namespace).await? {
        let provider = LanceTableProvider::new_with_ordering(ds, false, false, false);
        ctx.register_table(name.as_str(), Arc::new(provider)).map_err(from_datafusion)?;
    }
    let opts = datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let res = async {
        let plan = ctx.state().create_logical_plan(&body.sql).await?;
        opts.verify_plan(&plan)?;
        let df = ctx.execute_logical_plan(plan).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok::<_, datafusion::error::DataFusionError>(arrow::compute::concat_batches(&schema, &batches)?)
    }
    .await;
    metrics::counter!(SQL_QUERIES, "outcome" => if res.is_ok() { "ok" } else { "error" }).increment(1);
    metrics::histogram!(SQL_LATENCY).record(lakecache_cache_node::metrics::ms_since(started));
    batch_response(&res.map_err(from_datafusion)?, &h)
}
