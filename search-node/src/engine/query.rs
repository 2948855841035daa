//! `POST /v1/table/{id}/query/`: the LanceDB query body turned into a lance scan —
//! vector search (one vector or a batch), full-text search (the plain `{columns, query}`
//! form and the structured query form), or a filtered scan with limit, offset and order.
//! Hybrid search is two of these fused by the client, as LanceDB's remote protocol does.

use std::sync::Arc;

use arrow_array::{Array, FixedSizeListArray, Float32Array, RecordBatch};
use arrow_schema::{DataType, Field};
use axum::http::HeaderMap;
use lance::dataset::Dataset;
use lance::dataset::scanner::ColumnOrdering;
use lance_index::scalar::FullTextSearchQuery;
use lance_index::scalar::inverted::query::FtsQuery;
use lance_io::stream::RecordBatchStream;
use lance_linalg::distance::DistanceType;
use serde::Deserialize;

use crate::engine::results::{ResultLimits, ResultWriter};
use crate::error::{ApiError, ApiResult, from_lance};

pub const SEARCH_QUERIES: &str = "searchnode_query_requests_total";
pub const SEARCH_QUERY_LATENCY: &str = "searchnode_query_duration_milliseconds";
pub const SEARCH_RESULT_ROWS: &str = "searchnode_query_result_rows";

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct OrderBy {
    pub column_name: String,
    #[serde(default = "yes")]
    pub ascending: bool,
    #[serde(default)]
    pub nulls_first: bool,
}

#[derive(Debug, Deserialize, Clone)]
pub struct QueryRequest {
    #[serde(default)]
    pub vector: serde_json::Value,
    pub k: Option<u64>,
    pub offset: Option<u64>,
    pub filter: Option<String>,
    #[serde(default = "yes")]
    pub prefilter: bool,
    pub columns: Option<serde_json::Value>,
    #[serde(default)]
    pub with_row_id: bool,
    #[serde(default)]
    pub fast_search: bool,
    pub nprobes: Option<usize>,
    pub minimum_nprobes: Option<usize>,
    pub maximum_nprobes: Option<usize>,
    pub refine_factor: Option<u32>,
    pub ef: Option<usize>,
    pub distance_type: Option<String>,
    pub vector_column: Option<String>,
    #[serde(default)]
    pub bypass_vector_index: bool,
    pub lower_bound: Option<f32>,
    pub upper_bound: Option<f32>,
    pub full_text_query: Option<serde_json::Value>,
    pub version: Option<u64>,
    pub order_by: Option<Vec<OrderBy>>,
    /// Hybrid queries (both `vector` and `full_text_query`): the k of reciprocal rank fusion.
    pub rrf_k: Option<f32>,
    /// lakecache's own: served only from what the fleet holds (a budget of 0 origin
    /// requests), or at most this many origin requests; see `api::io`.
    #[serde(default)]
    pub cache_only: bool,
    pub max_origin_requests: Option<u64>,
    /// A JSON answer as `{"rows": [...], "io": {...}}` with the query's I/O account.
    #[serde(default)]
    pub with_io: bool,
}

/// What kind of query a body is (a metric label).
/// The values of label `kind`.
pub const KINDS: [&str; 4] = ["vector", "fts", "hybrid", "scan"];

pub fn kind(q: &QueryRequest) -> &'static str {
    let vector = q.vector.as_array().is_some_and(|v| !v.is_empty());
    match (vector, q.full_text_query.is_some()) {
        (true, true) => "hybrid",
        (false, true) => "fts",
        (true, false) => "vector",
        (false, false) => "scan",
    }
}

pub fn distance_type(s: &str) -> ApiResult<DistanceType> {
    match s.to_ascii_lowercase().as_str() {
        "l2" | "euclidean" => Ok(DistanceType::L2),
        "cosine" => Ok(DistanceType::Cosine),
        "dot" => Ok(DistanceType::Dot),
        "hamming" => Ok(DistanceType::Hamming),
        other => Err(ApiError::bad_request(format!(
            "Unknown distance_type {other:?}: expected l2, cosine, dot or hamming"
        ))),
    }
}

/// The vector column: the one named, or the table's only vector column.
fn vector_column(ds: &Dataset, named: Option<&str>) -> ApiResult<(String, usize)> {
    let schema = arrow_schema::Schema::from(ds.schema());
    let dim_of = |f: &Field| -> Option<usize> {
        match f.data_type() {
            DataType::FixedSizeList(item, n)
                if item.data_type().is_floating() || *item.data_type() == DataType::UInt8 =>
            {
                Some(*n as usize)
            }
            DataType::List(inner) | DataType::LargeList(inner) => match inner.data_type() {
                DataType::FixedSizeList(item, n) if item.data_type().is_floating() => Some(*n as usize),
                _ => None,
            },
            _ => None,
        }
    };
    if let Some(name) = named {
        let f = schema
            .field_with_name(name)
            .map_err(|_| ApiError::bad_request(format!("Column '{name}' does not exist in the table")))?;
        let dim = dim_of(f).ok_or_else(|| {
            ApiError::bad_request(format!("Column '{name}' is not a vector column ({})", f.data_type()))
        })?;
        return Ok((name.to_string(), dim));
    }
    let candidates: Vec<(String, usize)> =
        schema.fields().iter().filter_map(|f| dim_of(f).map(|d| (f.name().clone(), d))).collect();
    match candidates.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ApiError::bad_request("The table has no vector column")),
        many => Err(ApiError::bad_request(format!(
            "The table has several vector columns ({}): name one with vector_column",
            many.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn floats(v: &[serde_json::Value]) -> ApiResult<Vec<f32>> {
    v.iter()
        .map(|x| {
            x.as_f64().map(|f| f as f32).ok_or_else(|| ApiError::bad_request("vector: expected numbers"))
        })
        .collect()
}

/// The query vector(s) as lance wants them: one Float32Array, or a FixedSizeList of them
/// (a batch of queries, answered with a `query_index` column).
fn query_array(v: &serde_json::Value, dim: usize, column: &str) -> ApiResult<Option<Arc<dyn Array>>> {
    let Some(items) = v.as_array() else {
        return if v.is_null() {
            Ok(None)
        } else {
            Err(ApiError::bad_request("vector: expected a list of numbers"))
        };
    };
    if items.is_empty() {
        return Ok(None);
    }
    let wrong = |n: usize| {
        ApiError::bad_request(format!(
            "The query vector has dimension {n} but column '{column}' holds vectors of dimension {dim}"
        ))
    };
    if items[0].is_array() {
        // Grown as the vectors check out rather than sized from the count: a body of many
        // empty lists must not reserve count × dim floats.
        let mut flat = Vec::new();
        for q in items {
            let q = floats(
                q.as_array().ok_or_else(|| ApiError::bad_request("vector: mixed lists and numbers"))?,
            )?;
            if q.len() != dim {
                return Err(wrong(q.len()));
            }
            flat.extend(q);
        }
        if items.len() == 1 {
            return Ok(Some(Arc::new(Float32Array::from(flat))));
        }
        let field = Arc::new(Field::new("item", DataType::Float32, true));
        let list = FixedSizeListArray::try_new(field, dim as i32, Arc::new(Float32Array::from(flat)), None)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        return Ok(Some(Arc::new(list)));
    }
    let q = floats(items)?;
    if q.len() != dim {
        return Err(wrong(q.len()));
    }
    Ok(Some(Arc::new(Float32Array::from(q))))
}

/// The query vector(s) in the column's element type. JSON carries numbers, and LanceDB's
/// client sends every vector as floats, so a binary (`UInt8`) column's query arrives as
/// floats holding whole numbers 0..=255: those are cast, anything else is refused.
fn as_column_type(ds: &Dataset, column: &str, arr: Arc<dyn Array>) -> ApiResult<Arc<dyn Array>> {
    let item = ds.schema().field(column).and_then(|f| match f.data_type() {
        DataType::FixedSizeList(item, _) => Some(item.data_type().clone()),
        _ => None,
    });
    if item != Some(DataType::UInt8) {
        return Ok(arr);
    }
    let values: &Float32Array = match arr.as_any().downcast_ref::<FixedSizeListArray>() {
        Some(list) => list.values().as_any().downcast_ref(),
        None => arr.as_any().downcast_ref(),
    }
    .ok_or_else(|| ApiError::internal("query vector is not Float32"))?;
    if let Some(bad) = values.values().iter().find(|x| !(x.fract() == 0.0 && (0.0..=255.0).contains(*x))) {
        return Err(ApiError::bad_request(format!(
            "Column '{column}' holds UInt8 vectors: query values must be whole numbers from 0 to 255, got {bad}"
        )));
    }
    let target = match arr.data_type() {
        DataType::FixedSizeList(_, n) => {
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::UInt8, true)), *n)
        }
        _ => DataType::UInt8,
    };
    arrow::compute::cast(&arr, &target).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The full-text query of either body form.
fn fts_query(v: &serde_json::Value) -> ApiResult<FullTextSearchQuery> {
    let bad = |m: String| ApiError::bad_request(format!("full_text_query: {m}"));
    match v.get("query") {
        Some(serde_json::Value::String(text)) => {
            let q = FullTextSearchQuery::new(text.clone());
            let columns: Vec<String> = match v.get("columns") {
                Some(c) if !c.is_null() => {
                    serde_json::from_value(c.clone()).map_err(|e| bad(e.to_string()))?
                }
                _ => Vec::new(),
            };
            if columns.is_empty() { Ok(q) } else { q.with_columns(&columns).map_err(|e| bad(e.to_string())) }
        }
        Some(structured) => {
            let q: FtsQuery = serde_json::from_value(structured.clone()).map_err(|e| bad(e.to_string()))?;
            Ok(FullTextSearchQuery::new_query(q))
        }
        None => Err(bad("expected a \"query\"".into())),
    }
}

/// Largest `k + offset` of a vector or full-text search, and largest `k` times the number
/// of query vectors of a batch: the search keeps that many candidates in memory.
pub const MAX_TOP_K: u64 = 100_000;

/// Largest `(k + offset) × refine_factor × query vectors`: lance holds that many candidates
/// (with their distances) to re-rank.
pub const MAX_REFINE_CANDIDATES: u64 = 1_000_000;

/// Largest `ef` (HNSW's search list, allocated up front) and `nprobes` (IVF partitions
/// visited; no index has more).
pub const MAX_EF: u64 = 100_000;
pub const MAX_NPROBES: u64 = 100_000;

/// LanceDB sends i64::MAX as "no limit" for plain scans.
fn explicit_k(q: &QueryRequest) -> Option<u64> {
    q.k.filter(|&k| k < i64::MAX as u64)
}

/// How many query vectors the body holds (a list of lists is a batch).
fn query_count(q: &QueryRequest) -> u64 {
    match q.vector.as_array() {
        Some(items) if items.first().is_some_and(|v| v.is_array()) => items.len() as u64,
        Some(items) if !items.is_empty() => 1,
        _ => 0,
    }
}

/// Refuses, before lance allocates anything, every size of a request lance would allocate
/// from: each product is computed without overflow and named in the message.
fn check_sizes(q: &QueryRequest, limits: &ResultLimits) -> ApiResult<()> {
    let bad = |m: String| Err(ApiError::bad_request(m));
    if q.offset.is_some_and(|o| o > i64::MAX as u64) {
        return bad("offset is too large".into());
    }
    let offset = q.offset.unwrap_or(0);
    if kind(q) == "scan" {
        if let Some(k) = explicit_k(q)
            && k > limits.max_rows
        {
            return bad(format!(
                "k may be at most {} for a plain scan (limits.max_result_rows); page with offset",
                limits.max_rows
            ));
        }
        return Ok(());
    }
    let k = explicit_k(q).unwrap_or(10);
    let wanted = k.checked_add(offset);
    if wanted.is_none_or(|w| w > MAX_TOP_K) {
        return bad(format!("k + offset may be at most {MAX_TOP_K} for vector and full-text search"));
    }
    let wanted = wanted.unwrap_or(u64::MAX);
    let queries = query_count(q).max(1);
    if queries > MAX_TOP_K {
        return bad(format!("A query may hold at most {MAX_TOP_K} query vectors"));
    }
    if k.checked_mul(queries).is_none_or(|n| n > MAX_TOP_K) {
        return bad(format!("k times the number of query vectors ({queries}) may be at most {MAX_TOP_K}"));
    }
    if let Some(r) = q.refine_factor {
        let candidates = wanted.checked_mul(u64::from(r.max(1))).and_then(|n| n.checked_mul(queries));
        if candidates.is_none_or(|n| n > MAX_REFINE_CANDIDATES) {
            return bad(format!(
                "(k + offset) times refine_factor times the number of query vectors may be at most \
                 {MAX_REFINE_CANDIDATES}"
            ));
        }
    }
    if q.ef.is_some_and(|ef| ef as u64 > MAX_EF) {
        return bad(format!("ef may be at most {MAX_EF}"));
    }
    for (name, n) in [
        ("nprobes", q.nprobes),
        ("minimum_nprobes", q.minimum_nprobes),
        ("maximum_nprobes", q.maximum_nprobes),
    ] {
        if n.is_some_and(|n| n as u64 > MAX_NPROBES) {
            return bad(format!("{name} may be at most {MAX_NPROBES}"));
        }
    }
    Ok(())
}

/// Runs a query; returns its answer, encoded as the request asks (see `results`).
pub async fn run(
    ds: Arc<Dataset>,
    q: &QueryRequest,
    table: &str,
    h: &HeaderMap,
    limits: ResultLimits,
) -> ApiResult<ResultWriter> {
    check_sizes(q, &limits)?;
    match kind(q) {
        "hybrid" => {
            let batch = hybrid(ds, q, table, &limits).await?;
            let mut out = ResultWriter::new(h, &batch.schema(), limits)?;
            out.push(&batch)?;
            Ok(out)
        }
        mode => {
            let stream = scanner(ds, q, table, mode, &limits)?
                .try_into_stream()
                .await
                .map_err(|e| from_lance(e, table))?;
            let mut out = ResultWriter::new(h, &stream.schema(), limits)?;
            out.push_stream(stream, |e| from_lance(e, table)).await?;
            Ok(out)
        }
    }
}

/// Vector and full-text search of one body, fused by reciprocal rank (each result's score
/// is the sum over both lists of 1 / (rrf_k + rank), rrf_k = 60 unless given), answered
/// with `_relevance_score` (LanceDB clients fuse on their side; this is for everyone else).
async fn hybrid(
    ds: Arc<Dataset>,
    q: &QueryRequest,
    table: &str,
    limits: &ResultLimits,
) -> ApiResult<RecordBatch> {
    use arrow_array::UInt64Array;
    let k = q.k.filter(|&k| k < i64::MAX as u64).unwrap_or(10);
    let offset = q.offset.unwrap_or(0);
    let rrf_k = q.rrf_k.unwrap_or(60.0);
    if rrf_k.is_nan() || rrf_k < 0.0 {
        return Err(ApiError::bad_request("rrf_k must be a non-negative number"));
    }
    let mut sub = q.clone();
    sub.k = Some(k + offset);
    sub.offset = None;
    sub.with_row_id = true;
    let le = |e: lance::Error| from_lance(e, table);
    let (v, f) = futures::try_join!(
        async { scanner(ds.clone(), &sub, table, "vector", limits)?.try_into_batch().await.map_err(le) },
        async { scanner(ds.clone(), &sub, table, "fts", limits)?.try_into_batch().await.map_err(le) },
    )?;
    // Both answers without their own score, in the same column order, one after the other.
    let strip = |b: &RecordBatch, names: &[String]| -> ApiResult<RecordBatch> {
        let idx: Vec<usize> = names
            .iter()
            .map(|n| b.schema().index_of(n).map_err(|e| ApiError::internal(e.to_string())))
            .collect::<ApiResult<_>>()?;
        b.project(&idx).map_err(|e| ApiError::internal(e.to_string()))
    };
    let names: Vec<String> = v
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != "_distance" && n != "_score" && n != "_relevance_score")
        .collect();
    let (v, f) = (strip(&v, &names)?, strip(&f, &names)?);
    let both = arrow::compute::concat_batches(&v.schema(), [&v, &f])
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let ids = both
        .column_by_name("_rowid")
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        .ok_or_else(|| ApiError::internal("hybrid search lost the row ids"))?;
    let mut score: std::collections::HashMap<u64, f32> = std::collections::HashMap::new();
    let mut first: Vec<(u64, u32)> = Vec::new();
    for (row, id) in ids.values().iter().enumerate() {
        let rank = if row < v.num_rows() { row } else { row - v.num_rows() };
        let s = score.entry(*id).or_insert_with(|| {
            first.push((*id, row as u32));
            0.0
        });
        *s += 1.0 / (rrf_k + rank as f32 + 1.0);
    }
    // Best fused score first; ties keep the order of first appearance (vector results first).
    first.sort_by(|a, b| score[&b.0].total_cmp(&score[&a.0]));
    let picked: Vec<(u64, u32)> = first.into_iter().skip(offset as usize).take(k as usize).collect();
    let take = arrow_array::UInt32Array::from(picked.iter().map(|p| p.1).collect::<Vec<_>>());
    let out =
        arrow::compute::take_record_batch(&both, &take).map_err(|e| ApiError::internal(e.to_string()))?;
    let relevance = Float32Array::from(picked.iter().map(|p| score[&p.0]).collect::<Vec<_>>());
    let mut fields: Vec<Arc<Field>> = out.schema().fields().iter().cloned().collect();
    let mut columns = out.columns().to_vec();
    fields.push(Arc::new(Field::new("_relevance_score", DataType::Float32, false)));
    columns.push(Arc::new(relevance));
    if !q.with_row_id
        && let Some(i) = fields.iter().position(|f| f.name() == "_rowid")
    {
        fields.remove(i);
        columns.remove(i);
    }
    RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The lance scan of one query mode (vector, fts or scan) a body describes.
fn scanner(
    ds: Arc<Dataset>,
    q: &QueryRequest,
    table: &str,
    kind: &str,
    limits: &ResultLimits,
) -> ApiResult<lance::dataset::scanner::Scanner> {
    let le = |e: lance::Error| from_lance(e, table);
    if !(q.vector.is_null() || q.vector.is_array()) {
        return Err(ApiError::bad_request("vector: expected a list of numbers (or a list of such lists)"));
    }
    let mut s = ds.scan();
    let k = explicit_k(q);
    let offset = q.offset.unwrap_or(0);

    let scored = match kind {
        "vector" => Some("_distance"),
        "fts" => Some("_score"),
        _ => None,
    };
    match &q.columns {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(cols)) if cols.iter().all(|c| c.is_string()) => {
            let mut names: Vec<String> = cols.iter().filter_map(|c| c.as_str().map(str::to_string)).collect();
            if let Some(sc) = scored
                && !names.iter().any(|n| n == sc)
            {
                names.push(sc.to_string());
            }
            s.project(&names).map_err(le)?;
        }
        Some(serde_json::Value::Array(pairs)) => {
            // Older clients: [["alias", "sql expression"], ...].
            let mut t: Vec<(String, String)> = Vec::new();
            for p in pairs {
                let pair: (String, String) = serde_json::from_value(p.clone()).map_err(|_| {
                    ApiError::bad_request("columns: expected names or [alias, expression] pairs")
                })?;
                check_projection(&ds, &pair.0, &pair.1)?;
                t.push(pair);
            }
            let refs: Vec<(&str, &str)> = t.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            s.project_with_transform(&refs).map_err(le)?;
        }
        Some(serde_json::Value::Object(map)) => {
            let mut t: Vec<(String, String)> = Vec::new();
            for (alias, expr) in map {
                let e = expr
                    .as_str()
                    .ok_or_else(|| ApiError::bad_request("columns: expressions must be strings"))?;
                check_projection(&ds, alias, e)?;
                t.push((alias.clone(), e.to_string()));
            }
            let refs: Vec<(&str, &str)> = t.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            s.project_with_transform(&refs).map_err(le)?;
        }
        Some(_) => {
            return Err(ApiError::bad_request("columns: expected a list of names or a map of expressions"));
        }
    }

    if let Some(f) = q.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        crate::engine::expr::check_expression("filter", f)?;
        s.filter(f).map_err(le)?;
    }

    match kind {
        "vector" => {
            let (column, dim) = vector_column(&ds, q.vector_column.as_deref())?;
            let arr = query_array(&q.vector, dim, &column)?
                .ok_or_else(|| ApiError::bad_request("vector: empty query vector"))?;
            let arr = as_column_type(&ds, &column, arr)?;
            let k = k.unwrap_or(10);
            if k == 0 {
                return Err(ApiError::bad_request("k must be positive"));
            }
            s.nearest(&column, arr.as_ref(), (k + offset) as usize).map_err(le)?;
            match (q.minimum_nprobes.or(q.nprobes), q.maximum_nprobes) {
                (Some(min), Some(max)) if max > 0 => {
                    if max < min {
                        return Err(ApiError::bad_request(
                            "maximum_nprobes must be at least minimum_nprobes",
                        ));
                    }
                    s.minimum_nprobes(min);
                    s.maximum_nprobes(max);
                }
                (Some(min), _) => {
                    s.minimum_nprobes(min);
                }
                (None, Some(max)) if max > 0 => {
                    s.maximum_nprobes(max);
                }
                _ => {}
            }
            if let Some(r) = q.refine_factor {
                s.refine(r);
            }
            if let Some(ef) = q.ef {
                s.ef(ef);
            }
            if let Some(d) = &q.distance_type {
                s.distance_metric(distance_type(d)?);
            }
            if q.bypass_vector_index {
                s.use_index(false);
            }
            if q.lower_bound.is_some() || q.upper_bound.is_some() {
                s.distance_range(q.lower_bound, q.upper_bound);
            }
            if q.fast_search {
                s.fast_search();
            }
            s.prefilter(q.prefilter);
            // A batch answers k rows per query vector (told apart by query_index).
            let queries = if arr.data_type().is_nested() { arr.len() as u64 } else { 1 };
            if queries > 1 {
                if offset > 0 {
                    return Err(ApiError::bad_request("offset is not supported with several query vectors"));
                }
                s.limit(Some((k * queries) as i64), None).map_err(le)?;
            } else {
                s.limit(Some(k as i64), (offset > 0).then_some(offset as i64)).map_err(le)?;
            }
        }
        "fts" => {
            let fq = fts_query(q.full_text_query.as_ref().unwrap_or(&serde_json::Value::Null))?;
            // lance finds a missing column only while planning, and calls it an index error.
            let mut missing: Vec<String> =
                fq.columns().into_iter().filter(|c| ds.schema().field(c).is_none()).collect();
            if !missing.is_empty() {
                missing.sort();
                return Err(ApiError::bad_request(format!(
                    "full_text_query: column '{}' does not exist in the table",
                    missing.join("', '")
                )));
            }
            s.full_text_search(fq).map_err(le)?;
            if q.fast_search {
                s.fast_search();
            }
            s.prefilter(q.prefilter);
            s.limit(Some(k.unwrap_or(10) as i64), (offset > 0).then_some(offset as i64)).map_err(le)?;
        }
        _ => {
            // Without a k, one row past the answer limit is enough to know it is too large.
            let k = k.unwrap_or(limits.max_rows + 1);
            s.limit(Some(k as i64), (offset > 0).then_some(offset as i64)).map_err(le)?;
            if let Some(order) = &q.order_by {
                let o = order
                    .iter()
                    .map(|o| match (o.ascending, o.nulls_first) {
                        (true, true) => ColumnOrdering::asc_nulls_first(o.column_name.clone()),
                        (true, false) => ColumnOrdering::asc_nulls_last(o.column_name.clone()),
                        (false, true) => ColumnOrdering::desc_nulls_first(o.column_name.clone()),
                        (false, false) => ColumnOrdering::desc_nulls_last(o.column_name.clone()),
                    })
                    .collect();
                s.order_by(Some(o)).map_err(le)?;
            }
        }
    }
    if q.with_row_id {
        s.with_row_id();
    }
    Ok(s)
}

/// A projection expression, unless it names a column as it is (lance takes those as names,
/// whatever characters they hold, without parsing them).
fn check_projection(ds: &Dataset, alias: &str, expr: &str) -> ApiResult<()> {
    if ds.schema().fields.iter().any(|f| f.name.eq_ignore_ascii_case(expr)) {
        return Ok(());
    }
    Ok(crate::engine::expr::check_expression(&format!("column expression '{alias}'"), expr)?)
}

/// The scans a query body runs: hybrid is a vector search and a full-text search.
fn scan_modes(q: &QueryRequest) -> &'static [&'static str] {
    match kind(q) {
        "hybrid" => &["vector", "fts"],
        "vector" => &["vector"],
        "fts" => &["fts"],
        _ => &["scan"],
    }
}

/// What to show of a query's plan.
#[derive(Clone, Copy)]
pub enum PlanView {
    /// The plan it would run (`verbose`: with every operator's details).
    Explain { verbose: bool },
    /// The plan it runs, run once, with the metrics each operator recorded.
    Analyze,
}

/// The plan of each scan a query runs (hybrid: both searches, one after the other).
pub async fn plan_text(
    ds: Arc<Dataset>,
    q: &QueryRequest,
    table: &str,
    view: PlanView,
    limits: &ResultLimits,
) -> ApiResult<String> {
    check_sizes(q, limits)?;
    let mut plans = Vec::new();
    for m in scan_modes(q) {
        let s = scanner(ds.clone(), q, table, m, limits)?;
        let text = match view {
            PlanView::Explain { verbose } => s.explain_plan(verbose).await,
            PlanView::Analyze => s.analyze_plan().await,
        };
        plans.push(text.map_err(|e| from_lance(e, table))?);
    }
    Ok(plans.join("\n"))
}
