//! Schema evolution: `add_columns` (SQL expressions computed over the existing rows, or
//! all-null columns from an Arrow schema), `alter_columns` (rename, nullability, data type
//! cast) and `drop_columns`, each answered `{"version"}`.
//!
//! Owns: the request forms LanceDB sends and their bounds. Does not own: rewriting data or
//! the manifest (lance's schema evolution, writing through the fleet).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use lance::dataset::{ColumnAlteration, NewColumnTransform};
use serde::Deserialize;

use super::{St, for_write};
use crate::engine::expr::check_expression;
use crate::error::{ApiError, ApiResult, from_lance};

/// Most columns one schema change may name.
pub const MAX_SCHEMA_CHANGES: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewColumn {
    name: String,
    expression: Option<String>,
    computed: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct AddColumnsBody {
    new_columns: Vec<NewColumn>,
}

fn count_ok(n: usize, what: &str) -> ApiResult<()> {
    if n == 0 {
        return Err(ApiError::bad_request(format!("{what}: name at least one column")));
    }
    if n > MAX_SCHEMA_CHANGES {
        return Err(ApiError::bad_request(format!("{what}: at most {MAX_SCHEMA_CHANGES} columns at a time")));
    }
    Ok(())
}

fn is_arrow(h: &HeaderMap, b: &Bytes) -> bool {
    let declared = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/vnd.apache.arrow"));
    // An IPC stream opens with the continuation marker; JSON never does.
    declared || b.starts_with(&[0xff, 0xff, 0xff, 0xff])
}

/// The columns an `add_columns` body asks for.
fn new_columns(h: &HeaderMap, b: &Bytes, max_decoded: u64) -> ApiResult<NewColumnTransform> {
    if is_arrow(h, b) {
        let (schema, batches) = super::ipc::batches(b, max_decoded)?;
        if batches.iter().any(|b| b.num_rows() > 0) {
            return Err(ApiError::bad_request(
                "add_columns takes an Arrow schema without rows (the new columns start out null)",
            ));
        }
        count_ok(schema.fields().len(), "add_columns")?;
        if let Some(f) = schema.fields().iter().find(|f| !f.is_nullable()) {
            return Err(ApiError::bad_request(format!(
                "New column '{}' must be nullable: existing rows have no value for it",
                f.name()
            )));
        }
        return Ok(NewColumnTransform::AllNulls(schema));
    }
    let body: AddColumnsBody = serde_json::from_slice(b)
        .map_err(|e| ApiError::bad_request(format!("Invalid add_columns body: {e}")))?;
    count_ok(body.new_columns.len(), "add_columns")?;
    let mut exprs = Vec::with_capacity(body.new_columns.len());
    for c in body.new_columns {
        match (c.expression, c.computed) {
            (Some(e), None) => {
                check_expression(&format!("expression of new column '{}'", c.name), &e)?;
                exprs.push((c.name, e));
            }
            (None, Some(_)) => {
                return Err(ApiError::bad_request(format!(
                    "New column '{}': computed columns are not supported by this server; give an \
                     \"expression\" (its values are computed once, now)",
                    c.name
                )));
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "New column '{}' needs an \"expression\"",
                    c.name
                )));
            }
        }
    }
    Ok(NewColumnTransform::SqlExpressions(exprs))
}

/// `POST /v1/table/{id}/add_columns/`.
pub async fn add_columns(
    State(st): St,
    Path(id): Path<String>,
    h: HeaderMap,
    b: Bytes,
) -> ApiResult<Response> {
    let transform = new_columns(&h, &b, st.limits.max_decoded_body.as_u64())?;
    let w = for_write(&st, &id, &h).await?;
    let mut ds = (*w.ds).clone();
    ds.add_columns(transform, None, None).await.map_err(|e| from_lance(e, &w.t.id))?;
    Ok(w.commit(&st, Arc::new(ds), serde_json::json!({})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Alteration {
    path: String,
    rename: Option<String>,
    nullable: Option<bool>,
    data_type: Option<lance::arrow::json::JsonDataType>,
}

#[derive(Deserialize)]
struct AlterColumnsBody {
    alterations: Vec<Alteration>,
}

fn alterations(b: &Bytes) -> ApiResult<Vec<ColumnAlteration>> {
    let body: AlterColumnsBody = serde_json::from_slice(b)
        .map_err(|e| ApiError::bad_request(format!("Invalid alter_columns body: {e}")))?;
    count_ok(body.alterations.len(), "alter_columns")?;
    body.alterations
        .into_iter()
        .map(|a| {
            if a.rename.is_none() && a.nullable.is_none() && a.data_type.is_none() {
                return Err(ApiError::bad_request(format!(
                    "Alteration of '{}' changes nothing: give rename, nullable or data_type",
                    a.path
                )));
            }
            let data_type = match &a.data_type {
                Some(t) => Some(
                    arrow_schema::DataType::try_from(t)
                        .map_err(|e| ApiError::bad_request(format!("data_type of '{}': {e}", a.path)))?,
                ),
                None => None,
            };
            Ok(ColumnAlteration { path: a.path, rename: a.rename, nullable: a.nullable, data_type })
        })
        .collect()
}

/// `POST /v1/table/{id}/alter_columns/`.
pub async fn alter_columns(
    State(st): St,
    Path(id): Path<String>,
    h: HeaderMap,
    b: Bytes,
) -> ApiResult<Response> {
    let changes = alterations(&b)?;
    let w = for_write(&st, &id, &h).await?;
    for c in &changes {
        if w.ds.schema().field(&c.path).is_none() {
            return Err(ApiError::bad_request(format!(
                "Column '{}' does not exist in table '{}'",
                c.path, w.t.id
            )));
        }
    }
    let mut ds = (*w.ds).clone();
    ds.alter_columns(&changes).await.map_err(|e| from_lance(e, &w.t.id))?;
    Ok(w.commit(&st, Arc::new(ds), serde_json::json!({})))
}

#[derive(Deserialize)]
struct DropColumnsBody {
    columns: Vec<String>,
}

/// `POST /v1/table/{id}/drop_columns/`.
pub async fn drop_columns(
    State(st): St,
    Path(id): Path<String>,
    h: HeaderMap,
    b: Bytes,
) -> ApiResult<Response> {
    let body: DropColumnsBody = serde_json::from_slice(&b)
        .map_err(|e| ApiError::bad_request(format!("Invalid drop_columns body: {e}")))?;
    count_ok(body.columns.len(), "drop_columns")?;
    let w = for_write(&st, &id, &h).await?;
    for c in &body.columns {
        if w.ds.schema().field(c).is_none() {
            return Err(ApiError::bad_request(format!("Column '{c}' does not exist in table '{}'", w.t.id)));
        }
    }
    let names: Vec<&str> = body.columns.iter().map(String::as_str).collect();
    let mut ds = (*w.ds).clone();
    ds.drop_columns(&names).await.map_err(|e| from_lance(e, &w.t.id))?;
    Ok(w.commit(&st, Arc::new(ds), serde_json::json!({})))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        h
    }

    #[test]
    fn add_columns_takes_expressions_or_a_schema() {
        let b = Bytes::from_static(br#"{"new_columns": [{"name": "z", "expression": "id * 2"}]}"#);
        assert!(
            matches!(new_columns(&json_headers(), &b, 1 << 30).unwrap(), NewColumnTransform::SqlExpressions(e) if e == [("z".to_string(), "id * 2".to_string())])
        );
        let bad = Bytes::from_static(br#"{"new_columns": [{"name": "z", "expression": "id * 2) OR (1"}]}"#);
        assert!(
            new_columns(&json_headers(), &bad, 1 << 30)
                .err()
                .expect("refused")
                .message
                .contains("new column 'z'")
        );
        let computed = Bytes::from_static(br#"{"new_columns": [{"name": "z", "computed": "id"}]}"#);
        assert!(
            new_columns(&json_headers(), &computed, 1 << 30)
                .err()
                .expect("refused")
                .message
                .contains("computed")
        );
        let none = Bytes::from_static(br#"{"new_columns": []}"#);
        assert!(new_columns(&json_headers(), &none, 1 << 30).is_err());

        let schema = arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "n",
            arrow_schema::DataType::Int32,
            true,
        )]);
        let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).unwrap();
        w.finish().unwrap();
        let ipc = Bytes::from(w.into_inner().unwrap());
        // Recognised by its first bytes even without a content type.
        assert!(
            matches!(new_columns(&HeaderMap::new(), &ipc, 1 << 30).unwrap(), NewColumnTransform::AllNulls(s) if s.field(0).name() == "n")
        );
        let strict = arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "n",
            arrow_schema::DataType::Int32,
            false,
        )]);
        let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &strict).unwrap();
        w.finish().unwrap();
        let ipc = Bytes::from(w.into_inner().unwrap());
        assert!(
            new_columns(&HeaderMap::new(), &ipc, 1 << 30)
                .err()
                .expect("refused")
                .message
                .contains("nullable")
        );
    }

    #[test]
    fn alterations_decode_lance_json_types() {
        let b = Bytes::from_static(
            br#"{"alterations": [{"path": "v", "data_type": {"type": "fixed_size_list", "length": 4, "fields": [{"name": "item", "nullable": true, "type": {"type": "halffloat"}}]}}, {"path": "a", "rename": "b", "nullable": true}]}"#,
        );
        let a = alterations(&b).unwrap();
        assert_eq!(a.len(), 2);
        assert!(
            matches!(&a[0].data_type, Some(arrow_schema::DataType::FixedSizeList(f, 4)) if *f.data_type() == arrow_schema::DataType::Float16)
        );
        assert_eq!(a[1].rename.as_deref(), Some("b"));
        let nothing = Bytes::from_static(br#"{"alterations": [{"path": "a"}]}"#);
        assert!(alterations(&nothing).err().expect("refused").message.contains("changes nothing"));
        let bad_type =
            Bytes::from_static(br#"{"alterations": [{"path": "a", "data_type": {"type": "quaternion"}}]}"#);
        assert!(alterations(&bad_type).is_err());
    }
}
