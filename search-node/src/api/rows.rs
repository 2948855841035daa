//! Row mutations beyond append and delete: `update` (set columns to SQL expressions where a
//! predicate holds) and `merge_insert` (upsert, find-or-create, replace-a-region: lance's
//! merge insert with the clauses the LanceDB client puts in the query string).
//!
//! Owns: the request forms of both calls and their answers. Every expression passes the
//! expression gate before lance parses it (lance keeps the prefix that parses, and an update
//! or a delete-by-source must never run on half a predicate). Does not own: the merge or
//! update themselves (lance, with its commit-conflict retries), or how tables are held
//! (`engine::tables`).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use lance::dataset::{
    MergeInsertBuilder, UpdateBuilder, WhenMatched, WhenNotMatched, WhenNotMatchedBySource,
};
use serde::Deserialize;

use super::{St, body_json, for_write, ipc_batches};
use crate::engine::expr::check_expression;
use crate::error::{ApiError, ApiResult, from_lance};

/// Most columns one update may set, and most key columns of a merge: more than any table
/// has, few enough that a request cannot make the planner work through millions.
pub const MAX_UPDATE_COLUMNS: usize = 1024;
pub const MAX_MERGE_KEYS: usize = 64;

/// `updates` as LanceDB sends it (`[[column, expression], …]`) or as a map.
#[derive(Deserialize)]
#[serde(untagged)]
enum Updates {
    Pairs(Vec<(String, String)>),
    Map(serde_json::Map<String, serde_json::Value>),
}

impl Default for Updates {
    fn default() -> Self {
        Updates::Pairs(Vec::new())
    }
}

#[derive(Deserialize, Default)]
struct UpdateBody {
    predicate: Option<String>,
    #[serde(default)]
    updates: Updates,
}

/// `POST /v1/table/{id}/update/`: `{"predicate": <sql>|null, "updates": [[column, sql], …]}`,
/// answered `{"rows_updated", "version"}`.
pub async fn update(State(st): St, Path(id): Path<String>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    let body: UpdateBody = body_json(&b)?;
    let updates: Vec<(String, String)> = match body.updates {
        Updates::Pairs(p) => p,
        Updates::Map(m) => m
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(e) => Ok((k, e)),
                _ => Err(ApiError::bad_request(format!("updates: the value of '{k}' must be an SQL string"))),
            })
            .collect::<ApiResult<_>>()?,
    };
    if updates.is_empty() {
        return Err(ApiError::bad_request("update needs at least one column in \"updates\""));
    }
    if updates.len() > MAX_UPDATE_COLUMNS {
        return Err(ApiError::bad_request(format!("An update may set at most {MAX_UPDATE_COLUMNS} columns")));
    }
    let predicate = body.predicate.filter(|p| !p.trim().is_empty());
    if let Some(p) = &predicate {
        check_expression("update predicate", p)?;
    }
    for (column, expr) in &updates {
        check_expression(&format!("update value of '{column}'"), expr)?;
    }
    let w = for_write(&st, &id, &h).await?;
    let le = |e: lance::Error| from_lance(e, &w.t.id);
    for (column, _) in &updates {
        if w.ds.schema().field(column).is_none() {
            return Err(ApiError::bad_request(format!(
                "Column '{column}' does not exist in table '{}'",
                w.t.id
            )));
        }
    }
    let mut builder = UpdateBuilder::new(w.ds.clone());
    if let Some(p) = &predicate {
        builder = builder.update_where(p).map_err(le)?;
    }
    for (column, expr) in &updates {
        builder = builder.set(column, expr).map_err(le)?;
    }
    let done = builder.build().map_err(le)?.execute().await.map_err(le)?;
    Ok(w.commit(&st, done.new_dataset, serde_json::json!({ "rows_updated": done.rows_updated })))
}

/// The clauses of a merge, from the query string LanceDB sends (`on` once per key column).
#[derive(Debug, PartialEq)]
struct MergeParams {
    on: Vec<String>,
    matched_update: bool,
    matched_filter: Option<String>,
    not_matched_insert: bool,
    by_source_delete: bool,
    by_source_filter: Option<String>,
    use_index: bool,
}

fn flag(name: &str, v: &str) -> ApiResult<bool> {
    match v {
        "true" | "True" | "1" => Ok(true),
        "false" | "False" | "0" => Ok(false),
        _ => Err(ApiError::bad_request(format!("{name}: expected true or false, got {v:?}"))),
    }
}

fn merge_params(pairs: Vec<(String, String)>) -> ApiResult<MergeParams> {
    let mut p = MergeParams {
        on: Vec::new(),
        matched_update: false,
        matched_filter: None,
        not_matched_insert: false,
        by_source_delete: false,
        by_source_filter: None,
        use_index: true,
    };
    for (k, v) in pairs {
        match k.as_str() {
            "on" => p.on.extend(v.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_string)),
            "when_matched_update_all" => p.matched_update = flag(&k, &v)?,
            "when_matched_update_all_filt" => p.matched_filter = Some(v).filter(|f| !f.trim().is_empty()),
            "when_not_matched_insert_all" => p.not_matched_insert = flag(&k, &v)?,
            "when_not_matched_by_source_delete" => p.by_source_delete = flag(&k, &v)?,
            "when_not_matched_by_source_delete_filt" => {
                p.by_source_filter = Some(v).filter(|f| !f.trim().is_empty())
            }
            "use_index" => p.use_index = flag(&k, &v)?,
            "use_lsm" if !flag(&k, &v)? => {}
            "use_lsm" => return Err(ApiError::bad_request("use_lsm=true is not supported by this server")),
            "branch" => return Err(ApiError::bad_request("Branches are not supported by this server")),
            // Clauses this server does not know would change what the merge writes: refused,
            // never ignored.
            other => return Err(ApiError::bad_request(format!("Unknown merge_insert parameter {other:?}"))),
        }
    }
    if p.on.is_empty() {
        return Err(ApiError::bad_request("merge_insert needs the key column(s) in \"on\""));
    }
    if p.on.len() > MAX_MERGE_KEYS {
        return Err(ApiError::bad_request(format!(
            "merge_insert takes at most {MAX_MERGE_KEYS} key columns"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = p.on.iter().find(|c| !seen.insert(c.as_str())) {
        return Err(ApiError::bad_request(format!("Key column '{dup}' is named twice in \"on\"")));
    }
    if p.matched_filter.is_some() && !p.matched_update {
        return Err(ApiError::bad_request("when_matched_update_all_filt needs when_matched_update_all=true"));
    }
    if p.by_source_filter.is_some() && !p.by_source_delete {
        return Err(ApiError::bad_request(
            "when_not_matched_by_source_delete_filt needs when_not_matched_by_source_delete=true",
        ));
    }
    if let Some(f) = &p.matched_filter {
        check_expression("when_matched_update_all_filt", f)?;
    }
    if let Some(f) = &p.by_source_filter {
        check_expression("when_not_matched_by_source_delete_filt", f)?;
    }
    Ok(p)
}

/// `POST /v1/table/{id}/merge_insert/?on=…&when_…`: the source rows as an Arrow IPC stream,
/// answered with lance's counts.
pub async fn merge_insert(
    State(st): St,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
    h: HeaderMap,
    b: Bytes,
) -> ApiResult<Response> {
    let p = merge_params(pairs)?;
    let (_schema, batches) = ipc_batches(&st, &b)?;
    let num_rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let w = for_write(&st, &id, &h).await?;
    let le = |e: lance::Error| from_lance(e, &w.t.id);
    for c in &p.on {
        if w.ds.schema().field(c).is_none() {
            return Err(ApiError::bad_request(format!(
                "Key column '{c}' does not exist in table '{}'",
                w.t.id
            )));
        }
    }
    let mut builder = MergeInsertBuilder::try_new(w.ds.clone(), p.on.clone()).map_err(le)?;
    builder.when_matched(match (&p.matched_update, &p.matched_filter) {
        (true, Some(f)) => WhenMatched::update_if(&w.ds, f).map_err(le)?,
        (true, None) => WhenMatched::UpdateAll,
        (false, _) => WhenMatched::DoNothing,
    });
    builder.when_not_matched(if p.not_matched_insert {
        WhenNotMatched::InsertAll
    } else {
        WhenNotMatched::DoNothing
    });
    builder.when_not_matched_by_source(match (&p.by_source_delete, &p.by_source_filter) {
        (true, Some(f)) => WhenNotMatchedBySource::delete_if(&w.ds, f).map_err(le)?,
        (true, None) => WhenNotMatchedBySource::Delete,
        (false, _) => WhenNotMatchedBySource::Keep,
    });
    builder.use_index(p.use_index);
    let job = builder.try_build().map_err(le)?;
    let (ds, stats) = job.execute_batches(batches).await.map_err(le)?;
    let body = serde_json::json!({
        "num_inserted_rows": stats.num_inserted_rows,
        "num_updated_rows": stats.num_updated_rows,
        "num_deleted_rows": stats.num_deleted_rows,
        "num_attempts": stats.num_attempts,
        "num_rows": num_rows,
    });
    Ok(w.commit(&st, ds, body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse_update(b: &str) -> ApiResult<UpdateBody> {
        body_json(&Bytes::from(b.to_string()))
    }

    fn pairs(q: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    #[test]
    fn merge_clauses_parse_as_the_client_sends_them() {
        let p = merge_params(pairs(
            "on=id&when_matched_update_all=true&when_matched_update_all_filt=target.id+%3E+0\
             &when_not_matched_insert_all=true&when_not_matched_by_source_delete=true\
             &when_not_matched_by_source_delete_filt=id+%3C+0",
        ))
        .unwrap();
        assert_eq!(
            p,
            MergeParams {
                on: vec!["id".into()],
                matched_update: true,
                matched_filter: Some("target.id > 0".into()),
                not_matched_insert: true,
                by_source_delete: true,
                by_source_filter: Some("id < 0".into()),
                use_index: true,
            }
        );
        let p = merge_params(pairs(
            "on=id&on=bin&when_matched_update_all=true&when_not_matched_insert_all=false\
             &when_not_matched_by_source_delete=false&use_index=false",
        ))
        .unwrap();
        assert_eq!(p.on, ["id", "bin"]);
        assert!(!p.use_index && !p.not_matched_insert && !p.by_source_delete);
    }

    #[test]
    fn merge_clauses_that_cannot_be_honoured_are_refused() {
        let msg = |q: &str| merge_params(pairs(q)).unwrap_err().message;
        assert!(msg("when_matched_update_all=true").contains("\"on\""));
        assert!(msg("on=id&on=id").contains("twice"));
        assert!(msg("on=id&when_matched_update_all=yes").contains("true or false"));
        assert!(msg("on=id&when_matched_delete=true").contains("Unknown merge_insert parameter"));
        assert!(msg("on=id&branch=dev").contains("Branches"));
        assert!(msg("on=id&when_matched_update_all_filt=id+%3E+1").contains("needs when_matched_update_all"));
        // Trailing text after a predicate never reaches a delete.
        let m = msg(
            "on=id&when_not_matched_by_source_delete=true&when_not_matched_by_source_delete_filt=id+%3C+0)+OR+(true",
        );
        assert!(m.contains("when_not_matched_by_source_delete_filt"), "{m}");
        let many = (0..=MAX_MERGE_KEYS).map(|i| format!("on=c{i}")).collect::<Vec<_>>().join("&");
        assert!(msg(&many).contains("at most"));
        assert!(merge_params(pairs("on=id&use_lsm=false")).is_ok());
        assert!(msg("on=id&use_lsm=true").contains("use_lsm"));
    }

    #[test]
    fn update_bodies_take_pairs_or_a_map() {
        let b = parse_update(r#"{"predicate": null, "updates": [["x", "x + 1"], ["y", "'a'"]]}"#).unwrap();
        assert!(b.predicate.is_none());
        assert!(matches!(b.updates, Updates::Pairs(p) if p.len() == 2));
        let b = parse_update(r#"{"predicate": "`id` > 1", "updates": {"x": "2"}}"#).unwrap();
        assert_eq!(b.predicate.as_deref(), Some("`id` > 1"));
        assert!(matches!(b.updates, Updates::Map(m) if m.len() == 1));
        assert!(parse_update(r#"{"updates": [["x"]]}"#).is_err());
    }
}
