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

/// Blocks of write-once objects, bounded in bytes, shared by every table and bucket.
pub struct BlockCache {
    blocks: moka::sync::Cache<BlockKey, Bytes>,
    /// Object metadata of write-once keys: where their ETag comes from without a request.
    meta: moka::sync::Cache<Arc<str>, ObjectMeta>,
    block_size: u64,
    /// The keys kept: see the module comment.
    unique: GlobSet,
    /// The fleet's key rules: a name is kept here only if the fleet holds it immutable too.
    rules: parking_lot::RwLock<Arc<lakecache_common::keys::KeyRules>>,
}

/// Lance files whose names are never reused.
const UNIQUE_NAMES: [&str; 3] = ["**/data/*.lance", "**/_indices/**", "**/_deletions/*"];

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
        let blocks = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|k: &BlockKey, v: &Bytes| (v.len() + k.object.len() + 64).try_into().unwrap_or(u32::MAX))
            .build();
        let meta = moka::sync::Cache::builder().max_capacity(200_000).build();
        let rules = parking_lot::RwLock::new(Arc::new(lakecache_common::keys::KeyRules::lance_defaults()));
        Ok(Some(Arc::new(Self { blocks, meta, block_size, unique, rules })))
    }

    /// Applies the fleet's key rules (learned from the cache nodes).
    pub fn set_rules(&self, rules: Arc<lakecache_common::keys::KeyRules>) {
        *self.rules.write() = rules;
    }

    /// Whether `key` is kept here by name: a Lance file whose name is never reused and that
    /// the fleet's rules hold immutable.
    fn by_name(&self, key: &str) -> bool {
        self.unique.is_match(key)
            && self.rules.read().classify(key) == lakecache_common::keys::KeyClass::Immutable
    }

    /// Bytes held now (approximate: moka settles its accounting lazily).
    pub fn size(&self) -> u64 {
        self.blocks.weighted_size()
    }

    fn forget(&self, bucket: &str, key: &str) {
        self.meta.invalidate(&meta_key(bucket, key));
    }
}

fn meta_key(bucket: &str, key: &str) -> Arc<str> {
    format!("{bucket}/{key}").into()
}

fn generic(msg: impl Into<String>) -> object_store::Error {
    object_store::Error::Generic { store: "lakecache-search", source: msg.into().into() }
}

/// One bucket's store with the block cache in front.
pub struct CachedStore {
    inner: Arc<dyn ObjectStore>,
    cache: Arc<BlockCache>,
    bucket: String,
}

impl CachedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, cache: Arc<BlockCache>, bucket: &str) -> Self {
        Self { inner, cache, bucket: bucket.to_string() }
    }

    async fn meta(&self, location: &Path) -> Result<ObjectMeta> {
        let k = meta_key(&self.bucket, location.as_ref());
        if let Some(m) = self.cache.meta.get(&k) {
            return Ok(m);
        }
        let m = self.inner.head(location).await?;
        self.cache.meta.insert(k, m.clone());
        Ok(m)
    }

    /// `range` of a write-once object from blocks, reading the missing runs from the fleet
    /// (concurrently, one request per run of consecutive missing blocks).
    async fn read_through(&self, location: &Path, meta: &ObjectMeta, range: Range<u64>) -> Result<Bytes> {
        let c = &self.cache;
        let bs = c.block_size;
        let object: Arc<str> =
            format!("{}/{}#{}", self.bucket, location.as_ref(), meta.e_tag.as_deref().unwrap_or("")).into();
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
        metrics::counter!(SEARCH_PAGE_CACHE_READS, "result" => "hit").increment(hit);
        metrics::counter!(SEARCH_PAGE_CACHE_READS, "result" => "miss").increment(blocks.len() as u64 - hit);
        if let Some(a) = lakecache_fleet::account::current() {
            use std::sync::atomic::Ordering::Relaxed;
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
            metrics::counter!(SEARCH_PAGE_CACHE_FILL_BYTES).increment(got.len() as u64);
            for i in r.clone() {
                let off = ((i - r.start) * bs) as usize;
                let b = got.slice(off..(off + bs as usize).min(got.len()));
                c.blocks.insert(BlockKey { object: object.clone(), index: i }, b.clone());
                blocks[(i - first) as usize] = Some(b);
            }
        }
        metrics::counter!(SEARCH_PAGE_CACHE_BYTES).increment(range.end - range.start);
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
    cache: Arc<BlockCache>,
    bucket: String,
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
        self.cache.forget(&self.bucket, &self.key);
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
        self.cache.forget(&self.bucket, location.as_ref());
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(ForgetOnComplete {
            inner,
            cache: self.cache.clone(),
            bucket: self.bucket.clone(),
            key: location.to_string(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let plain = !options.head
            && options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none();
        if !plain || !self.cache.by_name(location.as_ref()) {
            return self.inner.get_opts(location, options).await;
        }
        let meta = self.meta(location).await?;
        let range = match &options.range {
            Some(r) => r.as_range(meta.size).map_err(|e| generic(format!("invalid range: {e}")))?,
            None => 0..meta.size,
        };
        if range.is_empty() || range.end - range.start > MAX_CACHED_READ {
            return self.inner.get_opts(location, options).await;
        }
        let body = match self.read_through(location, &meta, range.clone()).await {
            Ok(b) => b,
            Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => {
                // Not the object we knew any more: forget it and let the fleet answer.
                self.cache.forget(&self.bucket, location.as_ref());
                return self.inner.get_opts(location, options).await;
            }
            Err(e) => return Err(e),
        };
        metrics::gauge!(SEARCH_PAGE_CACHE_SIZE).set(self.cache.size() as f64);
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(body) }).boxed()),
            meta,
            range,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let cache = self.cache.clone();
        let bucket = self.bucket.clone();
        self.inner
            .delete_stream(locations)
            .map(move |r| {
                if let Ok(p) = &r {
                    cache.forget(&bucket, p.as_ref());
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
        self.cache.forget(&self.bucket, to.as_ref());
        r
    }
}
