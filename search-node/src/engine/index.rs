//! Index management as LanceDB's remote protocol describes it: `create_index` bodies
//! (`{"column", "index_type", "name"?, "replace"?, ...parameters}`), the index list and
//! per-index statistics.

use lance::dataset::Dataset;
use lance::index::DatasetIndexExt;
use lance::index::vector::VectorIndexParams;
use lance_index::IndexType;
use lance_index::scalar::{BuiltinIndexType, InvertedIndexParams, ScalarIndexParams};
use lance_index::vector::bq::RQBuildParams;
use lance_index::vector::hnsw::builder::HnswBuildParams;
use lance_index::vector::ivf::IvfBuildParams;
use lance_index::vector::pq::PQBuildParams;
use lance_index::vector::sq::builder::SQBuildParams;

use crate::engine::query::distance_type;
use crate::error::{ApiError, ApiResult, from_lance};

fn u(body: &serde_json::Value, k: &str) -> ApiResult<Option<usize>> {
    match body.get(k) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| ApiError::bad_request(format!("{k}: expected a non-negative integer"))),
    }
}

/// Bounds of the build parameters lance allocates from: IVF centroids (partitions × dim),
/// PQ codebooks (sub-vectors × 2^bits), HNSW neighbour lists (m per row) and search lists
/// (ef_construction). Past them a build would abort the process on an allocation, or run
/// for ever.
const MAX_PARTITIONS: usize = 65_536;
const MAX_SAMPLE_RATE: usize = 65_536;
const MAX_ITERATIONS: usize = 10_000;
const MAX_NUM_BITS: usize = 8;
const MAX_HNSW_M: usize = 512;
const MAX_EF_CONSTRUCTION: usize = 100_000;

/// `k` of the body, at most `max`.
fn bounded(body: &serde_json::Value, k: &str, max: usize) -> ApiResult<Option<usize>> {
    match u(body, k)? {
        Some(n) if n > max => Err(ApiError::bad_request(format!("{k} may be at most {max}"))),
        other => Ok(other),
    }
}

/// Rows per IVF partition lance aims for when the caller gives no partition count.
fn default_partitions(rows: usize) -> usize {
    (rows / 4096).clamp(1, 4096)
}

/// Creates the index a `create_index` body describes; returns its name.
pub async fn create(ds: &mut Dataset, body: &serde_json::Value, table: &str) -> ApiResult<String> {
    let column = body
        .get("column")
        .and_then(|c| c.as_str())
        .ok_or_else(|| ApiError::bad_request("create_index needs a \"column\""))?
        .to_string();
    let kind = body.get("index_type").and_then(|t| t.as_str()).unwrap_or("AUTO").to_ascii_uppercase();
    let name = body.get("name").and_then(|n| n.as_str()).map(str::to_string);
    let replace = body.get("replace").and_then(|r| r.as_bool()).unwrap_or(true);
    let field = ds.schema().field(&column).ok_or_else(|| {
        ApiError::bad_request(format!("Column '{column}' does not exist in table '{table}'"))
    })?;
    let is_vector = matches!(
        field.data_type(),
        arrow_schema::DataType::FixedSizeList(..) | arrow_schema::DataType::List(..)
    ) && !matches!(kind.as_str(), "LABEL_LIST" | "BITMAP" | "BTREE" | "FTS" | "INVERTED");
    let kind = if kind == "AUTO" {
        if is_vector { "IVF_PQ".to_string() } else { "BTREE".to_string() }
    } else {
        kind
    };
    let metric = distance_type(
        body.get("metric_type")
            .or_else(|| body.get("distance_type"))
            .and_then(|m| m.as_str())
            .unwrap_or("l2"),
    )?;
    let rows = ds.count_rows(None).await.map_err(|e| from_lance(e, table))?;
    // A target partition size (rows per partition) stands for the count it implies.
    let by_size = match u(body, "target_partition_size")? {
        Some(0) => return Err(ApiError::bad_request("target_partition_size must be positive")),
        Some(size) => Some(rows.div_ceil(size).clamp(1, MAX_PARTITIONS)),
        None => None,
    };
    let partitions = bounded(body, "num_partitions", MAX_PARTITIONS)?
        .or(by_size)
        .unwrap_or_else(|| default_partitions(rows));
    let max_iters = bounded(body, "max_iterations", MAX_ITERATIONS)?.unwrap_or(50);
    let sample_rate = bounded(body, "sample_rate", MAX_SAMPLE_RATE)?.unwrap_or(256);
    let ivf = || {
        let mut p = IvfBuildParams::new(partitions);
        p.max_iters = max_iters;
        p.sample_rate = sample_rate;
        p
    };
    let dim = match field.data_type() {
        arrow_schema::DataType::FixedSizeList(_, d) => d as usize,
        _ => 0,
    };
    // lance's rule of thumb: 16 dimensions per sub-vector where that divides evenly.
    let default_sub_vectors = if dim % 16 == 0 && dim >= 16 {
        dim / 16
    } else if dim % 8 == 0 && dim >= 8 {
        dim / 8
    } else {
        1
    };
    let sub_vectors = bounded(body, "num_sub_vectors", dim.max(1))?.unwrap_or(default_sub_vectors);
    let num_bits = bounded(body, "num_bits", MAX_NUM_BITS)?.unwrap_or(8);
    let (edges, ef_construction) =
        (bounded(body, "m", MAX_HNSW_M)?, bounded(body, "ef_construction", MAX_EF_CONSTRUCTION)?);
    let hnsw = || {
        let mut h = HnswBuildParams::default();
        if let Some(m) = edges {
            h = h.num_edges(m);
        }
        if let Some(e) = ef_construction {
            h = h.ef_construction(e);
        }
        h
    };
    let pq = || {
        let mut p = PQBuildParams::new(sub_vectors, num_bits);
        p.max_iters = max_iters;
        p
    };
    let le = |e: lance::Error| from_lance(e, table);
    let cols = [column.as_str()];
    let meta = match kind.as_str() {
        "IVF_PQ" => {
            let p = VectorIndexParams::with_ivf_pq_params(metric, ivf(), pq());
            ds.create_index(&cols, IndexType::IvfPq, name, &p, replace).await
        }
        "IVF_RQ" => {
            // RaBitQ: one bit per dimension unless asked (what LanceDB's client sends).
            let bits = u(body, "num_bits")?.unwrap_or(1);
            let bits = u8::try_from(bits)
                .map_err(|_| ApiError::bad_request(format!("num_bits may be at most {MAX_NUM_BITS}")))?;
            lance_index::vector::bq::validate_rq_num_bits(bits)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let rq = RQBuildParams { num_bits: bits, ..Default::default() };
            let p = VectorIndexParams::with_ivf_rq_params(metric, ivf(), rq);
            ds.create_index(&cols, IndexType::IvfRq, name, &p, replace).await
        }
        "IVF_FLAT" => {
            let p = VectorIndexParams::ivf_flat(partitions, metric);
            ds.create_index(&cols, IndexType::IvfFlat, name, &p, replace).await
        }
        "IVF_SQ" => {
            let p = VectorIndexParams::with_ivf_sq_params(metric, ivf(), SQBuildParams::default());
            ds.create_index(&cols, IndexType::IvfSq, name, &p, replace).await
        }
        "IVF_HNSW_SQ" => {
            let p =
                VectorIndexParams::with_ivf_hnsw_sq_params(metric, ivf(), hnsw(), SQBuildParams::default());
            ds.create_index(&cols, IndexType::IvfHnswSq, name, &p, replace).await
        }
        "IVF_HNSW_PQ" => {
            let p = VectorIndexParams::with_ivf_hnsw_pq_params(metric, ivf(), hnsw(), pq());
            ds.create_index(&cols, IndexType::IvfHnswPq, name, &p, replace).await
        }
        "IVF_HNSW_FLAT" => {
            let p = VectorIndexParams::ivf_hnsw(metric, ivf(), hnsw());
            ds.create_index(&cols, IndexType::IvfHnswFlat, name, &p, replace).await
        }
        "BTREE" => {
            ds.create_index(&cols, IndexType::BTree, name, &ScalarIndexParams::default(), replace).await
        }
        "BITMAP" => {
            let p = ScalarIndexParams::for_builtin(BuiltinIndexType::Bitmap);
            ds.create_index(&cols, IndexType::Bitmap, name, &p, replace).await
        }
        "LABEL_LIST" => {
            let p = ScalarIndexParams::for_builtin(BuiltinIndexType::LabelList);
            ds.create_index(&cols, IndexType::LabelList, name, &p, replace).await
        }
        "FTS" | "INVERTED" => {
            let mut params = body.clone();
            if let Some(o) = params.as_object_mut() {
                for k in ["column", "index_type", "name", "replace", "wait_timeout"] {
                    o.remove(k);
                }
                o.retain(|_, v| !v.is_null());
            }
            let p: InvertedIndexParams = serde_json::from_value(params)
                .map_err(|e| ApiError::bad_request(format!("Invalid FTS index parameters: {e}")))?;
            ds.create_index(&cols, IndexType::Inverted, name, &p, replace).await
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "Unknown index_type {other:?}: expected IVF_PQ, IVF_RQ, IVF_FLAT, IVF_SQ, IVF_HNSW_SQ, \
                 IVF_HNSW_PQ, IVF_HNSW_FLAT, BTREE, BITMAP, LABEL_LIST or FTS"
            )));
        }
    };
    let meta = meta.map_err(|e| match e {
        lance::Error::Index { message, .. } => ApiError::bad_request(message),
        other => le(other),
    })?;
    Ok(meta.name)
}

/// LanceDB's names for lance's index types: the names its client decodes (any other makes
/// the client's whole `list_indices` fail, so a type it does not know is `Unknown`).
fn type_name(t: &str) -> String {
    let upper = t.to_ascii_uppercase();
    match upper.as_str() {
        "INVERTED" => "FTS".into(),
        "LABELLIST" => "LABEL_LIST".into(),
        "IVF_FLAT" | "IVF_SQ" | "IVF_PQ" | "IVF_RQ" | "IVF_HNSW_PQ" | "IVF_HNSW_SQ" | "IVF_HNSW_FLAT"
        | "BTREE" | "BITMAP" | "LABEL_LIST" | "FMINDEX" | "ZONEMAP" | "NGRAM" | "BLOOMFILTER" | "RTREE"
        | "FTS" => upper,
        _ => "Unknown".into(),
    }
}

/// Every user index of the table, with what LanceDB's client reads of each.
pub async fn list(ds: &Dataset, table: &str) -> ApiResult<Vec<serde_json::Value>> {
    let descs = ds.describe_indices(None).await.map_err(|e| from_lance(e, table))?;
    let mut out = Vec::new();
    for d in descs {
        let columns: Vec<String> = d
            .field_ids()
            .iter()
            .filter_map(|id| ds.schema().field_by_id(*id as i32).map(|f| f.name.clone()))
            .collect();
        // System indices (fragment reuse, memory WAL) have no user column.
        if columns.is_empty() {
            continue;
        }
        let first = d.segments().first();
        let unindexed = match ds.index_statistics(d.name()).await {
            Ok(raw) => serde_json::from_str::<serde_json::Value>(&raw)
                .ok()
                .and_then(|v| v["num_unindexed_rows"].as_u64()),
            Err(_) => None,
        };
        let mut entry = serde_json::json!({
            "index_name": d.name(),
            "columns": columns,
            "index_type": type_name(d.index_type()),
            "type_url": d.type_url(),
            "num_indexed_rows": d.rows_indexed(),
            "num_segments": d.segments().len(),
        });
        let o = entry.as_object_mut().ok_or_else(|| ApiError::internal("index entry"))?;
        if let Some(n) = unindexed {
            o.insert("num_unindexed_rows".into(), n.into());
        }
        if let Some(seg) = first {
            o.insert("index_uuid".into(), seg.uuid.to_string().into());
            o.insert("index_version".into(), seg.index_version.into());
            if let Some(at) = d.segments().iter().filter_map(|s| s.created_at).min() {
                o.insert("created_at".into(), at.to_rfc3339().into());
            }
        }
        if let Some(n) = d.total_size_bytes() {
            o.insert("size_bytes".into(), n.into());
        }
        // The client wants the details as a JSON text, not an object.
        if let Ok(details) = d.details() {
            o.insert("index_details".into(), details.into());
        }
        out.push(entry);
    }
    Ok(out)
}

pub async fn stats(ds: &Dataset, name: &str, table: &str) -> ApiResult<serde_json::Value> {
    let raw = ds.index_statistics(name).await.map_err(|e| match e {
        lance::Error::IndexNotFound { .. } => {
            ApiError::not_found(format!("Index '{name}' was not found on table '{table}'"))
        }
        other => from_lance(other, table),
    })?;
    let v: serde_json::Value = serde_json::from_str(&raw).map_err(|e| ApiError::internal(e.to_string()))?;
    let distance = v["indices"].get(0).and_then(|i| i.get("metric_type")).cloned();
    Ok(serde_json::json!({
        "index_type": type_name(v["index_type"].as_str().unwrap_or("")),
        "num_indexed_rows": v["num_indexed_rows"],
        "num_unindexed_rows": v["num_unindexed_rows"],
        "num_indices": v["num_indices"],
        "distance_type": distance,
    }))
}
