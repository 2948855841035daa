//! Lance's object-store traffic as metrics: every request Lance makes (before the search
//! node's page cache and the fleet answer it), by operation and outcome, its latency and the
//! bytes read. The outermost layer of the store Lance is handed.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::BoxStream;
use lakecache_common::metrics::ms_since;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

pub const OBJECTSTORE_REQUESTS: &str = "searchnode_objectstore_requests_total";
pub const OBJECTSTORE_READ_BYTES: &str = "searchnode_objectstore_read_bytes_total";
pub const OBJECTSTORE_LATENCY: &str = "searchnode_objectstore_request_duration_milliseconds";

const OUTCOMES: [&str; 4] = ["ok", "not_found", "conflict", "error"];

fn outcome<T>(r: &Result<T>) -> usize {
    match r {
        Ok(_) => 0,
        Err(object_store::Error::NotFound { .. }) => 1,
        Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => 2,
        Err(_) => 3,
    }
}

fn record<T>(op: &'static str, started: Instant, r: &Result<T>) {
    metrics::counter!(OBJECTSTORE_REQUESTS, "op" => op, "outcome" => OUTCOMES[outcome(r)]).increment(1);
    metrics::histogram!(OBJECTSTORE_LATENCY, "op" => op).record(ms_since(started));
}

/// The meters of reads (GETs and HEADs, the most of Lance's traffic by far), resolved once:
/// a registry lookup per labelled metric per read cost as much as a page-cache hit.
struct ReadMeters {
    /// [get, head] by outcome.
    requests: [[metrics::Counter; 4]; 2],
    latency: [metrics::Histogram; 2],
    bytes: metrics::Counter,
}

impl ReadMeters {
    fn get() -> &'static ReadMeters {
        static METERS: std::sync::OnceLock<ReadMeters> = std::sync::OnceLock::new();
        // First used by a read, which comes after the recorder is installed.
        METERS.get_or_init(|| {
            let by_op = |op: &'static str| {
                OUTCOMES.map(|o| metrics::counter!(OBJECTSTORE_REQUESTS, "op" => op, "outcome" => o))
            };
            ReadMeters {
                requests: [by_op("get"), by_op("head")],
                latency: [
                    metrics::histogram!(OBJECTSTORE_LATENCY, "op" => "get"),
                    metrics::histogram!(OBJECTSTORE_LATENCY, "op" => "head"),
                ],
                bytes: metrics::counter!(OBJECTSTORE_READ_BYTES),
            }
        })
    }
}

/// Counts what passes through to `inner`.
pub struct Counted(pub Arc<dyn ObjectStore>);

impl fmt::Debug for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counted {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let started = Instant::now();
        let r = self.0.put_opts(location, payload, opts).await;
        record("put", started, &r);
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let started = Instant::now();
        let r = self.0.put_multipart_opts(location, opts).await;
        record("multipart", started, &r);
        r
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let m = ReadMeters::get();
        let op = usize::from(options.head);
        let started = Instant::now();
        let r = self.0.get_opts(location, options).await;
        m.requests[op][outcome(&r)].increment(1);
        m.latency[op].record(ms_since(started));
        let mut r = r?;
        if let GetResultPayload::Stream(s) = r.payload {
            r.payload = GetResultPayload::Stream(
                s.inspect(|c| {
                    if let Ok(b) = c {
                        ReadMeters::get().bytes.increment(b.len() as u64);
                    }
                })
                .boxed(),
            );
        }
        Ok(r)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.0
            .delete_stream(locations)
            .inspect(|r| {
                let outcome = if r.is_ok() { "ok" } else { "error" };
                metrics::counter!(OBJECTSTORE_REQUESTS, "op" => "delete", "outcome" => outcome).increment(1);
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        metrics::counter!(OBJECTSTORE_REQUESTS, "op" => "list", "outcome" => "ok").increment(1);
        self.0.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        metrics::counter!(OBJECTSTORE_REQUESTS, "op" => "list", "outcome" => "ok").increment(1);
        self.0.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let started = Instant::now();
        let r = self.0.list_with_delimiter(prefix).await;
        record("list", started, &r);
        r
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let started = Instant::now();
        let r = self.0.copy_opts(from, to, options).await;
        record("copy", started, &r);
        r
    }
}
