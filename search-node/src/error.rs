//! Errors as the REST API answers them: a status and `{"message": …}`. LanceDB clients
//! show the raw body after the status, so the message is written for a person.
//!
//! Every message is cleaned here, on its way out, of the source locations lance and its
//! dependencies append to their errors (`/root/.cargo/registry/…/scanner.rs:123:45`): they
//! tell a caller nothing and tell anyone the layout of the build machine. The log keeps them.

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
        let body = serde_json::json!({ "message": sanitize(&self.message) });
        (self.status, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string())
            .into_response()
    }
}

impl From<crate::engine::expr::ExprError> for ApiError {
    fn from(e: crate::engine::expr::ExprError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// `message` without source locations: each word that is a Rust source path (`….rs:12:5`,
/// `/…/src/…`, `/…/.cargo/…`) is dropped together with the separator before it, so
/// `Invalid user input: no column x, /root/…/planner.rs:9:3` reads `Invalid user input: no
/// column x`.
pub fn sanitize(message: &str) -> String {
    const OPENERS: [char; 4] = ['(', '[', '"', '\''];
    const CLOSERS: [char; 6] = [',', ')', ']', ';', '"', '\''];
    let mut out = String::with_capacity(message.len());
    for piece in message.split_inclusive(char::is_whitespace) {
        let word = piece.trim_end();
        let head = word.len() - word.trim_start_matches(OPENERS).len();
        let tail = word.trim_end_matches(CLOSERS).len();
        if head >= tail || !is_source_location(&word[head..tail]) {
            out.push_str(piece);
            continue;
        }
        // Drop the separator that introduced the location ("…, /root/x.rs:1:2").
        let kept = out.trim_end().trim_end_matches(',').trim_end();
        let kept = kept.strip_suffix("location:").unwrap_or(kept).trim_end();
        out.truncate(kept.len());
        // Brackets the location closes that it did not open belong to the text around it.
        let opened = word[..head].chars().filter(|c| matches!(c, '(' | '[')).count();
        out.extend(word[tail..].chars().filter(|c| matches!(c, ')' | ']')).skip(opened));
        out.push_str(&piece[word.len()..]);
    }
    let trimmed = out.trim_end().trim_end_matches(',').trim_end().len();
    out.truncate(trimmed);
    out
}

fn is_source_location(w: &str) -> bool {
    let rs_position = w.find(".rs:").is_some_and(|i| w[i + 4..].starts_with(|c: char| c.is_ascii_digit()));
    rs_position
        || (w.starts_with('/')
            && (w.ends_with(".rs")
                || ["/src/", "/.cargo/", "/rustc/", "/root/"].iter().any(|p| w.contains(p))))
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

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn source_locations_are_dropped() {
        let loc = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/lance-14.0.2/src/dataset/scanner.rs:2625:34";
        assert_eq!(
            sanitize(&format!("Invalid user input: Column x not found, {loc}")),
            "Invalid user input: Column x not found"
        );
        assert_eq!(
            sanitize(&format!("External error: Invalid user input: a, {loc} (caused by b, {loc})")),
            "External error: Invalid user input: a (caused by b)"
        );
        assert_eq!(
            sanitize(&format!("Append with different schema: x, location: {loc}")),
            "Append with different schema: x"
        );
        assert_eq!(sanitize("at lance-index/src/scalar/inverted.rs:12:5 in x"), "at in x");
        assert_eq!(
            sanitize("Table 's3://bkt/src/items.lance' was not found"),
            "Table 's3://bkt/src/items.lance' was not found"
        );
        assert_eq!(sanitize("k + offset may be at most 100"), "k + offset may be at most 100");
    }
}
