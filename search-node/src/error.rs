//! Errors as the REST API answers them: a status and `{"message": …}`. LanceDB clients
//! show the raw body after the status, so the message is written for a person.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    pub fn table_not_found(name: &str) -> Self {
        Self::not_found(format!("Table '{name}' was not found"))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, message = %self.message, "request failed");
        }
        let body = serde_json::json!({ "message": self.message });
        (self.status, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string())
            .into_response()
    }
}

/// A lance error as the client should see it: bad input (a filter that does not parse, a
/// vector of the wrong size, an unknown column) is the caller's 400; a missing dataset or
/// version 404; anything else a 500 with lance's message.
pub fn from_lance(e: lance::Error, table: &str) -> ApiError {
    use lance::Error as E;
    match e {
        E::DatasetNotFound { .. } | E::NotFound { .. } => ApiError::table_not_found(table),
        E::VersionNotFound { message } => ApiError::not_found(message),
        E::IndexNotFound { identity, .. } => ApiError::not_found(format!("Index {identity} was not found")),
        E::InvalidInput { source, .. } | E::NotSupported { source, .. } => {
            ApiError::bad_request(source.to_string())
        }
        E::Schema { message, .. } | E::Arrow { message, .. } => ApiError::bad_request(message),
        E::SchemaMismatch { difference, .. } => {
            ApiError::bad_request(format!("The data does not match the table's schema: {difference}"))
        }
        E::FieldNotFound { source } => ApiError::bad_request(source.to_string()),
        E::DatasetAlreadyExists { .. } => ApiError::bad_request(format!("Table '{table}' already exists")),
        E::Timeout { message, .. } => ApiError::new(StatusCode::GATEWAY_TIMEOUT, message),
        E::CommitConflict { .. } | E::RetryableCommitConflict { .. } | E::TooMuchWriteContention { .. } => {
            ApiError::new(StatusCode::CONFLICT, e.to_string())
        }
        E::Shared { source } => match Arc::try_unwrap(source) {
            Ok(inner) => from_lance(inner, table),
            Err(shared) => classify_message(shared.to_string()),
        },
        other => classify_message(other.to_string()),
    }
}

/// DataFusion errors (filters, projections, SQL) are the caller's unless they are I/O.
pub fn from_datafusion(e: datafusion::error::DataFusionError) -> ApiError {
    use datafusion::error::DataFusionError as D;
    let e = match e {
        D::Context(_, inner) => *inner,
        D::Diagnostic(_, inner) => *inner,
        other => other,
    };
    match e {
        D::SQL(..) | D::Plan(..) | D::SchemaError(..) | D::NotImplemented(..) => {
            ApiError::bad_request(e.to_string())
        }
        D::ObjectStore(..) | D::IoError(..) | D::External(..) | D::Execution(..) | D::ArrowError(..) => {
            classify_message(e.to_string())
        }
        other => classify_message(other.to_string()),
    }
}

/// Errors that only carry text: parser and planner messages are still bad input.
fn classify_message(m: String) -> ApiError {
    let input =
        ["ParserError", "SQL error", "Schema error", "No field named", "Invalid user input", "dimension"]
            .iter()
            .any(|p| m.contains(p));
    if input { ApiError::bad_request(m) } else { ApiError::internal(m) }
}
