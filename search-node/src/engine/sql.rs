//! `POST /v1/sql`: SQL over a namespace's tables through DataFusion — SELECT with WHERE,
//! GROUP BY, ORDER BY, LIMIT and joins between tables. Every table of the namespace is
//! registered under its name at its current version; filters and projections are pushed
//! into lance scans (and so use scalar indexes). Read-only: DDL and DML are refused.
//! Statements are bounded in size and depth before they are planned (see `expr`), answers
//! in rows and bytes as they stream (see `results`), and memory by one pool for all SQL.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use datafusion::common::config::Dialect;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use lance::datafusion::LanceTableProvider;
use serde::Deserialize;

use crate::api::AppState;
use crate::config::LimitsConfig;
use crate::engine::results::{ResultLimits, ResultWriter};
use crate::error::{ApiError, ApiResult, from_datafusion};

pub const SQL_QUERIES: &str = "searchnode_sql_requests_total";
pub const SQL_LATENCY: &str = "searchnode_sql_duration_milliseconds";

#[derive(Deserialize)]
struct SqlBody {
    sql: String,
    #[serde(default)]
    namespace: String,
}

/// The DataFusion runtime every SQL request shares: one memory pool of `[limits]
/// sql_memory`, and no disk to spill to (a query that needs more memory is refused rather
/// than filling the node's disk).
pub fn runtime(limits: &LimitsConfig) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    let pool = GreedyMemoryPool::new(limits.sql_memory.as_u64() as usize);
    RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
        .build_arc()
}

pub async fn sql(State(st): State<Arc<AppState>>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    let body: SqlBody = serde_json::from_slice(&b).map_err(|e| {
        ApiError::bad_request(format!("Invalid body: expected {{\"sql\": \"SELECT ...\"}} ({e})"))
    })?;
    let started = std::time::Instant::now();
    let acct = crate::api::io::account(&h, false, None)?;
    let res = lakecache_fleet::account::scope(acct.clone(), run(&st, &body, &h))
        .await
        .map_err(|e| crate::api::io::refusal_or(e, &acct, crate::api::io::SQL_TABLE));
    metrics::counter!(SQL_QUERIES, "outcome" => if res.is_ok() { "ok" } else { "error" }).increment(1);
    metrics::histogram!(SQL_LATENCY).record(lakecache_common::metrics::ms_since(started));
    let r = res.unwrap_or_else(axum::response::IntoResponse::into_response);
    Ok(crate::api::io::with_io(r, crate::api::io::SQL_TABLE, &acct))
}

async fn run(st: &AppState, body: &SqlBody, h: &HeaderMap) -> ApiResult<Response> {
    let planned = plan(st, &body.namespace, &body.sql).await?;
    let stream = planned.df.execute_stream().await.map_err(sql_error(st))?;
    let mut out = ResultWriter::new(h, &planned.schema, ResultLimits::from(&st.limits))?;
    out.push_stream(stream, sql_error(st)).await?;
    out.finish()
}

/// A read-only statement over a namespace's tables, checked and planned, ready to run.
pub struct Planned {
    pub df: datafusion::dataframe::DataFrame,
    pub schema: arrow_schema::SchemaRef,
}

/// Plans `sql` over the tables of `namespace` (each at its current version), refusing what
/// is not a bounded query. Shared by `POST /v1/sql` and Flight SQL.
pub async fn plan(st: &AppState, namespace: &str, sql: &str) -> ApiResult<Planned> {
    // Bounded before DataFusion parses it, and once parsed before it plans it: both walk
    // the statement recursively.
    crate::engine::expr::check_sql_size(sql)?;
    let config = SessionConfig::new().with_information_schema(false);
    let ctx = SessionContext::new_with_config_rt(config, st.sql_runtime.clone());
    let state = ctx.state();
    let statement = state.sql_to_statement(sql, &Dialect::Generic).map_err(sql_error(st))?;
    check_statement(&statement)?;
    for (name, ds) in st.tables.all(namespace).await? {
        // Read through the request's I/O account, when it has one.
        let ds = match lakecache_fleet::account::current() {
            Some(a) => crate::api::io::accounted(ds, &a),
            None => ds,
        };
        let provider = LanceTableProvider::new_with_ordering(ds, false, false, false);
        ctx.register_table(name.as_str(), Arc::new(provider)).map_err(from_datafusion)?;
    }
    let opts = datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let limits = ResultLimits::from(&st.limits);
    let plan = ctx.state().statement_to_plan(statement).await.map_err(sql_error(st))?;
    opts.verify_plan(&plan).map_err(|e| {
        ApiError::bad_request(format!("Only queries are allowed: SQL here is read-only ({})", e.find_root()))
    })?;
    // One row past the limit is enough to know the answer is too large; DataFusion stops
    // reading there.
    // (EXPLAIN must stay the root of its plan; its answer is a few rows anyway.)
    let explain = matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
    let mut df = ctx.execute_logical_plan(plan).await.map_err(sql_error(st))?;
    if !explain {
        df = df.limit(0, Some(limits.max_rows as usize + 1)).map_err(sql_error(st))?;
    }
    let schema = Arc::new(df.schema().as_arrow().clone());
    Ok(Planned { df, schema })
}

/// Every expression and subquery of the statement within the depth limit.
fn check_statement(statement: &DFStatement) -> ApiResult<()> {
    match statement {
        DFStatement::Statement(s) => Ok(crate::engine::expr::check_sql_tree(s.as_ref())?),
        DFStatement::Explain(e) => check_statement(&e.statement),
        // COPY, CREATE EXTERNAL TABLE, RESET: never allowed here, and refused before any
        // of them is planned.
        _ => Err(ApiError::bad_request("Only queries are allowed: SQL here is read-only")),
    }
}

/// DataFusion's error as the API answers it; running out of the shared memory pool names
/// the limit.
pub fn sql_error(st: &AppState) -> impl Fn(DataFusionError) -> ApiError + '_ {
    move |e| {
        if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
            return ApiError::bad_request(format!(
                "The query needs more memory than SQL may use ({}, limits.sql_memory): {}",
                st.limits.sql_memory,
                e.find_root()
            ));
        }
        from_datafusion(e)
    }
}
