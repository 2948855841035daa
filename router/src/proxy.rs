//! The router's S3 surface: reads are placed page by page on the ring and streamed back
//! in order, each page run from its owner with failover to the next owners; deletes go to
//! the owner of the key and are then invalidated on every node. PUT, COPY, multipart
//! uploads, listings and the calls modelled by no method here are passed through to a node
//! as they came (`forward`).
//!
//! A GET answers its headers only once the first bytes are in hand: a read that cannot
//! be served fails with an error status (and one that found the object changed is retried
//! on the new version) instead of a 200 whose body never comes.

use std::sync::Arc;

use futures::StreamExt;
use http::HeaderMap;
use lakecache_common::page::{ByteRange, PageGeometry};
use lakecache_s3::conditional::Conditions;
use lakecache_s3::request::{PlainRead, resolve_range};
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use lakecache_fleet::membership::{Fleet, Member};
use lakecache_fleet::routing;
use lakecache_fleet::upstream::{ObjectInfo, ReadVersion, UpstreamError};

pub struct Router {
    pub fleet: Arc<Fleet>,
    geometry: PageGeometry,
}

/// A started read: the object as resolved and its body, first bytes already received.
pub struct StartedRead {
    pub info: Arc<ObjectInfo>,
    pub range: ByteRange,
    pub partial: bool,
    pub body: lakecache_common::object::ByteStream,
}

impl Router {
    pub fn new(fleet: Arc<Fleet>) -> anyhow::Result<Self> {
        let geometry = PageGeometry::new(fleet.cfg.page_size.as_u64())
            .ok_or_else(|| anyhow::anyhow!("bad page size"))?;
        Ok(Self { fleet, geometry })
    }

    fn check_key(key: &str) -> S3Result<()> {
        if key.is_empty() {
            return Err(s3_error!(InvalidArgument, "The object key is empty"));
        }
        Ok(())
    }

    /// Metadata from the owner of page 0, with failover.
    pub async fn head(&self, bucket: &str, key: &str) -> S3Result<Arc<ObjectInfo>> {
        Self::check_key(key)?;
        routing::head(&self.fleet, bucket, key).await.map_err(|e| upstream_err(&e))
    }

    /// The owner of the key's first page: every write of the key goes there.
    fn key_owner(&self, bucket: &str, key: &str) -> S3Result<Arc<Member>> {
        self.fleet
            .owners(bucket, key, 0, 1)
            .into_iter()
            .next()
            .ok_or_else(|| s3_error!(ServiceUnavailable, "No cache node is available"))
    }

    /// Resolves the object, checks the conditions and starts reading `range` (`None`: the
    /// whole object). The answer's headers may be sent once this returns: the first bytes
    /// are there. An object that changed between the metadata and the first page is
    /// resolved once more.
    pub async fn start_read(
        &self,
        bucket: &str,
        key: &str,
        range: Option<&Range>,
        conditions: Conditions<'_>,
    ) -> S3Result<StartedRead> {
        Self::check_key(key)?;
        let mut known = self.fleet.meta.get(bucket, key);
        if known.is_none()
            && let Some(read) = self.first_read(bucket, key, range, &conditions).await
        {
            return read;
        }
        let mut again = true;
        loop {
            let info = match known.take() {
                Some(info) => info,
                None => self.head(bucket, key).await?,
            };
            if conditions.any() {
                conditions.check(&meta_of(&info))?;
            }
            let (range, partial) = resolve_range(range, info.size)?;
            let version = ReadVersion::of(&info);
            let read = routing::stream(&self.fleet, self.geometry, bucket, key, version, range);
            match started(read, range).await {
                Ok(body) => return Ok(StartedRead { info, range, partial, body }),
                Err(e) if e.is_version_mismatch() && again => {
                    // Replaced since this router resolved it (a write through another
                    // router): nothing has been sent yet, so read the new version.
                    again = false;
                    self.fleet.meta.forget(bucket, key);
                }
                Err(e) if e.is_version_mismatch() => {
                    return Err(s3_error!(
                        ServiceUnavailable,
                        "The object changed while it was being read; please retry."
                    ));
                }
                Err(e) => return Err(upstream_err(&e)),
            }
        }
    }
}

/// The read's body once its first bytes are in hand (none for an empty range); a read
/// that fails or ends before them is the error.
async fn started(
    mut read: routing::ReadStream,
    range: ByteRange,
) -> Result<lakecache_common::object::ByteStream, UpstreamError> {
    let first = if range.is_empty() { None } else { read.next().await };
    let first = match first {
        None if !range.is_empty() => {
            return Err(UpstreamError::NoAnswer {
                node: "-".into(),
                reason: "the read ended before its first byte".into(),
            });
        }
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => return Err(e),
    };
    let rest = read.map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
    Ok(Box::pin(futures::stream::iter(first.map(Ok)).chain(rest)))
}

impl Router {
    /// The answer to a [`PlainRead`]: what `get_object` or `head_object` answers through s3s.
    pub async fn plain_read(&self, p: &PlainRead) -> http::Response<s3s::Body> {
        let conditions = p.conditions.as_conditions();
        let answer = if p.head {
            self.head(&p.bucket, &p.key).await.and_then(|info| {
                if conditions.any() {
                    conditions.check(&meta_of(&info))?;
                }
                let (range, partial) = resolve_range(p.range.as_ref(), info.size)?;
                let mut r = http::Response::new(s3s::Body::empty());
                *r.headers_mut() = read_headers(&info, range, partial);
                Ok(r)
            })
        } else {
            self.start_read(&p.bucket, &p.key, p.range.as_ref(), conditions).await.map(|r| {
                let status = if r.partial { http::StatusCode::PARTIAL_CONTENT } else { http::StatusCode::OK };
                let headers = read_headers(&r.info, r.range, r.partial);
                let body = s3s::Body::http_body(http_body_util::StreamBody::new(
                    r.body.map(|c| c.map(hyper::body::Frame::data)),
                ));
                let mut out = http::Response::new(body);
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                out
            })
        };
        answer.unwrap_or_else(lakecache_s3::response::s3_error_response)
    }
}

/// The headers of a read's answer: the object's (as its node described it), its length
/// and, for a range, Content-Range.
pub fn read_headers(info: &ObjectInfo, range: ByteRange, partial: bool) -> HeaderMap {
    lakecache_s3::response::read_headers(&info.answer, range, info.size, partial)
}

impl Router {
    /// A read of an object whose metadata this router does not hold, with no HEAD: the
    /// owner of the page with the first byte asked is asked for the bytes of that page
    /// the client wants, and its answer describes the object (size, version, ETag); the
    /// read continues pinned to that version. `None`: take the HEAD path instead — a
    /// suffix range (its first byte depends on the size), or a range the node found past
    /// the object's end (resolved, and answered as S3 does, from the metadata).
    async fn first_read(
        &self,
        bucket: &str,
        key: &str,
        range: Option<&Range>,
        conditions: &Conditions<'_>,
    ) -> Option<S3Result<StartedRead>> {
        let (start, last) = match range {
            None => (0, None),
            Some(Range::Int { first, last }) => (*first, *last),
            Some(Range::Suffix { .. }) => return None,
        };
        let ps = self.geometry.page_size_bytes();
        let page = start / ps;
        let mut want_end = (page + 1).saturating_mul(ps);
        if let Some(l) = last {
            want_end = want_end.min(l.saturating_add(1));
        }
        if want_end <= start {
            return None;
        }
        let want = ByteRange { start, end: want_end };
        let (info, body, served_by) = match routing::first_read(&self.fleet, bucket, key, page, want).await {
            Ok(r) => r,
            Err(e) if e.status() == Some(http::StatusCode::RANGE_NOT_SATISFIABLE) => return None,
            Err(e) => return Some(Err(upstream_err(&e))),
        };
        Some(self.continue_first_read(bucket, key, range, conditions, info, body, served_by, want).await)
    }

    #[allow(clippy::too_many_arguments)]
    async fn continue_first_read(
        &self,
        bucket: &str,
        key: &str,
        range: Option<&Range>,
        conditions: &Conditions<'_>,
        info: Arc<ObjectInfo>,
        body: lakecache_fleet::upstream::BodyStream,
        served_by: Arc<Member>,
        want: ByteRange,
    ) -> S3Result<StartedRead> {
        if conditions.any() {
            conditions.check(&meta_of(&info))?;
        }
        let (resolved, partial) = resolve_range(range, info.size)?;
        // The answer holds the bytes of `want` up to the object's end; the rest of the read
        // (if any) is asked for at the version the answer named.
        let answered_to = want.end.min(info.size).min(resolved.end);
        let read = routing::stream_from(
            &self.fleet,
            self.geometry,
            bucket,
            key,
            ReadVersion::of(&info),
            resolved,
            Some((body, answered_to, served_by)),
        );
        let body = started(read, resolved).await.map_err(|e| upstream_err(&e))?;
        Ok(StartedRead { info, range: resolved, partial, body })
    }
}

/// A node's error as the router answers it.
pub fn upstream_err(e: &UpstreamError) -> S3Error {
    if e.is_node_fault() {
        tracing::warn!(error = %e, "cache node request failed");
    }
    s3_error(e)
}

/// The error as the router answers it: a node's answer is passed on with its code,
/// message and status; no answer is a 503 the client may retry.
pub fn s3_error(e: &UpstreamError) -> S3Error {
    match e {
        UpstreamError::NoAnswer { .. } => S3Error::with_message(
            S3ErrorCode::ServiceUnavailable,
            "No cache node could serve the request; please retry.",
        ),
        UpstreamError::Busy { .. } => S3Error::with_message(
            S3ErrorCode::SlowDown,
            "The router has too many reads in flight to a cache node; please reduce your request rate.",
        ),
        UpstreamError::Answer { status, code, message, origin, .. } => {
            let code = S3ErrorCode::from_bytes(code.as_bytes()).unwrap_or(S3ErrorCode::InternalError);
            let mut err = match message {
                Some(m) => S3Error::with_message(code, m.clone()),
                // A HEAD answer has no body to carry the node's words.
                None if *origin => S3Error::with_message(
                    code,
                    "The origin behind the cache fleet failed or did not answer in time; please retry.",
                ),
                None => S3Error::new(code),
            };
            err.set_status_code(*status);
            if *origin {
                let mut h = http::HeaderMap::new();
                h.insert(
                    lakecache_common::wire::ERROR_SOURCE,
                    http::HeaderValue::from_static(lakecache_common::wire::ERROR_SOURCE_ORIGIN),
                );
                err.set_headers(h);
            }
            err
        }
    }
}

/// The object in the form the cache node's conditional checks take.
pub fn meta_of(info: &ObjectInfo) -> lakecache_common::object::ObjectMeta {
    let meta = object_store::ObjectMeta {
        location: object_store::path::Path::default(),
        last_modified: chrono::DateTime::<chrono::Utc>::from(info.last_modified),
        size: info.size,
        e_tag: info.etag.clone(),
        version: None,
    };
    let attrs = lakecache_common::object::ObjectAttrs {
        content_type: info.content_type.clone(),
        ..Default::default()
    };
    lakecache_common::object::ObjectMeta::from_store(&meta, attrs)
}

/// The object's own headers (Content-Encoding, `x-amz-meta-*`, …) for an answer.
pub fn object_headers(info: &ObjectInfo) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in &info.headers {
        h.append(n.clone(), v.clone());
    }
    h
}

#[async_trait::async_trait]
impl S3 for Router {
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let i = &req.input;
        if i.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "Reading by partNumber is not supported"));
        }
        let r = self.start_read(&i.bucket, &i.key, i.range.as_ref(), Conditions::of(i)).await?;
        let info = &r.info;
        let content_type = i.response_content_type.clone().or_else(|| info.content_type.clone());
        let mut out = S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(r.body)),
            content_length: Some(r.range.len() as i64),
            content_range: r.partial.then(|| lakecache_s3::response::content_range(r.range, info.size)),
            accept_ranges: Some("bytes".into()),
            e_tag: info.etag.clone().map(ETag::Strong),
            last_modified: Some(Timestamp::from(info.last_modified)),
            content_type: Some(content_type.unwrap_or_else(|| "application/octet-stream".into())),
            ..Default::default()
        });
        out.headers = object_headers(info);
        Ok(out)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = &req.input;
        let info = self.head(&i.bucket, &i.key).await?;
        Conditions::of(i).check(&meta_of(&info))?;
        let (range, partial) = resolve_range(i.range.as_ref(), info.size)?;
        let content_type = i.response_content_type.clone().or_else(|| info.content_type.clone());
        let mut out = S3Response::new(HeadObjectOutput {
            content_length: Some(range.len() as i64),
            content_range: partial.then(|| lakecache_s3::response::content_range(range, info.size)),
            accept_ranges: Some("bytes".into()),
            e_tag: info.etag.clone().map(ETag::Strong),
            last_modified: Some(Timestamp::from(info.last_modified)),
            content_type: Some(content_type.unwrap_or_else(|| "application/octet-stream".into())),
            ..Default::default()
        });
        out.headers = object_headers(&info);
        Ok(out)
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        if i.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "At most 1000 keys can be deleted in one request"));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let bucket = &i.bucket;
        // Each key on its owner (where its writes meet), up to 16 at a time.
        let results: Vec<(String, S3Result<()>)> = futures::stream::iter(i.delete.objects)
            .map(|o| async move {
                let res = self.delete_key(bucket, &o.key).await;
                (o.key, res)
            })
            .buffered(16)
            .collect()
            .await;
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for (key, res) in results {
            match res {
                Ok(()) => {
                    if !quiet {
                        deleted.push(DeletedObject { key: Some(key), ..Default::default() });
                    }
                }
                Err(e) => errors.push(Error {
                    key: Some(key),
                    code: Some(e.code().as_str().to_string()),
                    message: e.message().map(str::to_string),
                    ..Default::default()
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!deleted.is_empty()).then_some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = req.input;
        self.delete_key(&i.bucket, &i.key).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }
}

impl Router {
    /// Deletes one key through its owner and forgets it everywhere. A missing key is no
    /// error (S3 answers 204 either way).
    async fn delete_key(&self, bucket: &str, key: &str) -> S3Result<()> {
        Self::check_key(key)?;
        let owner = self.key_owner(bucket, key)?;
        owner.stats.delete.increment(1);
        let res = self.fleet.nodes.delete(&owner, bucket, key).await;
        self.fleet.invalidate_everywhere(bucket, key).await;
        match res {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() && s3_error(&e).code() == &S3ErrorCode::NoSuchKey => Ok(()),
            Err(e) => {
                if e.is_node_fault() {
                    self.fleet.report_failure(&owner);
                }
                Err(upstream_err(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use s3s::S3ErrorCode;

    use super::*;

    #[test]
    fn passed_on_errors_keep_code_status_and_origin_mark() {
        let e = UpstreamError::Answer {
            node: "n".into(),
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "ServiceUnavailable".into(),
            message: Some("The origin did not answer in time".into()),
            origin: true,
        };
        let e = s3_error(&e);
        assert_eq!(e.code(), &S3ErrorCode::ServiceUnavailable);
        assert_eq!(e.status_code(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(
            e.headers().and_then(|h| h.get(lakecache_common::wire::ERROR_SOURCE)).map(|v| v.as_bytes()),
            Some(lakecache_common::wire::ERROR_SOURCE_ORIGIN.as_bytes())
        );
        // No free connection to the node: the client is asked to slow down, as S3 does.
        let e = s3_error(&UpstreamError::Busy { node: "n".into(), reason: "busy".into() });
        assert_eq!(e.code(), &S3ErrorCode::SlowDown);
        assert_eq!(e.status_code(), Some(StatusCode::SERVICE_UNAVAILABLE));
    }
}
