//! The REST API: LanceDB's remote protocol (`/v1/table/...`, what `lancedb.connect("db://…")`
//! speaks) plus `POST /v1/sql`. Query results are Arrow IPC files, or JSON rows for clients
//! that send `Accept: application/json`. Every answer carries `phalanx-version` (the
//! protocol level LanceDB clients adapt to) and echoes `x-request-id`; reads of a table
//! carry `x-lancedb-version`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{RecordBatch, RecordBatchIterator};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lance::dataset::WriteMode;
use lance::index::DatasetIndexExt;
use serde::Deserialize;

use crate::engine::query::{self, QueryRequest};
use crate::engine::results::ResultLimits;
use crate::engine::tables::{Freshness, TableRef, Tables};
use crate::error::{ApiError, ApiResult, from_lance};

mod columns;
pub mod flight;
mod info;
pub mod io;
mod ipc;
mod refs;
mod rows;

/// The LanceDB server protocol level this API implements (batched vector queries, the
/// structured full-text query form).
use lakecache_common::metrics::ms_since;

pub const PROTOCOL_VERSION: &str = "0.3.0";
pub const SEARCH_REQUESTS: &str = "searchnode_http_requests_total";
pub const SEARCH_REQUEST_LATENCY: &str = "searchnode_http_request_duration_milliseconds";

pub struct AppState {
    pub tables: Arc<Tables>,
    pub api_keys: Vec<String>,
    pub anonymous: bool,
    pub request_timeout: Duration,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// DataFusion's runtime for SQL: the memory pool every SQL request shares.
    pub sql_runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    pub limits: crate::config::LimitsConfig,
}

type St = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>, max_body: usize) -> Router {
    // Every table route answers with and without the trailing slash.
    let table = |p: &str| [format!("/v1/table/{{id}}/{p}/"), format!("/v1/table/{{id}}/{p}")];
    let mut r = Router::new()
        .route("/v1/table/", get(list_tables))
        .route("/v1/table", get(list_tables))
        .route("/v1/namespace/{ns}/table/list", get(list_namespace))
        .route("/v1/sql", post(crate::engine::sql::sql))
        .route("/v1/sql/", post(crate::engine::sql::sql));
    for p in table("describe") {
        r = r.route(&p, post(describe));
    }
    for p in table("count_rows") {
        r = r.route(&p, post(count_rows));
    }
    for p in table("version/list") {
        r = r.route(&p, post(list_versions));
    }
    for p in table("query") {
        r = r.route(&p, post(run_query));
    }
    for p in table("explain_plan") {
        r = r.route(&p, post(explain_plan));
    }
    for p in table("create") {
        r = r.route(&p, post(create_table));
    }
    for p in table("insert") {
        r = r.route(&p, post(insert));
    }
    for p in table("delete") {
        r = r.route(&p, post(delete_rows));
    }
    for p in table("drop") {
        r = r.route(&p, post(drop_table));
    }
    for p in table("create_index") {
        r = r.route(&p, post(create_index));
    }
    for p in table("index/list") {
        r = r.route(&p, post(list_indices));
    }
    for p in table("index/{name}/stats") {
        r = r.route(&p, post(index_stats));
    }
    for p in table("index/{name}/drop") {
        r = r.route(&p, post(drop_index));
    }
    for p in table("index/{name}/prewarm") {
        r = r.route(&p, post(prewarm_index));
    }
    for p in table("page_cache/prewarm") {
        r = r.route(&p, post(prewarm_pages));
    }
    for p in table("update") {
        r = r.route(&p, post(rows::update));
    }
    for p in table("merge_insert") {
        r = r.route(&p, post(rows::merge_insert));
    }
    for p in table("add_columns") {
        r = r.route(&p, post(columns::add_columns));
    }
    for p in table("alter_columns") {
        r = r.route(&p, post(columns::alter_columns));
    }
    for p in table("drop_columns") {
        r = r.route(&p, post(columns::drop_columns));
    }
    for p in table("restore") {
        r = r.route(&p, post(refs::restore));
    }
    for p in table("tags/list") {
        r = r.route(&p, post(refs::list_tags));
    }
    for p in table("tags/version") {
        r = r.route(&p, post(refs::tag_version));
    }
    for p in table("tags/create") {
        r = r.route(&p, post(refs::create_tag));
    }
    for p in table("tags/update") {
        r = r.route(&p, post(refs::update_tag));
    }
    for p in table("tags/delete") {
        r = r.route(&p, post(refs::delete_tag));
    }
    for p in table("rename") {
        r = r.route(&p, post(refs::rename));
    }
    for p in table("stats") {
        r = r.route(&p, post(info::stats));
    }
    for p in table("analyze_plan") {
        r = r.route(&p, post(info::analyze_plan));
    }
    r.fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// A path no route takes. Under a table it is a call this server does not implement: 501,
/// never 404, which LanceDB clients report as "Table '…' was not found".
async fn not_found(req: Request) -> ApiError {
    let path = req.uri().path();
    let under_table =
        path.strip_prefix("/v1/table/").is_some_and(|rest| rest.trim_end_matches('/').contains('/'));
    if under_table {
        return ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("{} {path} is not implemented by this server", req.method()),
        );
    }
    ApiError::not_found(format!("No such endpoint: {} {path}", req.method()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    lakecache_common::auth::constant_time_eq(a, b)
}

/// API key check, request deadline, protocol headers and request metrics.
async fn guard(State(st): St, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req.headers().get("x-request-id").cloned();
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            req.headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::to_string);
    let client_deadline = req
        .headers()
        .get("x-request-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis);
    let route = route_label(req.uri().path());
    let refused = match key {
        Some(k) if st.api_keys.iter().any(|a| constant_time_eq(a.as_bytes(), k.as_bytes())) => None,
        None if st.anonymous => None,
        Some(_) => Some("Invalid API key"),
        None => Some("Missing API key: send it in the x-api-key header"),
    };
    let resp = match refused {
        Some(message) => ApiError::new(StatusCode::UNAUTHORIZED, message).into_response(),
        None => {
            let limit = client_deadline.map_or(st.request_timeout, |c| c.min(st.request_timeout));
            match tokio::time::timeout(limit, next.run(req)).await {
                Ok(r) => r,
                Err(_) if client_deadline.is_some_and(|c| c <= st.request_timeout) => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "The request did not finish within its x-request-timeout-ms ({} ms)",
                        limit.as_millis()
                    ),
                )
                .into_response(),
                Err(_) => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "The request did not finish within the server's limit ({} ms)",
                        limit.as_millis()
                    ),
                )
                .into_response(),
            }
        }
    };
    let mut resp = json_error(resp).await;
    let h = resp.headers_mut();
    h.insert("phalanx-version", HeaderValue::from_static(PROTOCOL_VERSION));
    if let Some(id) = request_id {
        h.insert("x-request-id", id);
    }
    let status = resp.status().as_u16().to_string();
    metrics::counter!(SEARCH_REQUESTS, "route" => route, "status" => status).increment(1);
    metrics::histogram!(SEARCH_REQUEST_LATENCY, "route" => route).record(ms_since(started));
    resp
}

/// Errors axum answers on its own (a body over `max_body`, a body that stalled, a bad path
/// parameter) are plain text; every error of this API is JSON `{"message"}`.
async fn json_error(resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(resp.status().is_client_error() || resp.status().is_server_error()) || is_json {
        return resp;
    }
    let status = resp.status();
    let text = match axum::body::to_bytes(resp.into_body(), 16 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message =
        if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    ApiError::new(status, message).into_response()
}

/// A fixed label per endpoint (the path holds table names).
fn route_label(path: &str) -> &'static str {
    let p = path.trim_end_matches('/');
    const ENDS: [(&str, &str); 28] = [
        ("/tags/list", "tags_list"),
        ("/tags/version", "tags_version"),
        ("/tags/create", "tags_create"),
        ("/tags/update", "tags_update"),
        ("/tags/delete", "tags_delete"),
        ("/update", "update"),
        ("/merge_insert", "merge_insert"),
        ("/add_columns", "add_columns"),
        ("/alter_columns", "alter_columns"),
        ("/drop_columns", "drop_columns"),
        ("/restore", "restore"),
        ("/rename", "rename"),
        ("/analyze_plan", "analyze_plan"),
        ("/describe", "describe"),
        ("/count_rows", "count_rows"),
        ("/version/list", "version_list"),
        ("/query", "query"),
        ("/explain_plan", "explain_plan"),
        ("/create", "create"),
        ("/insert", "insert"),
        ("/delete", "delete"),
        ("/create_index", "create_index"),
        ("/index/list", "index_list"),
        ("/stats", "index_stats"),
        ("/prewarm", "prewarm"),
        ("/drop", "drop"),
        ("/table/list", "list_tables"),
        ("/v1/sql", "sql"),
    ];
    if p == "/v1/table" {
        return "list_tables";
    }
    if p.ends_with("/stats") && !p.contains("/index/") {
        return "table_stats";
    }
    ENDS.iter().find(|(e, _)| p.ends_with(e)).map_or("other", |(_, l)| l)
}

/// A JSON body, or the default when the body is empty (LanceDB sends none on some calls).
fn body_json<T: for<'a> Deserialize<'a> + Default>(b: &Bytes) -> ApiResult<T> {
    if b.iter().all(u8::is_ascii_whitespace) || b.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))
}

/// The freshness a request asks for: `x-lancedb-min-version` / `x-lancedb-min-read-version`
/// (the newest it names) and `x-lancedb-min-timestamp` (RFC 3339; one that does not parse
/// is refused rather than ignored, as ignoring it would serve staler data than asked).
fn freshness(h: &HeaderMap) -> ApiResult<Freshness> {
    let min_version = ["x-lancedb-min-version", "x-lancedb-min-read-version"]
        .iter()
        .filter_map(|n| h.get(*n).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()))
        .max();
    let checked_since = match h.get("x-lancedb-min-timestamp") {
        None => None,
        Some(v) => {
            let text = v.to_str().unwrap_or("");
            let t = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|e| {
                ApiError::bad_request(format!(
                    "x-lancedb-min-timestamp {text:?} is not an RFC 3339 time: {e}"
                ))
            })?;
            Some(std::time::SystemTime::from(t.with_timezone(&chrono::Utc)))
        }
    };
    Ok(Freshness { min_version, checked_since })
}

#[derive(Deserialize, Default)]
struct VersionBody {
    version: Option<u64>,
}

/// A table about to be written: its reference, this node's write lock on it (held until the
/// guard drops), and its current version, at least as new as the client has seen.
pub(crate) struct ForWrite {
    pub t: TableRef,
    pub ds: Arc<lance::Dataset>,
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

pub(crate) async fn for_write(st: &AppState, id: &str, h: &HeaderMap) -> ApiResult<ForWrite> {
    let t = st.tables.resolve(id)?;
    let lock = st.tables.write_lock(&t).lock_owned().await;
    let ds = st.tables.get(&t, None, freshness(h)?).await?;
    Ok(ForWrite { t, ds, _lock: lock })
}

impl ForWrite {
    /// Holds `ds` as the table's new current version and answers `body` with its version.
    pub fn commit(self, st: &AppState, ds: Arc<lance::Dataset>, mut body: serde_json::Value) -> Response {
        let v = ds.version_id();
        if let Some(o) = body.as_object_mut() {
            o.insert("version".into(), serde_json::json!(v));
        }
        st.tables.put(&self.t, ds);
        with_version(json(body), v)
    }
}

async fn table_at(
    st: &AppState,
    id: &str,
    version: Option<u64>,
    h: &HeaderMap,
) -> ApiResult<(TableRef, Arc<lance::Dataset>)> {
    let t = st.tables.resolve(id)?;
    let fresh = if version.is_some() { Freshness::default() } else { freshness(h)? };
    let ds = st.tables.get(&t, version, fresh).await?;
    Ok((t, ds))
}

fn with_version(mut r: Response, v: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
        r.headers_mut().insert("x-lancedb-version", v);
    }
    r
}

fn json(v: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<usize>,
    page_token: Option<String>,
}

fn page(names: Vec<String>, p: &ListParams) -> serde_json::Value {
    let start = p.page_token.as_deref().filter(|t| !t.is_empty());
    let rest: Vec<String> = names.into_iter().filter(|n| start.is_none_or(|s| n.as_str() > s)).collect();
    let limit = p.limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
    let more = rest.len() > limit;
    let tables: Vec<String> = rest.into_iter().take(limit).collect();
    let token = if more { tables.last().cloned() } else { None };
    serde_json::json!({ "tables": tables, "page_token": token })
}

async fn list_tables(State(st): St, Query(p): Query<ListParams>) -> ApiResult<Response> {
    Ok(json(page(st.tables.list("").await?, &p)))
}

async fn list_namespace(
    State(st): St,
    Path(ns): Path<String>,
    Query(p): Query<ListParams>,
) -> ApiResult<Response> {
    let ns = if ns == "$" { String::new() } else { ns };
    Ok(json(page(st.tables.list(&ns).await?, &p)))
}

async fn describe(State(st): St, Path(id): Path<String>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    let body: VersionBody = body_json(&b)?;
    let (t, ds) = table_at(&st, &id, body.version, &h).await?;
    let arrow = arrow_schema::Schema::from(ds.schema());
    let schema = lance::arrow::json::JsonSchema::try_from(&arrow).map_err(|e| from_lance(e, &t.id))?;
    let rows = ds.count_rows(None).await.map_err(|e| from_lance(e, &t.id))?;
    let indices = ds.describe_indices(None).await.map_err(|e| from_lance(e, &t.id))?;
    let v = serde_json::json!({
        "table": t.name,
        "version": ds.version_id(),
        "schema": schema,
        "location": t.uri,
        "stats": { "num_rows": rows, "num_fragments": ds.count_fragments(), "num_indices": indices.len() },
    });
    Ok(with_version(json(v), ds.version_id()))
}

#[derive(Deserialize, Default)]
struct CountBody {
    predicate: Option<String>,
    filter: Option<String>,
    version: Option<u64>,
}

async fn count_rows(State(st): St, Path(id): Path<String>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    let body: CountBody = body_json(&b)?;
    let filter = body.predicate.or(body.filter).filter(|f| !f.trim().is_empty());
    if let Some(f) = &filter {
        crate::engine::expr::check_expression("predicate", f)?;
    }
    let acct = io::account(&h, false, None)?;
    let t = st.tables.resolve(&id)?;
    let res = lakecache_fleet::account::scope(acct.clone(), async {
        let (_, ds) = table_at(&st, &id, body.version, &h).await?;
        let ds = io::accounted(ds, &acct);
        let n = ds.count_rows(filter).await.map_err(|e| from_lance(e, &t.id))?;
        Ok::<_, ApiError>(with_version(json(serde_json::json!(n)), ds.version_id()))
    })
    .await
    .map_err(|e| io::refusal_or(e, &acct, &t.id));
    Ok(io::with_io(res.unwrap_or_else(IntoResponse::into_response), &t.id, &acct))
}

async fn list_versions(State(st): St, Path(id): Path<String>, h: HeaderMap) -> ApiResult<Response> {
    let (t, ds) = table_at(&st, &id, None, &h).await?;
    let versions = ds.versions().await.map_err(|e| from_lance(e, &t.id))?;
    let v: Vec<serde_json::Value> = versions
        .iter()
        .map(|v| {
            serde_json::json!({
                "version": v.version,
                "timestamp": v.timestamp.to_rfc3339(),
                "metadata": v.metadata,
            })
        })
        .collect();
    Ok(with_version(json(serde_json::json!({ "versions": v })), ds.version_id()))
}

async fn run_query(State(st): St, Path(id): Path<String>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    let started = Instant::now();
    let q: QueryRequest =
        serde_json::from_slice(&b).map_err(|e| ApiError::bad_request(format!("Invalid query body: {e}")))?;
    let kind = query::kind(&q);
    let acct = io::account(&h, q.cache_only, q.max_origin_requests)?;
    let t = st.tables.resolve(&id)?;
    let res = lakecache_fleet::account::scope(acct.clone(), async {
        let (_, ds) = table_at(&st, &id, q.version, &h).await?;
        let version = ds.version_id();
        let answer =
            query::run(io::accounted(ds, &acct), &q, &t.id, &h, ResultLimits::from(&st.limits)).await?;
        Ok::<_, ApiError>((answer, version))
    })
    .await
    .map_err(|e| io::refusal_or(e, &acct, &t.id));
    let outcome = if res.is_ok() { "ok" } else { "error" };
    metrics::counter!(query::SEARCH_QUERIES, "table" => t.id.clone(), "kind" => kind, "outcome" => outcome)
        .increment(1);
    let (answer, version) = match res {
        Ok(a) => a,
        Err(e) => return Ok(io::with_io(e.into_response(), &t.id, &acct)),
    };
    metrics::histogram!(query::SEARCH_QUERY_LATENCY, "table" => t.id.clone(), "kind" => kind)
        .record(ms_since(started));
    metrics::histogram!(query::SEARCH_RESULT_ROWS, "table" => t.id.clone(), "kind" => kind)
        .record(answer.rows() as f64);
    let io_field = q.with_io.then(|| acct.snapshot());
    Ok(io::with_io(with_version(answer.finish_with(io_field)?, version), &t.id, &acct))
}

#[derive(Deserialize)]
struct ExplainBody {
    #[serde(default)]
    verbose: bool,
    query: QueryRequest,
}

async fn explain_plan(State(st): St, Path(id): Path<String>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    let body: ExplainBody = serde_json::from_slice(&b)
        .map_err(|e| ApiError::bad_request(format!("Invalid explain body: {e}")))?;
    let (t, ds) = table_at(&st, &id, body.query.version, &h).await?;
    let view = query::PlanView::Explain { verbose: body.verbose };
    let plan = query::plan_text(ds, &body.query, &t.id, view, &ResultLimits::from(&st.limits)).await?;
    Ok(json(serde_json::json!(plan)))
}

/// An Arrow IPC stream body, within `[limits] max_decoded_body` once decompressed.
fn ipc_batches(st: &AppState, b: &Bytes) -> ApiResult<(arrow_schema::SchemaRef, Vec<RecordBatch>)> {
    ipc::batches(b, st.limits.max_decoded_body.as_u64())
}

#[derive(Deserialize)]
struct ModeParam {
    mode: Option<String>,
}

async fn create_table(
    State(st): St,
    Path(id): Path<String>,
    Query(m): Query<ModeParam>,
    b: Bytes,
) -> ApiResult<Response> {
    let t = st.tables.resolve(&id)?;
    let (schema, batches) = ipc_batches(&st, &b)?;
    let mode = m.mode.as_deref().unwrap_or("create");
    let lock = st.tables.write_lock(&t);
    let _g = lock.lock().await;
    let write_mode = match mode {
        "create" | "exist_ok" => WriteMode::Create,
        "overwrite" => WriteMode::Overwrite,
        other => {
            return Err(ApiError::bad_request(format!(
                "Unknown mode {other:?}: expected create, exist_ok or overwrite"
            )));
        }
    };
    let reader = RecordBatchIterator::new(batches.into_iter().map(Ok::<_, arrow_schema::ArrowError>), schema);
    let res = lance::Dataset::write(reader, t.uri.as_str(), Some(st.tables.write_params(write_mode))).await;
    let ds = match res {
        Ok(ds) => Arc::new(ds),
        Err(lance::Error::DatasetAlreadyExists { .. }) if mode == "exist_ok" => {
            st.tables.get(&t, None, Freshness::default()).await?
        }
        Err(e) => return Err(from_lance(e, &t.id)),
    };
    let v = ds.version_id();
    st.tables.put(&t, ds);
    Ok(with_version(json(serde_json::json!({ "version": v })), v))
}

async fn insert(
    State(st): St,
    Path(id): Path<String>,
    Query(m): Query<ModeParam>,
    h: HeaderMap,
    b: Bytes,
) -> ApiResult<Response> {
    let (schema, batches) = ipc_batches(&st, &b)?;
    let write_mode = match m.mode.as_deref() {
        None | Some("append") => WriteMode::Append,
        Some("overwrite") => WriteMode::Overwrite,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Unknown mode {other:?}: expected append or overwrite"
            )));
        }
    };
    // The table must exist (LanceDB's insert does not create).
    let w = for_write(&st, &id, &h).await?;
    check_schema(&schema, &w.ds)?;
    let ds = lance::dataset::InsertBuilder::new(w.ds.clone())
        .with_params(&st.tables.write_params(write_mode))
        .execute(batches)
        .await
        .map_err(|e| from_lance(e, &w.t.id))?;
    Ok(w.commit(&st, Arc::new(ds), serde_json::json!({})))
}

/// Rows to append must carry the table's columns (lance would say so too, less plainly).
fn check_schema(incoming: &arrow_schema::Schema, ds: &lance::Dataset) -> ApiResult<()> {
    let table = arrow_schema::Schema::from(ds.schema());
    for f in incoming.fields() {
        if table.field_with_name(f.name()).is_err() {
            return Err(ApiError::bad_request(format!("Column '{}' is not in the table", f.name())));
        }
    }
    Ok(())
}

#[derive(Deserialize, Default)]
struct DeleteBody {
    predicate: String,
}

async fn delete_rows(State(st): St, Path(id): Path<String>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    let body: DeleteBody = body_json(&b)?;
    if body.predicate.trim().is_empty() {
        return Err(ApiError::bad_request("delete needs a predicate"));
    }
    // lance would delete by whatever prefix of the predicate parses.
    crate::engine::expr::check_expression("delete predicate", &body.predicate)?;
    let w = for_write(&st, &id, &h).await?;
    let mut ds = (*w.ds).clone();
    let r = ds.delete(&body.predicate).await.map_err(|e| from_lance(e, &w.t.id))?;
    Ok(w.commit(&st, r.new_dataset, serde_json::json!({ "num_deleted_rows": r.num_deleted_rows })))
}

async fn drop_table(State(st): St, Path(id): Path<String>) -> ApiResult<Response> {
    let t = st.tables.resolve(&id)?;
    let lock = st.tables.write_lock(&t);
    let _g = lock.lock().await;
    if !st.tables.drop_table(&t).await? {
        return Err(ApiError::table_not_found(&t.id));
    }
    Ok(json(serde_json::json!({})))
}

async fn create_index(State(st): St, Path(id): Path<String>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    let body: serde_json::Value =
        serde_json::from_slice(&b).map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
    let w = for_write(&st, &id, &h).await?;
    let mut ds = (*w.ds).clone();
    let name = crate::engine::index::create(&mut ds, &body, &w.t.id).await?;
    Ok(w.commit(&st, Arc::new(ds), serde_json::json!({ "name": name })))
}

async fn list_indices(State(st): St, Path(id): Path<String>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    let body: VersionBody = body_json(&b)?;
    let (t, ds) = table_at(&st, &id, body.version, &h).await?;
    let list = crate::engine::index::list(&ds, &t.id).await?;
    Ok(with_version(json(serde_json::json!({ "indexes": list })), ds.version_id()))
}

async fn index_stats(
    State(st): St,
    Path((id, name)): Path<(String, String)>,
    h: HeaderMap,
    b: Bytes,
) -> ApiResult<Response> {
    let body: VersionBody = body_json(&b)?;
    let (t, ds) = table_at(&st, &id, body.version, &h).await?;
    let stats = crate::engine::index::stats(&ds, &name, &t.id).await?;
    Ok(with_version(json(stats), ds.version_id()))
}

async fn drop_index(
    State(st): St,
    Path((id, name)): Path<(String, String)>,
    h: HeaderMap,
) -> ApiResult<Response> {
    let w = for_write(&st, &id, &h).await?;
    let mut ds = (*w.ds).clone();
    ds.drop_index(&name).await.map_err(|e| from_lance(e, &w.t.id))?;
    Ok(w.commit(&st, Arc::new(ds), serde_json::json!({})))
}

/// Pins the index's files on the fleet, reads them onto their owners, and loads the index
/// into this node's index cache.
async fn prewarm_index(
    State(st): St,
    Path((id, name)): Path<(String, String)>,
    h: HeaderMap,
) -> ApiResult<Response> {
    let (t, ds) = table_at(&st, &id, None, &h).await?;
    let segments = ds.load_indices_by_name(&name).await.map_err(|e| from_lance(e, &t.id))?;
    if segments.is_empty() {
        return Err(ApiError::not_found(format!("Index '{name}' was not found on table '{}'", t.id)));
    }
    let (mut objects, mut bytes) = (0, 0);
    for s in &segments {
        let glob = format!("{}/_indices/{}/**", t.key, s.uuid);
        let (o, b) = st.tables.stores.pin_and_prewarm(&t.bucket, &glob).await.map_err(ApiError::internal)?;
        objects += o;
        bytes += b;
    }
    ds.prewarm_index(&name).await.map_err(|e| from_lance(e, &t.id))?;
    Ok(json(serde_json::json!({ "index": name, "pinned_objects": objects, "pinned_bytes": bytes })))
}

/// Pins the table's data files (and its manifests) on the fleet and reads them onto
/// their owners.
async fn prewarm_pages(State(st): St, Path(id): Path<String>, h: HeaderMap) -> ApiResult<Response> {
    let (t, _ds) = table_at(&st, &id, None, &h).await?;
    let mut objects = 0;
    let mut bytes = 0;
    for sub in ["data", "_versions", "_deletions"] {
        let (o, b) = st
            .tables
            .stores
            .pin_and_prewarm(&t.bucket, &format!("{}/{sub}/**", t.key))
            .await
            .map_err(ApiError::internal)?;
        objects += o;
        bytes += b;
    }
    Ok(json(serde_json::json!({ "pinned_objects": objects, "pinned_bytes": bytes })))
}
