//! What a table is made of, and what a query did: `stats` (bytes, rows, indices, fragment
//! sizes, in the integer-only form the LanceDB client parses) and `analyze_plan` (the query
//! run once, its plan with the metrics each operator recorded).
//!
//! Owns: those two answers. Does not own: query construction (`engine::query`).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use lance::index::DatasetIndexExt;
use serde::Deserialize;

use super::{St, VersionBody, body_json, json, table_at, with_version};
use crate::engine::query::{self, QueryRequest};
use crate::engine::results::ResultLimits;
use crate::error::{ApiError, ApiResult, from_lance};

/// A fragment with fewer rows than this is one compaction would merge (LanceDB's rule).
pub const SMALL_FRAGMENT_ROWS: usize = 100_000;

/// min, max, mean and percentiles of fragment lengths; a percentile is the length at rank
/// ⌊p·n⌋ of the sorted lengths, the mean is rounded down, all zero without fragments.
fn length_summary(mut lengths: Vec<usize>) -> serde_json::Value {
    lengths.sort_unstable();
    let n = lengths.len();
    let at = |p: f64| -> usize {
        if n == 0 {
            return 0;
        }
        let i = ((p * n as f64).floor() as usize).min(n - 1);
        lengths[i]
    };
    let total: usize = lengths.iter().sum();
    serde_json::json!({
        "min": lengths.first().copied().unwrap_or(0),
        "max": lengths.last().copied().unwrap_or(0),
        "mean": total.checked_div(n).unwrap_or(0),
        "p25": at(0.25),
        "p50": at(0.5),
        "p75": at(0.75),
        "p99": at(0.99),
    })
}

/// `POST /v1/table/{id}/stats/`.
pub async fn stats(State(st): St, Path(id): Path<String>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    let body: VersionBody = body_json(&b)?;
    let (t, ds) = table_at(&st, &id, body.version, &h).await?;
    let le = |e: lance::Error| from_lance(e, &t.id);
    let mut lengths = Vec::new();
    let mut total_bytes = 0u64;
    for frag in ds.get_fragments() {
        lengths.push(frag.count_rows(None).await.map_err(le)?);
        for file in &frag.metadata().files {
            total_bytes += match file.file_size_bytes.get() {
                Some(n) => n.get(),
                // Files written before lance recorded sizes: ask the store.
                None => {
                    let store = ds.object_store(file.base_id).await.map_err(le)?;
                    store.size(&ds.data_dir().clone().join(file.path.as_str())).await.map_err(le)?
                }
            };
        }
    }
    let num_rows: usize = lengths.iter().sum();
    let small = lengths.iter().filter(|&&n| n < SMALL_FRAGMENT_ROWS).count();
    let indices = ds.describe_indices(None).await.map_err(le)?;
    let v = serde_json::json!({
        "total_bytes": total_bytes,
        "num_rows": num_rows,
        "num_indices": indices.len(),
        "fragment_stats": {
            "num_fragments": lengths.len(),
            "num_small_fragments": small,
            "lengths": length_summary(lengths),
        },
    });
    Ok(with_version(json(v), ds.version_id()))
}

#[derive(Deserialize)]
pub struct AnalyzeParams {
    distributed_metrics: Option<String>,
}

/// `POST /v1/table/{id}/analyze_plan/[?distributed_metrics=…]`: the body is a query body.
/// One node runs the whole query, so every form of metrics is the same one.
pub async fn analyze_plan(
    State(st): St,
    Path(id): Path<String>,
    Query(p): Query<AnalyzeParams>,
    h: HeaderMap,
    b: Bytes,
) -> ApiResult<Response> {
    if let Some(m) = p.distributed_metrics.as_deref()
        && !matches!(m, "aggregate" | "per_worker" | "full")
    {
        return Err(ApiError::bad_request(format!(
            "distributed_metrics: expected aggregate, per_worker or full, got {m:?}"
        )));
    }
    let q: QueryRequest =
        serde_json::from_slice(&b).map_err(|e| ApiError::bad_request(format!("Invalid query body: {e}")))?;
    let (t, ds) = table_at(&st, &id, q.version, &h).await?;
    let limits = ResultLimits::from(&st.limits);
    let plan = query::plan_text(ds, &q, &t.id, query::PlanView::Analyze, &limits).await?;
    Ok(json(serde_json::json!(plan)))
}

#[cfg(test)]
mod tests {
    use super::length_summary;

    #[test]
    fn fragment_lengths_summarise_as_lancedb_does() {
        // Both cases checked against lancedb 0.40's stats() on a local table.
        assert_eq!(
            length_summary(vec![1000, 5, 300]),
            serde_json::json!({"min": 5, "max": 1000, "mean": 435, "p25": 5, "p50": 300, "p75": 1000, "p99": 1000})
        );
        assert_eq!(
            length_summary((1..=11).collect()),
            serde_json::json!({"min": 1, "max": 11, "mean": 6, "p25": 3, "p50": 6, "p75": 9, "p99": 11})
        );
        assert_eq!(
            length_summary(vec![]),
            serde_json::json!({"min": 0, "max": 0, "mean": 0, "p25": 0, "p50": 0, "p75": 0, "p99": 0})
        );
    }
}
