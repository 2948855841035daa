//! GetObject and HeadObject: conditionals, ranges (`a-b`, `a-`, `-n`; 416 when
//! unsatisfiable) and the headers S3 returns — the object's stored attributes, unless a
//! `response-*` query parameter overrides one — with the body streamed from the read path.

use std::sync::Arc;

use lakecache_common::page::ByteRange;
use lakecache_s3::request::resolve_range;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::conditional::Conditions;
use super::{LakeS3, cache_err};
use crate::cache::meta::ObjectAttrs;
use crate::cache::{Cache, ObjectHandle};

fn timestamp(obj: &ObjectHandle) -> Timestamp {
    Timestamp::from(obj.meta.last_modified)
}

/// The first bytes a GET with `range` reads, as far as they are known before the object's
/// size: an object this node does not know yet is then resolved by the GET of those pages
/// instead of a HEAD first. A suffix range needs the size first (`None`).
fn first_range(range: Option<&Range>) -> Option<ByteRange> {
    match range {
        None => Some(ByteRange { start: 0, end: u64::MAX }),
        Some(Range::Int { first, last }) => {
            Some(ByteRange { start: *first, end: last.map_or(u64::MAX, |l| l.saturating_add(1)) })
        }
        Some(Range::Suffix { .. }) => None,
    }
}

/// The object as the request sees it: current version, conditions checked, range resolved.
/// `reading`: a GET (which may resolve an unknown object by its first pages), not a HEAD.
async fn resolve(
    s3: &LakeS3,
    bucket: &str,
    key: &str,
    part_number: Option<i32>,
    range: Option<&Range>,
    conditions: Conditions<'_>,
    reading: bool,
) -> S3Result<(Arc<ObjectHandle>, ByteRange, bool)> {
    if part_number.is_some() {
        return Err(s3_error!(NotImplemented, "Reading by partNumber is not supported"));
    }
    // (A conditional GET may be answered without bytes: it learns the metadata first.)
    let first = if reading && !conditions.any() { first_range(range) } else { None };
    let class = s3.cache.classify(key);
    let obj = s3.cache.object_as(bucket, key, class, first).await.map_err(cache_err)?;
    conditions.check(&obj.meta)?;
    let (range, partial) = resolve_range(range, obj.meta.size)?;
    Ok((obj, range, partial))
}

/// A fleet member's read names the version it started on (`x-lakecache-read-version`):
/// that version is served from what this node holds even if it has been replaced since,
/// and is otherwise refused with 412 — never another version's bytes.
async fn resolve_version(
    s3: &LakeS3,
    req: &S3Request<GetObjectInput>,
) -> S3Result<Option<(Arc<ObjectHandle>, ByteRange, bool)>> {
    let Some(v) = req.headers.get(lakecache_common::wire::READ_VERSION) else { return Ok(None) };
    let i = &req.input;
    if i.part_number.is_some() {
        return Err(s3_error!(NotImplemented, "Reading by partNumber is not supported"));
    }
    let version = std::str::from_utf8(v.as_bytes()).unwrap_or("").trim().trim_matches('"');
    let obj = s3
        .cache
        .object_at(&i.bucket, &i.key, version, first_range(i.range.as_ref()))
        .await
        .map_err(cache_err)?
        .ok_or_else(|| {
            s3_error!(PreconditionFailed, "This node no longer holds that version of the object")
        })?;
    Conditions::of(i).check(&obj.meta)?;
    let (range, partial) = resolve_range(i.range.as_ref(), obj.meta.size)?;
    Ok(Some((obj, range, partial)))
}

/// The stored attributes of `meta` on a GET or HEAD answer `$out`, each overridden by the
/// request's `response-*` parameter when there is one (as S3 does).
macro_rules! set_attrs {
    ($out:expr, $i:expr, $attrs:expr) => {{
        let a: &ObjectAttrs = $attrs;
        $out.content_type = Some(
            $i.response_content_type
                .clone()
                .or_else(|| a.content_type.clone())
                .unwrap_or_else(|| "application/octet-stream".to_string()),
        );
        $out.content_encoding = $i.response_content_encoding.clone().or_else(|| a.content_encoding.clone());
        $out.content_disposition =
            $i.response_content_disposition.clone().or_else(|| a.content_disposition.clone());
        $out.content_language = $i.response_content_language.clone().or_else(|| a.content_language.clone());
        $out.cache_control = $i.response_cache_control.clone().or_else(|| a.cache_control.clone());
        $out.expires = $i.response_expires.clone().or_else(|| a.expires.as_deref().and_then(parse_http_date));
        $out.metadata = (!a.user.is_empty()).then(|| a.user.iter().cloned().collect());
    }};
}

fn parse_http_date(s: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

pub async fn get_object(
    s3: &LakeS3,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let (obj, range, partial) = match resolve_version(s3, &req).await? {
        Some(r) => r,
        None => {
            let i = &req.input;
            resolve(s3, &i.bucket, &i.key, i.part_number, i.range.as_ref(), Conditions::of(i), true).await?
        }
    };
    let i = &req.input;
    let versioned = req.headers.contains_key(lakecache_common::wire::READ_VERSION);
    match object_output(&s3.cache, obj.clone(), range, partial).await {
        Ok(mut out) => {
            set_attrs!(out, i, &obj.meta.attrs);
            Ok(S3Response::new(out))
        }
        // The version a fleet read named is gone from the origin too: a 412 tells the
        // reader to resolve the object again, and is no fault of this node.
        Err(crate::cache::CacheError::Changed) if versioned => {
            Err(s3_error!(PreconditionFailed, "That version of the object is no longer at the origin"))
        }
        Err(e) => Err(cache_err(e)),
    }
}

/// The answer to a GET, sent once its first bytes are read (see `Cache::read_started`).
async fn object_output(
    cache: &Arc<Cache>,
    obj: Arc<ObjectHandle>,
    range: ByteRange,
    partial: bool,
) -> Result<GetObjectOutput, crate::cache::CacheError> {
    let size = obj.meta.size;
    let etag = obj.meta.etag.clone().map(ETag::Strong);
    let last_modified = Some(timestamp(&obj));
    let body = cache.read_started(obj, range).await?;
    Ok(GetObjectOutput {
        body: Some(StreamingBlob::wrap(body)),
        content_length: Some(range.len() as i64),
        content_range: partial.then(|| lakecache_s3::response::content_range(range, size)),
        accept_ranges: Some("bytes".to_string()),
        e_tag: etag,
        last_modified,
        ..Default::default()
    })
}

pub async fn head_object(
    s3: &LakeS3,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let i = &req.input;
    let (obj, range, partial) =
        resolve(s3, &i.bucket, &i.key, i.part_number, i.range.as_ref(), Conditions::of(i), false).await?;
    let mut out = HeadObjectOutput {
        content_length: Some(range.len() as i64),
        content_range: partial.then(|| lakecache_s3::response::content_range(range, obj.meta.size)),
        accept_ranges: Some("bytes".to_string()),
        e_tag: obj.meta.etag.clone().map(ETag::Strong),
        last_modified: Some(timestamp(&obj)),
        ..Default::default()
    };
    set_attrs!(out, i, &obj.meta.attrs);
    Ok(S3Response::new(out))
}

/// The answer to a [`PlainRead`] (an unsigned GET or HEAD s3s would only hand to
/// `get_object`/`head_object`), built here: what those answer through s3s, without its
/// request parsing and response serialisation. `None`: the object's attributes render
/// differently in s3s (non-ASCII values, Expires) — then s3s answers, from the metadata
/// resolved here.
///
/// [`PlainRead`]: lakecache_s3::request::PlainRead
pub async fn plain_read(
    cache: &Arc<Cache>,
    p: &lakecache_s3::request::PlainRead,
    class: crate::policy::KeyClass,
) -> Option<http::Response<s3s::Body>> {
    use lakecache_s3::response::s3_error_response as error_response;
    let first =
        if p.head || p.conditions.as_conditions().any() { None } else { first_range(p.range.as_ref()) };
    let obj = match cache.object_as(&p.bucket, &p.key, class, first).await {
        Ok(o) => o,
        Err(e) => return Some(error_response(cache_err(e))),
    };
    if !lakecache_s3::response::plain_attrs(&obj.meta.attrs) {
        return None;
    }
    let answer = async {
        let conditions = p.conditions.as_conditions();
        if conditions.any() {
            conditions.check(&obj.meta)?;
        }
        let (range, partial) = resolve_range(p.range.as_ref(), obj.meta.size)?;
        let headers = lakecache_s3::response::read_headers(
            lakecache_s3::response::object_headers(&obj.meta),
            range,
            obj.meta.size,
            partial,
        );
        let mut r = if p.head {
            // s3s answers a HEAD 200 with or without a Range.
            http::Response::new(s3s::Body::empty())
        } else {
            let body = cache.read_started(obj.clone(), range).await.map_err(cache_err)?;
            let mut r = http::Response::new(s3s::Body::http_body(http_body_util::StreamBody::new(
                futures::StreamExt::map(body, |c| c.map(hyper::body::Frame::data)),
            )));
            if partial {
                *r.status_mut() = http::StatusCode::PARTIAL_CONTENT;
            }
            r
        };
        *r.headers_mut() = headers;
        S3Result::Ok(r)
    };
    Some(answer.await.unwrap_or_else(error_response))
}
