//! Query and SQL answers, encoded as they arrive: an Arrow IPC file, or JSON rows for
//! clients that send `Accept: application/json`. The encoder counts rows and bytes as it
//! goes and refuses the answer the moment it passes `[limits] max_result_rows` or
//! `max_result_bytes`, so an oversized answer is never built whole first: at most the limit
//! plus one slice of a batch is held.
//!
//! It does not decide what a query returns; lance and DataFusion do, pulled batch by batch.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};

use crate::config::LimitsConfig;
use crate::error::{ApiError, ApiResult};

/// Rows encoded at a time: the byte limit is checked between slices, so this bounds how far
/// past it an answer can get before it is refused.
const SLICE_ROWS: usize = 1024;

/// The answer limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct ResultLimits {
    pub max_rows: u64,
    pub max_bytes: u64,
}

impl From<&LimitsConfig> for ResultLimits {
    fn from(c: &LimitsConfig) -> Self {
        Self { max_rows: c.max_result_rows, max_bytes: c.max_result_bytes.as_u64() }
    }
}

impl ResultLimits {
    pub fn too_many_rows(&self) -> ApiError {
        ApiError::bad_request(format!(
            "The answer has more than {} rows, the most one answer may hold (limits.max_result_rows): \
             narrow the filter, or page through it with limit and offset",
            self.max_rows
        ))
    }
    fn too_many_bytes(&self) -> ApiError {
        ApiError::bad_request(format!(
            "The answer is larger than {}, the largest one answer may be (limits.max_result_bytes): \
             select fewer columns or rows",
            bytesize::ByteSize::b(self.max_bytes)
        ))
    }
}

enum Encoder {
    Json(arrow::json::ArrayWriter<Vec<u8>>),
    Ipc(arrow_ipc::writer::FileWriter<Vec<u8>>),
}

/// An answer being encoded.
pub struct ResultWriter {
    limits: ResultLimits,
    rows: u64,
    encoder: Encoder,
}

fn internal(e: arrow_schema::ArrowError) -> ApiError {
    ApiError::internal(format!("Encoding the answer failed: {e}"))
}

impl ResultWriter {
    /// An encoder for answers of `schema`, in the format the request's `Accept` asks for.
    pub fn new(h: &HeaderMap, schema: &SchemaRef, limits: ResultLimits) -> ApiResult<Self> {
        let wants_json = h
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
        let encoder = if wants_json {
            Encoder::Json(arrow::json::ArrayWriter::new(Vec::new()))
        } else {
            Encoder::Ipc(arrow_ipc::writer::FileWriter::try_new(Vec::new(), schema).map_err(internal)?)
        };
        Ok(Self { limits, rows: 0, encoder })
    }

    fn encoded_bytes(&self) -> u64 {
        match &self.encoder {
            Encoder::Json(w) => w.get_ref().len() as u64,
            Encoder::Ipc(w) => w.get_ref().len() as u64,
        }
    }

    /// Appends `batch`; refuses the answer once it passes a limit.
    pub fn push(&mut self, batch: &RecordBatch) -> ApiResult<()> {
        self.rows = self.rows.saturating_add(batch.num_rows() as u64);
        if self.rows > self.limits.max_rows {
            return Err(self.limits.too_many_rows());
        }
        let mut start = 0;
        while start < batch.num_rows() {
            let len = SLICE_ROWS.min(batch.num_rows() - start);
            let slice = batch.slice(start, len);
            match &mut self.encoder {
                Encoder::Json(w) => w.write(&slice).map_err(internal)?,
                Encoder::Ipc(w) => w.write(&slice).map_err(internal)?,
            }
            if self.encoded_bytes() > self.limits.max_bytes {
                return Err(self.limits.too_many_bytes());
            }
            start += len;
        }
        Ok(())
    }

    /// Pulls `stream` to its end into the answer (dropping it, and so stopping the scan, as
    /// soon as a limit is passed).
    pub async fn push_stream<E>(
        &mut self,
        stream: impl Stream<Item = Result<RecordBatch, E>>,
        on_error: impl Fn(E) -> ApiError,
    ) -> ApiResult<()> {
        let mut stream = std::pin::pin!(stream);
        while let Some(batch) = stream.next().await {
            self.push(&batch.map_err(&on_error)?)?;
        }
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The answer as a response.
    pub fn finish(self) -> ApiResult<Response> {
        self.finish_with(None::<()>)
    }

    /// The answer as a response; a JSON one with `io` beside its rows
    /// (`{"rows": [...], "io": ...}`) when given. (Arrow answers carry it in headers only.)
    pub fn finish_with(self, io: Option<impl serde::Serialize>) -> ApiResult<Response> {
        match self.encoder {
            Encoder::Json(mut w) => {
                w.finish().map_err(internal)?;
                let mut out = w.into_inner();
                if out.is_empty() {
                    out = b"[]".to_vec();
                }
                if let Some(io) = io {
                    let io = serde_json::to_vec(&io)
                        .map_err(|e| ApiError::internal(format!("Encoding the answer failed: {e}")))?;
                    let mut wrapped = Vec::with_capacity(out.len() + io.len() + 16);
                    wrapped.extend_from_slice(b"{\"rows\":");
                    wrapped.extend_from_slice(&out);
                    wrapped.extend_from_slice(b",\"io\":");
                    wrapped.extend_from_slice(&io);
                    wrapped.push(b'}');
                    out = wrapped;
                }
                Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
            }
            Encoder::Ipc(mut w) => {
                w.finish().map_err(internal)?;
                let out = w.into_inner().map_err(internal)?;
                Ok(([(header::CONTENT_TYPE, "application/vnd.apache.arrow.file")], out).into_response())
            }
        }
    }
}
