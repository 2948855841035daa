//! Requests passed to a cache node as they came: object writes (PUT with every conditional
//! header and metadata, CopyObject from any bucket), multipart uploads (create, parts, part
//! copies, ListParts, complete, abort), ListObjects v1, ListBuckets and the other
//! bucket-level calls. The node answers with its own S3 semantics (part numbers with gaps,
//! conditional writes under its key lock, its listing code); the router re-signs the
//! request with the fleet's node key, streams both bodies (no buffering of uploads), and
//! invalidates the object on every node after a write.
//!
//! Writes and multipart calls of one key go to the owner of the key's first page (so writes
//! to one key meet in one node, and an upload is staged where it completes); bucket-level
//! calls to the owners of the bucket's root, with failover when the call is a read.

use std::sync::Arc;

use http::{HeaderMap, Method, Uri};
use lakecache_s3::request::{HeaderConditions, host_bucket, percent_decode, range_is_ignored};
use s3s::route::S3Route;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use lakecache_fleet::membership::{Fleet, Member};
use lakecache_fleet::metrics::ROUTER_REQUESTS;
use lakecache_fleet::sign::{Signer, s3_encode};

/// What a request is about, as far as forwarding cares.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// ListBuckets.
    Service,
    /// A bucket-level call the router does not model (ListObjects v1, HeadBucket, …).
    Bucket(String),
    /// A multipart call on one key.
    Upload { bucket: String, key: String },
    /// PutObject or CopyObject.
    Write { bucket: String, key: String },
    /// A GetObject whose Range header S3 ignores (answered by the router itself, whole).
    WholeObject { bucket: String, key: String },
}

pub struct Passthrough {
    fleet: Arc<Fleet>,
    reads: crate::proxy::Router,
    signer: Signer,
    domains: Vec<String>,
    anonymous: bool,
    http: reqwest::Client,
}

/// Request headers a node needs to see (besides the ones the router signs itself).
fn forwarded(name: &str) -> bool {
    matches!(
        name,
        "content-type" | "content-md5" | "content-encoding" | "content-disposition" | "cache-control"
    ) || matches!(name, "if-match" | "if-none-match" | "expires")
        || (name.starts_with("x-amz-")
            && !matches!(
                name,
                "x-amz-date"
                    | "x-amz-content-sha256"
                    | "x-amz-security-token"
                    | "x-amz-decoded-content-length"
                    | "x-amz-trailer"
            )
            && !name.starts_with("x-amz-checksum-"))
}

/// Response headers passed back to the client.
fn returned(name: &str) -> bool {
    matches!(name, "content-type" | "etag" | "last-modified" | "location") || name.starts_with("x-amz-")
}

impl Passthrough {
    pub fn new(
        fleet: Arc<Fleet>,
        region: String,
        domains: Vec<String>,
        anonymous: bool,
    ) -> anyhow::Result<Self> {
        let signer = Signer::new(&fleet.cfg.node_key.access_key, &fleet.cfg.node_key.secret_key, &region);
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(fleet.cfg.health_timeout)
            .read_timeout(fleet.cfg.request_timeout)
            .build()?;
        let reads = crate::proxy::Router::new(fleet.clone())?;
        Ok(Self { fleet, reads, signer, domains, anonymous, http })
    }

    /// Bucket and key of a request (virtual-hosted or path style), decoded.
    fn bucket_key(&self, uri: &Uri, headers: &HeaderMap) -> Option<(Option<String>, Option<String>)> {
        let path = percent_decode(uri.path().strip_prefix('/')?)?;
        let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Some(match host_bucket(&self.domains, host) {
            Some(b) => (Some(b.to_string()), nonempty(&path)),
            None => match path.split_once('/') {
                Some((b, k)) => (nonempty(b), nonempty(k)),
                None => (nonempty(&path), None),
            },
        })
    }

    fn target(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Target> {
        let names: Vec<&str> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split('=').next().unwrap_or(""))
            .collect();
        let has = |n: &str| names.contains(&n);
        let (bucket, key) = self.bucket_key(uri, headers)?;
        match (bucket, key) {
            (Some(bucket), Some(key)) if range_is_ignored(method, uri, headers) => {
                Some(Target::WholeObject { bucket, key })
            }
            (None, None) if method == Method::GET => Some(Target::Service),
            (Some(bucket), Some(key)) if has("uploadId") || has("uploads") => {
                Some(Target::Upload { bucket, key })
            }
            // A plain PUT of an object: no sub-resource (tagging, acl, …) in the query.
            (Some(bucket), Some(key))
                if method == Method::PUT && names.iter().all(|n| *n == "x-id" || n.starts_with("X-Amz-")) =>
            {
                Some(Target::Write { bucket, key })
            }
            // Bucket calls (listings included) go to a node; DeleteObjects is split by key
            // owner in `proxy`.
            (Some(bucket), None) => {
                let router_owns = method == Method::POST && has("delete");
                (!router_owns).then_some(Target::Bucket(bucket))
            }
            _ => None,
        }
    }

    /// The nodes to try, best first.
    fn nodes(&self, target: &Target, read: bool) -> Vec<Arc<Member>> {
        let n = if read { self.fleet.cfg.failover_attempts } else { 1 };
        match target {
            Target::Service => self.fleet.owners("", "", 0, n),
            Target::Bucket(b) => self.fleet.owners(b, "", 0, n),
            Target::Upload { bucket, key }
            | Target::Write { bucket, key }
            | Target::WholeObject { bucket, key } => self.fleet.owners(bucket, key, 0, 1),
        }
    }

    /// The request as a node should get it: path style, canonical query, signed.
    fn build(
        &self,
        member: &Member,
        target: &Target,
        req: &S3Request<s3s::Body>,
        body: Option<reqwest::Body>,
    ) -> S3Result<reqwest::Request> {
        let path = match target {
            Target::Service => "/".to_string(),
            Target::Bucket(b) => format!("/{}", s3_encode(b, false)),
            Target::Upload { bucket, key }
            | Target::Write { bucket, key }
            | Target::WholeObject { bucket, key } => {
                format!("/{}/{}", s3_encode(bucket, false), s3_encode(key, false))
            }
        };
        let mut query: Vec<(String, String)> = url_pairs(req.uri.query().unwrap_or(""))
            .into_iter()
            .filter(|(k, _)| !k.starts_with("X-Amz-"))
            .collect();
        query.sort();
        let base = member.cfg.url.trim_end_matches('/');
        let url = if query.is_empty() {
            format!("{base}{path}")
        } else {
            let q: Vec<String> =
                query.iter().map(|(k, v)| format!("{}={}", s3_encode(k, true), s3_encode(v, true))).collect();
            format!("{base}{path}?{}", q.join("&"))
        };
        let url = reqwest::Url::parse(&url).map_err(|e| s3_error!(InternalError, "bad node URL: {e}"))?;
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
            None => url.host_str().unwrap_or("").to_string(),
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &req.headers {
            if name == http::header::CONTENT_ENCODING {
                // s3s has already decoded an aws-chunked body: only the object's own
                // encodings (gzip, …) go on.
                let kept: Vec<&str> = value
                    .to_str()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
                    .collect();
                if let (false, Ok(v)) = (kept.is_empty(), http::HeaderValue::from_str(&kept.join(", "))) {
                    headers.insert(name.clone(), v);
                }
            } else if forwarded(name.as_str()) {
                headers.append(name.clone(), value.clone());
            }
        }
        // The node gets the decoded body: its length is the decoded one.
        let length = req
            .headers
            .get("x-amz-decoded-content-length")
            .or_else(|| req.headers.get(http::header::CONTENT_LENGTH))
            .cloned();
        if let (Some(len), true) = (length, body.is_some()) {
            headers.insert(http::header::CONTENT_LENGTH, len);
        }
        self.signer.sign(&req.method, &host, &path, &query, &mut headers);
        let mut out = reqwest::Request::new(req.method.clone(), url);
        *out.headers_mut() = headers;
        *out.body_mut() = body;
        Ok(out)
    }
}

/// Decoded `name=value` pairs of a query string.
fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| percent_decode(&s.replace('+', "%20")).unwrap_or_else(|| s.to_string());
            (dec(k), dec(v))
        })
        .collect()
}

#[async_trait::async_trait]
impl S3Route for Passthrough {
    fn is_match(&self, method: &Method, uri: &Uri, headers: &HeaderMap, _: &mut http::Extensions) -> bool {
        self.target(method, uri, headers).is_some()
    }

    async fn check_access(&self, req: &mut S3Request<s3s::Body>) -> S3Result<()> {
        if req.credentials.is_some() || self.anonymous {
            Ok(())
        } else {
            Err(s3_error!(AccessDenied, "Signature is required"))
        }
    }

    async fn call(&self, mut req: S3Request<s3s::Body>) -> S3Result<S3Response<s3s::Body>> {
        let target =
            self.target(&req.method, &req.uri, &req.headers).ok_or_else(|| s3_error!(InvalidRequest))?;
        if let Target::WholeObject { bucket, key } = &target {
            return self.whole_object(bucket, key, &req.headers).await;
        }
        let read = matches!(req.method, Method::GET | Method::HEAD);
        let has_body = matches!(req.method, Method::PUT | Method::POST);
        // A client body that breaks (a bad payload hash, fewer bytes than announced, a cut
        // aws-chunked stream) fails the upload to the node too: that is the client's error,
        // not the node's, and is answered as such.
        let body_fault: Arc<parking_lot::Mutex<Option<String>>> = Arc::default();
        let body_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut body = has_body.then(|| {
            let (fault, count) = (body_fault.clone(), body_bytes.clone());
            let b = http_body_util::BodyExt::map_frame(std::mem::take(&mut req.input), move |f| {
                if let Some(d) = f.data_ref() {
                    count.fetch_add(d.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                f
            });
            http_body_util::BodyExt::map_err(b, move |e| {
                let mut f = fault.lock();
                if f.is_none() {
                    *f = Some(e.to_string());
                }
                e
            })
        });
        let mut last_err = None;
        for m in self.nodes(&target, read) {
            let payload = body.take().map(reqwest::Body::wrap);
            let request = self.build(&m, &target, &req, payload)?;
            let op = match &target {
                Target::Write { .. } => "put",
                Target::Upload { .. } => "multipart",
                _ => "forward",
            };
            metrics::counter!(ROUTER_REQUESTS, "node" => m.cfg.id.clone(), "op" => op).increment(1);
            let sent = self.http.execute(request).await;
            if let Some(reason) = body_fault.lock().take() {
                let got = body_bytes.load(std::sync::atomic::Ordering::Relaxed);
                return Err(BodyFault::classify(&req.headers, got, reason).to_s3());
            }
            match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let origin = resp.headers().get(lakecache_common::wire::ERROR_SOURCE).is_some_and(|v| {
                        v.as_bytes() == lakecache_common::wire::ERROR_SOURCE_ORIGIN.as_bytes()
                    });
                    if status.is_server_error() && !origin {
                        // The node's own fault: counted; a read tries the next node.
                        self.fleet.report_failure(&m);
                        if read && self.fleet.retry_budget.withdraw() {
                            last_err = Some(format!("{} answered {status}", m.cfg.id));
                            continue;
                        }
                    }
                    let changed = match &target {
                        // CompleteMultipartUpload answers 200 before its XML says whether it
                        // worked; invalidating either way is safe.
                        Target::Upload { bucket, key }
                            if req.method == Method::POST
                                && req.uri.query().is_some_and(|q| q.contains("uploadId")) =>
                        {
                            Some((bucket, key))
                        }
                        // A refused conditional write changed nothing, but a failed one may
                        // have: only a 412 or 304 is known to leave the object alone.
                        Target::Write { bucket, key }
                            if status != http::StatusCode::PRECONDITION_FAILED
                                && status != http::StatusCode::NOT_MODIFIED =>
                        {
                            Some((bucket, key))
                        }
                        _ => None,
                    };
                    if let Some((bucket, key)) = changed {
                        self.fleet.invalidate_everywhere(bucket, key).await;
                    }
                    let mut headers = HeaderMap::new();
                    for (k, v) in resp.headers() {
                        if returned(k.as_str()) {
                            headers.append(k.clone(), v.clone());
                        }
                    }
                    let body: http::Response<reqwest::Body> = resp.into();
                    let mut out = S3Response::new(s3s::Body::http_body_unsync(body.into_body()));
                    out.status = Some(status);
                    out.headers = headers;
                    return Ok(out);
                }
                Err(e) => {
                    self.fleet.report_failure(&m);
                    tracing::warn!(node = %m.cfg.id, error = %e, "forwarded request failed");
                    last_err = Some(e.to_string());
                    if !read || !self.fleet.retry_budget.withdraw() {
                        break;
                    }
                }
            }
        }
        Err(match last_err {
            Some(e) => s3_error!(ServiceUnavailable, "The cache node did not answer: {e}"),
            None => s3_error!(ServiceUnavailable, "No cache node is available"),
        })
    }
}

impl Passthrough {
    /// A GET whose Range S3 ignores: the whole object, as `proxy` reads it.
    async fn whole_object(
        &self,
        bucket: &str,
        key: &str,
        headers: &HeaderMap,
    ) -> S3Result<S3Response<s3s::Body>> {
        let conditions = HeaderConditions::parse(headers)?;
        let r = self.reads.start_read(bucket, key, None, conditions.as_conditions()).await?;
        let h = crate::proxy::read_headers(&r.info, r.range, false);
        let body =
            s3s::Body::http_body(http_body_util::StreamBody::new(futures::StreamExt::map(r.body, |c| {
                c.map(hyper::body::Frame::data)
            })));
        let mut out = S3Response::with_headers(body, h);
        out.status = Some(http::StatusCode::OK);
        Ok(out)
    }
}

/// Why a client's request body could not be read.
enum BodyFault {
    /// The payload does not hash to its `x-amz-content-sha256`.
    Sha256Mismatch,
    /// Fewer (or more) bytes than announced, or an aws-chunked stream that breaks off or
    /// does not parse.
    Incomplete(String),
}

impl BodyFault {
    /// A body signed with its SHA-256 that arrived whole (as many bytes as its
    /// Content-Length) and still failed can only have failed its hash; anything else
    /// broke off or did not parse.
    fn classify(headers: &HeaderMap, received: u64, reason: String) -> Self {
        let hashed = headers
            .get("x-amz-content-sha256")
            .is_some_and(|v| v.len() == 64 && v.as_bytes().iter().all(u8::is_ascii_hexdigit));
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if hashed && length == Some(received) {
            BodyFault::Sha256Mismatch
        } else {
            BodyFault::Incomplete(reason)
        }
    }

    fn to_s3(&self) -> S3Error {
        match self {
            BodyFault::Sha256Mismatch => {
                let code =
                    S3ErrorCode::from_bytes(b"XAmzContentSHA256Mismatch").unwrap_or(S3ErrorCode::BadDigest);
                let mut e = S3Error::with_message(
                    code,
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                );
                e.set_status_code(http::StatusCode::BAD_REQUEST);
                e
            }
            BodyFault::Incomplete(m) => S3Error::with_message(
                S3ErrorCode::IncompleteBody,
                format!("The request body ended before it was complete or could not be read: {m}"),
            ),
        }
    }
}
