//! Writes pass through to the origin and then invalidate what they touched: PutObject
//! (plain and conditional), DeleteObject(s), CopyObject and multipart uploads (staged on
//! this node, written to the origin as one object on completion).

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    UpdateVersion, WriteMultipart,
};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::conditional::{Conditions, CopySourceConditional};
use super::{LakeS3, etag_of, multipart_err, origin_err};
use crate::origin::multipart::{UploadMeta, concat_parts};
use crate::origin::{OriginError, key_path};

/// Bodies up to this size are sent to the origin in one PUT; larger ones stream as a
/// multipart upload so that memory stays bounded.
const SINGLE_PUT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// A conditional PUT must be one atomic origin request, so its body is buffered; this caps it.
const CONDITIONAL_PUT_MAX_BYTES: u64 = 256 * 1024 * 1024;
const STREAM_CHUNK_BYTES: usize = 8 * 1024 * 1024;

enum Condition {
    None,
    /// `If-None-Match: *`: only if the key does not exist.
    Create,
    /// `If-Match: <etag>`: only if the current version has this ETag.
    Update(String),
    /// `If-Match: *`: only if the key exists.
    Exists,
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

async fn collect_body<S, E>(mut body: S, limit: u64) -> S3Result<Vec<Bytes>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut chunks = Vec::new();
    let mut total = 0u64;
    while let Some(c) = body.next().await {
        let c = c.map_err(|e| S3Error::with_message(S3ErrorCode::IncompleteBody, e.to_string()))?;
        total += c.len() as u64;
        if total > limit {
            return Err(s3_error!(EntityTooLarge, "Your proposed upload exceeds the maximum allowed size"));
        }
        chunks.push(c);
    }
    Ok(chunks)
}

fn attributes(s3: &LakeS3, bucket: &str, content_type: Option<&str>) -> Attributes {
    let mut a = Attributes::new();
    if let Some(ct) = content_type
        && s3.cache.origins.keeps_attributes(bucket)
    {
        a.insert(Attribute::ContentType, ct.to_string().into());
    }
    a
}

/// Writes an object to the origin honouring `cond`; the caller holds the key's write lock.
async fn write_object<S, E>(
    s3: &LakeS3,
    bucket: &str,
    key: &str,
    body: S,
    len_hint: Option<u64>,
    cond: Condition,
    content_type: Option<&str>,
) -> S3Result<()>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: std::fmt::Display,
{
    let origins = &s3.cache.origins;
    let store = origins.store(bucket).map_err(origin_err)?;
    let path = key_path(key).map_err(origin_err)?;
    let attrs = attributes(s3, bucket, content_type);
    let mode = match cond {
        Condition::None => PutMode::Overwrite,
        Condition::Create => PutMode::Create,
        Condition::Update(e) => PutMode::Update(UpdateVersion { e_tag: Some(e), version: None }),
        Condition::Exists => {
            origins.call("head", store.head(&path)).await.map_err(|e| match e {
                OriginError::NotFound => s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ),
                e => origin_err(e),
            })?;
            PutMode::Overwrite
        }
    };
    let streaming = matches!(mode, PutMode::Overwrite) && len_hint.is_none_or(|l| l > SINGLE_PUT_MAX_BYTES);
    if !streaming {
        let limit =
            if matches!(mode, PutMode::Overwrite) { SINGLE_PUT_MAX_BYTES } else { CONDITIONAL_PUT_MAX_BYTES };
        if len_hint.is_some_and(|l| l > limit) {
            return Err(s3_error!(EntityTooLarge, "A conditional write is limited to 256 MiB"));
        }
        let chunks = collect_body(body, limit).await?;
        let payload: PutPayload = chunks.into_iter().collect();
        let opts = PutOptions { mode: mode.clone(), attributes: attrs, ..Default::default() };
        let res = origins.call("put", store.put_opts(&path, payload.clone(), opts)).await;
        return match (res, mode) {
            (Ok(_), _) => Ok(()),
            // Stores without native compare-and-swap (a local directory): the check and
            // the write are made atomic among writers of this node by the key lock.
            (Err(OriginError::NotSupported), PutMode::Update(v)) => {
                let cur = origins.call("head", store.head(&path)).await.map_err(|e| match e {
                    OriginError::NotFound => s3_error!(
                        PreconditionFailed,
                        "At least one of the pre-conditions you specified did not hold"
                    ),
                    e => origin_err(e),
                })?;
                if cur.e_tag.as_deref().map(|e| e.trim_matches('"')) != v.e_tag.as_deref() {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "At least one of the pre-conditions you specified did not hold"
                    ));
                }
                origins.call("put", store.put(&path, payload)).await.map(|_| ()).map_err(origin_err)
            }
            (Err(e), _) => Err(origin_err(e)),
        };
    }
    let upload = origins
        .call(
            "put",
            store.put_multipart_opts(&path, PutMultipartOptions { attributes: attrs, ..Default::default() }),
        )
        .await
        .map_err(origin_err)?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, STREAM_CHUNK_BYTES);
    let mut body = body;
    while let Some(c) = body.next().await {
        let c = match c {
            Ok(c) => c,
            Err(e) => {
                let _ = w.abort().await;
                return Err(S3Error::with_message(S3ErrorCode::IncompleteBody, e.to_string()));
            }
        };
        if let Err(e) = w.wait_for_capacity(4).await {
            return Err(origin_err(OriginError::from_store(e)));
        }
        w.put(c);
    }
    origins.call("put", w.finish()).await.map(|_| ()).map_err(origin_err)
}

/// The object's ETag and modification time as the origin now reports them.
async fn current(s3: &LakeS3, bucket: &str, key: &str) -> S3Result<(Option<ETag>, Option<Timestamp>)> {
    let obj = s3.cache.object(bucket, key).await.map_err(super::cache_err)?;
    Ok((obj.meta.etag.clone().map(ETag::Strong), Some(Timestamp::from(obj.meta.last_modified))))
}

fn empty_body() -> futures::stream::Empty<Result<Bytes, std::io::Error>> {
    futures::stream::empty()
}

pub async fn put_object(
    s3: &LakeS3,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let i = req.input;
    let cond = put_condition(i.if_none_match.as_ref(), i.if_match.as_ref())?;
    let len = i.content_length.map(|l| l.max(0) as u64);
    let _guard = s3.lock_key(&i.bucket, &i.key).await;
    let res = match i.body {
        Some(b) => write_object(s3, &i.bucket, &i.key, b, len, cond, i.content_type.as_deref()).await,
        None => {
            write_object(s3, &i.bucket, &i.key, empty_body(), Some(0), cond, i.content_type.as_deref()).await
        }
    };
    s3.after_write(&i.bucket, &i.key);
    res?;
    let (e_tag, _) = current(s3, &i.bucket, &i.key).await?;
    Ok(S3Response::new(PutObjectOutput { e_tag, size: len.map(|l| l as i64), ..Default::default() }))
}

pub async fn delete_object(
    s3: &LakeS3,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let i = req.input;
    let store = s3.cache.origins.store(&i.bucket).map_err(origin_err)?;
    let path = key_path(&i.key).map_err(origin_err)?;
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
            let res = match key_path(&o.key) {
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

pub async fn copy_object(
    s3: &LakeS3,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let i = req.input;
    let src = copy_source(s3, &i.copy_source, i.source_conditions()).await?;
    let src_bucket = src.bucket.clone();
    let dst_store = s3.cache.origins.store(&i.bucket).map_err(origin_err)?;
    let dst_path = key_path(&i.key).map_err(origin_err)?;
    let _guard = s3.lock_key(&i.bucket, &i.key).await;
    let res = if src_bucket == i.bucket {
        s3.cache.origins.call("copy", dst_store.copy(&src.path, &dst_path)).await.map_err(origin_err)
    } else {
        // Across buckets (possibly across stores): stream the source through this node.
        let body =
            s3.cache.read(src.clone(), lakecache_common::page::ByteRange { start: 0, end: src.meta.size });
        let ct = i.content_type.clone().or_else(|| src.meta.content_type.clone());
        write_object(s3, &i.bucket, &i.key, body, Some(src.meta.size), Condition::None, ct.as_deref()).await
    };
    s3.after_write(&i.bucket, &i.key);
    res?;
    let (e_tag, last_modified) = current(s3, &i.bucket, &i.key).await?;
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
    key_path(&i.key).map_err(origin_err)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let id = s3
        .staging
        .create(UploadMeta {
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            content_type: i.content_type,
            initiated_unix_ms: now,
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
    let i = req.input;
    s3.staging.meta(&i.upload_id, &i.bucket, &i.key).await.map_err(multipart_err)?;
    let (etag, _size) = match i.body {
        Some(b) => s3.staging.put_part(&i.upload_id, i.part_number, b).await,
        None => s3.staging.put_part(&i.upload_id, i.part_number, empty_body()).await,
    }
    .map_err(multipart_err)?;
    Ok(S3Response::new(UploadPartOutput { e_tag: Some(etag_of(&etag)), ..Default::default() }))
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
    let (etag, _) = s3.staging.put_part(&i.upload_id, i.part_number, body).await.map_err(multipart_err)?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(etag_of(&etag)),
            last_modified: Some(Timestamp::from(std::time::SystemTime::now())),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

pub async fn complete_multipart_upload(
    s3: &LakeS3,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let i = req.input;
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
    let total: u64 = parts.iter().map(|p| p.size).sum();
    let cond = put_condition(i.if_none_match.as_ref(), i.if_match.as_ref())?;
    let _guard = s3.lock_key(&i.bucket, &i.key).await;
    let body = Box::pin(concat_parts(parts));
    let res =
        write_object(s3, &i.bucket, &i.key, body, Some(total), cond, meta.content_type.as_deref()).await;
    s3.after_write(&i.bucket, &i.key);
    res?;
    s3.staging.remove(&i.upload_id).await.map_err(multipart_err)?;
    let (e_tag, _) = current(s3, &i.bucket, &i.key).await?;
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        e_tag,
        location: Some(format!("/{}/{}", i.bucket, i.key)),
        ..Default::default()
    }))
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
