//! The internal page protocol (see `lakecache_common::wire`): how routers and search nodes
//! read pages from this node without S3 — no s3s parsing, no SigV4, no XML. A request is
//! signed with the fleet secret; it names an object, optionally the version it must be of,
//! and the byte ranges wanted; the answer streams those bytes from the tiers with the
//! object's metadata in headers, so a reader learns size and version from its first read.
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
use lakecache_s3::request::percent_decode;
use lakecache_s3::response::{attr_headers, httpdate};

use crate::cache::{Cache, CacheError, ObjectHandle};
use crate::metrics as m;

type Reply = Response<s3s::Body>;

pub struct FleetApi {
    cache: Arc<Cache>,
    secret: Option<String>,
    page_size: u64,
}

/// Whether `path` belongs to the internal endpoint.
pub fn is_fleet_path(path: &str) -> bool {
    path.starts_with(wire::PAGE_PATH) || path == wire::RULES_PATH
}

impl FleetApi {
    pub fn new(cache: Arc<Cache>, secret: Option<String>) -> Self {
        let page_size = cache.geometry().page_size_bytes();
        Self { cache, secret, page_size }
    }

    pub async fn handle<B>(&self, req: Request<B>) -> Reply {
        let started = std::time::Instant::now();
        let method = req.method().clone();
        let op = if method == Method::HEAD { "head" } else { "get" };
        let reply = self.answer(&req).await;
        metrics::counter!(m::FLEET_REQUESTS, "op" => op, "status" => reply.status().as_str().to_string())
            .increment(1);
        metrics::histogram!(m::FLEET_LATENCY, "op" => op)
            .record(lakecache_common::metrics::ms_since(started));
        reply
    }

    async fn answer<B>(&self, req: &Request<B>) -> Reply {
        let h = req.headers();
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let ranges_text = text(wire::RANGES);
        let version_text = text(wire::READ_VERSION);
        let path = req.uri().path();
        let Some(secret) = &self.secret else {
            metrics::counter!(m::FLEET_AUTH_REFUSED, "reason" => "off").increment(1);
            return error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "The fleet endpoint is off on this node (no fleet.secret)",
            );
        };
        if let Err(e) = wire::verify_fleet_auth(
            secret,
            h.get(wire::FLEET_AUTH).map(|v| v.as_bytes()),
            req.method().as_str(),
            path,
            ranges_text,
            version_text,
        ) {
            metrics::counter!(m::FLEET_AUTH_REFUSED, "reason" => e.label()).increment(1);
            return match e {
                wire::FleetAuthError::Missing => error(
                    StatusCode::UNAUTHORIZED,
                    "AccessDenied",
                    "The fleet endpoint needs an x-lakecache-fleet-auth signature",
                ),
                wire::FleetAuthError::Wrong => error(
                    StatusCode::FORBIDDEN,
                    "SignatureDoesNotMatch",
                    "The fleet signature does not match",
                ),
                wire::FleetAuthError::Expired => {
                    error(StatusCode::FORBIDDEN, "RequestTimeTooSkewed", "The fleet signature has expired")
                }
            };
        }
        if path == wire::RULES_PATH {
            if req.method() != Method::GET {
                return error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "GET only");
            }
            return self.rules();
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
        let obj = if version.is_empty() {
            self.cache.object(&bucket, &key).await.map(Some)
        } else {
            self.cache.object_at(&bucket, &key, version).await
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
        let wanted: Vec<ByteRange> = match ranges {
            None => vec![ByteRange { start: 0, end: size }],
            Some(r) => r.into_iter().map(|(start, end)| ByteRange { start, end }).collect(),
        };
        if wanted.iter().any(|r| r.end > size) {
            return error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The requested range is not satisfiable",
            );
        }
        let total: u64 = wanted.iter().map(|r| r.len()).sum();
        let headers = meta_headers(&obj, total);
        if is_head {
            return with_headers(Response::new(s3s::Body::empty()), headers);
        }
        // The answer's head leaves once the first range has started (its first bytes are
        // here): a read that cannot start is an error status, not a short 200.
        let mut streams = Vec::with_capacity(wanted.len());
        let mut iter = wanted.into_iter().filter(|r| !r.is_empty());
        if let Some(first) = iter.next() {
            match self.cache.read_started(obj.clone(), first).await {
                Ok(s) => streams.push(s),
                Err(CacheError::Changed) if !version.is_empty() => {
                    return error(
                        StatusCode::PRECONDITION_FAILED,
                        "PreconditionFailed",
                        "That version of the object is no longer at the origin",
                    );
                }
                Err(e) => return cache_error(e),
            }
        }
        let cache = self.cache.clone();
        let later: Vec<ByteRange> = iter.collect();
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
        let body = futures::stream::iter(streams).flatten().chain(rest);
        let body = s3s::Body::http_body(http_body_util::StreamBody::new(
            body.map(|r: std::io::Result<Bytes>| r.map(hyper::body::Frame::data)),
        ));
        with_headers(Response::new(body), headers)
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

fn meta_headers(obj: &ObjectHandle, content_length: u64) -> http::HeaderMap {
    let meta = &obj.meta;
    let mut h = http::HeaderMap::new();
    attr_headers(&meta.attrs, &mut h);
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put("content-length", content_length.to_string());
    put(wire::OBJECT_SIZE, meta.size.to_string());
    put(wire::OBJECT_VERSION, meta.version.clone());
    put("last-modified", httpdate(meta.last_modified));
    if let Some(e) = &meta.etag {
        put("etag", format!("\"{e}\""));
    }
    h
}

fn with_headers(mut r: Reply, headers: http::HeaderMap) -> Reply {
    r.headers_mut().extend(headers);
    r
}

/// An error answer: status, S3 code in a header, a short message as the body.
fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    let mut r = Response::new(s3s::Body::from(message.to_string()));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(code) {
        r.headers_mut().insert(HeaderName::from_static(wire::ERROR_CODE), v);
    }
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
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
