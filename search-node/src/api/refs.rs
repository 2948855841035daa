//! Versions by name and by number: `restore` (a new version with an old one's contents),
//! tags (`tags/list`, `tags/create`, `tags/update`, `tags/delete`, `tags/version`; checkout
//! by tag is `tags/version` and then a describe at that version) and `rename`, which this
//! layout cannot do in place and refuses with the reason.
//!
//! Owns: the request and answer forms. Does not own: the manifests and tag files (lance).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::{St, VersionBody, body_json, for_write, json, with_version};
use crate::error::{ApiError, ApiResult, from_lance};

/// `POST /v1/table/{id}/restore/` with `{"version": v}`: the table's next version holds what
/// version `v` held.
pub async fn restore(State(st): St, Path(id): Path<String>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    let body: VersionBody = body_json(&b)?;
    let Some(v) = body.version else {
        return Err(ApiError::bad_request(
            "restore needs a \"version\": check out the version to restore first",
        ));
    };
    let w = for_write(&st, &id, &h).await?;
    let mut old = w.ds.checkout_version(v).await.map_err(|e| version_error(e, &w.t.id, v))?;
    old.restore().await.map_err(|e| from_lance(e, &w.t.id))?;
    Ok(w.commit(&st, Arc::new(old), serde_json::json!({})))
}

fn version_error(e: lance::Error, table: &str, v: u64) -> ApiError {
    match e {
        lance::Error::DatasetNotFound { .. }
        | lance::Error::NotFound { .. }
        | lance::Error::VersionNotFound { .. } => {
            ApiError::bad_request(format!("Version {v} of table '{table}' was not found"))
        }
        other => from_lance(other, table),
    }
}

fn tag_error(e: lance::Error, table: &str, tag: &str) -> ApiError {
    match e {
        lance::Error::RefNotFound { .. } | lance::Error::NotFound { .. } => {
            ApiError::bad_request(format!("Tag '{tag}' was not found on table '{table}'"))
        }
        // Not 409: LanceDB clients retry a 409 as a commit conflict, and this one never clears.
        lance::Error::RefConflict { .. } => {
            ApiError::bad_request(format!("Tag '{tag}' already exists on table '{table}'"))
        }
        lance::Error::InvalidRef { message, .. } => ApiError::bad_request(message),
        other => from_lance(other, table),
    }
}

/// `POST /v1/table/{id}/tags/list/`: `{tag: {"version", "manifestSize", …}}`.
pub async fn list_tags(State(st): St, Path(id): Path<String>, h: HeaderMap) -> ApiResult<Response> {
    let (t, ds) = super::table_at(&st, &id, None, &h).await?;
    let tags = ds.tags().list().await.map_err(|e| from_lance(e, &t.id))?;
    let v = serde_json::to_value(tags).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(with_version(json(v), ds.version_id()))
}

#[derive(Deserialize, Default)]
struct TagBody {
    #[serde(default)]
    tag: String,
    version: Option<u64>,
}

fn tag_body(b: &Bytes, needs_version: bool) -> ApiResult<(String, Option<u64>)> {
    let body: TagBody = body_json(b)?;
    if body.tag.is_empty() {
        return Err(ApiError::bad_request("Give the tag's name in \"tag\""));
    }
    if needs_version && body.version.is_none() {
        return Err(ApiError::bad_request(format!(
            "Give the version tag '{}' names in \"version\"",
            body.tag
        )));
    }
    Ok((body.tag, body.version))
}

/// `POST /v1/table/{id}/tags/version/` with `{"tag"}`: `{"version"}`.
pub async fn tag_version(
    State(st): St,
    Path(id): Path<String>,
    h: HeaderMap,
    b: Bytes,
) -> ApiResult<Response> {
    let (tag, _) = tag_body(&b, false)?;
    let (t, ds) = super::table_at(&st, &id, None, &h).await?;
    let v = ds.tags().get_version(&tag).await.map_err(|e| tag_error(e, &t.id, &tag))?;
    Ok(json(serde_json::json!({ "version": v })))
}

/// `POST /v1/table/{id}/tags/create/` with `{"tag", "version"}`.
pub async fn create_tag(st: St, id: Path<String>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    set_tag(st, id, h, b, true).await
}

/// `POST /v1/table/{id}/tags/update/` with `{"tag", "version"}`.
pub async fn update_tag(st: St, id: Path<String>, h: HeaderMap, b: Bytes) -> ApiResult<Response> {
    set_tag(st, id, h, b, false).await
}

/// Points a new (`create`) or existing tag at a version, which must exist: the check and the
/// write happen under the table's write lock.
async fn set_tag(
    State(st): St,
    Path(id): Path<String>,
    h: HeaderMap,
    b: Bytes,
    create: bool,
) -> ApiResult<Response> {
    let (tag, version) = tag_body(&b, true)?;
    let v = version.unwrap_or_default();
    let w = for_write(&st, &id, &h).await?;
    w.ds.checkout_version(v).await.map_err(|e| version_error(e, &w.t.id, v))?;
    let tags = w.ds.tags();
    let done = if create { tags.create(&tag, v).await } else { tags.update(&tag, v).await };
    done.map_err(|e| tag_error(e, &w.t.id, &tag))?;
    Ok(json(serde_json::json!({})))
}

/// `POST /v1/table/{id}/tags/delete/` with `{"tag"}`.
pub async fn delete_tag(
    State(st): St,
    Path(id): Path<String>,
    h: HeaderMap,
    b: Bytes,
) -> ApiResult<Response> {
    let (tag, _) = tag_body(&b, false)?;
    let w = for_write(&st, &id, &h).await?;
    w.ds.tags().delete(&tag).await.map_err(|e| tag_error(e, &w.t.id, &tag))?;
    Ok(json(serde_json::json!({})))
}

/// `POST /v1/table/{id}/rename/`: refused. A table here is the directory `<name>.lance` under
/// its namespace's prefix, and object storage has no rename: every data, index and manifest
/// file would be copied and then deleted, which is neither atomic nor cheap, and readers of
/// the old name (other search nodes, pylance) would see it vanish half way.
pub async fn rename(State(st): St, Path(id): Path<String>) -> ApiResult<Response> {
    let t = st.tables.resolve(&id)?;
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "Renaming tables is not supported: table '{}' is the object-storage directory {} and \
             object storage has no rename (every file would be copied, and readers would see the \
             table vanish half way). Create the new table from the old one's rows instead.",
            t.id, t.uri
        ),
    ))
}
