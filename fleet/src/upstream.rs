//! How the router (and the in-process client) asks one cache node for an object's
//! metadata or ranges of its bytes: over the internal page protocol (`wire`: HTTP/1.1
//! connections of its own, `conn`, requests signed with the fleet secret, metadata in the
//! answer's headers, no XML), and every failure sorted by whose fault it is. That sorting is what keeps a
//! client's mistakes and a slow origin from ejecting healthy nodes:
//!
//! - no answer (refused, reset, timed out) or a node's own 5xx: the node's fault — count
//!   it, fail over;
//! - a 4xx: the request's fault (a missing key, a bad range, a precondition) — pass it on;
//! - a 5xx marked `x-lakecache-error-source: origin`: the origin's fault — pass it on,
//!   another owner would only wait for the same origin again.
//!
//! Does not own placement, failover or streaming order (`routing`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use lakecache_common::page::ByteRange;
use lakecache_common::wire;

use crate::account::{FileKind, Grant};
use crate::conn;
use crate::membership::Member;
use crate::sign::{Signer, s3_encode};

/// The largest error body read from a node (S3 error documents are a few hundred bytes).
const ERROR_BODY_MAX_BYTES: usize = 16 * 1024;

/// An object as a node describes it in answer to a HEAD.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub size: u64,
    /// Without quotes.
    pub etag: Option<String>,
    pub last_modified: SystemTime,
    pub content_type: Option<String>,
    /// What the node keys the object's pages by (`x-lakecache-object-version`): the
    /// version a later read names.
    pub version: Option<String>,
    /// The object's own headers to hand back to clients unchanged (Content-Encoding,
    /// Cache-Control, Content-Disposition, Content-Language, Expires, `x-amz-meta-*`, …).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What every answer about this version carries, as the node sent it: ETag,
    /// Last-Modified, Content-Type (`application/octet-stream` if none), Accept-Ranges and
    /// [`headers`](Self::headers) — an answer adds only its length and range.
    pub answer: HeaderMap,
}

/// Response headers that describe the object itself and go back to clients as they came.
pub fn object_header(name: &str) -> bool {
    matches!(
        name,
        "content-encoding"
            | "content-disposition"
            | "content-language"
            | "cache-control"
            | "expires"
            | "x-amz-version-id"
            | "x-amz-storage-class"
            | "x-amz-website-redirect-location"
    ) || name.starts_with("x-amz-meta-")
        || name.starts_with("x-amz-checksum-")
        || name == "x-amz-missing-meta"
}

/// A node's answer that was not a success, or no answer at all.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// Refused, reset, timed out, or the body broke off: nothing trustworthy came back.
    #[error("cache node {node} did not answer: {reason}")]
    NoAnswer { node: String, reason: String },
    /// Every connection this member may keep to the node was busy for the whole time limit:
    /// this member's own congestion, not the node's fault (answered 503 SlowDown).
    #[error("too many reads in flight to cache node {node}: {reason}")]
    Busy { node: String, reason: String },
    /// The node answered with an error status.
    #[error("cache node {node} answered {status}: {code}{}", message_suffix(.message))]
    Answer {
        node: String,
        status: StatusCode,
        /// The S3 error code of the body (HEAD answers have none: derived from the status).
        code: String,
        message: Option<String>,
        /// The node says its origin is at fault.
        origin: bool,
    },
}

fn message_suffix(m: &Option<String>) -> String {
    m.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
}

impl UpstreamError {
    /// Whether this error says something about the node's health.
    pub fn is_node_fault(&self) -> bool {
        match self {
            UpstreamError::NoAnswer { .. } => true,
            UpstreamError::Busy { .. } => false,
            UpstreamError::Answer { status, origin, .. } => status.is_server_error() && !origin,
        }
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            UpstreamError::NoAnswer { .. } | UpstreamError::Busy { .. } => None,
            UpstreamError::Answer { status, .. } => Some(*status),
        }
    }

    /// The node refused because the object is not at the version asked for.
    pub fn is_version_mismatch(&self) -> bool {
        self.status() == Some(StatusCode::PRECONDITION_FAILED)
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// The error for an `object_store` caller (the in-process client), with the kinds
    /// lance and other readers act on.
    pub fn to_object_store(&self, path: &str) -> object_store::Error {
        let source = Box::new(self.clone());
        match self.status() {
            Some(StatusCode::NOT_FOUND) => object_store::Error::NotFound { path: path.to_string(), source },
            Some(StatusCode::PRECONDITION_FAILED) => {
                object_store::Error::Precondition { path: path.to_string(), source }
            }
            Some(StatusCode::NOT_MODIFIED) => {
                object_store::Error::NotModified { path: path.to_string(), source }
            }
            Some(StatusCode::FORBIDDEN) => {
                object_store::Error::PermissionDenied { path: path.to_string(), source }
            }
            _ => object_store::Error::Generic { store: "lakecache", source },
        }
    }
}

/// The S3 code a body-less error answer (HEAD) stands for.
fn code_of_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        304 => "NotModified",
        400 => "BadRequest",
        403 => "AccessDenied",
        404 => "NoSuchKey",
        412 => "PreconditionFailed",
        416 => "InvalidRange",
        501 => "NotImplemented",
        503 => "ServiceUnavailable",
        _ if status.is_client_error() => "BadRequest",
        _ => "InternalError",
    }
}

/// The text of `<tag>…</tag>` in a small XML document (S3 error bodies), unescaped.
fn xml_text(doc: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = doc.find(&open)? + open.len();
    let end = start + doc[start..].find(&format!("</{tag}>"))?;
    let raw = &doc[start..end];
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// A successful GET: the answer's body, as it arrives.
pub type BodyStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send + Sync>>;

/// What a node says it applies (`GET /_lakecache/fleet/v1/rules`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct NodeRules {
    pub page_size: u64,
    pub rules: lakecache_common::keys::KeyRuleSpec,
}

/// What a page read asks for besides the range.
#[derive(Debug, Clone, Default)]
pub struct ReadVersion {
    /// The version (ETag, unquoted) the bytes must be of.
    pub etag: Option<String>,
}

impl ReadVersion {
    /// The version `info` describes: what the node keys its pages by, else the ETag.
    pub fn of(info: &ObjectInfo) -> Self {
        Self { etag: info.version.clone().or_else(|| info.etag.clone()) }
    }
}

pub struct NodeClient {
    /// S3 calls (deletes), signed with the node key.
    http: reqwest::Client,
    signer: Signer,
    key: wire::FleetKey,
    connect_timeout: Duration,
    timeout: Duration,
    /// Page-protocol connections per node at most.
    max_connections: usize,
    /// Exchanges per node before small reads of known versions queue into batches (0: never).
    batch_in_flight: usize,
    /// The fleet's page size: what a read's worst-case origin cost is counted in.
    pub page_size: u64,
}

impl NodeClient {
    /// `connect_timeout` bounds connection setup; `timeout` the wait for an answer's head
    /// and for each piece of its body; `max_connections` caps the connections kept to one
    /// node.
    pub fn new(
        signer: Signer,
        secret: String,
        connect_timeout: Duration,
        timeout: Duration,
        max_connections: usize,
        batch_in_flight: usize,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(connect_timeout)
            .read_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .build()?;
        Ok(Self {
            http,
            signer,
            key: wire::FleetKey::new(&secret),
            connect_timeout,
            timeout,
            max_connections,
            batch_in_flight,
            page_size: 1 << 20,
        })
    }

    /// `member`'s page-protocol connections.
    fn pool<'a>(&self, member: &'a Member) -> &'a Arc<conn::Pool> {
        member.conns.get_or_init(|| {
            Arc::new(conn::Pool::new(
                &member.cfg.id,
                &member.cfg.url,
                self.max_connections,
                self.connect_timeout,
                self.timeout,
            ))
        })
    }

    /// `member`'s batching of small reads.
    fn batcher<'a>(&self, member: &'a Member) -> &'a Arc<crate::batch::Batcher> {
        member.batcher.get_or_init(|| {
            Arc::new(crate::batch::Batcher::new(
                &member.cfg.id,
                self.pool(member).clone(),
                self.key.clone(),
                self.batch_in_flight,
            ))
        })
    }

    /// Sends a signed request of the internal protocol to `member`.
    async fn send_page(
        &self,
        member: &Member,
        method: &str,
        path: &str,
        ranges: &str,
        version: &str,
    ) -> Result<conn::Answer, UpstreamError> {
        signed_exchange(self.pool(member), &self.key, &member.cfg.id, method, path, ranges, version, None)
            .await
    }

    /// [`send_page`](Self::send_page) for a read that may cost up to `most` origin requests:
    /// counted in the current work's I/O account, within its budget (`account`).
    #[allow(clippy::too_many_arguments)]
    async fn send_read(
        &self,
        member: &Member,
        method: &str,
        path: &str,
        ranges: &str,
        version: &str,
        most: u64,
        key: &str,
    ) -> Result<conn::Answer, UpstreamError> {
        let grant = Grant::take(most, FileKind::of(key));
        signed_exchange(
            self.pool(member),
            &self.key,
            &member.cfg.id,
            method,
            path,
            ranges,
            version,
            Some(grant),
        )
        .await
    }

    /// The path of the internal protocol's page endpoint for an object.
    fn page_path(bucket: &str, key: &str) -> String {
        let (bucket, key) = (s3_encode(bucket, false), s3_encode(key, false));
        let mut path = String::with_capacity(wire::PAGE_PATH.len() + bucket.len() + 1 + key.len());
        path.push_str(wire::PAGE_PATH);
        path.push_str(&bucket);
        path.push('/');
        path.push_str(&key);
        path
    }

    fn request(
        &self,
        member: &Member,
        method: Method,
        bucket: &str,
        key: &str,
        mut headers: HeaderMap,
    ) -> Result<reqwest::Request, UpstreamError> {
        let path = format!("/{}/{}", s3_encode(bucket, false), s3_encode(key, false));
        let base = member.cfg.url.trim_end_matches('/');
        let no_answer = |reason: String| UpstreamError::NoAnswer { node: member.cfg.id.clone(), reason };
        let url = reqwest::Url::parse(&format!("{base}{path}"))
            .map_err(|e| no_answer(format!("bad node URL {base}: {e}")))?;
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
            None => url.host_str().unwrap_or("").to_string(),
        };
        self.signer.sign(&method, &host, &path, &[], &mut headers);
        let mut req = reqwest::Request::new(method, url);
        *req.headers_mut() = headers;
        Ok(req)
    }

    /// Sends `req` and waits for the answer's head; an error status is read (bounded)
    /// and classified.
    async fn send(&self, member: &Member, req: reqwest::Request) -> Result<reqwest::Response, UpstreamError> {
        let node = member.cfg.id.clone();
        let sent = tokio::time::timeout(self.timeout, self.http.execute(req)).await;
        let resp = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(UpstreamError::NoAnswer { node, reason: error_chain(&e) }),
            Err(_) => {
                return Err(UpstreamError::NoAnswer {
                    node,
                    reason: format!("no answer within {:?}", self.timeout),
                });
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let origin = resp
            .headers()
            .get(wire::ERROR_SOURCE)
            .is_some_and(|v| v.as_bytes() == wire::ERROR_SOURCE_ORIGIN.as_bytes());
        let body = read_bounded(resp, ERROR_BODY_MAX_BYTES, self.timeout).await;
        let text = String::from_utf8_lossy(&body);
        let code = xml_text(&text, "Code").unwrap_or_else(|| code_of_status(status).to_string());
        let message = xml_text(&text, "Message");
        Err(UpstreamError::Answer { node, status, code, message, origin })
    }

    /// The key rules and page size `member` applies (the internal `rules` endpoint).
    pub async fn rules(&self, member: &Member) -> Result<NodeRules, UpstreamError> {
        let answer = self.send_page(member, "GET", wire::RULES_PATH, "", "").await?;
        read_rules(&member.cfg.id, answer).await
    }

    /// The object's metadata.
    pub async fn head(&self, member: &Member, bucket: &str, key: &str) -> Result<ObjectInfo, UpstreamError> {
        let answer = self.send_read(member, "HEAD", &Self::page_path(bucket, key), "", "", 1, key).await?;
        info_of(&answer.headers()).ok_or_else(|| UpstreamError::NoAnswer {
            node: member.cfg.id.clone(),
            reason: "an answer without the object's size".into(),
        })
    }

    /// Deletes the object (at the origin, through the node).
    pub async fn delete(&self, member: &Member, bucket: &str, key: &str) -> Result<(), UpstreamError> {
        let req = self.request(member, Method::DELETE, bucket, key, HeaderMap::new())?;
        self.send(member, req).await.map(|_| ())
    }

    /// `range` of the object at `version`: the answer's body once the node has started it.
    pub async fn get(
        &self,
        member: &Member,
        bucket: &str,
        key: &str,
        range: ByteRange,
        version: &ReadVersion,
    ) -> Result<BodyStream, UpstreamError> {
        if range.is_empty() {
            return Ok(Box::pin(futures::stream::empty()));
        }
        if let Some(v) = version.etag.as_deref()
            && self.batch_in_flight > 0
            && range.len() <= wire::batch::MAX_ITEM_BYTES
        {
            use crate::batch::{Admission, Outcome};
            match self.batcher(member).admit(bucket, key, v, range) {
                Admission::Alone(slot) => {
                    let answer = self.send_ranges(member, bucket, key, &[range], version).await;
                    drop(slot);
                    return Ok(Box::pin(NodeBody(answer?.body)));
                }
                Admission::Queued(rx) => match rx.await {
                    Ok(Outcome::Data(b)) => {
                        // Served from the node's memory within a batch: no origin cost.
                        crate::account::add(|a| &a.fleet_requests, 1);
                        return Ok(Box::pin(futures::stream::iter([Ok(b)])));
                    }
                    Ok(Outcome::Failed(e)) => return Err(e),
                    // Deferred by the node, or the batch could not be sent: alone.
                    Ok(Outcome::Alone) | Err(_) => {}
                },
                Admission::Off => {}
            }
        }
        let answer = self.send_ranges(member, bucket, key, &[range], version).await?;
        Ok(Box::pin(NodeBody(answer.body)))
    }

    /// Several ranges of the object in one request (at most `wire::MAX_RANGES`): the
    /// object's description from the answer's headers, and the ranges' bytes in order.
    /// Without a version the node serves its current one, which the description names.
    pub async fn get_ranges(
        &self,
        member: &Member,
        bucket: &str,
        key: &str,
        ranges: &[ByteRange],
        version: &ReadVersion,
    ) -> Result<(ObjectInfo, BodyStream), UpstreamError> {
        let answer = self.send_ranges(member, bucket, key, ranges, version).await?;
        let info = info_of(&answer.headers()).ok_or_else(|| UpstreamError::NoAnswer {
            node: member.cfg.id.clone(),
            reason: "an answer without the object's size".into(),
        })?;
        Ok((info, Box::pin(NodeBody(answer.body))))
    }

    async fn send_ranges(
        &self,
        member: &Member,
        bucket: &str,
        key: &str,
        ranges: &[ByteRange],
        version: &ReadVersion,
    ) -> Result<conn::Answer, UpstreamError> {
        let spans: Vec<(u64, u64)> =
            ranges.iter().filter(|r| !r.is_empty()).map(|r| (r.start, r.end)).collect();
        let text = wire::format_ranges(&spans);
        let version = version.etag.as_deref().unwrap_or("");
        // The most this read could cost: every page it spans fetched alone, and a HEAD.
        let ps = self.page_size.max(1);
        let pages: u64 = spans.iter().map(|(s, e)| (e - 1) / ps - s / ps + 1).sum();
        self.send_read(member, "GET", &Self::page_path(bucket, key), &text, version, pages + 1, key).await
    }
}

/// Sends a request of the internal protocol signed with `key` on `pool` and waits for the
/// answer's head; an error answer is read (bounded) and classified.
#[allow(clippy::too_many_arguments)]
async fn signed_exchange(
    pool: &Arc<conn::Pool>,
    key: &wire::FleetKey,
    node: &str,
    method: &str,
    path: &str,
    ranges: &str,
    version: &str,
    grant: Option<Grant>,
) -> Result<conn::Answer, UpstreamError> {
    let auth = key.auth_value(method, path, ranges, version);
    let budget = grant.as_ref().and_then(|g| g.budget).map(|b| b.to_string());
    let mut headers: [(&str, &str); 4] = [(wire::FLEET_AUTH, &auth), ("", ""), ("", ""), ("", "")];
    let mut n = 1;
    if let Some(b) = &budget {
        headers[n] = (wire::ORIGIN_BUDGET, b);
        n += 1;
    }
    if !ranges.is_empty() {
        headers[n] = (wire::RANGES, ranges);
        n += 1;
    }
    if !version.is_empty() {
        headers[n] = (wire::READ_VERSION, version);
        n += 1;
    }
    // Single reads stream their body; nothing to size in advance.
    exchange(pool, node, method, path, &headers[..n], 0, grant).await
}

/// A decimal header of an answer (0 when absent or unreadable).
fn count_header(answer: &conn::Answer, name: &str) -> u64 {
    answer.header(name).and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Sends a request of the internal protocol (its headers already signed) on `pool` and waits
/// for the answer's head; an error answer is read (bounded) and classified. `expect`: the
/// body's size when the caller will read it whole (see [`conn::Pool::send_expecting`]).
pub(crate) async fn exchange(
    pool: &Arc<conn::Pool>,
    node: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    expect: usize,
    grant: Option<Grant>,
) -> Result<conn::Answer, UpstreamError> {
    let answer = match pool.send_expecting(method, path, headers, expect).await {
        Ok(a) => a,
        Err(conn::Failure::Broken(e)) => {
            return Err(UpstreamError::NoAnswer { node: node.to_string(), reason: e.0 });
        }
        Err(conn::Failure::Busy(reason)) => {
            return Err(UpstreamError::Busy { node: node.to_string(), reason });
        }
    };
    let status = answer.status;
    let code = answer.header(wire::ERROR_CODE).and_then(|v| std::str::from_utf8(v).ok()).map(str::to_string);
    if let Some(g) = grant {
        let refused = status == wire::BUDGET_STATUS && code.as_deref() == Some(wire::BUDGET_CODE);
        g.settle(
            count_header(&answer, wire::ORIGIN_REQUESTS),
            count_header(&answer, wire::ORIGIN_BYTES),
            refused,
        );
    }
    if status.is_success() {
        return Ok(answer);
    }
    let origin = answer.header(wire::ERROR_SOURCE) == Some(wire::ERROR_SOURCE_ORIGIN.as_bytes());
    let code = code.unwrap_or_else(|| code_of_status(status).to_string());
    let body = answer.body.read_to_end(ERROR_BODY_MAX_BYTES).await;
    let message = Some(String::from_utf8_lossy(&body).into_owned()).filter(|m| !m.is_empty());
    Err(UpstreamError::Answer { node: node.to_string(), status, code, message, origin })
}

/// A rules answer's body (`GET` [`wire::RULES_PATH`]), read.
async fn read_rules(node: &str, answer: conn::Answer) -> Result<NodeRules, UpstreamError> {
    let body = answer.body.read_to_end(1 << 20).await;
    serde_json::from_slice(&body).map_err(|e| UpstreamError::NoAnswer {
        node: node.to_string(),
        reason: format!("its rules are not readable: {e}"),
    })
}

/// The key rules and page size the fleet member at `url` (a node, or a router, which
/// answers with the rules it adopted from the nodes) applies, asked with the fleet secret.
pub async fn fetch_rules(url: &str, secret: &str, timeout: Duration) -> Result<NodeRules, UpstreamError> {
    let pool = Arc::new(conn::Pool::new(url, url, 2, timeout, timeout));
    let key = wire::FleetKey::new(secret);
    let answer = signed_exchange(&pool, &key, url, "GET", wire::RULES_PATH, "", "", None).await?;
    read_rules(url, answer).await
}

/// A page answer's body, its failures in the node client's terms.
struct NodeBody(conn::Body);

impl Stream for NodeBody {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let body = &mut this.0;
        body.poll_piece(cx).map(|piece| {
            piece.map(|r| {
                r.map_err(|e| UpstreamError::NoAnswer {
                    node: body.node().to_string(),
                    reason: format!("body broke off: {}", e.0),
                })
            })
        })
    }
}

/// An error and its sources, in words that say where it broke.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

async fn read_bounded(mut resp: reqwest::Response, max: usize, timeout: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let read = async {
        while let Ok(Some(piece)) = resp.chunk().await {
            let room = max.saturating_sub(out.len());
            out.extend_from_slice(&piece[..piece.len().min(room)]);
            if out.len() >= max {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, read).await;
    out
}

/// The object's description from the headers of a HEAD (or GET) answer.
fn info_of(h: &HeaderMap) -> Option<ObjectInfo> {
    let text = |n: &HeaderName| h.get(n).and_then(|v| v.to_str().ok());
    let size = h
        .get(wire::OBJECT_SIZE)
        .or_else(|| h.get(http::header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok())?
        .trim()
        .parse::<u64>()
        .ok()?;
    let etag = text(&http::header::ETAG).map(|e| e.trim().trim_matches('"').to_string());
    let last_modified = text(&http::header::LAST_MODIFIED)
        .and_then(|t| httpdate::parse_http_date(t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let content_type = text(&http::header::CONTENT_TYPE).map(str::to_string);
    let headers: Vec<(HeaderName, HeaderValue)> =
        h.iter().filter(|(n, _)| object_header(n.as_str())).map(|(n, v)| (n.clone(), v.clone())).collect();
    let version = text(&HeaderName::from_static(wire::OBJECT_VERSION)).map(str::to_string);
    // The values are the map's own (`conn::Answer::headers` copies them out of the read
    // buffer), so they can be kept for as long as the description is.
    let mut answer = HeaderMap::new();
    for name in [http::header::ETAG, http::header::LAST_MODIFIED, http::header::CONTENT_TYPE] {
        if let Some(v) = h.get(&name) {
            answer.insert(name, v.clone());
        }
    }
    if !answer.contains_key(http::header::CONTENT_TYPE) {
        answer.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    }
    answer.insert(http::header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    for (n, v) in &headers {
        answer.append(n.clone(), v.clone());
    }
    Some(ObjectInfo { size, etag, last_modified, content_type, version, headers, answer })
}

/// A shared client, as `Fleet` holds it.
pub type SharedClient = Arc<NodeClient>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_are_read_for_code_and_message() {
        let doc = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>a &lt;b&gt; &amp; c</Message></Error>";
        assert_eq!(xml_text(doc, "Code").as_deref(), Some("NoSuchKey"));
        assert_eq!(xml_text(doc, "Message").as_deref(), Some("a <b> & c"));
        assert_eq!(xml_text(doc, "Resource"), None);
    }

    #[test]
    fn only_node_faults_count_against_a_node() {
        let answer = |status: u16, origin: bool| UpstreamError::Answer {
            node: "n".into(),
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            code: "X".into(),
            message: None,
            origin,
        };
        assert!(UpstreamError::NoAnswer { node: "n".into(), reason: "reset".into() }.is_node_fault());
        assert!(answer(500, false).is_node_fault());
        assert!(answer(503, false).is_node_fault());
        assert!(!answer(503, true).is_node_fault(), "the origin's fault");
        let busy = UpstreamError::Busy { node: "n".into(), reason: "all 4 connections busy".into() };
        assert!(!busy.is_node_fault(), "this member's congestion");
        for s in [400, 403, 404, 412, 416] {
            assert!(!answer(s, false).is_node_fault(), "{s} is the client's");
        }
    }
}
