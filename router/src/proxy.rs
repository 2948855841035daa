//! The router's S3 surface: reads are placed page by page on the ring and streamed back
//! in order, each page run from its owner with failover to the next owners; deletes go to
//! the owner of the object's first page and are then invalidated on every node. PUT, COPY,
//! multipart uploads and the calls modelled by no method here are passed through to the
//! key's owner as they came (`forward`).
//!
//! Every page read carries `If-Match` with the version the router resolved, so a node
//! holding stale metadata answers 412 instead of old bytes; the router then invalidates
//! that node and reads again.

use std::sync::Arc;

use bytes::Bytes;
use lakecache_cache_node::cache::ObjectMeta;
use lakecache_cache_node::cache::meta::ObjectAttrs;
use lakecache_cache_node::s3::conditional::Conditions;
use lakecache_cache_node::s3::resolve_range;
use lakecache_common::page::{ByteRange, PageGeometry};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::sync::mpsc;

use crate::membership::{Fleet, Member};
use crate::routing::{self, is_node_failure};

pub const ROUTER_REQUESTS: &str = "router_upstream_requests_total";
pub const ROUTER_FAILOVERS: &str = "router_upstream_failovers_total";

pub struct Router {
    pub fleet: Arc<Fleet>,
    geometry: PageGeometry,
}

impl Router {
    pub fn new(fleet: Arc<Fleet>) -> anyhow::Result<Self> {
        let geometry = PageGeometry::new(fleet.cfg.page_size.as_u64())
            .ok_or_else(|| anyhow::anyhow!("bad page size"))?;
        Ok(Self { fleet, geometry })
    }

    fn path(key: &str) -> S3Result<Path> {
        lakecache_cache_node::origin::key_path(key)
            .map_err(|e| S3Error::with_message(S3ErrorCode::InvalidArgument, e.to_string()))
    }

    /// Metadata from the owner of page 0, with failover.
    async fn head(&self, bucket: &str, key: &str) -> S3Result<ObjectMeta> {
        let path = Self::path(key)?;
        let (meta, ct) = routing::head(&self.fleet, bucket, &path).await.map_err(map_err)?;
        Ok(ObjectMeta::from_store(&meta, ObjectAttrs { content_type: ct, ..Default::default() }))
    }

    /// The owner of the key's first page: every write of the key goes there.
    fn key_owner(&self, bucket: &str, key: &str) -> S3Result<Arc<Member>> {
        self.fleet
            .owners(bucket, key, 0, 1)
            .into_iter()
            .next()
            .ok_or_else(|| s3_error!(ServiceUnavailable, "No cache node is available"))
    }

    /// Streams `range` of the object from the owners of its pages.
    fn stream(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        range: ByteRange,
    ) -> mpsc::Receiver<std::io::Result<Bytes>> {
        let etag = meta.origin_etag.clone().or_else(|| meta.etag.clone());
        routing::stream(&self.fleet, self.geometry, bucket, key, etag, range)
    }
}

fn map_err(e: object_store::Error) -> S3Error {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => s3_error!(NoSuchKey),
        E::Precondition { .. } | E::AlreadyExists { .. } => {
            s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold")
        }
        E::NotModified { .. } => s3_error!(NotModified),
        other if other.to_string().contains("NoSuchBucket") => s3_error!(NoSuchBucket),
        other => {
            tracing::warn!(error = %other, "cache node request failed");
            s3_error!(ServiceUnavailable, "The cache fleet could not serve the request; please retry.")
        }
    }
}

#[async_trait::async_trait]
impl S3 for Router {
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let i = &req.input;
        if i.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "Reading by partNumber is not supported"));
        }
        let meta = self.head(&i.bucket, &i.key).await?;
        Conditions::of(i).check(&meta)?;
        let (range, partial) = resolve_range(i.range.as_ref(), meta.size)?;
        let rx = self.stream(&i.bucket, &i.key, &meta, range);
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(tokio_stream::wrappers::ReceiverStream::new(rx))),
            content_length: Some(range.len() as i64),
            content_range: partial.then(|| format!("bytes {}-{}/{}", range.start, range.end - 1, meta.size)),
            accept_ranges: Some("bytes".into()),
            e_tag: meta.etag.clone().map(ETag::Strong),
            last_modified: Some(Timestamp::from(meta.last_modified)),
            content_type: Some(
                meta.attrs.content_type.clone().unwrap_or_else(|| "application/octet-stream".into()),
            ),
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = &req.input;
        let meta = self.head(&i.bucket, &i.key).await?;
        Conditions::of(i).check(&meta)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(meta.size as i64),
            accept_ranges: Some("bytes".into()),
            e_tag: meta.etag.clone().map(ETag::Strong),
            last_modified: Some(Timestamp::from(meta.last_modified)),
            content_type: Some(
                meta.attrs.content_type.clone().unwrap_or_else(|| "application/octet-stream".into()),
            ),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        use lakecache_cache_node::s3::list::{fetch_listing, one_level, prefix_dir, render_v2};
        let prefix = req.input.prefix.clone().unwrap_or_default();
        let dir = prefix_dir(&prefix).to_string();
        let delimited = one_level(&prefix, req.input.delimiter.as_deref());
        let mut last = None;
        // Any node can list (listings are not placed by page); spread by directory.
        for m in self.fleet.owners(&req.input.bucket, &dir, 0, self.fleet.cfg.failover_attempts) {
            let store = self.fleet.store(&m, &req.input.bucket).map_err(map_err)?;
            metrics::counter!(ROUTER_REQUESTS, "node" => m.cfg.id.clone(), "op" => "list").increment(1);
            match fetch_listing(&store, &dir, delimited).await {
                Ok(entries) => return render_v2(&entries, req.input).map(S3Response::new),
                Err(e) if is_node_failure(&e) => {
                    self.fleet.report_failure(&m);
                    last = Some(e);
                }
                Err(e) => return Err(map_err(e)),
            }
        }
        Err(last.map(map_err).unwrap_or_else(|| s3_error!(ServiceUnavailable, "No cache node is available")))
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
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for o in i.delete.objects {
            let res = match (self.key_owner(&i.bucket, &o.key), Self::path(&o.key)) {
                (Ok(m), Ok(path)) => match self.fleet.store(&m, &i.bucket) {
                    Ok(store) => store.delete(&path).await.map_err(map_err),
                    Err(e) => Err(map_err(e)),
                },
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            self.fleet.invalidate_everywhere(&i.bucket, &o.key).await;
            match res {
                Ok(()) => {
                    if !quiet {
                        deleted.push(DeletedObject { key: Some(o.key), ..Default::default() });
                    }
                }
                Err(e) if e.code() == &S3ErrorCode::NoSuchKey => {
                    if !quiet {
                        deleted.push(DeletedObject { key: Some(o.key), ..Default::default() });
                    }
                }
                Err(e) => errors.push(Error {
                    key: Some(o.key),
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
        let path = Self::path(&i.key)?;
        let owner = self
            .fleet
            .owners(&i.bucket, &i.key, 0, 1)
            .into_iter()
            .next()
            .ok_or_else(|| s3_error!(ServiceUnavailable))?;
        let store = self.fleet.store(&owner, &i.bucket).map_err(map_err)?;
        let res = store.delete(&path).await;
        self.fleet.invalidate_everywhere(&i.bucket, &i.key).await;
        match res {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                Ok(S3Response::new(DeleteObjectOutput::default()))
            }
            Err(e) => Err(map_err(e)),
        }
    }
}
