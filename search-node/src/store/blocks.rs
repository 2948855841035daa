//! The search node's own memory cache of table bytes, in front of the fleet.
//!
//! A warm query still reads a few scattered rows (the ids of the top hits, the full vectors
//! a refine step compares): without this cache each is an HTTP request to a cache node,
//! and those requests, not the search itself, set the query rate. Only Lance files whose
//! names are unique per write are kept (data files, index files and deletion files carry a
//! UUID or a random suffix; a dropped and recreated table never reuses one), in fixed-size
//! blocks keyed by the object's ETag as well. Version manifests are left out: their names
//! come back when a table is dropped and recreated, and Lance keeps decoded manifests in
//! its own metadata cache anyway. Everything else (manifests, version pointers, listings,
//! writes) passes through untouched.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use globset::GlobSet;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

pub const SEARCH_PAGE_CACHE_READS: &str = "searchnode_pagecache_reads_total";
pub const SEARCH_PAGE_CACHE_BYTES: &str = "searchnode_pagecache_read_bytes_total";
pub const SEARCH_PAGE_CACHE_FILL_BYTES: &str = "searchnode_pagecache_fill_bytes_total";
pub const SEARCH_PAGE_CACHE_SIZE: &str = "searchnode_pagecache_used_bytes";

/// Reads longer than this stream straight from the fleet: one pass over a whole data file
/// would otherwise push out everything hot and be held in memory whole.
const MAX_CACHED_READ: u64 = 16 << 20;

#[derive(Clone, PartialEq, Eq, Hash)]
struct BlockKey {
    /// bucket, key and ETag of the object.
    object: Arc<str>,
    index: u64,
}

#[derive(Clone)]
struct BlockWeight;

impl quick_cache::Weighter<BlockKey, Bytes> for BlockWeight {
    fn weight(&self, k: &BlockKey, v: &Bytes) -> u64 {
        (v.len() + k.object.len() + 64) as u64
    }
}

/// The page cache's meters, resolved once: looking a labelled metric up in the registry on
/// every read cost more than the read itself.
struct Meters {
    hits: metrics::Counter,
    misses: metrics::Counter,
    bytes: metrics::Counter,
    fill: metrics::Counter,
    size: metrics::Gauge,
}

impl Meters {
    fn get() -> &'static Meters {
        static METERS: std::sync::OnceLock<Meters> = std::sync::OnceLock::new();
        // First used by a read, which comes after the recorder is installed.
        METERS.get_or_init(|| Meters {
            hits: metrics::counter!(SEARCH_PAGE_CACHE_READS, "result" => "hit"),
            misses: metrics::counter!(SEARCH_PAGE_CACHE_READS, "result" => "miss"),
            bytes: metrics::counter!(SEARCH_PAGE_CACHE_BYTES),
            fill: metrics::counter!(SEARCH_PAGE_CACHE_FILL_BYTES),
            size: metrics::gauge!(SEARCH_PAGE_CACHE_SIZE),
        })
    }
}

/// Blocks of write-once objects, bounded in bytes, shared by every table and bucket.
pub struct BlockCache {
    blocks: quick_cache::sync::Cache<BlockKey, Bytes, BlockWeight>,
    block_size: u64,
    /// The keys kept: see the module comment.
    unique: GlobSet,
    /// The fleet's key rules: a name is kept here only if the fleet holds it immutable too.
    rules: parking_lot::RwLock<Arc<lakecache_common::keys::KeyRules>>,
    /// Bumped whenever the rules change, so names classified under older rules are
    /// classified again.
    generation: AtomicU64,
}

/// Lance files whose names are never reused.
const UNIQUE_NAMES: [&str; 3] = ["**/data/*.lance", "**/_indices/**", "**/_deletions/*"];

/// Names (with their metadata) a store remembers; each costs a few hundred bytes.
const NAMES: usize = 200_000;

impl BlockCache {
    /// `capacity` bytes of blocks of `block_size` bytes; `None` when capacity is zero.
    pub fn new(capacity: u64, block_size: u64) -> anyhow::Result<Option<Arc<Self>>> {
        if capacity == 0 {
            return Ok(None);
        }
        anyhow::ensure!(block_size >= 4096, "the page cache block must be at least 4 KiB");
        let mut unique = globset::GlobSetBuilder::new();
        for g in UNIQUE_NAMES {
            unique.add(globset::GlobBuilder::new(g).literal_separator(true).build()?);
        }
        let unique = unique.build()?;
        let items = usize::try_from((capacity / block_size).max(1)).unwrap_or(usize::MAX);
        let blocks = quick_cache::sync::Cache::with_weighter(items, capacity, BlockWeight);
        let rules = parking_lot::RwLock::new(Arc::new(lakecache_common::keys::KeyRules::lance_defaults()));
        Ok(Some(Arc::new(Self { blocks, block_size, unique, rules, generation: AtomicU64::new(0) })))
    }

    /// Applies the fleet's key rules (learned from the cache nodes).
    pub fn set_rules(&self, rules: Arc<lakecache_common::keys::KeyRules>) {
        *self.rules.write() = rules;
        self.generation.fetch_add(1, Relaxed);
    }

    /// Whether `key` is kept here by name: a Lance file whose name is never reused and that
    /// the fleet's rules hold immutable.
    fn by_name(&self, key: &str) -> bool {
        self.unique.is_match(key)
            && self.rules.read().classify(key) == lakecache_common::keys::KeyClass::Immutable
    }

    /// Bytes held now.
    pub fn size(&self) -> u64 {
        self.blocks.weight()
    }
}

fn generic(msg: impl Into<String>) -> object_store::Error {
    object_store::Error::Generic { store: "lakecache-search", source: msg.into().into() }
}

/// What a store knows of one name.
#[derive(Clone)]
struct Name {
    /// `BlockCache::generation` when the name was classified.
    generation: u64,
    /// `None`: the name passes through to the fleet.
    kept: Option<Kept>,
}

#[derive(Clone)]
struct Kept {
    /// Learned on the first read.
    known: Option<Arc<Known>>,
}

struct Known {
    meta: ObjectMeta,
    /// bucket, key and ETag: the blocks' key.
    object: Arc<str>,
}

/// One bucket's store with the block cache in front.
pub struct CachedStore {
    inner: Arc<dyn ObjectStore>,
    cache: Arc<BlockCache>,
    bucket: String,
    /// Every name read through this store: whether it is kept, and its metadata once known.
    /// Writes through the store forget the name.
    names: Arc<Names>,
}

type Names = quick_cache::sync::Cache<Arc<str>, Name>;

impl CachedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, cache: Arc<BlockCache>, bucket: &str) -> Self {
        Self { inner, cache, bucket: bucket.to_string(), names: Arc::new(Names::new(NAMES)) }
    }

    /// Whether `key` is kept, and its metadata if a read has learned it.
    fn lookup(&self, key: &str) -> Option<Option<Arc<Known>>> {
        let generation = self.cache.generation.load(Relaxed);
        if let Some(n) = self.names.get(key)
            && n.generation == generation
        {
            return n.kept.map(|k| k.known);
        }
        let kept = self.cache.by_name(key).then_some(Kept { known: None });
        self.names.insert(key.into(), Name { generation, kept: kept.clone() });
        kept.map(|k| k.known)
    }

    fn forget(&self, key: &str) {
        self.names.remove(key);
    }

    async fn known(&self, location: &Path, known: Option<Arc<Known>>) -> Result<Arc<Known>> {
        if let Some(k) = known {
            return Ok(k);
        }
        let meta = self.inner.head(location).await?;
        Ok(self.learned(location, meta))
    }

    /// Remembers what a read learned of `location`.
    fn learned(&self, location: &Path, meta: ObjectMeta) -> Arc<Known> {
        let object =
            format!("{}/{}#{}", self.bucket, location.as_ref(), meta.e_tag.as_deref().unwrap_or("")).into();
        let k = Arc::new(Known { meta, object });
        let generation = self.cache.generation.load(Relaxed);
        self.names.insert(
            location.as_ref().into(),
            Name { generation, kept: Some(Kept { known: Some(k.clone()) }) },
        );
        k
    }

    /// The first read of a kept name whose metadata is not known yet: one read of the
    /// blocks around `range`, whose answer also describes the object (the fleet reads an
    /// object it knows nothing of without a HEAD, and so does this cache). Its blocks are
    /// kept; the answer is `range`, clipped at the object's end as any ranged GET is.
    async fn first_read(&self, location: &Path, range: Range<u64>) -> Result<GetResult> {
        let c = &self.cache;
        let m = Meters::get();
        let bs = c.block_size;
        let first = range.start / bs;
        let aligned = first * bs..range.end.div_ceil(bs).saturating_mul(bs);
        let opts = GetOptions { range: Some(GetRange::Bounded(aligned.clone())), ..Default::default() };
        let got = self.inner.get_opts(location, opts).await?;
        let (meta, answered) = (got.meta.clone(), got.range.clone());
        let body = got.bytes().await?;
        if answered.start != aligned.start
            || answered.end != aligned.end.min(meta.size)
            || body.len() as u64 != answered.end - answered.start
        {
            return Err(generic(format!(
                "{location}: the fleet answered {} bytes as {answered:?} for {aligned:?} of {} bytes",
                body.len(),
                meta.size
            )));
        }
        let known = self.learned(location, meta.clone());
        // Every block of the answer is whole, or the object's last.
        let count = body.len().div_ceil(bs as usize) as u64;
        for j in 0..count {
            let off = (j * bs) as usize;
            let b = body.slice(off..(off + bs as usize).min(body.len()));
            c.blocks.insert(BlockKey { object: known.object.clone(), index: first + j }, b);
        }
        m.misses.increment(count);
        m.fill.increment(body.len() as u64);
        m.size.set(c.size() as f64);
        if let Some(a) = lakecache_fleet::account::current() {
            a.page_cache_misses.fetch_add(count, Relaxed);
        }
        let range = range.start..range.end.min(meta.size);
        m.bytes.increment(range.end - range.start);
        let off = (range.start - aligned.start) as usize;
        let part = body.slice(off..off + (range.end - range.start) as usize);
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(part) }).boxed()),
            meta,
            range,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    /// `range` of a write-once object from blocks, reading the missing runs from the fleet
    /// (concurrently, one request per run of consecutive missing blocks).
    async fn read_through(&self, location: &Path, known: &Known, range: Range<u64>) -> Result<Bytes> {
        let c = &self.cache;
        let m = Meters::get();
        let bs = c.block_size;
        let meta = &known.meta;
        let object = &known.object;
        let first = range.start / bs;
        let last = (range.end - 1) / bs;
        let mut blocks: Vec<Option<Bytes>> = Vec::with_capacity((last - first + 1) as usize);
        let mut missing: Vec<Range<u64>> = Vec::new();
        for i in first..=last {
            let b = c.blocks.get(&BlockKey { object: object.clone(), index: i });
            if b.is_none() {
                match missing.last_mut() {
                    Some(r) if r.end == i => r.end = i + 1,
                    _ => missing.push(i..i + 1),
                }
            }
            blocks.push(b);
        }
        let hit = blocks.iter().filter(|b| b.is_some()).count() as u64;
        m.hits.increment(hit);
        m.misses.increment(blocks.len() as u64 - hit);
        if let Some(a) = lakecache_fleet::account::current() {
            // The bytes of the range that hit blocks hold.
            let held: u64 = (first..=last)
                .zip(&blocks)
                .filter(|(_, b)| b.is_some())
                .map(|(i, _)| (range.end.min((i + 1) * bs)).saturating_sub(range.start.max(i * bs)))
                .sum();
            a.page_cache_hits.fetch_add(hit, Relaxed);
            a.page_cache_misses.fetch_add(blocks.len() as u64 - hit, Relaxed);
            a.page_cache_bytes.fetch_add(held, Relaxed);
        }
        let fills = futures::future::try_join_all(missing.iter().map(|r| {
            let bytes = r.start * bs..(r.end * bs).min(meta.size);
            let opts = GetOptions {
                range: Some(GetRange::Bounded(bytes.clone())),
                if_match: meta.e_tag.clone(),
                ..Default::default()
            };
            let inner = self.inner.clone();
            let location = location.clone();
            async move {
                let got = inner.get_opts(&location, opts).await?.bytes().await?;
                if got.len() as u64 != bytes.end - bytes.start {
                    return Err(generic(format!(
                        "{location}: the fleet answered {} bytes for {bytes:?}",
                        got.len()
                    )));
                }
                Ok::<_, object_store::Error>(got)
            }
        }))
        .await?;
        for (r, got) in missing.iter().zip(fills) {
            m.fill.increment(got.len() as u64);
            for i in r.clone() {
                let off = ((i - r.start) * bs) as usize;
                let b = got.slice(off..(off + bs as usize).min(got.len()));
                c.blocks.insert(BlockKey { object: object.clone(), index: i }, b.clone());
                blocks[(i - first) as usize] = Some(b);
            }
        }
        if !missing.is_empty() {
            m.size.set(c.size() as f64);
        }
        m.bytes.increment(range.end - range.start);
        // One block: a slice of it, no copy.
        let start_in = (range.start - first * bs) as usize;
        let len = (range.end - range.start) as usize;
        if blocks.len() == 1 {
            let b = blocks.pop().flatten().ok_or_else(|| generic("block lost"))?;
            return Ok(b.slice(start_in..start_in + len));
        }
        let mut out = BytesMut::with_capacity(len);
        let mut skip = start_in;
        for b in blocks.into_iter().flatten() {
            let b = &b[skip.min(b.len())..];
            skip = 0;
            let want = (len - out.len()).min(b.len());
            out.extend_from_slice(&b[..want]);
        }
        if out.len() != len {
            return Err(generic(format!("{location}: short read from the page cache")));
        }
        Ok(out.freeze())
    }
}

impl fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CachedStore({:?})", self.inner)
    }
}

impl fmt::Display for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} with the search node's page cache", self.inner)
    }
}

/// Forgets the key's metadata once a multipart write through this store completes.
struct ForgetOnComplete {
    inner: Box<dyn MultipartUpload>,
    names: Arc<Names>,
    key: String,
}

impl fmt::Debug for ForgetOnComplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForgetOnComplete").field("key", &self.key).finish()
    }
}

#[async_trait::async_trait]
impl MultipartUpload for ForgetOnComplete {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let r = self.inner.complete().await;
        self.names.remove(self.key.as_str());
        r
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

#[async_trait::async_trait]
impl ObjectStore for CachedStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await;
        self.forget(location.as_ref());
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(ForgetOnComplete { inner, names: self.names.clone(), key: location.to_string() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let plain = !options.head
            && options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none();
        let kept = if plain { self.lookup(location.as_ref()) } else { None };
        let Some(known) = kept else {
            return self.inner.get_opts(location, options).await;
        };
        if known.is_none()
            && let Some(GetRange::Bounded(r)) = &options.range
            && !r.is_empty()
            && r.end - r.start <= MAX_CACHED_READ
        {
            return self.first_read(location, r.clone()).await;
        }
        let known = self.known(location, known).await?;
        let meta = known.meta.clone();
        let range = match &options.range {
            Some(r) => r.as_range(meta.size).map_err(|e| generic(format!("invalid range: {e}")))?,
            None => 0..meta.size,
        };
        if range.is_empty() || range.end - range.start > MAX_CACHED_READ {
            return self.inner.get_opts(location, options).await;
        }
        let body = match self.read_through(location, &known, range.clone()).await {
            Ok(b) => b,
            Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => {
                // Not the object we knew any more: forget it and let the fleet answer.
                self.forget(location.as_ref());
                return self.inner.get_opts(location, options).await;
            }
            Err(e) => return Err(e),
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(body) }).boxed()),
            meta,
            range,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let names = self.names.clone();
        self.inner
            .delete_stream(locations)
            .map(move |r| {
                if let Ok(p) = &r {
                    names.remove(p.as_ref());
                }
                r
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let r = self.inner.copy_opts(from, to, options).await;
        self.forget(to.as_ref());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// An in-memory store that counts the reads reaching it.
    #[derive(Debug, Default)]
    struct Counting {
        inner: object_store::memory::InMemory,
        gets: AtomicUsize,
    }

    impl fmt::Display for Counting {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("counting")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
            self.inner.put_opts(l, p, o).await
        }
        async fn put_multipart_opts(
            &self,
            l: &Path,
            o: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(l, o).await
        }
        async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
            self.gets.fetch_add(1, Relaxed);
            self.inner.get_opts(l, o).await
        }
        fn delete_stream(&self, l: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(l)
        }
        fn list(&self, p: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> Result<()> {
            self.inner.copy_opts(f, t, o).await
        }
    }

    async fn read(s: &CachedStore, key: &str, r: Range<u64>) -> Bytes {
        s.get_range(&Path::from(key), r).await.unwrap()
    }

    #[tokio::test]
    async fn hits_skip_the_fleet_writes_forget_and_new_rules_reclassify() {
        let inner = Arc::new(Counting::default());
        let cache = BlockCache::new(1 << 20, 4096).unwrap().unwrap();
        let s = CachedStore::new(inner.clone(), cache.clone(), "b");
        let data = "t.lance/data/a.lance";
        let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        s.put(&Path::from(data), body.clone().into()).await.unwrap();

        // First read: one GET of the two blocks around it, no HEAD (its answer says what
        // the object is); then none.
        assert_eq!(read(&s, data, 4000..5000).await, body[4000..5000]);
        assert_eq!(inner.gets.load(Relaxed), 1);
        assert_eq!(read(&s, data, 4090..4100).await, body[4090..4100]);
        assert_eq!(read(&s, data, 0..20_000).await, body[..]);
        assert_eq!(inner.gets.load(Relaxed), 2, "only the blocks not yet held are read");
        assert_eq!(read(&s, data, 100..200).await, body[100..200]);
        assert_eq!(inner.gets.load(Relaxed), 2);

        // A first read that ends in the object's last, short block keeps that block too;
        // one running past the end is clipped there, as a ranged GET is.
        let tail = "t.lance/data/b.lance";
        s.put(&Path::from(tail), body.clone().into()).await.unwrap();
        let before = inner.gets.load(Relaxed);
        assert_eq!(read(&s, tail, 19_000..25_000).await, body[19_000..]);
        assert_eq!(read(&s, tail, 16_384..20_000).await, body[16_384..]);
        assert_eq!(read(&s, tail, 19_999..20_000).await, body[19_999..]);
        assert_eq!(inner.gets.load(Relaxed), before + 1);
        let after = inner.gets.load(Relaxed);
        let past = s.get_range(&Path::from("t.lance/data/c.lance"), 0..10).await;
        assert!(matches!(past, Err(object_store::Error::NotFound { .. })), "{past:?}");
        assert_eq!(inner.gets.load(Relaxed), after + 1);

        // A write through the store forgets what it knew: the new bytes are read.
        let other: Vec<u8> = vec![7; 9000];
        s.put(&Path::from(data), other.clone().into()).await.unwrap();
        assert_eq!(read(&s, data, 100..200).await, other[100..200]);

        // Names outside the write-once set always pass through.
        let manifest = "t.lance/_versions/1.manifest";
        s.put(&Path::from(manifest), vec![1u8; 100].into()).await.unwrap();
        let before = inner.gets.load(Relaxed);
        read(&s, manifest, 0..10).await;
        read(&s, manifest, 0..10).await;
        assert_eq!(inner.gets.load(Relaxed), before + 2);

        // Rules under which data files are mutable: the name is classified again and passes.
        let rules = lakecache_common::keys::KeyRules::new(&[], &[]).unwrap();
        cache.set_rules(Arc::new(rules));
        let before = inner.gets.load(Relaxed);
        read(&s, data, 100..200).await;
        read(&s, data, 100..200).await;
        assert_eq!(inner.gets.load(Relaxed), before + 2);
        assert!(cache.size() > 0);
    }
}
