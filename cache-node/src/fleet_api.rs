//! The internal page protocol (see `lakecache_common::wire`): how routers and search nodes
//! read pages from this node without S3 — no s3s parsing, no SigV4, no XML. A request is
//! signed with the fleet secret; it names an object, optionally the version it must be of,
//! and the byte ranges wanted; the answer streams those bytes from the tiers with the
//! object's metadata in headers, so a reader learns size and version from its first read.
//!
//! Batches (`GET /_lakecache/fleet/v1/batch`, `wire::batch`): reads of known versions
//! answered together from memory; an item that would wait (disk, origin, an unknown
//! version) is deferred to a single read, so one slow item never holds up the others.
//!
//! Also `GET /_lakecache/fleet/v1/rules`: the key rules and page size this node applies,
//! which other members adopt or check at start.
//!
//! Owns: authentication, request parsing, the answer's shape. Not the read path (`cache`).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use lakecache_common::page::ByteRange;
use lakecache_common::wire;
use lakecache_common::wire::batch;
use lakecache_s3::request::percent_decode;
use lakecache_s3::response::object_headers;

use crate::cache::spend::{self, Spend};
use crate::cache::{Cache, CacheError};
use crate::metrics as m;

type Reply = Response<s3s::Body>;

/// A range from the object's end on, for a single read (416) and a batch's item alike.
const RANGE_NOT_SATISFIABLE: &str = "The requested range is not satisfiable";

pub struct FleetApi {
    cache: Arc<Cache>,
    key: Option<wire::FleetKey>,
    page_size: u64,
    /// The series every successful read lands in, registered once (a lookup by label
    /// per request costs more than the rest of a memory hit's bookkeeping).
    get_ok: metrics::Counter,
    head_ok: metrics::Counter,
    get_latency: metrics::Histogram,
    head_latency: metrics::Histogram,
    batch_ok: metrics::Counter,
    batch_latency: metrics::Histogram,
    /// Items of batches by outcome: served, deferred, error.
    items: [metrics::Counter; 3],
    /// Reads served without asking the origin anything.
    avoided: metrics::Counter,
}

/// The read's `x-lakecache-origin-budget`, if it names one.
fn origin_budget(h: &http::HeaderMap) -> Result<Option<u64>, &'static str> {
    match h.get(wire::ORIGIN_BUDGET) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or("x-lakecache-origin-budget must be a whole number of origin requests"),
    }
}

/// Whether `path` belongs to the internal endpoint.
pub fn is_fleet_path(path: &str) -> bool {
    path.starts_with(wire::PAGE_PATH) || path == wire::RULES_PATH || path == batch::BATCH_PATH
}

impl FleetApi {
    /// Call after the metrics recorder is installed: the series are registered here.
    pub fn new(cache: Arc<Cache>, secret: Option<&str>) -> Self {
        let page_size = cache.geometry().page_size_bytes();
        Self {
            cache,
            key: secret.map(wire::FleetKey::new),
            page_size,
            get_ok: metrics::counter!(m::FLEET_REQUESTS, "op" => "get", "status" => "200"),
            head_ok: metrics::counter!(m::FLEET_REQUESTS, "op" => "head", "status" => "200"),
            get_latency: metrics::histogram!(m::FLEET_LATENCY, "op" => "get"),
            head_latency: metrics::histogram!(m::FLEET_LATENCY, "op" => "head"),
            batch_ok: metrics::counter!(m::FLEET_REQUESTS, "op" => "batch", "status" => "200"),
            batch_latency: metrics::histogram!(m::FLEET_LATENCY, "op" => "batch"),
            items: ["served", "deferred", "error"]
                .map(|o| metrics::counter!(m::FLEET_BATCH_ITEMS, "outcome" => o)),
            avoided: metrics::counter!(m::ORIGIN_AVOIDED, "surface" => "fleet"),
        }
    }

    pub async fn handle<B>(&self, req: Request<B>) -> Reply {
        let started = std::time::Instant::now();
        let head = req.method() == Method::HEAD;
        let is_batch = req.uri().path() == batch::BATCH_PATH;
        let is_page = req.uri().path().starts_with(wire::PAGE_PATH);
        let reply = match origin_budget(req.headers()) {
            Ok(budget) => {
                let spend = Spend::new(budget);
                let mut reply = spend::scope(spend.clone(), self.answer(&req, &spend)).await;
                if is_page {
                    // Taken when the answer's head leaves: every fetch the read started by
                    // then (all of them, for a read of at most wire::MAX_ACCOUNTED_READ).
                    self.account(&spend, reply.status().is_success(), reply.headers_mut());
                }
                reply
            }
            Err(message) => error(StatusCode::BAD_REQUEST, "InvalidArgument", message),
        };
        let (ok, latency, op) = if is_batch {
            (&self.batch_ok, &self.batch_latency, "batch")
        } else if head {
            (&self.head_ok, &self.head_latency, "head")
        } else {
            (&self.get_ok, &self.get_latency, "get")
        };
        if reply.status() == StatusCode::OK {
            ok.increment(1);
        } else {
            metrics::counter!(m::FLEET_REQUESTS, "op" => op, "status" => reply.status().as_str().to_string())
                .increment(1);
        }
        latency.record(lakecache_common::metrics::ms_since(started));
        reply
    }

    async fn answer<B>(&self, req: &Request<B>, spend: &Spend) -> Reply {
        let h = req.headers();
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let path = req.uri().path();
        let is_batch = path == batch::BATCH_PATH;
        // What the signature covers besides method, path and time: a batch's item list,
        // else the ranges (and the version) of a single read.
        let ranges_text = text(if is_batch { batch::BATCH } else { wire::RANGES });
        let version_text = text(wire::READ_VERSION);
        let Some(fleet_key) = &self.key else {
            metrics::counter!(m::FLEET_AUTH_REFUSED, "reason" => "off").increment(1);
            return error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "The fleet endpoint is off on this node (no fleet.secret)",
            );
        };
        if let Err(e) = fleet_key.verify(
            h.get(wire::FLEET_AUTH).map(|v| v.as_bytes()),
            req.method().as_str(),
            path,
            ranges_text,
            version_text,
        ) {
            metrics::counter!(m::FLEET_AUTH_REFUSED, "reason" => e.label()).increment(1);
            let (status, code, message) = e.answer();
            return error(status, code, message);
        }
        if path == wire::RULES_PATH {
            if req.method() != Method::GET {
                return error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "GET only");
            }
            return self.rules();
        }
        if is_batch {
            if req.method() != Method::GET {
                return error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "GET only");
            }
            return self.batch(ranges_text);
        }
        let is_head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "GET or HEAD only"),
        };
        let Some(rest) = path.strip_prefix(wire::PAGE_PATH) else {
            return error(StatusCode::NOT_FOUND, "NoSuchKey", "No such fleet endpoint");
        };
        let Some((bucket, key)) = rest.split_once('/') else {
            return error(StatusCode::BAD_REQUEST, "InvalidRequest", "The path names no key");
        };
        let (Some(bucket), Some(key)) = (percent_decode(bucket), percent_decode(key)) else {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidURI",
                "The path is not valid percent-encoded UTF-8",
            );
        };
        if bucket.is_empty() || key.is_empty() {
            return error(StatusCode::BAD_REQUEST, "InvalidRequest", "The path names no key");
        }
        let ranges = if ranges_text.is_empty() {
            None
        } else {
            match wire::parse_ranges(ranges_text) {
                Some(r) => Some(r),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "InvalidArgument",
                        "x-lakecache-ranges must be up to 256 ranges first-last",
                    );
                }
            }
        };
        let version = version_text.trim().trim_matches('"');
        // A read of an object this node does not know yet learns what it is from the GET of
        // its first range (no HEAD first). A HEAD asks the origin's HEAD — except for an
        // index file, whose size Lance asks for right before it reads the file: the GET of
        // its first run (a small index file whole) answers the HEAD in the same one request
        // and leaves the reads that follow nothing to fetch.
        let first = match (&ranges, is_head) {
            (_, true) if lakecache_common::ring::is_index_file(&key) => Some(ByteRange { start: 0, end: 1 }),
            (_, true) => None,
            (None, false) => Some(ByteRange { start: 0, end: u64::MAX }),
            (Some(r), false) => r.first().map(|&(start, end)| ByteRange { start, end }),
        };
        let obj = if version.is_empty() {
            let class = self.cache.classify(&key);
            self.cache.object_as(&bucket, &key, class, first).await.map(Some)
        } else {
            self.cache.object_at(&bucket, &key, version, first).await
        };
        let obj = match obj {
            Ok(Some(o)) => o,
            Ok(None) => {
                return error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "This node no longer holds that version of the object",
                );
            }
            Err(e) => return cache_error(e),
        };
        let size = obj.meta.size;
        // A range that runs past the object's end is cut at it (as S3 cuts a Range header);
        // one that starts there or later cannot be served.
        let wanted: Vec<ByteRange> = match ranges {
            None => vec![ByteRange { start: 0, end: size }],
            Some(r) => r.into_iter().map(|(start, end)| ByteRange { start, end: end.min(size) }).collect(),
        };
        if !ranges_text.is_empty() && wanted.iter().any(|r| r.start >= size) {
            return error(StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange", RANGE_NOT_SATISFIABLE);
        }
        let total: u64 = wanted.iter().map(|r| r.len()).sum();
        let mut headers = object_headers(&obj.meta).clone();
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(total));
        headers.insert(HeaderName::from_static(wire::OBJECT_SIZE), HeaderValue::from(size));
        if let Ok(v) = HeaderValue::from_str(&obj.meta.version) {
            headers.insert(HeaderName::from_static(wire::OBJECT_VERSION), v);
        }
        if is_head {
            return with_headers(Response::new(s3s::Body::empty()), headers);
        }
        if let Some(left) = spend.remaining() {
            let need: u64 = wanted.iter().map(|r| self.cache.origin_requests_needed(&obj, *r)).sum();
            if need > left {
                return cache_error(CacheError::OverBudget);
            }
        }
        if total <= wire::MAX_ACCOUNTED_READ {
            // Every fetch this read needs is started now, so its account below is whole.
            for r in &wanted {
                self.cache.plan_range(&obj, *r);
            }
        }
        // The answer's head leaves once the first range has started (its first bytes are
        // here): a read that cannot start is an error status, not a short 200.
        let mut iter = wanted.into_iter().filter(|r| !r.is_empty());
        let first = match iter.next() {
            None => None,
            Some(first) => match self.cache.read_started(obj.clone(), first).await {
                Ok(s) => Some(s),
                Err(CacheError::Changed) if !version.is_empty() => {
                    return error(
                        StatusCode::PRECONDITION_FAILED,
                        "PreconditionFailed",
                        "That version of the object is no longer at the origin",
                    );
                }
                Err(e) => return cache_error(e),
            },
        };
        let later: Vec<ByteRange> = iter.collect();
        let body: lakecache_common::object::ByteStream = match first {
            None => Box::pin(futures::stream::empty()),
            Some(first) if later.is_empty() => first,
            Some(first) => {
                let cache = self.cache.clone();
                let rest = futures::stream::iter(later)
                    .then(move |r| {
                        let (cache, obj) = (cache.clone(), obj.clone());
                        async move {
                            match cache.read_started(obj, r).await {
                                Ok(s) => s,
                                Err(e) => Box::pin(futures::stream::once(async move {
                                    Err(std::io::Error::other(e.to_string()))
                                })),
                            }
                        }
                    })
                    .flatten();
                Box::pin(first.chain(rest))
            }
        };
        let body = s3s::Body::http_body(http_body_util::StreamBody::new(
            body.map(|r: std::io::Result<Bytes>| r.map(hyper::body::Frame::data)),
        ));
        with_headers(Response::new(body), headers)
    }

    /// What the read cost at the origin so far, in the answer's headers; a read that cost
    /// nothing is one request the origin was spared.
    fn account(&self, spend: &Spend, served: bool, headers: &mut http::HeaderMap) {
        let requests = spend.requests();
        headers.insert(HeaderName::from_static(wire::ORIGIN_REQUESTS), HeaderValue::from(requests));
        headers.insert(HeaderName::from_static(wire::ORIGIN_BYTES), HeaderValue::from(spend.bytes()));
        if served && requests == 0 {
            self.avoided.increment(1);
        }
    }

    /// A batch's answer: every item's part, in order (`wire::batch`). Nothing here waits:
    /// an item is served from memory at a version this node knows, or deferred.
    fn batch(&self, text: &str) -> Reply {
        let items = match batch::parse_items(text) {
            Ok(i) => i,
            Err(why) => return error(StatusCode::BAD_REQUEST, "InvalidArgument", why),
        };
        let mut pieces: Vec<Bytes> = Vec::with_capacity(items.len() * 2);
        let mut total = 0u64;
        let mut push = |b: Bytes, pieces: &mut Vec<Bytes>| {
            total += b.len() as u64;
            pieces.push(b);
        };
        for item in &items {
            let version = item.version.trim_matches('"');
            let range = ByteRange { start: item.range.0, end: item.range.1 };
            match self.cache.memory_read_at(&item.bucket, &item.key, version, range) {
                Ok(Some(slices)) => {
                    self.items[0].increment(1);
                    self.avoided.increment(1);
                    let len = slices.iter().map(|s| s.len() as u64).sum();
                    push(batch::data_head(len), &mut pieces);
                    for s in slices {
                        push(s, &mut pieces);
                    }
                }
                Ok(None) => {
                    self.items[1].increment(1);
                    push(batch::defer_part(), &mut pieces);
                }
                Err(_) => {
                    self.items[2].increment(1);
                    let part = batch::error_part(416, "InvalidRange", false, RANGE_NOT_SATISFIABLE);
                    push(part, &mut pieces);
                }
            }
        }
        let body = s3s::Body::http_body(http_body_util::StreamBody::new(futures::stream::iter(
            pieces.into_iter().map(|b| Ok::<_, std::io::Error>(hyper::body::Frame::data(b))),
        )));
        let mut r = Response::new(body);
        r.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from(total));
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-lakecache-batch"));
        r
    }

    fn rules(&self) -> Reply {
        let doc = serde_json::json!({
            "page_size": self.page_size,
            "rules": self.cache.key_rules().spec(),
        });
        let mut r = Response::new(s3s::Body::from(doc.to_string()));
        r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

fn with_headers(mut r: Reply, headers: http::HeaderMap) -> Reply {
    *r.headers_mut() = headers;
    r
}

/// An error answer: status, S3 code in a header, a short message as the body.
fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    lakecache_s3::response::fleet_error(status, code, message)
}

/// A read-path error as the S3 surface would answer it (same code, status, message and
/// origin mark), in the internal protocol's shape.
fn cache_error(e: CacheError) -> Reply {
    let se = crate::s3::cache_err(e);
    let status = se.status_code().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = error(status, se.code().as_str(), se.message().unwrap_or(""));
    if let Some(h) = se.headers()
        && let Some(v) = h.get(wire::ERROR_SOURCE)
    {
        r.headers_mut().insert(HeaderName::from_static(wire::ERROR_SOURCE), v.clone());
    }
    r
}
