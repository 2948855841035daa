//! Writes pass through to the origin and then invalidate what they touched: PutObject
//! (plain and conditional), DeleteObject(s), CopyObject and multipart uploads (staged on
//! this node, written to the origin as one object on completion).
//!
//! Every write first stages its body — read whole, with an idle timeout, and verified
//! against the digests the client sent — where no reader can see it: in memory, or in an
//! origin multipart upload that is not yet completed. Only then does it take the key's
//! write lock, check its condition and commit (one PUT, or the upload's completion). A
//! client that stalls mid-body therefore holds no lock, and a body that fails its digest
//! leaves the origin untouched.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, UpdateVersion,
    WriteMultipart,
};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::body::{Algo, BodyReader, Expect, Verified, stored_content_encoding};
use super::conditional::{Conditions, CopySourceConditional};
use super::{LakeS3, etag_of, multipart_err, origin_err, origin_fault};
use crate::cache::meta::ObjectAttrs;
use crate::origin::multipart::{Completed, UploadMeta, concat_parts};
use crate::origin::{OriginError, object_path};

/// Bodies up to this size are buffered and sent to the origin in one PUT; larger ones
/// stream into an origin multipart upload, so that memory stays bounded.
const SINGLE_PUT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// A conditional PUT must be one atomic origin request, so its body is buffered; this caps it.
const CONDITIONAL_PUT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// S3's largest object in one PUT (and largest part).
const MAX_PUT_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// S3's limit on user metadata: the bytes of every `x-amz-meta-*` name and value.
const MAX_USER_METADATA_BYTES: usize = 2048;
const STREAM_CHUNK_BYTES: usize = 8 * 1024 * 1024;

fn precondition_failed() -> S3Error {
    s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold")
}

enum Condition {
    None,
    /// `If-None-Match: *`: only if the key does not exist.
    Create,
    /// `If-Match: <etag>`: only if the current version has this ETag.
    Update(String),
    /// `If-Match: *`: only if the key exists.
    Exists,
}

impl Condition {
    fn is_conditional(&self) -> bool {
        matches!(self, Condition::Create | Condition::Update(_))
    }
}

fn put_condition(
    if_none_match: Option<&ETagCondition>,
    if_match: Option<&ETagCondition>,
) -> S3Result<Condition> {
    match (if_none_match, if_match) {
        (Some(_), Some(_)) => {
            Err(s3_error!(NotImplemented, "If-Match and If-None-Match together are not supported on PUT"))
        }
        (Some(c), None) if c.is_any() => Ok(Condition::Create),
        (Some(_), None) => Err(s3_error!(NotImplemented, "If-None-Match on PUT supports only *")),
        (None, Some(ETagCondition::Any)) => Ok(Condition::Exists),
        (None, Some(ETagCondition::ETag(e))) => {
            Ok(Condition::Update(e.value().trim_matches('"').to_string()))
        }
        (None, None) => Ok(Condition::None),
    }
}

/// The attributes a write request asks to store (PutObject, CopyObject with
/// `MetadataDirective: REPLACE`, CreateMultipartUpload).
macro_rules! requested_attrs {
    ($i:expr) => {
        attrs_of(
            $i.content_type.as_deref(),
            $i.content_encoding.as_deref(),
            $i.content_disposition.as_deref(),
            $i.content_language.as_deref(),
            $i.cache_control.as_deref(),
            $i.expires.as_ref(),
            $i.metadata.as_ref(),
        )
    };
}

fn http_date(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

fn attrs_of(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    content_disposition: Option<&str>,
    content_language: Option<&str>,
    cache_control: Option<&str>,
    expires: Option<&Timestamp>,
    metadata: Option<&Metadata>,
) -> S3Result<ObjectAttrs> {
    let mut user: Vec<(String, String)> =
        metadata.into_iter().flatten().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
    user.sort();
    if user.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_USER_METADATA_BYTES {
        return Err(s3_error!(
            MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size."
        ));
    }
    Ok(ObjectAttrs {
        content_type: content_type.map(str::to_string),
        content_encoding: stored_content_encoding(content_encoding),
        content_disposition: content_disposition.map(str::to_string),
        content_language: content_language.map(str::to_string),
        cache_control: cache_control.map(str::to_string),
        expires: expires.and_then(http_date),
        user,
    })
}

/// A body read whole and held where no reader can see it until `commit`.
enum Staged {
    Memory(PutPayload),
    /// An origin multipart upload with every byte sent, not yet completed.
    Upload(WriteMultipart),
}

impl Staged {
    async fn abort(self) {
        if let Staged::Upload(w) = self
            && let Err(e) = w.abort().await
        {
            tracing::debug!(error = %e, "aborting a staged origin upload failed");
        }
    }
}

/// Reads `body` to its end into a `Staged`: in memory up to `SINGLE_PUT_MAX_BYTES` (and
/// always for a conditional write, up to `CONDITIONAL_PUT_MAX_BYTES`), else into an origin
/// multipart upload carrying `attrs`.
async fn stage<S, E>(
    s3: &LakeS3,
    store: &std::sync::Arc<dyn ObjectStore>,
    path: &Path,
    mut body: S,
    conditional: bool,
    attrs: &ObjectAttrs,
    body_err: impl Fn(E) -> S3Error,
) -> S3Result<Staged>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
{
    let origins = &s3.cache.origins;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0u64;
    let mut upload: Option<WriteMultipart> = None;
    let fail = |upload: Option<WriteMultipart>, e: S3Error| async move {
        if let Some(w) = upload {
            Staged::Upload(w).abort().await;
        }
        Err(e)
    };
    while let Some(c) = body.next().await {
        let c = match c {
            Ok(c) => c,
            Err(e) => return fail(upload, body_err(e)).await,
        };
        total += c.len() as u64;
        if let Some(w) = &mut upload {
            if let Err(e) = origins.call("put", w.wait_for_capacity(4)).await {
                return fail(upload, origin_err(e)).await;
            }
            w.put(c);
            continue;
        }
        chunks.push(c);
        if conditional {
            if total > CONDITIONAL_PUT_MAX_BYTES {
                return Err(s3_error!(EntityTooLarge, "A conditional write is limited to 256 MiB"));
            }
        } else if total > SINGLE_PUT_MAX_BYTES {
            let opts = PutMultipartOptions { attributes: attrs.to_store(), ..Default::default() };
            let up = origins.call("put", store.put_multipart_opts(path, opts)).await.map_err(origin_err)?;
            let mut w = WriteMultipart::new_with_chunk_size(up, STREAM_CHUNK_BYTES);
            for c in chunks.drain(..) {
                w.put(c);
            }
            upload = Some(w);
        }
    }
    Ok(match upload {
        Some(w) => Staged::Upload(w),
        None => Staged::Memory(chunks.into_iter().collect()),
    })
}

/// `If-Match` failed: S3 answers 404 when the key does not exist at all, 412 otherwise.
async fn missing_or_failed(s3: &LakeS3, store: &std::sync::Arc<dyn ObjectStore>, path: &Path) -> S3Error {
    match s3.cache.origins.call("head", store.head(path)).await {
        Err(OriginError::NotFound) => s3_error!(NoSuchKey),
        _ => precondition_failed(),
    }
}

/// Makes `staged` the object at `path` if `cond` holds; returns the new ETag if the origin
/// named it. The caller holds the key's write lock.
async fn commit(
    s3: &LakeS3,
    store: &std::sync::Arc<dyn ObjectStore>,
    path: &Path,
    staged: Staged,
    cond: Condition,
    attrs: &ObjectAttrs,
) -> S3Result<Option<String>> {
    let origins = &s3.cache.origins;
    let mode = match cond {
        Condition::None => PutMode::Overwrite,
        Condition::Create => PutMode::Create,
        Condition::Update(e) => PutMode::Update(UpdateVersion { e_tag: Some(e), version: None }),
        Condition::Exists => {
            if let Err(e) = origins.call("head", store.head(path)).await {
                staged.abort().await;
                return Err(match e {
                    OriginError::NotFound => s3_error!(NoSuchKey),
                    e => origin_err(e),
                });
            }
            PutMode::Overwrite
        }
    };
    let payload = match staged {
        Staged::Upload(w) => {
            // `stage` streams only unconditional writes.
            return origins.call("put", w.finish()).await.map(|r| r.e_tag).map_err(origin_err);
        }
        Staged::Memory(p) => p,
    };
    let opts = PutOptions { mode: mode.clone(), attributes: attrs.to_store(), ..Default::default() };
    let res = origins.call("put", store.put_opts(path, payload.clone(), opts)).await;
    match (res, mode) {
        (Ok(r), _) => Ok(r.e_tag),
        (Err(OriginError::Precondition), PutMode::Update(_)) => Err(missing_or_failed(s3, store, path).await),
        // Stores without native compare-and-swap (a local directory): the check and the
        // write are made atomic among writers of this node by the key lock.
        (Err(OriginError::NotSupported), PutMode::Update(v)) => {
            let cur = origins.call("head", store.head(path)).await.map_err(|e| match e {
                OriginError::NotFound => s3_error!(NoSuchKey),
                e => origin_err(e),
            })?;
            if cur.e_tag.as_deref().map(|e| e.trim_matches('"')) != v.e_tag.as_deref() {
                return Err(precondition_failed());
            }
            let opts = PutOptions { attributes: attrs.to_store(), ..Default::default() };
            origins
                .call("put", store.put_opts(path, payload, opts))
                .await
                .map(|r| r.e_tag)
                .map_err(origin_err)
        }
        (Err(e), _) => Err(origin_err(e)),
    }
}

/// The object's ETag and modification time as the origin now reports them.
async fn current(s3: &LakeS3, bucket: &str, key: &str) -> S3Result<(Option<ETag>, Option<Timestamp>)> {
    let obj = s3.cache.object(bucket, key).await.map_err(super::cache_err)?;
    Ok((obj.meta.etag.clone().map(ETag::Strong), Some(Timestamp::from(obj.meta.last_modified))))
}

/// The ETag the origin answered the commit with, else the one it reports now.
async fn committed_etag(
    s3: &LakeS3,
    bucket: &str,
    key: &str,
    etag: Option<String>,
) -> S3Result<Option<ETag>> {
    match etag {
        Some(e) => Ok(Some(etag_of(&e))),
        None => Ok(current(s3, bucket, key).await?.0),
    }
}

/// A request body as the stream `stage` and the part staging read.
type RequestBody = Box<dyn Stream<Item = Result<Bytes, s3s::StdError>> + Send + Unpin>;

fn request_body(b: Option<StreamingBlob>) -> RequestBody {
    match b {
        Some(b) => Box::new(b),
        None => Box::new(futures::stream::empty()),
    }
}

/// The verified checksum, echoed in the answer as S3 does.
macro_rules! set_checksum {
    ($out:expr, $v:expr) => {
        if let Some((a, c)) = $v.checksum {
            match a {
                Algo::Crc32 => $out.checksum_crc32 = Some(c),
                Algo::Crc32c => $out.checksum_crc32c = Some(c),
                Algo::Crc64Nvme => $out.checksum_crc64nvme = Some(c),
                Algo::Sha1 => $out.checksum_sha1 = Some(c),
                Algo::Sha256 => $out.checksum_sha256 = Some(c),
            }
        }
    };
}

pub async fn put_object(
    s3: &LakeS3,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let S3Request { input: i, headers, trailing_headers, .. } = req;
    let cond = put_condition(i.if_none_match.as_ref(), i.if_match.as_ref())?;
    let attrs = requested_attrs!(i)?;
    let expect = Expect::from_headers(&headers, i.content_length, trailing_headers)?;
    let limit = if cond.is_conditional() { CONDITIONAL_PUT_MAX_BYTES } else { MAX_PUT_BYTES };
    if expect.declared_len().is_some_and(|l| l > limit) {
        return Err(s3_error!(EntityTooLarge, "Your proposed upload exceeds the maximum allowed size"));
    }
    let store = s3.cache.origins.store(&i.bucket).map_err(origin_err)?;
    let path = object_path(&i.key).map_err(origin_err)?;
    let mut reader = BodyReader::new(request_body(i.body), expect, s3.body_timeout, limit);
    let staged = stage(s3, &store, &path, &mut reader, cond.is_conditional(), &attrs, |e| e.to_s3()).await?;
    let verified: Verified = match reader.finish() {
        Ok(v) => v,
        Err(e) => {
            staged.abort().await;
            return Err(e);
        }
    };
    let _guard = s3.lock_key(&i.bucket, &i.key).await;
    let res = commit(s3, &store, &path, staged, cond, &attrs).await;
    s3.after_write(&i.bucket, &i.key);
    let e_tag = committed_etag(s3, &i.bucket, &i.key, res?).await?;
    let mut out = PutObjectOutput { e_tag, size: Some(verified.len as i64), ..Default::default() };
    set_checksum!(out, verified);
    Ok(S3Response::new(out))
}

pub async fn delete_object(
    s3: &LakeS3,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let i = req.input;
    let store = s3.cache.origins.store(&i.bucket).map_err(origin_err)?;
    let path = object_path(&i.key).map_err(origin_err)?;
    let _guard = s3.lock_key(&i.bucket, &i.key).await;
    let res = s3.cache.origins.call("delete", store.delete(&path)).await;
    s3.after_write(&i.bucket, &i.key);
    match res {
        // S3 answers 204 whether or not the key existed.
        Ok(()) | Err(OriginError::NotFound) => Ok(S3Response::new(DeleteObjectOutput::default())),
        Err(e) => Err(origin_err(e)),
    }
}

pub async fn delete_objects(
    s3: &LakeS3,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let i = req.input;
    if i.delete.objects.len() > 1000 {
        return Err(s3_error!(MalformedXML, "At most 1000 keys can be deleted in one request"));
    }
    let store = s3.cache.origins.store(&i.bucket).map_err(origin_err)?;
    let quiet = i.delete.quiet.unwrap_or(false);
    // Up to 16 keys at a time (each under its own write lock): 1000 keys must not take
    // 1000 sequential origin round trips.
    let bucket = &i.bucket;
    let store = &store;
    let results: Vec<(String, Result<(), OriginError>)> = futures::stream::iter(i.delete.objects)
        .map(|o| async move {
            let res = match object_path(&o.key) {
                Ok(path) => {
                    let _guard = s3.lock_key(bucket, &o.key).await;
                    let r = s3.cache.origins.call("delete", store.delete(&path)).await;
                    s3.after_write(bucket, &o.key);
                    r
                }
                Err(e) => Err(e),
            };
            (o.key, res)
        })
        .buffered(16)
        .collect()
        .await;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (key, res) in results {
        match res {
            Ok(()) | Err(OriginError::NotFound) => {
                if !quiet {
                    deleted.push(DeletedObject { key: Some(key), ..Default::default() });
                }
            }
            Err(e) => {
                let se = origin_err(e);
                errors.push(Error {
                    key: Some(key),
                    code: Some(se.code().as_str().to_string()),
                    message: se.message().map(str::to_string),
                    ..Default::default()
                });
            }
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: (!deleted.is_empty()).then_some(deleted),
        errors: (!errors.is_empty()).then_some(errors),
        ..Default::default()
    }))
}

/// The source object of a copy, its `x-amz-copy-source-if-*` conditions checked (any
/// failure is 412, as S3 answers for copies).
async fn copy_source(
    s3: &LakeS3,
    source: &CopySource,
    conditions: Conditions<'_>,
) -> S3Result<std::sync::Arc<crate::cache::ObjectHandle>> {
    let (bucket, key) = match source {
        CopySource::Bucket { bucket, key, version_id: None } => (bucket, key),
        CopySource::Bucket { version_id: Some(_), .. } => {
            return Err(s3_error!(NotImplemented, "Copying a specific version is not supported"));
        }
        _ => return Err(s3_error!(NotImplemented, "Only bucket/key copy sources are supported")),
    };
    let src = s3.cache.object(bucket, key).await.map_err(super::cache_err)?;
    conditions.check(&src.meta).map_err(|_| {
        s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold")
    })?;
    Ok(src)
}

/// The source of a copy, read through the cache, as `stage` reads it.
fn copy_body(
    s3: &LakeS3,
    src: &std::sync::Arc<crate::cache::ObjectHandle>,
    range: lakecache_common::page::ByteRange,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + Unpin + use<> {
    s3.cache.read(src.clone(), range)
}

fn source_read_failed(e: std::io::Error) -> S3Error {
    origin_fault(S3Error::with_message(
        S3ErrorCode::ServiceUnavailable,
        format!("The copy source could not be read ({e}); please retry."),
    ))
}

pub async fn copy_object(
    s3: &LakeS3,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let i = req.input;
    let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    let src = copy_source(s3, &i.copy_source, i.source_conditions()).await?;
    if src.bucket == i.bucket
        && src.key == i.key
        && !replace
        && i.storage_class.is_none()
        && i.website_redirect_location.is_none()
        && i.server_side_encryption.is_none()
    {
        return Err(s3_error!(
            InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
        ));
    }
    let attrs = if replace { requested_attrs!(i)? } else { src.meta.attrs.clone() };
    let dst_store = s3.cache.origins.store(&i.bucket).map_err(origin_err)?;
    let dst_path = object_path(&i.key).map_err(origin_err)?;
    let etag = if src.bucket == i.bucket && !replace {
        // One bucket, attributes unchanged: the origin copies (and keeps the attributes).
        let _guard = s3.lock_key(&i.bucket, &i.key).await;
        let res = s3.cache.origins.call("copy", dst_store.copy(&src.path, &dst_path)).await;
        s3.after_write(&i.bucket, &i.key);
        res.map_err(origin_err)?;
        None
    } else {
        // Across buckets (possibly across stores), or with new attributes: the source
        // streams through this node.
        let range = lakecache_common::page::ByteRange { start: 0, end: src.meta.size };
        let body = copy_body(s3, &src, range);
        let staged = stage(s3, &dst_store, &dst_path, body, false, &attrs, source_read_failed).await?;
        let _guard = s3.lock_key(&i.bucket, &i.key).await;
        let res = commit(s3, &dst_store, &dst_path, staged, Condition::None, &attrs).await;
        s3.after_write(&i.bucket, &i.key);
        res?
    };
    let (cur_etag, last_modified) = current(s3, &i.bucket, &i.key).await?;
    let e_tag = etag.map(|e| etag_of(&e)).or(cur_etag);
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult { e_tag, last_modified, ..Default::default() }),
        ..Default::default()
    }))
}

pub async fn create_multipart_upload(
    s3: &LakeS3,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let i = req.input;
    s3.cache.origins.store(&i.bucket).map_err(origin_err)?;
    object_path(&i.key).map_err(origin_err)?;
    let attrs = requested_attrs!(i)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let id = s3
        .staging
        .create(UploadMeta {
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            attrs,
            initiated_unix_ms: now,
            content_type: None,
        })
        .await
        .map_err(multipart_err)?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(id),
        ..Default::default()
    }))
}

pub async fn upload_part(
    s3: &LakeS3,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let S3Request { input: i, headers, trailing_headers, .. } = req;
    s3.staging.meta(&i.upload_id, &i.bucket, &i.key).await.map_err(multipart_err)?;
    let expect = Expect::from_headers(&headers, i.content_length, trailing_headers)?;
    if expect.declared_len().is_some_and(|l| l > MAX_PUT_BYTES) {
        return Err(s3_error!(EntityTooLarge, "Your proposed upload exceeds the maximum allowed size"));
    }
    let mut reader = BodyReader::new(request_body(i.body), expect, s3.body_timeout, MAX_PUT_BYTES);
    let written = s3.staging.write_part(&i.upload_id, i.part_number, &mut reader).await;
    let part = match (written, reader.failure()) {
        (Err(_), Some(e)) => return Err(e.to_s3()),
        (r, _) => r.map_err(multipart_err)?,
    };
    let verified = reader.finish()?;
    let (etag, _size) = s3.staging.commit_part(&i.upload_id, part).await.map_err(multipart_err)?;
    let mut out = UploadPartOutput { e_tag: Some(etag_of(&etag)), ..Default::default() };
    set_checksum!(out, verified);
    Ok(S3Response::new(out))
}

/// `x-amz-copy-source-range: bytes=first-last` (both required, inclusive, inside the object).
fn copy_source_range(r: Option<&str>, size: u64) -> S3Result<lakecache_common::page::ByteRange> {
    let Some(r) = r else { return Ok(lakecache_common::page::ByteRange { start: 0, end: size }) };
    let bad = || {
        s3_error!(InvalidArgument, "The x-amz-copy-source-range value must be of the form bytes=first-last")
    };
    let (a, b) = r.strip_prefix("bytes=").and_then(|x| x.split_once('-')).ok_or_else(bad)?;
    let (first, last): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if first > last || last >= size {
        return Err(s3_error!(InvalidRange, "The x-amz-copy-source-range is not within the source object"));
    }
    Ok(lakecache_common::page::ByteRange { start: first, end: last + 1 })
}

/// UploadPartCopy: a part whose bytes are a range of another object, read through the cache.
pub async fn upload_part_copy(
    s3: &LakeS3,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let i = req.input;
    s3.staging.meta(&i.upload_id, &i.bucket, &i.key).await.map_err(multipart_err)?;
    let src = copy_source(s3, &i.copy_source, i.source_conditions()).await?;
    let range = copy_source_range(i.copy_source_range.as_deref(), src.meta.size)?;
    let body = s3.cache.read(src, range);
    let part = s3.staging.write_part(&i.upload_id, i.part_number, body).await.map_err(|e| match e {
        crate::origin::multipart::MultipartError::Body(m) => source_read_failed(std::io::Error::other(m)),
        e => multipart_err(e),
    })?;
    let (etag, _) = s3.staging.commit_part(&i.upload_id, part).await.map_err(multipart_err)?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(etag_of(&etag)),
            last_modified: Some(Timestamp::from(std::time::SystemTime::now())),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

fn completed_output(bucket: &str, key: &str, etag: &str) -> CompleteMultipartUploadOutput {
    CompleteMultipartUploadOutput {
        bucket: Some(bucket.to_string()),
        key: Some(key.to_string()),
        e_tag: Some(etag_of(etag)),
        location: Some(format!("/{bucket}/{key}")),
        ..Default::default()
    }
}

pub async fn complete_multipart_upload(
    s3: &LakeS3,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let i = req.input;
    // A retry of a completion whose answer was lost gets the same answer.
    if let Some(done) = s3.staging.completed(&i.upload_id, &i.bucket, &i.key).await {
        return Ok(S3Response::new(completed_output(&i.bucket, &i.key, &done.etag)));
    }
    let meta = s3.staging.meta(&i.upload_id, &i.bucket, &i.key).await.map_err(multipart_err)?;
    let requested: Vec<(i32, String)> = i
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.part_number.unwrap_or(0), p.e_tag.map(|e| e.value().to_string()).unwrap_or_default()))
        .collect();
    let (parts, _multipart_etag) =
        s3.staging.resolve_complete(&i.upload_id, &requested).await.map_err(multipart_err)?;
    let cond = put_condition(i.if_none_match.as_ref(), i.if_match.as_ref())?;
    let store = s3.cache.origins.store(&i.bucket).map_err(origin_err)?;
    let path = object_path(&i.key).map_err(origin_err)?;
    let body = Box::pin(concat_parts(parts));
    let staged_err = |e: std::io::Error| {
        S3Error::with_message(S3ErrorCode::InternalError, format!("Reading the staged parts failed: {e}"))
    };
    let staged = stage(s3, &store, &path, body, cond.is_conditional(), &meta.attrs, staged_err).await?;
    let _guard = s3.lock_key(&i.bucket, &i.key).await;
    // A concurrent retry of this completion may have finished while this one staged.
    if let Some(done) = s3.staging.completed(&i.upload_id, &i.bucket, &i.key).await {
        staged.abort().await;
        return Ok(S3Response::new(completed_output(&i.bucket, &i.key, &done.etag)));
    }
    let res = commit(s3, &store, &path, staged, cond, &meta.attrs).await;
    s3.after_write(&i.bucket, &i.key);
    let etag = match committed_etag(s3, &i.bucket, &i.key, res?).await? {
        Some(e) => e.value().to_string(),
        None => String::new(),
    };
    let done = Completed { bucket: i.bucket.clone(), key: i.key.clone(), etag };
    s3.staging.complete(&i.upload_id, &done).await.map_err(multipart_err)?;
    Ok(S3Response::new(completed_output(&i.bucket, &i.key, &done.etag)))
}

pub async fn abort_multipart_upload(
    s3: &LakeS3,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let i = req.input;
    s3.staging.meta(&i.upload_id, &i.bucket, &i.key).await.map_err(multipart_err)?;
    s3.staging.remove(&i.upload_id).await.map_err(multipart_err)?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub async fn list_parts(
    s3: &LakeS3,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let i = req.input;
    s3.staging.meta(&i.upload_id, &i.bucket, &i.key).await.map_err(multipart_err)?;
    let marker = i.part_number_marker.unwrap_or(0);
    let max = i.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
    let all = s3.staging.list_parts(&i.upload_id).await.map_err(multipart_err)?;
    let after: Vec<_> = all.into_iter().filter(|p| p.number > marker).collect();
    let truncated = after.len() > max;
    let parts: Vec<Part> = after
        .into_iter()
        .take(max)
        .map(|p| Part {
            part_number: Some(p.number),
            e_tag: Some(etag_of(&p.etag)),
            size: Some(p.size as i64),
            last_modified: Some(Timestamp::from(p.last_modified)),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(i.upload_id),
        part_number_marker: Some(marker),
        next_part_number_marker: parts.last().and_then(|p| p.part_number),
        max_parts: Some(max as i32),
        is_truncated: Some(truncated),
        parts: Some(parts),
        ..Default::default()
    }))
}
