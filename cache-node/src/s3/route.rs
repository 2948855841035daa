//! The s3s service of a cache node: `LakeS3` behind an `Arc` (so the custom route shares
//! it) and the route for GETs whose Range header S3 ignores.

use std::sync::Arc;

use futures::StreamExt;
use http::{Method, StatusCode};
use lakecache_common::page::ByteRange;
use lakecache_s3::request::{HeaderConditions, host_bucket, percent_decode, range_is_ignored};
use lakecache_s3::response::{object_headers, read_headers};
use s3s::route::S3Route;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::LakeS3;

/// `LakeS3` behind an `Arc`, so the custom route can share it.
pub(crate) struct SharedS3(pub(crate) Arc<LakeS3>);

#[async_trait::async_trait]
impl s3s::S3 for SharedS3 {
    async fn get_object(
        &self,
        r: S3Request<s3s::dto::GetObjectInput>,
    ) -> S3Result<S3Response<s3s::dto::GetObjectOutput>> {
        self.0.get_object(r).await
    }
    async fn head_object(
        &self,
        r: S3Request<s3s::dto::HeadObjectInput>,
    ) -> S3Result<S3Response<s3s::dto::HeadObjectOutput>> {
        self.0.head_object(r).await
    }
    async fn list_objects_v2(
        &self,
        r: S3Request<s3s::dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<s3s::dto::ListObjectsV2Output>> {
        self.0.list_objects_v2(r).await
    }
    async fn list_objects(
        &self,
        r: S3Request<s3s::dto::ListObjectsInput>,
    ) -> S3Result<S3Response<s3s::dto::ListObjectsOutput>> {
        self.0.list_objects(r).await
    }
    async fn list_buckets(
        &self,
        r: S3Request<s3s::dto::ListBucketsInput>,
    ) -> S3Result<S3Response<s3s::dto::ListBucketsOutput>> {
        self.0.list_buckets(r).await
    }
    async fn head_bucket(
        &self,
        r: S3Request<s3s::dto::HeadBucketInput>,
    ) -> S3Result<S3Response<s3s::dto::HeadBucketOutput>> {
        self.0.head_bucket(r).await
    }
    async fn get_bucket_location(
        &self,
        r: S3Request<s3s::dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<s3s::dto::GetBucketLocationOutput>> {
        self.0.get_bucket_location(r).await
    }
    async fn put_object(
        &self,
        r: S3Request<s3s::dto::PutObjectInput>,
    ) -> S3Result<S3Response<s3s::dto::PutObjectOutput>> {
        self.0.put_object(r).await
    }
    async fn delete_object(
        &self,
        r: S3Request<s3s::dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<s3s::dto::DeleteObjectOutput>> {
        self.0.delete_object(r).await
    }
    async fn delete_objects(
        &self,
        r: S3Request<s3s::dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<s3s::dto::DeleteObjectsOutput>> {
        self.0.delete_objects(r).await
    }
    async fn copy_object(
        &self,
        r: S3Request<s3s::dto::CopyObjectInput>,
    ) -> S3Result<S3Response<s3s::dto::CopyObjectOutput>> {
        self.0.copy_object(r).await
    }
    async fn create_multipart_upload(
        &self,
        r: S3Request<s3s::dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<s3s::dto::CreateMultipartUploadOutput>> {
        self.0.create_multipart_upload(r).await
    }
    async fn upload_part(
        &self,
        r: S3Request<s3s::dto::UploadPartInput>,
    ) -> S3Result<S3Response<s3s::dto::UploadPartOutput>> {
        self.0.upload_part(r).await
    }
    async fn complete_multipart_upload(
        &self,
        r: S3Request<s3s::dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<s3s::dto::CompleteMultipartUploadOutput>> {
        self.0.complete_multipart_upload(r).await
    }
    async fn abort_multipart_upload(
        &self,
        r: S3Request<s3s::dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<s3s::dto::AbortMultipartUploadOutput>> {
        self.0.abort_multipart_upload(r).await
    }
    async fn list_parts(
        &self,
        r: S3Request<s3s::dto::ListPartsInput>,
    ) -> S3Result<S3Response<s3s::dto::ListPartsOutput>> {
        self.0.list_parts(r).await
    }
    async fn upload_part_copy(
        &self,
        r: S3Request<s3s::dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<s3s::dto::UploadPartCopyOutput>> {
        self.0.upload_part_copy(r).await
    }
}

/// A GET whose Range header S3 would ignore — several ranges, or not a valid byte range —
/// gets the whole object with 200, as S3 answers. (s3s would reject the header instead.)
pub(crate) struct IgnoredRangeRoute {
    pub(crate) s3: Arc<LakeS3>,
    pub(crate) domains: Vec<String>,
    pub(crate) anonymous: bool,
}
impl IgnoredRangeRoute {
    fn bucket_key(&self, uri: &http::Uri, headers: &http::HeaderMap) -> Option<(String, String)> {
        let path = percent_decode(uri.path().strip_prefix('/')?)?;
        let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        match host_bucket(&self.domains, host) {
            Some(b) if !path.is_empty() => Some((b.to_string(), path)),
            Some(_) => None,
            None => {
                let (b, k) = path.split_once('/')?;
                (!b.is_empty() && !k.is_empty()).then(|| (b.to_string(), k.to_string()))
            }
        }
    }
}

#[async_trait::async_trait]
impl S3Route for IgnoredRangeRoute {
    fn is_match(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        _: &mut http::Extensions,
    ) -> bool {
        range_is_ignored(method, uri, headers) && self.bucket_key(uri, headers).is_some()
    }

    async fn check_access(&self, req: &mut S3Request<s3s::Body>) -> S3Result<()> {
        if req.credentials.is_some() || self.anonymous {
            Ok(())
        } else {
            Err(s3_error!(AccessDenied, "Signature is required"))
        }
    }

    async fn call(&self, req: S3Request<s3s::Body>) -> S3Result<S3Response<s3s::Body>> {
        let (bucket, key) =
            self.bucket_key(&req.uri, &req.headers).ok_or_else(|| s3_error!(InvalidRequest))?;
        let obj = self.s3.cache.object(&bucket, &key).await.map_err(super::cache_err)?;
        // The conditional headers still apply (s3s parses them only for its own operations).
        HeaderConditions::parse(&req.headers)?.as_conditions().check(&obj.meta)?;
        let size = obj.meta.size;
        let whole = ByteRange { start: 0, end: size };
        let headers = read_headers(object_headers(&obj.meta), whole, size, false);
        let stream = self.s3.cache.read_started(obj, whole).await.map_err(super::cache_err)?;
        let body = s3s::Body::http_body(http_body_util::StreamBody::new(
            stream.map(|r| r.map(hyper::body::Frame::data)),
        ));
        let mut resp = S3Response::with_headers(body, headers);
        resp.status = Some(StatusCode::OK);
        Ok(resp)
    }
}
