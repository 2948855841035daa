//! The in-process client: an `object_store::ObjectStore` over the fleet, for one bucket.
//! Page reads go straight to the owning cache node (with failover, as in the router), so
//! a search node — or any other object_store user — reads the fleet without the router's
//! extra hop. Writes go to the key's owner and are then invalidated on every node.

use std::fmt;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use lakecache_common::page::{ByteRange, PageGeometry};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

use crate::membership::{Fleet, Member};
use crate::routing;
use crate::upstream::ReadVersion;

const STORE: &str = "lakecache";

fn generic(msg: impl Into<String>) -> object_store::Error {
    object_store::Error::Generic { store: STORE, source: msg.into().into() }
}

/// A listing in the current work's I/O account: cache nodes pass lists to the origin (unless
/// they reuse answers, `[cache] list_ttl`), so each is counted as one origin request, and
/// refused when the work's budget has none left.
fn charge_list(prefix: Option<&Path>) -> Result<()> {
    let Some(a) = crate::account::current() else { return Ok(()) };
    if !a.affordable() {
        a.mark_refused();
        return Err(generic(format!(
            "{}: a listing needs the origin, and this read's budget of origin requests is spent",
            lakecache_common::wire::BUDGET_CODE
        )));
    }
    use std::sync::atomic::Ordering::Relaxed;
    a.fleet_requests.fetch_add(1, Relaxed);
    let key = prefix.map_or(String::new(), |p| format!("{}/", p.as_ref()));
    a.add_origin(crate::account::FileKind::of(&key), 1);
    Ok(())
}

/// The object as a GET with `options` sees it: its metadata (preconditions checked), its
/// attributes and the range the read covers.
fn described(
    location: &Path,
    info: &crate::upstream::ObjectInfo,
    options: &GetOptions,
) -> Result<(ObjectMeta, object_store::Attributes, std::ops::Range<u64>)> {
    let meta = ObjectMeta {
        location: location.clone(),
        last_modified: chrono::DateTime::<chrono::Utc>::from(info.last_modified),
        size: info.size,
        e_tag: info.etag.clone(),
        version: None,
    };
    options.check_preconditions(&meta)?;
    let mut attributes = object_store::Attributes::new();
    if let Some(ct) = &info.content_type {
        attributes.insert(object_store::Attribute::ContentType, ct.clone().into());
    }
    let range = match &options.range {
        Some(r) => r.as_range(meta.size).map_err(|e| generic(format!("invalid range: {e}")))?,
        None => 0..meta.size,
    };
    Ok((meta, attributes, range))
}

/// One bucket of the fleet as an object store.
pub struct FleetStore {
    fleet: Arc<Fleet>,
    bucket: String,
    geometry: PageGeometry,
}

impl FleetStore {
    pub fn new(fleet: Arc<Fleet>, bucket: impl Into<String>) -> Result<FleetStore> {
        let geometry =
            PageGeometry::new(fleet.cfg.page_size.as_u64()).ok_or_else(|| generic("invalid page size"))?;
        Ok(FleetStore { fleet, bucket: bucket.into(), geometry })
    }

    /// A read of an object this client holds no metadata for, with no HEAD first: the owner
    /// of the page with the first byte asked is asked for that page's share of the read,
    /// and its answer describes the object (remembered, as a HEAD's would be); the rest is
    /// read at the version it named. `None`: take the HEAD path — a suffix range (its
    /// first byte depends on the size), an empty one, or a start the node found past the
    /// object's end (answered from the metadata, as object_store answers it).
    async fn first_read(&self, location: &Path, options: &GetOptions) -> Option<Result<GetResult>> {
        use object_store::GetRange;
        let key = location.as_ref();
        let (start, end) = match &options.range {
            None => (0, None),
            Some(GetRange::Bounded(r)) => (r.start, Some(r.end)),
            Some(GetRange::Offset(o)) => (*o, None),
            Some(GetRange::Suffix(_)) => return None,
        };
        let ps = self.geometry.page_size_bytes();
        let page = start / ps;
        let want_end = (page + 1).saturating_mul(ps).min(end.unwrap_or(u64::MAX));
        if want_end <= start {
            return None;
        }
        let want = ByteRange { start, end: want_end };
        let (info, body, served_by) =
            match routing::first_read(&self.fleet, &self.bucket, key, page, want).await {
                Ok(r) => r,
                Err(e) if e.status() == Some(http::StatusCode::RANGE_NOT_SATISFIABLE) => return None,
                Err(e) => return Some(Err(e.to_object_store(key))),
            };
        let (meta, attributes, range) = match described(location, &info, options) {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        // The answer holds `want` up to the object's end; the rest of the read is asked for
        // at the version the answer named.
        let answered_to = want.end.min(info.size).min(range.end);
        Some(Ok(self.reading(
            location,
            &info,
            (meta, attributes, range),
            Some((body, answered_to, served_by)),
        )))
    }

    /// The answer to a GET of `range` at the version `info` names, streamed from the fleet
    /// (`first`: the bytes of the read's first run already being answered, as in
    /// [`routing::stream_from`]).
    fn reading(
        &self,
        location: &Path,
        info: &crate::upstream::ObjectInfo,
        (meta, attributes, range): (ObjectMeta, object_store::Attributes, std::ops::Range<u64>),
        first: Option<(crate::upstream::BodyStream, u64, Arc<Member>)>,
    ) -> GetResult {
        let key = location.as_ref();
        let read = routing::stream_from(
            &self.fleet,
            self.geometry,
            &self.bucket,
            key,
            ReadVersion::of(info),
            ByteRange { start: range.start, end: range.end },
            first,
        );
        let path = key.to_string();
        let body = read.map(move |r| r.map_err(|e| e.to_object_store(&path))).boxed();
        GetResult {
            payload: GetResultPayload::Stream(body),
            meta,
            range,
            attributes,
            extensions: Default::default(),
        }
    }

    fn owner(&self, key: &str) -> Result<Arc<Member>> {
        self.fleet
            .owners(&self.bucket, key, 0, 1)
            .into_iter()
            .next()
            .ok_or_else(|| generic("no cache node is available"))
    }

    fn owner_store(&self, key: &str) -> Result<Arc<dyn ObjectStore>> {
        let m = self.owner(key)?;
        self.fleet.store(&m, &self.bucket)
    }
}

impl fmt::Debug for FleetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetStore")
            .field("bucket", &self.bucket)
            .field("nodes", &self.fleet.members().len())
            .finish()
    }
}

impl fmt::Display for FleetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lakecache fleet ({} nodes) bucket {}", self.fleet.members().len(), self.bucket)
    }
}

/// A multipart upload on the key's owner that invalidates the key fleet-wide on completion.
struct InvalidatingUpload {
    inner: Box<dyn MultipartUpload>,
    fleet: Arc<Fleet>,
    bucket: String,
    key: String,
}

impl fmt::Debug for InvalidatingUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidatingUpload").field("bucket", &self.bucket).field("key", &self.key).finish()
    }
}

#[async_trait::async_trait]
impl MultipartUpload for InvalidatingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let r = self.inner.complete().await;
        self.fleet.invalidate_everywhere(&self.bucket, &self.key).await;
        r
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

#[async_trait::async_trait]
impl ObjectStore for FleetStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let r = self.owner_store(location.as_ref())?.put_opts(location, payload, opts).await;
        self.fleet.invalidate_everywhere(&self.bucket, location.as_ref()).await;
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let inner = self.owner_store(location.as_ref())?.put_multipart_opts(location, opts).await?;
        Ok(Box::new(InvalidatingUpload {
            inner,
            fleet: self.fleet.clone(),
            bucket: self.bucket.clone(),
            key: location.to_string(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let key = location.as_ref();
        if !options.head
            && self.fleet.meta.get(&self.bucket, key).is_none()
            && let Some(r) = self.first_read(location, &options).await
        {
            return r;
        }
        let info = routing::head(&self.fleet, &self.bucket, key).await.map_err(|e| e.to_object_store(key))?;
        let (meta, attributes, range) = described(location, &info, &options)?;
        if options.head {
            let body = futures::stream::empty().boxed();
            return Ok(GetResult {
                payload: GetResultPayload::Stream(body),
                meta,
                range,
                attributes,
                extensions: Default::default(),
            });
        }
        Ok(self.reading(location, &info, (meta, attributes, range), None))
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let fleet = self.fleet.clone();
        let bucket = self.bucket.clone();
        locations
            .then(move |loc| {
                let (fleet, bucket) = (fleet.clone(), bucket.clone());
                async move {
                    let loc = loc?;
                    let m = fleet
                        .owners(&bucket, loc.as_ref(), 0, 1)
                        .into_iter()
                        .next()
                        .ok_or_else(|| generic("no cache node is available"))?;
                    let r = fleet.store(&m, &bucket)?.delete(&loc).await;
                    fleet.invalidate_everywhere(&bucket, loc.as_ref()).await;
                    match r {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(loc),
                        Err(e) => Err(e),
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        if let Err(e) = charge_list(prefix) {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        match self.owner_store(prefix.map_or("", |p| p.as_ref())) {
            Ok(s) => s.list(prefix),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        charge_list(prefix)?;
        self.owner_store(prefix.map_or("", |p| p.as_ref()))?.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let r = self.owner_store(to.as_ref())?.copy_opts(from, to, options).await;
        self.fleet.invalidate_everywhere(&self.bucket, to.as_ref()).await;
        r
    }
}
