//! Object metadata (size, ETag, Last-Modified, and the attributes a client stored with the
//! object: Content-Type and friends, `x-amz-meta-*`) and when it may be trusted:
//! immutable keys until a write through this node, other keys for `metadata_ttl` (revalidated
//! in the background from half of it on), mutable pointers never. Concurrent lookups of one
//! object share one HEAD. A write bumps an epoch
//! so that a HEAD which started before the write can never re-install the old version.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore};
use parking_lot::Mutex;

use super::CacheError;
use crate::origin::{OriginError, Origins};
use crate::policy::KeyClass;

pub use lakecache_common::object::{EXPIRES_METADATA, ObjectAttrs, ObjectMeta};

/// How long a replaced version stays readable by reads that name it.
pub const RETIRED_TTL: Duration = Duration::from_secs(60);

type MetaFuture = Shared<BoxFuture<'static, Result<Arc<ObjectMeta>, CacheError>>>;

/// What learns an object's metadata at the origin in place of a HEAD: the GET of a read's
/// first pages, which describes the object as a HEAD would (see `Cache::first_read`).
pub type Probe = BoxFuture<'static, Result<ObjectMeta, CacheError>>;

/// Called with (bucket, key, old metadata) when a revalidation finds a new version.
pub type OnReplaced = Arc<dyn Fn(&str, &str, &ObjectMeta) + Send + Sync>;

pub struct MetaCache {
    ttl: Duration,
    on_replaced: OnReplaced,
    map: moka::sync::Cache<String, Arc<ObjectMeta>>,
    /// Versions replaced or forgotten lately, by `bucket/key` and version: a read that
    /// names one (a fleet read that started before the write) is still served from the
    /// pages this node holds.
    retired: moka::sync::Cache<(String, String), Arc<ObjectMeta>>,
    inflight: Arc<Mutex<HashMap<String, MetaFuture>>>,
    write_epoch: Arc<AtomicU64>,
}

fn map_key(bucket: &str, key: &str) -> String {
    // Bucket names cannot contain '/', so this is unambiguous.
    format!("{bucket}/{key}")
}

impl MetaCache {
    pub fn new(ttl: Duration, on_replaced: OnReplaced) -> Self {
        Self {
            ttl,
            on_replaced,
            map: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
            retired: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(RETIRED_TTL).build(),
            inflight: Arc::new(Mutex::new(HashMap::new())),
            write_epoch: Arc::new(AtomicU64::new(0)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn resolve(
        &self,
        origins: &Arc<Origins>,
        store: &Arc<dyn ObjectStore>,
        bucket: &str,
        key: &str,
        path: &Path,
        class: KeyClass,
        first: impl FnOnce() -> Option<Probe>,
    ) -> Result<Arc<ObjectMeta>, CacheError> {
        let mk = map_key(bucket, key);
        if class == KeyClass::NeverCache {
            if !super::spend::charge(0) {
                return Err(CacheError::OverBudget);
            }
            return head(origins, store, bucket, path).await.map(Arc::new);
        }
        if let Some(m) = self.map.get(&mk) {
            let age = m.checked_at.elapsed();
            if class == KeyClass::Immutable || age < self.ttl / 2 {
                return Ok(m);
            }
            if age < self.ttl {
                // Revalidate ahead of need: the HEAD runs in the background and this
                // request goes on with metadata that is still within its TTL, so under
                // steady traffic no read waits for the origin's HEAD. (Not for a read
                // whose budget cannot pay for it: it does not need it.)
                if super::spend::affordable() {
                    drop(self.revalidation(origins, store, bucket, key, path, mk, None));
                }
                return Ok(m);
            }
            // Expired: a HEAD, even for a read (its pages may still be here).
            return self.revalidation(origins, store, bucket, key, path, mk, None).await;
        }
        // Nothing known: a read learns the metadata from its own first GET.
        self.revalidation(origins, store, bucket, key, path, mk, first()).await
    }

    /// The HEAD of `mk` in flight (or `probe` in its place), started (as a task, which runs
    /// whether or not anyone waits for it) if there is none.
    #[allow(clippy::too_many_arguments)]
    fn revalidation(
        &self,
        origins: &Arc<Origins>,
        store: &Arc<dyn ObjectStore>,
        bucket: &str,
        key: &str,
        path: &Path,
        mk: String,
        probe: Option<Probe>,
    ) -> MetaFuture {
        let mut inflight = self.inflight.lock();
        match inflight.get(&mk) {
            Some(f) => f.clone(),
            // Learned just now, between the caller's look at the map and this lock (the task
            // installs the answer and leaves `inflight` under this lock): no second request.
            None if let Some(m) = self.map.get(&mk).filter(|m| m.checked_at.elapsed() < self.ttl / 2) => {
                futures::future::ready(Ok(m)).boxed().shared()
            }
            None => {
                // The HEAD, or the probe's GET (whose bytes it adds once it knows them).
                if !super::spend::charge(0) {
                    return futures::future::ready(Err(CacheError::OverBudget)).boxed().shared();
                }
                let epoch = self.write_epoch.load(Ordering::SeqCst);
                let (origins, store, path) = (origins.clone(), store.clone(), path.clone());
                let (map, inflight_map, write_epoch, mk2) =
                    (self.map.clone(), self.inflight.clone(), self.write_epoch.clone(), mk.clone());
                let (on_replaced, bucket, key) =
                    (self.on_replaced.clone(), bucket.to_string(), key.to_string());
                let retired = self.retired.clone();
                let task = tokio::spawn(super::spend::carry(async move {
                    let r = match probe {
                        Some(p) => p.await,
                        None => head(&origins, &store, &bucket, &path).await,
                    }
                    .map(Arc::new);
                    // Installed only if no write happened meanwhile (else the HEAD may
                    // describe the object as it was before the write).
                    let mut guard = inflight_map.lock();
                    if let Ok(m) = &r
                        && write_epoch.load(Ordering::SeqCst) == epoch
                    {
                        // The object changed at the origin: its old pages can go.
                        if let Some(old) = map.get(&mk2).filter(|old| old.version != m.version) {
                            on_replaced(&bucket, &key, &old);
                            retired.insert((mk2.clone(), old.version.clone()), old);
                        }
                        map.insert(mk2.clone(), m.clone());
                    }
                    guard.remove(&mk2);
                    r
                }));
                let f: MetaFuture = task
                    .map(|r| r.unwrap_or_else(|e| Err(CacheError::Internal(format!("metadata task: {e}")))))
                    .boxed()
                    .shared();
                inflight.insert(mk.clone(), f.clone());
                f
            }
        }
    }

    /// Installs metadata known from elsewhere (the page store's journal at start).
    pub fn install(&self, bucket: &str, key: &str, meta: Arc<ObjectMeta>) {
        self.map.insert(map_key(bucket, key), meta);
    }

    /// Drops what is known about an object; returns the metadata it had, if any.
    pub fn forget(&self, bucket: &str, key: &str) -> Option<Arc<ObjectMeta>> {
        let mk = map_key(bucket, key);
        let mut inflight = self.inflight.lock();
        self.write_epoch.fetch_add(1, Ordering::SeqCst);
        inflight.remove(&mk);
        let old = self.map.get(&mk);
        self.map.invalidate(&mk);
        if let Some(o) = &old {
            self.retired.insert((mk, o.version.clone()), o.clone());
        }
        old
    }

    /// The metadata of `version` of an object, if it is the one known now or one retired
    /// lately. No origin request.
    pub fn known_version(&self, bucket: &str, key: &str, version: &str) -> Option<Arc<ObjectMeta>> {
        let mk = map_key(bucket, key);
        if let Some(m) = self.map.get(&mk).filter(|m| m.version == version) {
            return Some(m);
        }
        self.retired.get(&(mk, version.to_string()))
    }

    /// Asks the origin now, whatever is cached (a reader named a version this node has not
    /// seen yet).
    pub async fn refresh(
        &self,
        origins: &Arc<Origins>,
        store: &Arc<dyn ObjectStore>,
        bucket: &str,
        key: &str,
        path: &Path,
    ) -> Result<Arc<ObjectMeta>, CacheError> {
        self.revalidation(origins, store, bucket, key, path, map_key(bucket, key), None).await
    }
}

pub(super) async fn head(
    origins: &Origins,
    store: &Arc<dyn ObjectStore>,
    bucket: &str,
    path: &Path,
) -> Result<ObjectMeta, CacheError> {
    let opts = GetOptions { head: true, ..Default::default() };
    let r = match origins.call("head", store.get_opts(path, opts)).await {
        Ok(r) => r,
        Err(OriginError::NotFound) => return Err(origins.missing(bucket, store).await.into()),
        // A key the origin cannot hold (under an existing object, a segment too long for
        // its file system) names no object.
        Err(OriginError::InvalidKey(_) | OriginError::KeyConflict(_) | OriginError::KeyTooLong(_)) => {
            return Err(OriginError::NotFound.into());
        }
        Err(e) => return Err(e.into()),
    };
    Ok(ObjectMeta::from_store(&r.meta, ObjectAttrs::from_store(&r.attributes)))
}
