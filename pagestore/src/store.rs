//! The page store itself: [`DiskTier`] — open and recover, read a range of a page, write a
//! page, pin, remove, close.
//!
//! Owns: the sequencing that keeps readers safe while slots are reused (index entry out
//! before the slot is rewritten, in only after the write completes; every block verified
//! against the crcs of the generation the reader looked up), recovery from slot headers,
//! persistence of pin flags and removals, and the tier's metrics. Does not own: the on-disk
//! format (`layout`), how I/O is submitted (`engine`), or the index data structures
//! (`index`).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::engine::{self, EngineOptions, IoEngine};
use super::index::{Allocated, Detach, Index, Lookup, PageMeta, SlotState, SlotTable};
use super::layout::{
    BLOCK_BYTES, HeaderFields, Layout, SECTOR_BYTES, align_up, block_crcs, check_identity, decode_header,
    encode_header,
};
use super::{DiskError, DiskTierConfig, ObjectId, PageKey, RateLimit, device};
use crate::metrics as m;

/// Header reads in flight during recovery.
const RECOVERY_CONCURRENCY: usize = 64;
/// Header rewrites in flight while (un)pinning.
const PIN_CONCURRENCY: usize = 32;

/// The NVMe page store. `Send + Sync`; share it behind an `Arc`.
pub struct DiskTier {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<dyn IoEngine>,
    layout: Layout,
    index: Index,
    slots: SlotTable,
    next_generation: AtomicU64,
    used_bytes: AtomicU64,
    pinned_bytes: AtomicU64,
    pages: AtomicUsize,
    /// Serialises set_pinned_where so two header rewrites of one slot never race.
    pin_lock: Arc<tokio::sync::Mutex<()>>,
    background: Background,
    log_limit: RateLimit,
    reads: ReadStats,
    _file: Arc<File>,
}

/// The read path's metric handles, made once at open (the recorder is installed by then), so
/// a read looks nothing up by name.
struct ReadStats {
    reads: metrics::Counter,
    bytes: metrics::Counter,
    latency: metrics::Histogram,
}

impl ReadStats {
    fn new() -> ReadStats {
        ReadStats {
            reads: metrics::counter!(m::DISK_READS),
            bytes: metrics::counter!(m::DISK_READ_BYTES),
            latency: metrics::histogram!(m::DISK_READ_LATENCY),
        }
    }
}

/// Counts detached tasks (tombstones, header rewrites) so `close` can wait for them.
struct Background {
    running: AtomicUsize,
    idle: Notify,
}

struct BackgroundGuard<'a>(&'a Background);

impl Background {
    fn enter(&self) -> BackgroundGuard<'_> {
        self.running.fetch_add(1, Ordering::AcqRel);
        BackgroundGuard(self)
    }

    async fn wait_idle(&self, timeout: Duration) {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }
}

impl Drop for BackgroundGuard<'_> {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Runs `fut` as its own task so it finishes even if the caller's future is dropped (a
/// half-done write would leave a claimed key or a reserved slot behind); inline outside a
/// runtime.
async fn detached<T: Send + 'static>(
    fut: impl Future<Output = Result<T, DiskError>> + Send + 'static,
) -> Result<T, DiskError> {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt
            .spawn(fut)
            .await
            .map_err(|e| DiskError::Io(io::Error::other(format!("disk tier task failed: {e}"))))?,
        Err(_) => fut.await,
    }
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl DiskTier {
    /// Opens the page file, creating, preallocating or resizing it as needed, starts the I/O
    /// engine and recovers the index from the slot headers.
    pub async fn open(cfg: DiskTierConfig) -> Result<DiskTier, DiskError> {
        Self::open_with(cfg, true).await
    }

    async fn open_with(cfg: DiskTierConfig, try_direct: bool) -> Result<DiskTier, DiskError> {
        cfg.validate()?;
        let layout = Layout::for_capacity(cfg.capacity_bytes, cfg.page_size_bytes);
        let path = cfg.path.clone();
        let dev = tokio::task::spawn_blocking(move || device::open(&path, layout, try_direct))
            .await
            .map_err(|e| DiskError::Io(io::Error::other(format!("open task failed: {e}"))))??;
        let file = Arc::new(dev.file);
        let engine = engine::start(
            Arc::clone(&file),
            &EngineOptions {
                choice: cfg.io_engine,
                rings: cfg.rings,
                queue_depth: cfg.queue_depth,
                registered_buffers: cfg.registered_buffers,
                max_io_bytes: layout.slot_bytes() as usize,
            },
        )
        .await?;
        let inner = Arc::new(Inner {
            engine,
            layout,
            index: Index::new(),
            slots: SlotTable::new(layout.slot_count as u32),
            next_generation: AtomicU64::new(0),
            used_bytes: AtomicU64::new(0),
            pinned_bytes: AtomicU64::new(0),
            pages: AtomicUsize::new(0),
            pin_lock: Arc::new(tokio::sync::Mutex::new(())),
            background: Background { running: AtomicUsize::new(0), idle: Notify::new() },
            log_limit: RateLimit::new(),
            reads: ReadStats::new(),
            _file: file,
        });
        let started = std::time::Instant::now();
        let max_generation = if dev.initialised { 0 } else { inner.recover().await };
        // Generations only need to be unique per slot incarnation; seeding from the clock keeps
        // them increasing across restarts even when recovery was skipped.
        inner.next_generation.store(max_generation.saturating_add(1).max(unix_micros()), Ordering::Relaxed);
        inner.slots.rebuild_free_list();
        let recovered = inner.pages.load(Ordering::Relaxed);
        info!(
            path = %cfg.path.display(),
            engine = inner.engine.name(),
            direct_io = dev.direct,
            slots = layout.slot_count,
            page_size = layout.page_size_bytes,
            recovered_pages = recovered,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "disk tier open"
        );
        metrics::gauge!(m::DISK_IO_ENGINE, "engine" => inner.engine.name()).set(1.0);
        metrics::gauge!(m::DISK_RECOVERED_PAGES).set(recovered as f64);
        let tier = DiskTier { inner };
        metrics::gauge!(m::DISK_CAPACITY_BYTES).set(tier.capacity_bytes() as f64);
        tier.inner.publish_usage();
        Ok(tier)
    }

    /// `"uring"` or `"pread"`.
    pub fn engine_name(&self) -> &'static str {
        self.inner.engine.name()
    }

    pub fn page_size_bytes(&self) -> u64 {
        self.inner.layout.page_size_bytes
    }

    /// Data capacity: slots × page size (headers and superblock not counted).
    pub fn capacity_bytes(&self) -> u64 {
        self.inner.layout.slot_count * self.inner.layout.page_size_bytes
    }

    /// Sum of the lengths of the cached pages.
    pub fn used_bytes(&self) -> u64 {
        self.inner.used_bytes.load(Ordering::Relaxed)
    }

    pub fn pinned_bytes(&self) -> u64 {
        self.inner.pinned_bytes.load(Ordering::Relaxed)
    }

    pub fn page_count(&self) -> usize {
        self.inner.pages.load(Ordering::Relaxed)
    }

    pub fn contains(&self, key: &PageKey) -> bool {
        self.inner.index.contains(key)
    }

    /// Reads bytes `[offset, offset + len)` of a cached page, reading only the 4 KiB blocks
    /// that cover them (one I/O) and verifying each block's crc32c.
    ///
    /// `Ok(None)`: the page is not cached, or a block failed its checksum (the page is then
    /// dropped and counted). A range beyond the page's length is `Err(OutOfRange)`.
    pub async fn read(&self, key: &PageKey, offset: usize, len: usize) -> Result<Option<Bytes>, DiskError> {
        self.inner.read(key, offset, len).await
    }

    /// Stores a whole page (`data.len() <= page_size`). A page already present (or being
    /// written) is left as it is. Evicts with CLOCK if no slot is free, never a pinned page;
    /// `Err(Full)` if every slot is pinned or busy.
    ///
    /// The write runs to completion even if this future is dropped.
    pub async fn write(
        &self,
        id: &Arc<ObjectId>,
        index: u64,
        data: Bytes,
        pinned: bool,
    ) -> Result<(), DiskError> {
        let page_size = self.inner.layout.page_size_bytes;
        if data.len() as u64 > page_size {
            return Err(DiskError::TooLarge(format!(
                "page of {} bytes, page size is {page_size}",
                data.len()
            )));
        }
        check_identity(&id.bucket, &id.key, &id.version).map_err(DiskError::TooLarge)?;
        let key = PageKey { object: id.hash(), index };
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        if !self.inner.index.begin_write(key, generation) {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        let id = Arc::clone(id);
        detached(async move { inner.write_claimed(key, id, index, data, pinned, generation).await }).await
    }

    /// Pins (or unpins) every cached page whose object matches `pred` and persists the flag
    /// in each page's header. Returns the bytes of the pages whose flag changed.
    ///
    /// The in-memory flag changes before the headers are rewritten; if a rewrite fails the
    /// first error is returned (the flag still holds until restart).
    pub async fn set_pinned_where(
        &self,
        pred: impl Fn(&ObjectId) -> bool,
        pinned: bool,
    ) -> Result<u64, DiskError> {
        let guard = Arc::clone(&self.inner.pin_lock).lock_owned().await;
        let mut changed = Vec::new();
        let mut bytes = 0u64;
        for slot in 0..self.inner.slots.len() as u32 {
            let Some(s) = self.inner.slots.get(slot) else { continue };
            let mut st = s.state.lock();
            if let SlotState::Live { meta, pinned: p, busy, detached: false } = &mut *st
                && *p != pinned
                && pred(&meta.id)
            {
                *p = pinned;
                *busy += 1;
                bytes += u64::from(meta.len);
                changed.push((slot, Arc::clone(meta)));
            }
        }
        if pinned {
            self.inner.pinned_bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.inner.pinned_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        self.inner.publish_usage();
        if changed.is_empty() {
            return Ok(0);
        }
        let inner = Arc::clone(&self.inner);
        detached(async move {
            let _guard = guard;
            let _bg = inner.background.enter();
            let results: Vec<Result<(), DiskError>> = futures::stream::iter(changed)
                .map(|(slot, meta)| {
                    let inner = Arc::clone(&inner);
                    async move {
                        let r = inner.write_header(slot, &meta, pinned).await;
                        if inner.slots.unbusy(slot, meta.generation) {
                            inner.recycle(slot).await;
                        }
                        r
                    }
                })
                .buffer_unordered(PIN_CONCURRENCY)
                .collect()
                .await;
            results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
        })
        .await?;
        Ok(bytes)
    }

    /// Whether any page of `object` (an [`ObjectId`] hash) is on disk.
    pub fn holds_object(&self, object: u128) -> bool {
        self.inner.index.holds_object(object)
    }

    /// Drops every page of `object` (an object overwritten or deleted through the endpoint).
    /// The slots' headers are invalidated in the background so the pages stay gone after a
    /// restart.
    pub fn remove_object(&self, object: u128) {
        let removed = self.inner.index.remove_object(object);
        let mut recycle = Vec::new();
        for (slot, meta) in removed {
            match self.inner.slots.detach(slot, meta.generation) {
                Detach::Reserved { len, pinned } => {
                    self.inner.forget_page(len, pinned);
                    recycle.push(slot);
                }
                Detach::Deferred { len, pinned } => self.inner.forget_page(len, pinned),
                Detach::Gone => {}
            }
        }
        self.inner.publish_usage();
        if !recycle.is_empty() {
            self.inner.recycle_in_background(recycle);
        }
    }

    /// Waits (bounded) for background header writes, then stops the engine: in-flight I/O
    /// completes, later calls fail with an I/O error.
    pub async fn close(&self) {
        self.inner.background.wait_idle(Duration::from_secs(10)).await;
        self.inner.engine.shutdown().await;
    }

    #[cfg(test)]
    fn slot_of(&self, key: &PageKey) -> Option<u32> {
        match self.inner.index.lookup(key) {
            Lookup::Live { slot, .. } => Some(slot),
            _ => None,
        }
    }
}

impl Inner {
    fn publish_usage(&self) {
        metrics::gauge!(m::DISK_USED_BYTES).set(self.used_bytes.load(Ordering::Relaxed) as f64);
        metrics::gauge!(m::DISK_PINNED_BYTES).set(self.pinned_bytes.load(Ordering::Relaxed) as f64);
    }

    /// Counters for a page that left its slot (evicted, removed, corrupt).
    fn forget_page(&self, len: u32, pinned: bool) {
        self.used_bytes.fetch_sub(u64::from(len), Ordering::Relaxed);
        if pinned {
            self.pinned_bytes.fetch_sub(u64::from(len), Ordering::Relaxed);
        }
        self.pages.fetch_sub(1, Ordering::Relaxed);
    }

    fn io_error(&self, what: &str, e: io::Error) -> DiskError {
        metrics::counter!(m::DISK_ERRORS).increment(1);
        if self.log_limit.ready() {
            warn!(error = %e, "disk tier {what} failed");
        }
        DiskError::Io(e)
    }

    async fn read(
        self: &Arc<Self>,
        key: &PageKey,
        offset: usize,
        len: usize,
    ) -> Result<Option<Bytes>, DiskError> {
        let Lookup::Live { slot, meta } = self.index.lookup(key) else { return Ok(None) };
        let page_len = meta.len as usize;
        let end = offset.checked_add(len).filter(|&e| e <= page_len);
        let Some(end) = end else { return Err(DiskError::OutOfRange { offset, len, page_len }) };
        self.slots.touch(slot);
        self.reads.reads.increment(1);
        if len == 0 {
            return Ok(Some(Bytes::new()));
        }
        let first = offset / BLOCK_BYTES;
        let last = (end - 1) / BLOCK_BYTES;
        let io_len = (last - first + 1) * BLOCK_BYTES;
        let file_offset = self.layout.data_offset(slot) + (first * BLOCK_BYTES) as u64;
        let started = std::time::Instant::now();
        let buf = engine::buffer(&*self.engine, io_len).await.map_err(|e| self.io_error("read buffer", e))?;
        let buf = self.engine.read(buf, file_offset).await.map_err(|e| self.io_error("read", e))?;
        self.reads.bytes.increment(io_len as u64);
        let data = buf.as_slice();
        for block in first..=last {
            let valid = BLOCK_BYTES.min(page_len - block * BLOCK_BYTES);
            let start = (block - first) * BLOCK_BYTES;
            let expected = meta.crcs.get(block).copied();
            if Some(crc32c::crc32c(&data[start..start + valid])) != expected {
                self.checksum_failed(key, slot, &meta);
                return Ok(None);
            }
        }
        self.reads.latency.record(started.elapsed().as_secs_f64() * 1e6);
        let start = offset - first * BLOCK_BYTES;
        Ok(Some(buf.into_bytes(start..start + len)))
    }

    /// A block did not match the crcs of the generation we looked up. If the slot still holds
    /// that generation the bytes on disk are bad: drop the page. Otherwise the slot was reused
    /// under us — an ordinary miss.
    fn checksum_failed(self: &Arc<Self>, key: &PageKey, slot: u32, meta: &Arc<PageMeta>) {
        let detach = self.slots.detach(slot, meta.generation);
        self.index.remove_if(key, slot, meta.generation);
        let (len, pinned) = match detach {
            Detach::Reserved { len, pinned } | Detach::Deferred { len, pinned } => (len, pinned),
            Detach::Gone => return,
        };
        self.forget_page(len, pinned);
        self.publish_usage();
        metrics::counter!(m::DISK_CHECKSUM_FAILURES).increment(1);
        if self.log_limit.ready() {
            warn!(
                slot,
                bucket = %meta.id.bucket,
                page = meta.index,
                "disk tier page failed its checksum; dropped"
            );
        }
        if matches!(detach, Detach::Reserved { .. }) {
            self.recycle_in_background(vec![slot]);
        }
    }

    async fn write_claimed(
        self: Arc<Self>,
        key: PageKey,
        id: Arc<ObjectId>,
        index: u64,
        data: Bytes,
        pinned: bool,
        generation: u64,
    ) -> Result<(), DiskError> {
        let slot = match self.slots.allocate() {
            Allocated::Full => {
                self.index.abort_write(key, generation);
                return Err(DiskError::Full);
            }
            Allocated::Slot { slot, evicted } => {
                if let Some((old, old_pinned)) = evicted {
                    // Out of the index before a single byte of the new page is written.
                    self.index.remove_if(&old.key(), slot, old.generation);
                    self.forget_page(old.len, old_pinned);
                    metrics::counter!(m::DISK_EVICTIONS).increment(1);
                }
                slot
            }
        };
        let len = data.len();
        let crcs = block_crcs(&data);
        let io_len = SECTOR_BYTES + align_up(len);
        let fields = HeaderFields {
            generation,
            slot,
            page_size_bytes: self.layout.page_size_bytes,
            page_index: index,
            len: len as u32,
            pinned,
            bucket: &id.bucket,
            key: &id.key,
            version: &id.version,
            crcs: &crcs,
        };
        let started = std::time::Instant::now();
        let written: Result<(), DiskError> = async {
            let mut buf =
                engine::buffer(&*self.engine, io_len).await.map_err(|e| self.io_error("write buffer", e))?;
            let b = buf.as_mut_slice();
            encode_header(&mut b[..SECTOR_BYTES], &fields).map_err(DiskError::TooLarge)?;
            b[SECTOR_BYTES..SECTOR_BYTES + len].copy_from_slice(&data);
            b[SECTOR_BYTES + len..].fill(0);
            self.engine
                .write(buf, self.layout.header_offset(slot))
                .await
                .map_err(|e| self.io_error("write", e))?;
            Ok(())
        }
        .await;
        if let Err(e) = written {
            self.index.abort_write(key, generation);
            // A half-written slot can only fail its crcs; it is free again right away.
            self.slots.release(slot);
            self.publish_usage();
            return Err(e);
        }
        metrics::histogram!(m::DISK_WRITE_LATENCY).record(started.elapsed().as_secs_f64() * 1e6);
        metrics::counter!(m::DISK_WRITES).increment(1);
        metrics::counter!(m::DISK_WRITE_BYTES).increment(io_len as u64);
        let meta = Arc::new(PageMeta { id, index, len: len as u32, crcs, generation });
        if self.index.finish_write(&self.slots, slot, meta, pinned) {
            self.used_bytes.fetch_add(len as u64, Ordering::Relaxed);
            if pinned {
                self.pinned_bytes.fetch_add(len as u64, Ordering::Relaxed);
            }
            self.pages.fetch_add(1, Ordering::Relaxed);
        } else {
            // The object was removed while we wrote: the page must not come back on restart.
            self.recycle(slot).await;
        }
        self.publish_usage();
        Ok(())
    }

    /// Rewrites the header sector of a live page (with a new pinned flag).
    async fn write_header(&self, slot: u32, meta: &PageMeta, pinned: bool) -> Result<(), DiskError> {
        let fields = HeaderFields {
            generation: meta.generation,
            slot,
            page_size_bytes: self.layout.page_size_bytes,
            page_index: meta.index,
            len: meta.len,
            pinned,
            bucket: &meta.id.bucket,
            key: &meta.id.key,
            version: &meta.id.version,
            crcs: &meta.crcs,
        };
        let mut buf = engine::buffer(&*self.engine, SECTOR_BYTES)
            .await
            .map_err(|e| self.io_error("header buffer", e))?;
        encode_header(buf.as_mut_slice(), &fields).map_err(DiskError::TooLarge)?;
        self.engine
            .write(buf, self.layout.header_offset(slot))
            .await
            .map_err(|e| self.io_error("header write", e))?;
        Ok(())
    }

    /// Invalidates a `Reserved` slot's header on disk, then frees the slot.
    async fn recycle(&self, slot: u32) {
        let res = async {
            let mut buf = engine::buffer(&*self.engine, SECTOR_BYTES).await?;
            buf.as_mut_slice().fill(0);
            self.engine.write(buf, self.layout.header_offset(slot)).await
        }
        .await;
        if let Err(e) = res {
            // The stale header may resurrect its page after a restart; its identity still
            // names the right bytes, and the crcs guard against anything else.
            let _ = self.io_error("header invalidation", e);
        }
        self.slots.release(slot);
    }

    fn recycle_in_background(self: &Arc<Self>, slots: Vec<u32>) {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let inner = Arc::clone(self);
                inner.background.running.fetch_add(1, Ordering::AcqRel);
                rt.spawn(async move {
                    let _bg = BackgroundGuard(&inner.background);
                    for slot in slots {
                        inner.recycle(slot).await;
                    }
                });
            }
            Err(_) => {
                for slot in slots {
                    self.slots.release(slot);
                }
            }
        }
    }

    /// Reads every slot header and rebuilds the index. Returns the highest generation seen.
    async fn recover(&self) -> u64 {
        let page_size = self.layout.page_size_bytes;
        let n = self.layout.slot_count as u32;
        let mut results = futures::stream::iter(0..n)
            .map(|slot| async move {
                let r = async {
                    let buf = engine::buffer(&*self.engine, SECTOR_BYTES).await?;
                    self.engine.read(buf, self.layout.header_offset(slot)).await
                }
                .await;
                (slot, r.map(|buf| decode_header(buf.as_slice(), slot, page_size)))
            })
            .buffer_unordered(RECOVERY_CONCURRENCY);

        let mut best: HashMap<PageKey, (u32, super::layout::DecodedHeader)> = HashMap::new();
        let (mut invalid, mut io_errors, mut max_generation) = (0u64, 0u64, 0u64);
        while let Some((slot, r)) = results.next().await {
            match r {
                Ok(Ok(h)) => {
                    max_generation = max_generation.max(h.generation);
                    let object = ObjectId::new(h.bucket.as_str(), h.key.as_str(), h.version.as_str());
                    let key = PageKey { object: object.hash(), index: h.page_index };
                    // Two valid slots for one page (a rewrite after a drop): keep the newest.
                    match best.get(&key) {
                        Some((_, old)) if old.generation >= h.generation => {}
                        _ => {
                            best.insert(key, (slot, h));
                        }
                    }
                }
                Ok(Err(super::layout::HeaderInvalid::Empty)) => {}
                Ok(Err(_)) => invalid += 1,
                Err(e) => {
                    io_errors += 1;
                    let _ = self.io_error("recovery header read", e);
                }
            }
        }
        drop(results);

        let mut objects: HashMap<u128, Arc<ObjectId>> = HashMap::new();
        for (key, (slot, h)) in best {
            let id = Arc::clone(
                objects
                    .entry(key.object)
                    .or_insert_with(|| Arc::new(ObjectId::new(h.bucket, h.key, h.version))),
            );
            let meta = Arc::new(PageMeta {
                id,
                index: h.page_index,
                len: h.len,
                crcs: h.crcs,
                generation: h.generation,
            });
            self.slots.set_recovered(slot, Arc::clone(&meta), h.pinned);
            self.index.insert_recovered(slot, meta);
            self.used_bytes.fetch_add(u64::from(h.len), Ordering::Relaxed);
            if h.pinned {
                self.pinned_bytes.fetch_add(u64::from(h.len), Ordering::Relaxed);
            }
            self.pages.fetch_add(1, Ordering::Relaxed);
        }
        if invalid > 0 || io_errors > 0 {
            warn!(invalid_headers = invalid, io_errors, "disk tier recovery treated some slots as free");
        }
        max_generation
    }
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier")
            .field("engine", &self.engine_name())
            .field("slots", &self.inner.layout.slot_count)
            .field("page_size_bytes", &self.page_size_bytes())
            .field("pages", &self.page_count())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::IoEngineChoice;
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    const PAGE: usize = 16 * 1024;

    fn cfg(path: &Path, slots: u64, engine: IoEngineChoice) -> DiskTierConfig {
        DiskTierConfig {
            path: path.to_path_buf(),
            capacity_bytes: 4096 + slots * (4096 + PAGE as u64),
            page_size_bytes: PAGE as u64,
            io_engine: engine,
            rings: 2,
            queue_depth: 8,
            registered_buffers: 2,
        }
    }

    /// Deterministic page contents, so any returned bytes can be checked.
    fn content(id: &ObjectId, index: u64, len: usize) -> Bytes {
        let seed = (id.hash() as u64) ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (0..len)
            .map(|i| (seed.wrapping_add(i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8)
            .collect()
    }

    fn obj(name: &str) -> Arc<ObjectId> {
        Arc::new(ObjectId::new("bucket", name, "\"etag\""))
    }

    fn uring_unavailable() -> bool {
        match io_uring::IoUring::new(4) {
            Ok(_) => false,
            Err(e) => {
                eprintln!("NOTE: io_uring unavailable on this machine ({e}); uring test skipped");
                true
            }
        }
    }

    fn dir() -> tempfile::TempDir {
        // /var/tmp is disk-backed where /tmp may be tmpfs (no O_DIRECT).
        tempfile::tempdir_in("/var/tmp").unwrap()
    }

    async fn open(c: DiskTierConfig) -> DiskTier {
        let t = DiskTier::open(c.clone()).await.unwrap();
        let want = match c.io_engine {
            IoEngineChoice::Pread => "pread",
            IoEngineChoice::Noop => "noop",
            _ => "uring",
        };
        assert_eq!(t.engine_name(), want);
        t
    }

    /// Overwrites bytes of the page file with plain buffered I/O.
    fn poke(path: &Path, offset: u64, bytes: &[u8]) {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, offset).unwrap();
        f.sync_all().unwrap();
    }

    fn peek(path: &Path, offset: u64) -> u8 {
        let f = std::fs::File::open(path).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, offset).unwrap();
        b[0]
    }

    macro_rules! both_engines {
        ($($name:ident),* $(,)?) => {$(
            mod $name {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn pread() {
                    super::$name(IoEngineChoice::Pread).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn uring() {
                    if uring_unavailable() {
                        return;
                    }
                    super::$name(IoEngineChoice::Uring).await;
                }
            }
        )*};
    }

    both_engines!(
        round_trip,
        eviction_spares_pinned,
        full_when_all_pinned,
        reopen_recovers,
        flipped_data_byte_is_a_miss,
        corrupt_header_frees_slot,
        concurrent_reads_during_reuse,
        torn_write_never_served,
        remove_object_persists,
        resize_keeps_pages,
        buffered_fallback_works,
    );

    async fn round_trip(engine: IoEngineChoice) {
        let d = dir();
        let t = open(cfg(&d.path().join("p"), 8, engine)).await;
        assert_eq!(t.page_size_bytes(), PAGE as u64);
        assert_eq!(t.capacity_bytes(), 8 * PAGE as u64);
        let a = obj("full");
        let b = obj("short");
        let full = content(&a, 0, PAGE);
        let short = content(&b, 5, 10_001);
        t.write(&a, 0, full.clone(), false).await.unwrap();
        t.write(&b, 5, short.clone(), false).await.unwrap();
        let ka = PageKey::new(&a, 0);
        let kb = PageKey::new(&b, 5);
        assert!(t.contains(&ka) && t.contains(&kb));
        assert_eq!(t.page_count(), 2);
        assert_eq!(t.used_bytes(), (PAGE + 10_001) as u64);

        assert_eq!(t.read(&ka, 0, PAGE).await.unwrap().unwrap(), full);
        assert_eq!(t.read(&kb, 0, 10_001).await.unwrap().unwrap(), short);
        for (off, len) in
            [(1, 1), (4095, 2), (4096, 4096), (5000, 7000), (PAGE - 1, 1), (3, PAGE - 7), (0, 0)]
        {
            let got = t.read(&ka, off, len).await.unwrap().unwrap();
            assert_eq!(got, full.slice(off..off + len), "full page {off}+{len}");
        }
        for (off, len) in [(10_000, 1), (8191, 1810), (7, 9000), (10_001, 0)] {
            let got = t.read(&kb, off, len).await.unwrap().unwrap();
            assert_eq!(got, short.slice(off..off + len), "short page {off}+{len}");
        }
        assert!(matches!(t.read(&kb, 10_000, 2).await, Err(DiskError::OutOfRange { .. })));
        assert!(matches!(t.read(&ka, usize::MAX, 2).await, Err(DiskError::OutOfRange { .. })));
        assert!(t.read(&PageKey::new(&a, 1), 0, 1).await.unwrap().is_none());

        // Present already: a no-op, the old bytes stay.
        t.write(&a, 0, content(&b, 0, PAGE), false).await.unwrap();
        assert_eq!(t.read(&ka, 0, PAGE).await.unwrap().unwrap(), full);
        assert_eq!(t.page_count(), 2);

        // Empty page.
        t.write(&a, 9, Bytes::new(), false).await.unwrap();
        assert_eq!(t.read(&PageKey::new(&a, 9), 0, 0).await.unwrap().unwrap().len(), 0);

        // Limits.
        assert!(matches!(
            t.write(&a, 1, Bytes::from(vec![0u8; PAGE + 1]), false).await,
            Err(DiskError::TooLarge(_))
        ));
        let long = Arc::new(ObjectId::new("b", "k".repeat(1025), "v"));
        assert!(matches!(
            t.write(&long, 0, Bytes::from_static(b"x"), false).await,
            Err(DiskError::TooLarge(_))
        ));
        t.close().await;
        assert!(t.read(&ka, 0, 1).await.is_err(), "reads after close fail");
    }

    /// A device that keeps nothing (writes dropped, reads returning whatever the buffer held):
    /// every read is a miss, never bytes, and nothing survives a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn device_that_keeps_nothing_serves_no_bytes() {
        let d = dir();
        let c = cfg(&d.path().join("p"), 8, IoEngineChoice::Noop);
        let t = open(c.clone()).await;
        let pages: Vec<_> = (0..6).map(|i| obj(&format!("o-{i}"))).collect();
        for (i, o) in pages.iter().enumerate() {
            t.write(o, 0, content(o, 0, PAGE - i * 1000), i % 2 == 0).await.unwrap();
        }
        for (i, o) in pages.iter().enumerate() {
            for (off, len) in [(0, PAGE - i * 1000), (4096, 100), (1, 1)] {
                match t.read(&PageKey::new(o, 0), off, len).await {
                    Ok(None) => {}
                    Ok(Some(b)) => {
                        panic!("page {i} {off}+{len}: served {} bytes the device never kept", b.len())
                    }
                    Err(e) => panic!("page {i} {off}+{len}: a lost page is a miss, not an error: {e}"),
                }
            }
        }
        t.close().await;
        let t = open(c).await;
        assert_eq!(t.page_count(), 0, "nothing to recover from a device that kept nothing");
        t.close().await;
    }

    async fn eviction_spares_pinned(engine: IoEngineChoice) {
        let d = dir();
        let t = open(cfg(&d.path().join("p"), 8, engine)).await;
        let pinned: Vec<_> = (0..3).map(|i| obj(&format!("pinned-{i}"))).collect();
        for p in &pinned {
            t.write(p, 0, content(p, 0, PAGE), true).await.unwrap();
        }
        assert_eq!(t.pinned_bytes(), 3 * PAGE as u64);
        for i in 0..40 {
            let o = obj(&format!("cold-{i}"));
            t.write(&o, 0, content(&o, 0, 5000), false).await.unwrap();
            // Keep some pages hot so CLOCK has reference bits to clear.
            if i % 3 == 0 {
                let _ = t.read(&PageKey::new(&o, 0), 0, 10).await.unwrap();
            }
        }
        assert_eq!(t.page_count(), 8);
        for p in &pinned {
            assert_eq!(t.read(&PageKey::new(p, 0), 0, PAGE).await.unwrap().unwrap(), content(p, 0, PAGE));
        }
        assert_eq!(t.pinned_bytes(), 3 * PAGE as u64);
        assert_eq!(t.used_bytes(), 3 * PAGE as u64 + 5 * 5000);
        // The most recent page survived.
        assert!(t.contains(&PageKey::new(&obj("cold-39"), 0)));
        t.close().await;
    }

    async fn full_when_all_pinned(engine: IoEngineChoice) {
        let d = dir();
        let t = open(cfg(&d.path().join("p"), 4, engine)).await;
        for i in 0..4 {
            let o = obj(&format!("p{i}"));
            t.write(&o, 0, content(&o, 0, 100), true).await.unwrap();
        }
        let extra = obj("extra");
        assert!(matches!(t.write(&extra, 0, content(&extra, 0, 100), false).await, Err(DiskError::Full)));
        assert!(matches!(t.write(&extra, 0, content(&extra, 0, 100), true).await, Err(DiskError::Full)));
        assert!(!t.contains(&PageKey::new(&extra, 0)));
        // Unpinning one object makes room.
        let changed = t.set_pinned_where(|id| id.key == "p2", false).await.unwrap();
        assert_eq!(changed, 100);
        assert_eq!(t.set_pinned_where(|id| id.key == "p2", false).await.unwrap(), 0);
        t.write(&extra, 0, content(&extra, 0, 100), false).await.unwrap();
        assert!(!t.contains(&PageKey::new(&obj("p2"), 0)));
        assert_eq!(t.read(&PageKey::new(&extra, 0), 0, 100).await.unwrap().unwrap(), content(&extra, 0, 100));
        t.close().await;
    }

    async fn reopen_recovers(engine: IoEngineChoice) {
        let d = dir();
        let path = d.path().join("p");
        let objs: Vec<_> = (0..6).map(|i| obj(&format!("o{i}"))).collect();
        {
            let t = open(cfg(&path, 8, engine)).await;
            for (i, o) in objs.iter().enumerate() {
                t.write(o, i as u64, content(o, i as u64, 2500 * (i + 1)), i < 2).await.unwrap();
            }
            // Pinned later through set_pinned_where: must persist too.
            assert_eq!(t.set_pinned_where(|id| id.key == "o5", true).await.unwrap(), 15_000);
            // And unpinned: must persist.
            assert_eq!(t.set_pinned_where(|id| id.key == "o1", false).await.unwrap(), 5000);
            t.close().await;
        }
        let t = open(cfg(&path, 8, engine)).await;
        assert_eq!(t.page_count(), 6);
        assert_eq!(t.pinned_bytes(), 2500 + 15_000);
        for (i, o) in objs.iter().enumerate() {
            let len = 2500 * (i + 1);
            let got = t.read(&PageKey::new(o, i as u64), 0, len).await.unwrap().unwrap();
            assert_eq!(got, content(o, i as u64, len));
        }
        // Fill past capacity: the pinned pages (o0, o5) survive.
        for i in 0..20 {
            let o = obj(&format!("new{i}"));
            t.write(&o, 0, content(&o, 0, 100), false).await.unwrap();
        }
        assert!(t.contains(&PageKey::new(&objs[0], 0)));
        assert!(t.contains(&PageKey::new(&objs[5], 5)));
        assert!(!t.contains(&PageKey::new(&objs[1], 1)));
        // New writes after recovery get fresh generations: reopen again, everything consistent.
        t.close().await;
        drop(t);
        let t = open(cfg(&path, 8, engine)).await;
        assert_eq!(t.page_count(), 8);
        assert!(t.contains(&PageKey::new(&objs[0], 0)));
        assert_eq!(
            t.read(&PageKey::new(&obj("new19"), 0), 0, 100).await.unwrap().unwrap(),
            content(&obj("new19"), 0, 100)
        );
        t.close().await;
    }

    async fn flipped_data_byte_is_a_miss(engine: IoEngineChoice) {
        let d = dir();
        let path = d.path().join("p");
        let c = cfg(&path, 4, engine);
        let t = open(c.clone()).await;
        let o = obj("victim");
        let data = content(&o, 0, PAGE);
        t.write(&o, 0, data.clone(), false).await.unwrap();
        let k = PageKey::new(&o, 0);
        let slot = t.slot_of(&k).unwrap();
        let layout = Layout::for_capacity(c.capacity_bytes, c.page_size_bytes);
        let at = layout.data_offset(slot) + 9000;
        poke(&path, at, &[peek(&path, at) ^ 0x01]);
        // A range not covering the damaged block still reads fine.
        assert_eq!(t.read(&k, 0, 100).await.unwrap().unwrap(), data.slice(0..100));
        assert!(t.read(&k, 8192, 4096).await.unwrap().is_none());
        assert!(!t.contains(&k));
        assert_eq!(t.page_count(), 0);
        assert_eq!(t.used_bytes(), 0);
        // Rewriting the page works and serves the right bytes.
        t.write(&o, 0, data.clone(), false).await.unwrap();
        assert_eq!(t.read(&k, 0, PAGE).await.unwrap().unwrap(), data);
        t.close().await;
    }

    async fn corrupt_header_frees_slot(engine: IoEngineChoice) {
        let d = dir();
        let path = d.path().join("p");
        let c = cfg(&path, 4, engine);
        let (a, b) = (obj("a"), obj("b"));
        let slot_a;
        {
            let t = open(c.clone()).await;
            t.write(&a, 0, content(&a, 0, 5000), false).await.unwrap();
            t.write(&b, 0, content(&b, 0, 5000), false).await.unwrap();
            slot_a = t.slot_of(&PageKey::new(&a, 0)).unwrap();
            t.close().await;
        }
        let layout = Layout::for_capacity(c.capacity_bytes, c.page_size_bytes);
        let at = layout.header_offset(slot_a) + 2200; // inside the identity bytes
        poke(&path, at, &[peek(&path, at) ^ 0x20]);
        let t = open(c).await;
        assert!(!t.contains(&PageKey::new(&a, 0)));
        assert!(t.contains(&PageKey::new(&b, 0)));
        assert_eq!(t.page_count(), 1);
        // Three free slots (the corrupt one among them): three writes without eviction.
        for i in 0..3 {
            let o = obj(&format!("n{i}"));
            t.write(&o, 0, content(&o, 0, 10), false).await.unwrap();
        }
        assert_eq!(t.page_count(), 4);
        assert!(t.contains(&PageKey::new(&b, 0)));
        t.close().await;
    }

    async fn concurrent_reads_during_reuse(engine: IoEngineChoice) {
        let d = dir();
        let t = Arc::new(open(cfg(&d.path().join("p"), 3, engine)).await);
        let objs: Arc<Vec<_>> = Arc::new((0..12).map(|i| obj(&format!("r{i}"))).collect());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut readers = Vec::new();
        for r in 0..4u64 {
            let (t, objs, stop) = (Arc::clone(&t), Arc::clone(&objs), Arc::clone(&stop));
            readers.push(tokio::spawn(async move {
                let (mut hits, mut i) = (0u64, r);
                let expected: Vec<Bytes> = objs.iter().map(|o| content(o, 0, PAGE)).collect();
                while !stop.load(Ordering::Relaxed) {
                    // A miss completes without awaiting anything: yield so the writer runs.
                    tokio::task::yield_now().await;
                    i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let which = (i >> 33) as usize % objs.len();
                    let o = &objs[which];
                    let off = ((i >> 20) as usize) % (PAGE - 1);
                    let len = (((i >> 8) as usize) % 9000).min(PAGE - off);
                    if let Some(got) = t.read(&PageKey::new(o, 0), off, len).await.unwrap() {
                        assert_eq!(got, expected[which].slice(off..off + len), "wrong bytes served");
                        hits += 1;
                    }
                }
                hits
            }));
        }
        for round in 0..150 {
            let o = &objs[round % objs.len()];
            // Every slot may be mid-read at the moment (four readers, three slots): the write
            // is then refused with Full, as documented, and goes through once a read ends.
            let mut busy = 0;
            loop {
                match t.write(o, 0, content(o, 0, PAGE), false).await {
                    Ok(()) => break,
                    Err(DiskError::Full) if busy < 10_000 => {
                        busy += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("round {round}: write failed after {busy} busy tries: {e}"),
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut hits = 0;
        for r in readers {
            hits += r.await.unwrap();
        }
        assert!(hits > 0, "readers never hit");
        assert_eq!(t.page_count(), 3);
        t.close().await;
    }

    async fn torn_write_never_served(engine: IoEngineChoice) {
        let d = dir();
        let path = d.path().join("p");
        let c = cfg(&path, 2, engine);
        let (old, new) = (obj("old"), obj("new"));
        let slot;
        {
            let t = open(c.clone()).await;
            t.write(&old, 0, content(&old, 0, PAGE), false).await.unwrap();
            slot = t.slot_of(&PageKey::new(&old, 0)).unwrap();
            t.close().await;
        }
        // The new page's header lands, its data does not (a crash mid-write).
        let new_data = content(&new, 0, PAGE);
        let crcs = block_crcs(&new_data);
        let mut sector = vec![0u8; SECTOR_BYTES];
        encode_header(
            &mut sector,
            &HeaderFields {
                generation: u64::MAX / 2,
                slot,
                page_size_bytes: PAGE as u64,
                page_index: 0,
                len: PAGE as u32,
                pinned: false,
                bucket: &new.bucket,
                key: &new.key,
                version: &new.version,
                crcs: &crcs,
            },
        )
        .unwrap();
        let layout = Layout::for_capacity(c.capacity_bytes, c.page_size_bytes);
        poke(&path, layout.header_offset(slot), &sector);
        let t = open(c).await;
        let kn = PageKey::new(&new, 0);
        assert!(!t.contains(&PageKey::new(&old, 0)));
        assert!(t.contains(&kn), "the torn header itself is valid");
        assert!(t.read(&kn, 5000, 3000).await.unwrap().is_none(), "torn page served");
        assert!(!t.contains(&kn), "a failed page is dropped");
        assert!(t.read(&kn, 0, 1).await.unwrap().is_none());
        // Writing the page for real afterwards works.
        t.write(&new, 0, new_data.clone(), false).await.unwrap();
        assert_eq!(t.read(&kn, 0, PAGE).await.unwrap().unwrap(), new_data);
        t.close().await;
    }

    async fn remove_object_persists(engine: IoEngineChoice) {
        let d = dir();
        let path = d.path().join("p");
        let c = cfg(&path, 8, engine);
        let (a, b) = (obj("gone"), obj("kept"));
        {
            let t = open(c.clone()).await;
            for i in 0..3 {
                t.write(&a, i, content(&a, i, 4096), i == 0).await.unwrap();
            }
            t.write(&b, 0, content(&b, 0, 4096), false).await.unwrap();
            t.remove_object(a.hash());
            assert_eq!(t.page_count(), 1);
            assert_eq!(t.pinned_bytes(), 0);
            assert_eq!(t.used_bytes(), 4096);
            for i in 0..3 {
                assert!(t.read(&PageKey::new(&a, i), 0, 1).await.unwrap().is_none());
            }
            t.close().await;
        }
        let t = open(c).await;
        assert_eq!(t.page_count(), 1);
        assert!(t.contains(&PageKey::new(&b, 0)));
        assert!(!t.contains(&PageKey::new(&a, 0)));
        // The freed slots are usable without evicting `kept`.
        for i in 0..7 {
            let o = obj(&format!("x{i}"));
            t.write(&o, 0, content(&o, 0, 10), false).await.unwrap();
        }
        assert!(t.contains(&PageKey::new(&b, 0)));
        t.close().await;
    }

    async fn resize_keeps_pages(engine: IoEngineChoice) {
        let d = dir();
        let path = d.path().join("p");
        let objs: Vec<_> = (0..4).map(|i| obj(&format!("s{i}"))).collect();
        {
            let t = open(cfg(&path, 4, engine)).await;
            for o in &objs {
                t.write(o, 0, content(o, 0, 777), false).await.unwrap();
            }
            t.close().await;
        }
        {
            let t = open(cfg(&path, 10, engine)).await;
            assert_eq!(t.page_count(), 4);
            assert_eq!(t.capacity_bytes(), 10 * PAGE as u64);
            t.close().await;
        }
        let t = open(cfg(&path, 2, engine)).await;
        // Only the pages in the first two slots remain, and they read correctly.
        assert_eq!(t.page_count(), 2);
        let mut present = 0;
        for o in &objs {
            if let Some(got) = t.read(&PageKey::new(o, 0), 0, 777).await.unwrap() {
                assert_eq!(got, content(o, 0, 777));
                present += 1;
            }
        }
        assert_eq!(present, 2);
        t.close().await;
        // A different page size starts empty.
        let mut c = cfg(&path, 4, engine);
        c.page_size_bytes = 8192;
        let t = DiskTier::open(c).await.unwrap();
        assert_eq!(t.page_count(), 0);
        t.close().await;
    }

    /// Without O_DIRECT (as on a filesystem that refuses it) everything still works,
    /// including crc checks against bytes changed behind the store's back.
    async fn buffered_fallback_works(engine: IoEngineChoice) {
        let d = dir();
        let path = d.path().join("p");
        let c = cfg(&path, 4, engine);
        let o = obj("buffered");
        let data = content(&o, 0, 9000);
        {
            let t = DiskTier::open_with(c.clone(), false).await.unwrap();
            t.write(&o, 0, data.clone(), true).await.unwrap();
            assert_eq!(t.read(&PageKey::new(&o, 0), 17, 8000).await.unwrap().unwrap(), data.slice(17..8017));
            t.close().await;
        }
        let t = DiskTier::open_with(c.clone(), false).await.unwrap();
        let k = PageKey::new(&o, 0);
        assert_eq!(t.pinned_bytes(), 9000);
        assert_eq!(t.read(&k, 0, 9000).await.unwrap().unwrap(), data);
        let layout = Layout::for_capacity(c.capacity_bytes, c.page_size_bytes);
        let at = layout.data_offset(t.slot_of(&k).unwrap()) + 8999;
        poke(&path, at, &[peek(&path, at) ^ 0x80]);
        assert!(t.read(&k, 8990, 10).await.unwrap().is_none());
        t.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auto_picks_uring_here_and_drop_does_not_hang() {
        let d = dir();
        let mut c = cfg(&d.path().join("p"), 4, IoEngineChoice::Auto);
        c.rings = 0;
        let t = DiskTier::open(c).await.unwrap();
        if !uring_unavailable() {
            assert_eq!(t.engine_name(), "uring");
        }
        let o = obj("x");
        t.write(&o, 0, content(&o, 0, 10), false).await.unwrap();
        // Dropped without close: engine threads must wind down by themselves.
        drop(t);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_writes_leave_no_claims() {
        let d = dir();
        let t = Arc::new(open(cfg(&d.path().join("p"), 4, IoEngineChoice::Pread)).await);
        for i in 0..20 {
            let o = obj(&format!("c{i}"));
            let fut = t.write(&o, 0, content(&o, 0, PAGE), false);
            // Drop some writes right after they start.
            let _ =
                tokio::time::timeout(Duration::from_micros(if i % 2 == 0 { 1 } else { 100_000 }), fut).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Every slot is either live or free again: four more writes fit.
        for i in 0..4 {
            let o = obj(&format!("after{i}"));
            t.write(&o, 0, content(&o, 0, 10), false).await.unwrap();
            assert!(t.contains(&PageKey::new(&o, 0)));
        }
        assert_eq!(t.page_count(), 4);
        t.close().await;
    }
}
