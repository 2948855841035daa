//! The read path. A byte range of an object becomes a sequence of page slices; each slice
//! is served from the memory tier, else the disk tier, else one shared origin fetch:
//!
//! ```text
//! for page in range: memory.get | disk.read | join in-flight fetch | start fetch (adjacent misses coalesced)
//! ```
//!
//! Owns object metadata (size, ETag) and its freshness rules, single-flight and the
//! page ordering of a response stream. Does not own HTTP (the `s3` module) or storage of
//! pages (the tiers).

mod fetch;
mod first;
pub mod journal;
pub mod meta;
pub mod spend;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lakecache_common::page::{ByteRange, PageGeometry, PageSlice};
use object_store::ObjectStore;
use object_store::path::Path;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use self::meta::ObjectMeta;
use crate::metrics as m;
use crate::origin::{OriginError, Origins};
use crate::policy::{KeyClass, KeyRules, PinRules};
use crate::tier::PageKey;
use crate::tier::disk::{DiskTier, ObjectId};
use crate::tier::memory::MemoryTier;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// The object changed at the origin while it was being read; a retry reads the new one.
    #[error("object changed at the origin during the read")]
    Changed,
    #[error("origin returned {got} bytes where {want} were expected")]
    ShortRead { want: u64, got: u64 },
    #[error("internal: {0}")]
    Internal(String),
    /// The read would need more origin requests than its budget allows (`wire::ORIGIN_BUDGET`).
    #[error("the read needs the origin beyond its budget of origin requests")]
    OverBudget,
}

/// Tunables of the read path (from `[cache]`).
#[derive(Debug, Clone)]
pub struct ReadPathConfig {
    pub geometry: PageGeometry,
    pub max_fetch_pages: u64,
    pub readahead_pages: u64,
    pub metadata_ttl: Duration,
    pub pin_budget_bytes: u64,
    pub disk_write_queue: usize,
}

/// One object as a read sees it: where it lives, what version it is, how it is treated.
#[derive(Debug)]
pub struct ObjectHandle {
    pub bucket: String,
    pub key: String,
    pub path: Path,
    pub store: Arc<dyn ObjectStore>,
    pub meta: Arc<ObjectMeta>,
    pub id: Arc<ObjectId>,
    pub class: KeyClass,
    pub pinned: bool,
}

type PageResult = Result<Bytes, CacheError>;

pub use lakecache_common::object::ByteStream;
type PageFuture = futures::future::Shared<futures::future::BoxFuture<'static, PageResult>>;

pub struct Cache {
    cfg: ReadPathConfig,
    pub memory: MemoryTier,
    pub disk: Option<Arc<DiskTier>>,
    pub origins: Arc<Origins>,
    rules: KeyRules,
    pub pins: Arc<PinRules>,
    meta: meta::MetaCache,
    inflight: Mutex<HashMap<PageKey, PageFuture>>,
    disk_tx: Option<mpsc::Sender<fetch::DiskWrite>>,
    tiers: TierStats,
}

/// The hit and served-bytes series of each tier, registered once (a lookup by label on
/// every read cost more than the memory hit it counts).
struct TierStats {
    memory_hits: metrics::Counter,
    memory_bytes: metrics::Counter,
    memory_misses: metrics::Counter,
    disk_hits: metrics::Counter,
    disk_bytes: metrics::Counter,
}

impl TierStats {
    fn new() -> Self {
        Self {
            memory_hits: metrics::counter!(m::CACHE_HITS, "tier" => "memory"),
            memory_bytes: metrics::counter!(m::CACHE_SERVED_BYTES, "tier" => "memory"),
            memory_misses: metrics::counter!(m::CACHE_MISSES, "tier" => "memory"),
            disk_hits: metrics::counter!(m::CACHE_HITS, "tier" => "disk"),
            disk_bytes: metrics::counter!(m::CACHE_SERVED_BYTES, "tier" => "disk"),
        }
    }
}

/// The disk tier with the journal of the objects its pages belong to.
pub struct DiskState {
    pub tier: Arc<DiskTier>,
    pub journal: Arc<journal::Journal>,
    /// Objects found in the journal at start (their pages were recovered).
    pub recovered: Vec<journal::Record>,
}

impl Cache {
    pub fn new(
        cfg: ReadPathConfig,
        memory: MemoryTier,
        disk: Option<DiskState>,
        origins: Arc<Origins>,
        rules: KeyRules,
        pins: Arc<PinRules>,
    ) -> Arc<Self> {
        let (disk, recovered) = match disk {
            Some(d) => {
                let tx = fetch::spawn_disk_writer(d.tier.clone(), d.journal.clone(), cfg.disk_write_queue);
                (Some((d.tier, tx)), d.recovered)
            }
            None => (None, Vec::new()),
        };
        let (disk, disk_tx) = match disk {
            Some((d, tx)) => (Some(d), Some(tx)),
            None => (None, None),
        };
        let cache = Arc::new(Self {
            meta: meta::MetaCache::new(cfg.metadata_ttl, {
                let disk = disk.clone();
                Arc::new(move |bucket: &str, key: &str, old: &ObjectMeta| {
                    if let Some(d) = &disk {
                        d.remove_object(ObjectId::new(bucket, key, old.version.clone()).hash());
                    }
                })
            }),
            cfg,
            memory,
            disk,
            origins,
            rules,
            pins,
            tiers: TierStats::new(),
            inflight: Mutex::new(HashMap::new()),
            disk_tx,
        });
        // What the recovered pages belong to: Lance's immutable files are known again
        // without the origin; other keys are revalidated on first use, as always.
        let mut known = 0usize;
        for r in recovered {
            if cache.rules.classify(&r.key) == KeyClass::Immutable {
                cache.meta.install(&r.bucket, &r.key, Arc::new(r.meta()));
                known += 1;
            }
        }
        if known > 0 {
            tracing::info!(objects = known, "object metadata recovered with the page store");
        }
        cache
    }

    pub fn geometry(&self) -> PageGeometry {
        self.cfg.geometry
    }

    pub fn key_rules(&self) -> &KeyRules {
        &self.rules
    }

    pub fn classify(&self, key: &str) -> KeyClass {
        self.rules.classify(key)
    }

    /// Resolves the current version of an object: cached metadata when it may be trusted,
    /// else one (shared) HEAD at the origin.
    pub async fn object(self: &Arc<Self>, bucket: &str, key: &str) -> Result<Arc<ObjectHandle>, CacheError> {
        self.object_as(bucket, key, self.rules.classify(key), None).await
    }

    /// [`object`](Self::object) for a key whose class the caller has already worked out.
    /// `first`: the first range the caller is about to read, if it reads: an object this
    /// node knows nothing about is then resolved by the GET of that range's pages instead
    /// of a HEAD (see `first`).
    pub async fn object_as(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        class: KeyClass,
        first: Option<ByteRange>,
    ) -> Result<Arc<ObjectHandle>, CacheError> {
        let store = self.origins.store(bucket)?;
        let path = crate::origin::object_path(key)?;
        let probe = || self.first_read(bucket, key, &path, &store, class, first);
        let meta = self.meta.resolve(&self.origins, &store, bucket, key, &path, class, probe).await?;
        Ok(self.handle(bucket, key, path, store, meta, class))
    }

    /// Forgets what is cached about an object after a write through this node: its
    /// metadata and its pages on disk. Pages in memory are keyed by the old version and
    /// can no longer be reached.
    pub fn invalidate(&self, bucket: &str, key: &str) {
        if let Some(old) = self.meta.forget(bucket, key)
            && let Some(d) = &self.disk
        {
            d.remove_object(ObjectId::new(bucket.to_string(), key.to_string(), old.version.clone()).hash());
        }
    }

    /// The object at `version` (its ETag): the version known now, one replaced lately whose
    /// pages this node may still hold, or — if neither — what the origin has now, if that
    /// is the version. `None`: this node cannot serve that version (a 412 for the reader).
    /// `first` as for [`object_as`](Self::object_as).
    pub async fn object_at(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        version: &str,
        first: Option<ByteRange>,
    ) -> Result<Option<Arc<ObjectHandle>>, CacheError> {
        let store = self.origins.store(bucket)?;
        let path = crate::origin::key_path(key)?;
        let class = self.rules.classify(key);
        let meta = match self.meta.known_version(bucket, key, version) {
            Some(m) => m,
            None => {
                let probe = || self.first_read(bucket, key, &path, &store, class, first);
                let m = self.meta.resolve(&self.origins, &store, bucket, key, &path, class, probe).await?;
                if m.version == version {
                    m
                } else if class == KeyClass::NeverCache {
                    return Ok(None);
                } else {
                    // Perhaps this node's metadata is older than the reader's.
                    let m = self.meta.refresh(&self.origins, &store, bucket, key, &path).await?;
                    if m.version != version {
                        return Ok(None);
                    }
                    m
                }
            }
        };
        Ok(Some(self.handle(bucket, key, path, store, meta, class)))
    }

    fn handle(
        &self,
        bucket: &str,
        key: &str,
        path: Path,
        store: Arc<dyn ObjectStore>,
        meta: Arc<ObjectMeta>,
        class: KeyClass,
    ) -> Arc<ObjectHandle> {
        let id = Arc::new(ObjectId::new(bucket.to_string(), key.to_string(), meta.version.clone()));
        let pinned = class != KeyClass::NeverCache && self.pins.is_pinned(bucket, key);
        Arc::new(ObjectHandle {
            bucket: bucket.to_string(),
            key: key.to_string(),
            path,
            store,
            meta,
            id,
            class,
            pinned,
        })
    }

    /// Streams `range` of the object, page by page and in order: the first page leaves as
    /// soon as it is there, while later missing pages are already being fetched.
    pub fn read(
        self: &Arc<Self>,
        obj: Arc<ObjectHandle>,
        range: ByteRange,
    ) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + Sync + Unpin + 'static + use<> {
        futures::StreamExt::map(ReceiverStream::new(self.read_pages(obj, range)), |r| {
            r.map_err(|e| std::io::Error::other(e.to_string()))
        })
    }

    /// Like [`read`](Self::read), but returns only once the first bytes are in hand, so an
    /// answer's headers are sent only for a read that has started: a read that cannot
    /// start (the origin is down or slow, the object changed) is an error status, never a
    /// 200 whose body breaks off at once.
    pub async fn read_started(
        self: &Arc<Self>,
        obj: Arc<ObjectHandle>,
        range: ByteRange,
    ) -> Result<ByteStream, CacheError> {
        use futures::StreamExt;
        if let Some(pages) = self.memory_slices(&obj, range) {
            return Ok(Box::pin(futures::stream::iter(pages.into_iter().map(Ok))));
        }
        let mut rx = self.read_pages(obj, range);
        let first = match rx.recv().await {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => return Err(e),
            None if range.is_empty() => None,
            None => return Err(CacheError::Internal("the read ended before its first page".into())),
        };
        let rest = ReceiverStream::new(rx).map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
        Ok(Box::pin(futures::stream::iter(first.map(Ok)).chain(rest)))
    }

    /// Most pages a read answers inline from memory; a longer one streams (one task that
    /// keeps `readahead` pages ahead of what is sent).
    const INLINE_PAGES: u64 = 4;

    /// The slices of `range` when every page of it is in memory (and the read spans at most
    /// [`INLINE_PAGES`](Self::INLINE_PAGES)): answered without a task, a channel, the
    /// fetch planner or its lock. `None`: some page is elsewhere, or the key is never cached.
    pub fn memory_slices(&self, obj: &ObjectHandle, range: ByteRange) -> Option<Vec<Bytes>> {
        if obj.class == KeyClass::NeverCache {
            return None;
        }
        self.memory_slices_of(obj.id.hash(), obj.meta.size, range)
    }

    /// `range` of the object at `version` when this node knows that version (current or
    /// lately replaced) and holds every page of the range in memory — without asking the
    /// origin, building a handle or waiting. The object's size comes with it (the range is
    /// cut at the end); `Err(size)`: the range starts at or past the end.
    pub fn memory_read_at(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
        range: ByteRange,
    ) -> Result<Option<Vec<Bytes>>, u64> {
        if self.rules.classify(key) == KeyClass::NeverCache {
            return Ok(None);
        }
        let Some(meta) = self.meta.known_version(bucket, key, version) else {
            return Ok(None);
        };
        if range.start >= meta.size {
            return Err(meta.size);
        }
        let range = ByteRange { start: range.start, end: range.end.min(meta.size) };
        Ok(self.memory_slices_of(ObjectId::hash_of(bucket, key, &meta.version), meta.size, range))
    }

    fn memory_slices_of(&self, object: u128, size: u64, range: ByteRange) -> Option<Vec<Bytes>> {
        if range.is_empty() {
            return None;
        }
        let g = self.cfg.geometry;
        let first = range.start / g.page_size_bytes();
        let last = (range.end - 1) / g.page_size_bytes();
        if last - first >= Self::INLINE_PAGES {
            return None;
        }
        let mut out = Vec::with_capacity((last - first + 1) as usize);
        for s in g.slices(range.start..range.end) {
            let page = self.memory.get(&PageKey { object, index: s.index })?;
            let b = g.page_bytes(s.index, size);
            if page.len() as u64 != b.end - b.start || s.offset_in_page + s.len > page.len() {
                return None;
            }
            out.push(page.slice(s.offset_in_page..s.offset_in_page + s.len));
        }
        let sent: u64 = out.iter().map(|b| b.len() as u64).sum();
        self.tiers.memory_hits.increment(out.len() as u64);
        self.tiers.memory_bytes.increment(sent);
        Some(out)
    }

    fn read_pages(self: &Arc<Self>, obj: Arc<ObjectHandle>, range: ByteRange) -> mpsc::Receiver<PageResult> {
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(spend::carry(async move {
            metrics::gauge!(m::CACHE_INFLIGHT_REQUESTS).increment(1.0);
            if obj.class == KeyClass::NeverCache {
                fetch::stream_direct(&this.origins, &obj, range, &tx).await;
            } else {
                this.stream_pages(&obj, range, &tx).await;
            }
            metrics::gauge!(m::CACHE_INFLIGHT_REQUESTS).decrement(1.0);
        }));
        rx
    }

    async fn stream_pages(
        self: &Arc<Self>,
        obj: &Arc<ObjectHandle>,
        range: ByteRange,
        tx: &mpsc::Sender<PageResult>,
    ) {
        if range.is_empty() {
            return;
        }
        let g = self.cfg.geometry;
        let last_page = (range.end - 1) / g.page_size_bytes();
        let mut planned_to: Option<u64> = None;
        for slice in g.slices(range.start..range.end) {
            // Keep the fetches `readahead` pages ahead of what is being sent.
            let want_to = (slice.index + self.cfg.readahead_pages.max(1) - 1).min(last_page);
            let from = planned_to.map_or(slice.index, |p| p + 1);
            if planned_to.is_none_or(|p| p < want_to) && from <= want_to {
                self.plan(obj, from, want_to);
                planned_to = Some(want_to);
            }
            let out = self.page_slice(obj, slice).await;
            if let Err(e) = &out {
                tracing::warn!(bucket = %obj.bucket, key = %obj.key, page = slice.index, error = %e, "read failed");
                if matches!(e, CacheError::Changed | CacheError::Origin(OriginError::Precondition)) {
                    self.invalidate(&obj.bucket, &obj.key);
                }
            }
            let failed = out.is_err();
            if tx.send(out).await.is_err() || failed {
                return;
            }
        }
    }

    /// The bytes of one page slice, from the fastest tier that has them.
    pub async fn page_slice(
        self: &Arc<Self>,
        obj: &Arc<ObjectHandle>,
        s: PageSlice,
    ) -> Result<Bytes, CacheError> {
        let key = PageKey { object: obj.id.hash(), index: s.index };
        let page_len = {
            let b = self.cfg.geometry.page_bytes(s.index, obj.meta.size);
            (b.end - b.start) as usize
        };
        if s.offset_in_page + s.len > page_len {
            return Err(CacheError::Internal(format!("slice past the end of page {}", s.index)));
        }
        if let Some(page) = self.memory.get(&key) {
            if page.len() == page_len {
                self.tiers.memory_hits.increment(1);
                self.tiers.memory_bytes.increment(s.len as u64);
                return Ok(page.slice(s.offset_in_page..s.offset_in_page + s.len));
            }
            self.memory.remove(&key);
        }
        self.tiers.memory_misses.increment(1);
        if let Some(disk) = &self.disk {
            match disk.read(&key, s.offset_in_page, s.len).await {
                Ok(Some(bytes)) if bytes.len() == s.len => {
                    self.tiers.disk_hits.increment(1);
                    self.tiers.disk_bytes.increment(s.len as u64);
                    if s.len == page_len {
                        self.memory.insert(key, bytes.clone());
                    }
                    return Ok(bytes);
                }
                Ok(_) => metrics::counter!(m::CACHE_MISSES, "tier" => "disk").increment(1),
                Err(e) => {
                    metrics::counter!(m::CACHE_MISSES, "tier" => "disk").increment(1);
                    metrics::counter!(m::DISK_ERRORS).increment(1);
                    tracing::warn!(error = %e, "disk tier read failed; reading from origin");
                }
            }
        }
        let fut = self.inflight_or_fetch(obj, s.index);
        let page = fut.await?;
        if page.len() != page_len {
            return Err(CacheError::ShortRead { want: page_len as u64, got: page.len() as u64 });
        }
        metrics::counter!(m::CACHE_SERVED_BYTES, "tier" => "origin").increment(s.len as u64);
        Ok(page.slice(s.offset_in_page..s.offset_in_page + s.len))
    }

    fn inflight_or_fetch(self: &Arc<Self>, obj: &Arc<ObjectHandle>, index: u64) -> PageFuture {
        let key = PageKey { object: obj.id.hash(), index };
        let mut inflight = self.inflight.lock();
        if let Some(f) = inflight.get(&key) {
            metrics::counter!(m::CACHE_SINGLEFLIGHT_JOINS).increment(1);
            return f.clone();
        }
        // Filled while this reader looked elsewhere (the disk tier, say): a fetch leaves
        // `inflight` only after its page is in memory.
        let b = self.cfg.geometry.page_bytes(index, obj.meta.size);
        if let Some(page) = self.memory.get(&key).filter(|p| p.len() as u64 == b.end - b.start) {
            return futures::FutureExt::shared(futures::FutureExt::boxed(futures::future::ready(Ok(page))));
        }
        if self.whole(obj).is_some() {
            self.plan_locked(&mut inflight, obj, index, index);
            if let Some(f) = inflight.get(&key) {
                return f.clone();
            }
        }
        let mut futs = self.start_fetch(&mut inflight, obj, index, 1);
        futs.pop().unwrap_or_else(|| fetch::failed(CacheError::Internal("no fetch started".into())))
    }

    /// The last page of an object whose every missing page is fetched at the first miss of
    /// any: a small Lance index file (at most one placement group, so this node owns all of
    /// it), of which a search reads many scattered pieces at once. A few large GETs (runs of
    /// `max_fetch` bytes, in parallel) instead of one GET per page read.
    fn whole(&self, obj: &ObjectHandle) -> Option<u64> {
        let size = obj.meta.size;
        (obj.class != KeyClass::NeverCache
            && size > 0
            && size <= lakecache_common::ring::INDEX_GROUP_BYTES
            && lakecache_common::ring::is_index_file(&obj.key))
        .then(|| (size - 1) / self.cfg.geometry.page_size_bytes())
    }

    /// The pages of `range` (first, last), if it has any.
    fn pages_of(&self, range: ByteRange) -> Option<(u64, u64)> {
        let ps = self.cfg.geometry.page_size_bytes();
        (!range.is_empty()).then(|| (range.start / ps, (range.end - 1) / ps))
    }

    /// How many origin requests reading `range` of the object must start now: one per run
    /// of adjacent pages that no tier has and nobody is fetching (as [`plan`](Self::plan)
    /// cuts them; an object fetched whole costs more only where the read can afford it).
    /// Keys never cached read straight through: one request.
    pub fn origin_requests_needed(&self, obj: &ObjectHandle, range: ByteRange) -> u64 {
        let Some((first, last)) = self.pages_of(range) else { return 0 };
        if obj.class == KeyClass::NeverCache {
            return 1;
        }
        let inflight = self.inflight.lock();
        self.missing_runs(&inflight, obj, first, last).len() as u64
    }

    /// The runs (first page, count) of pages in `first..=last` that no tier has and nobody
    /// is fetching, each at most `max_fetch_pages` long.
    fn missing_runs(
        &self,
        inflight: &HashMap<PageKey, PageFuture>,
        obj: &ObjectHandle,
        first: u64,
        last: u64,
    ) -> Vec<(u64, u64)> {
        let hash = obj.id.hash();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut open = false;
        for i in first..=last {
            let k = PageKey { object: hash, index: i };
            let need = !self.memory.contains(&k)
                && !self.disk.as_ref().is_some_and(|d| d.contains(&k))
                && !inflight.contains_key(&k);
            match runs.last_mut() {
                Some((_, n)) if need && open && *n < self.cfg.max_fetch_pages => *n += 1,
                _ if need => runs.push((i, 1)),
                _ => {}
            }
            open = need;
        }
        runs
    }

    /// Starts now every fetch reading `range` will need (not just the read-ahead window),
    /// so that what the read costs at the origin is known before its answer's head leaves.
    pub fn plan_range(self: &Arc<Self>, obj: &Arc<ObjectHandle>, range: ByteRange) {
        if obj.class == KeyClass::NeverCache {
            return;
        }
        if let Some((first, last)) = self.pages_of(range) {
            self.plan(obj, first, last);
        }
    }

    /// Starts fetches for the pages in `first..=last` that no tier has and nobody is
    /// fetching, one ranged GET per run of adjacent missing pages — for an object fetched
    /// whole ([`whole`](Self::whole)), of all its missing pages, where the read's budget
    /// (if it has one) pays for all of them.
    fn plan(self: &Arc<Self>, obj: &Arc<ObjectHandle>, first: u64, last: u64) {
        let mut inflight = self.inflight.lock();
        self.plan_locked(&mut inflight, obj, first, last);
    }

    fn plan_locked(
        self: &Arc<Self>,
        inflight: &mut HashMap<PageKey, PageFuture>,
        obj: &Arc<ObjectHandle>,
        first: u64,
        last: u64,
    ) {
        let mut runs = self.missing_runs(inflight, obj, first, last);
        if let Some(end) = self.whole(obj) {
            let all = self.missing_runs(inflight, obj, 0, end);
            if spend::remaining().is_none_or(|left| left >= all.len() as u64) {
                runs = all;
            }
        }
        for (s, c) in runs {
            self.start_fetch(inflight, obj, s, c);
        }
    }

    fn start_fetch(
        self: &Arc<Self>,
        inflight: &mut HashMap<PageKey, PageFuture>,
        obj: &Arc<ObjectHandle>,
        first: u64,
        count: u64,
    ) -> Vec<PageFuture> {
        let g = self.cfg.geometry;
        let bytes =
            g.page_bytes(first + count - 1, obj.meta.size).end - g.page_bytes(first, obj.meta.size).start;
        if !spend::charge(bytes) {
            // Over the read's budget: nothing is asked of the origin; whoever waits for
            // these pages learns why.
            return (0..count).map(|_| fetch::failed(CacheError::OverBudget)).collect();
        }
        let mut senders = Vec::with_capacity(count as usize);
        let mut futs = Vec::with_capacity(count as usize);
        for i in first..first + count {
            let (tx, rx) = tokio::sync::oneshot::channel::<PageResult>();
            let fut: PageFuture = futures::FutureExt::shared(futures::FutureExt::boxed(async move {
                rx.await.unwrap_or_else(|_| Err(CacheError::Internal("page fetch abandoned".into())))
            }));
            inflight.insert(PageKey { object: obj.id.hash(), index: i }, fut.clone());
            senders.push(tx);
            futs.push(fut);
        }
        let job = fetch::RunFetch { obj: obj.clone(), first, senders, geometry: self.cfg.geometry };
        let this = self.clone();
        tokio::spawn(async move { job.run(&this).await });
        futs
    }

    /// Called by a fetch for every page it completes (success or failure).
    /// Returns a pinned page's disk write, which the caller sends with backpressure.
    #[must_use]
    fn complete_page(&self, obj: &ObjectHandle, index: u64, result: &PageResult) -> Option<fetch::DiskWrite> {
        let key = PageKey { object: obj.id.hash(), index };
        let mut pinned_write = None;
        if let Ok(page) = result {
            self.memory.insert(key, page.clone());
            if let Some(tx) = &self.disk_tx {
                let pinned = obj.pinned
                    && self
                        .disk
                        .as_ref()
                        .is_some_and(|d| d.pinned_bytes() + page.len() as u64 <= self.cfg.pin_budget_bytes);
                pinned_write = fetch::enqueue_disk_write(
                    tx,
                    obj.id.clone(),
                    obj.meta.clone(),
                    index,
                    page.clone(),
                    pinned,
                );
            }
        }
        self.inflight.lock().remove(&key);
        pinned_write
    }

    pub fn pin_budget_bytes(&self) -> u64 {
        self.cfg.pin_budget_bytes
    }

    pub fn pinned_bytes(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.pinned_bytes())
    }

    pub fn publish_metrics(&self) {
        self.memory.publish_metrics();
        metrics::gauge!(m::PINNED_BUDGET_BYTES).set(self.cfg.pin_budget_bytes as f64);
        if let Some(d) = &self.disk {
            metrics::gauge!(m::DISK_USED_BYTES).set(d.used_bytes() as f64);
            metrics::gauge!(m::DISK_PINNED_BYTES).set(d.pinned_bytes() as f64);
            metrics::gauge!(m::DISK_CAPACITY_BYTES).set(d.capacity_bytes() as f64);
        }
    }
}
