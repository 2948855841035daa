//! The S3 surface: `s3s` parses, authenticates (SigV4 headers and presigned URLs) and
//! serialises; this module turns each operation into calls on the read path (`cache`) or
//! pass-through writes to the origin, and maps every error to one S3 code and status.
//! One file per operation group: `read.rs` (GET/HEAD/List), `write.rs` (PUT, multipart,
//! DELETE, COPY). No caching logic lives here.

mod body;
pub mod list;
pub(crate) mod read;
pub(crate) mod route;
mod write;

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use crate::cache::{Cache, CacheError};
use crate::origin::OriginError;
use crate::origin::multipart::{MultipartError, Staging};

pub use lakecache_s3::conditional;
pub use lakecache_s3::request::resolve_range;

/// The S3 implementation handed to `s3s`.
pub struct LakeS3 {
    pub cache: Arc<Cache>,
    pub staging: Arc<Staging>,
    pub lists: list::ListCache,
    region: String,
    write_locks: Arc<Vec<tokio::sync::Mutex<()>>>,
    /// The longest a write's body may go without a byte (`server.body_timeout`).
    body_timeout: std::time::Duration,
}

impl LakeS3 {
    pub fn new(
        cache: Arc<Cache>,
        staging: Arc<Staging>,
        list_ttl: std::time::Duration,
        region: String,
        body_timeout: std::time::Duration,
    ) -> Self {
        Self {
            cache,
            staging,
            lists: list::ListCache::new(list_ttl),
            region,
            write_locks: Arc::new((0..WRITE_LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect()),
            body_timeout,
        }
    }

    /// Writes to one key through this node are serialised, so a conditional write's check
    /// and its effect cannot interleave with another write of the same key. The lock is
    /// held only around a write's check and commit, never while a client sends a body.
    async fn lock_key(&self, bucket: &str, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.write_locks[write_lock_stripe(bucket, key)].lock().await
    }

    fn after_write(&self, bucket: &str, key: &str) {
        self.cache.invalidate(bucket, key);
        self.lists.invalidate_bucket(bucket);
    }
}

/// Stripes of the per-key write lock.
pub const WRITE_LOCK_STRIPES: usize = 1024;

/// The stripe of the write lock that `bucket`/`key` takes (public so that a test can find
/// two keys that share one).
pub fn write_lock_stripe(bucket: &str, key: &str) -> usize {
    let h = xxhash_rust::xxh3::xxh3_64(format!("{bucket}/{key}").as_bytes());
    (h % WRITE_LOCK_STRIPES as u64) as usize
}

pub(crate) fn cache_err(e: CacheError) -> S3Error {
    match e {
        CacheError::Origin(o) => origin_err(o),
        // Both are the origin's doing (it changed, or it cut the body short): another node
        // would fare no better.
        CacheError::Changed => {
            origin_fault(s3_error!(ServiceUnavailable, "The object changed during the read; please retry."))
        }
        CacheError::ShortRead { .. } => {
            origin_fault(s3_error!(ServiceUnavailable, "The origin returned a short body; please retry."))
        }
        CacheError::Internal(m) => S3Error::with_message(S3ErrorCode::InternalError, m),
        CacheError::OverBudget => with_status(
            lakecache_common::wire::BUDGET_CODE,
            lakecache_common::wire::BUDGET_STATUS,
            "Serving this read would take more origin requests than its x-lakecache-origin-budget allows"
                .into(),
        ),
    }
}

/// Marks an error answer as the origin's fault (`x-lakecache-error-source: origin`).
pub(crate) fn origin_fault(mut e: S3Error) -> S3Error {
    let mut h = e.headers().cloned().unwrap_or_default();
    h.insert(
        http::HeaderName::from_static(lakecache_common::wire::ERROR_SOURCE),
        http::HeaderValue::from_static(lakecache_common::wire::ERROR_SOURCE_ORIGIN),
    );
    e.set_headers(h);
    e
}

/// An error with a status of its own (s3s knows no code for it).
fn with_status(code: &'static str, status: http::StatusCode, message: String) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), message);
    e.set_status_code(status);
    e
}

pub(crate) fn origin_err(e: OriginError) -> S3Error {
    let fault = e.is_origin_fault();
    let se = match e {
        OriginError::NoSuchBucket => s3_error!(NoSuchBucket),
        OriginError::NotFound => s3_error!(NoSuchKey),
        OriginError::Precondition => s3_error!(PreconditionFailed),
        OriginError::NotModified => s3_error!(NotModified),
        OriginError::AlreadyExists => {
            s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold")
        }
        OriginError::AccessDenied => {
            tracing::warn!("the origin refused this node's credentials");
            s3_error!(AccessDenied, "The origin refused access")
        }
        OriginError::NotSupported => s3_error!(NotImplemented, "The origin does not support this operation"),
        OriginError::InvalidKey(m) => {
            S3Error::with_message(S3ErrorCode::InvalidArgument, format!("Invalid key: {m}"))
        }
        OriginError::KeyConflict(m) => S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("The origin cannot store this key next to an existing object or prefix: {m}"),
        ),
        OriginError::KeyTooLong(_) => s3_error!(KeyTooLongError, "Your key is too long for the origin"),
        OriginError::InsufficientStorage(m) => {
            tracing::warn!(error = %m, "origin out of space");
            with_status(
                "InsufficientStorage",
                http::StatusCode::INSUFFICIENT_STORAGE,
                "The origin has no space left for this object".into(),
            )
        }
        OriginError::Refused { status, code, message } => {
            tracing::warn!(status, code = %code, message = %message, "origin refused a request");
            let mut e = S3Error::with_message(
                S3ErrorCode::from_bytes(code.as_bytes()).unwrap_or(S3ErrorCode::InvalidRequest),
                format!("The origin refused the request: {message}"),
            );
            e.set_status_code(http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST));
            e
        }
        OriginError::TimedOut(d) => {
            tracing::warn!(timeout = ?d, "origin timed out");
            let msg = if d.is_zero() {
                "The origin did not answer in time; please retry.".to_string()
            } else {
                format!("The origin did not answer within {}; please retry.", humantime::format_duration(d))
            };
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, msg)
        }
        OriginError::Unavailable(m) => {
            tracing::warn!(error = %m, "origin unavailable");
            s3_error!(ServiceUnavailable, "The origin could not be reached; please retry.")
        }
        OriginError::Failed(m) => {
            tracing::warn!(error = %m, "origin failed");
            S3Error::with_message(S3ErrorCode::InternalError, format!("The origin failed: {m}"))
        }
        OriginError::Other(m) => S3Error::with_message(S3ErrorCode::InternalError, m),
    };
    if fault { origin_fault(se) } else { se }
}

pub(crate) fn multipart_err(e: MultipartError) -> S3Error {
    match e {
        MultipartError::NoSuchUpload => s3_error!(NoSuchUpload),
        MultipartError::InvalidPart(m) => S3Error::with_message(S3ErrorCode::InvalidPart, m),
        MultipartError::InvalidPartOrder => s3_error!(InvalidPartOrder),
        MultipartError::EntityTooSmall(n) => S3Error::with_message(
            S3ErrorCode::EntityTooSmall,
            format!("Part {n} is smaller than the minimum of 5 MiB"),
        ),
        MultipartError::InvalidArgument(m) => S3Error::with_message(S3ErrorCode::InvalidArgument, m),
        MultipartError::Body(m) => S3Error::with_message(S3ErrorCode::IncompleteBody, m),
        MultipartError::Io(e) => S3Error::with_message(S3ErrorCode::InternalError, e.to_string()),
    }
}

fn etag_of(s: &str) -> ETag {
    ETag::Strong(s.trim_matches('"').to_string())
}

#[async_trait::async_trait]
impl S3 for LakeS3 {
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        read::get_object(self, req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        read::head_object(self, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        list::list_objects_v2(self, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        list::list_objects_v1(self, req).await
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        list::list_buckets(self).await
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let store = self.cache.origins.store(&req.input.bucket).map_err(origin_err)?;
        // A remote bucket exists if the origin can list it (the first entry is enough).
        let mut listing = store.list(None);
        let first = async move { futures::StreamExt::next(&mut listing).await.transpose() };
        match self.cache.origins.call("list", first).await {
            Ok(_) | Err(crate::origin::OriginError::NotFound) => {
                Ok(S3Response::new(HeadBucketOutput::default()))
            }
            Err(e) => Err(origin_err(e)),
        }
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.cache.origins.store(&req.input.bucket).map_err(origin_err)?;
        // S3 reports us-east-1 as an empty location constraint.
        let location_constraint =
            (self.region != "us-east-1").then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        write::put_object(self, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        write::delete_object(self, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        write::delete_objects(self, req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        write::copy_object(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        write::create_multipart_upload(self, req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        write::upload_part(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        write::complete_multipart_upload(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        write::upload_part_copy(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        write::abort_multipart_upload(self, req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        write::list_parts(self, req).await
    }
}
