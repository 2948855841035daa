//! Origin fetches: one ranged GET for a run of adjacent missing pages, cut into pages as
//! the bytes arrive so that each waiting reader is released as soon as its page is whole;
//! the queue that writes fetched pages to the disk tier off the request path; and the
//! pass-through stream for keys that are never cached.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use lakecache_common::page::{ByteRange, PageGeometry};
use object_store::{GetOptions, GetRange};
use tokio::sync::{mpsc, oneshot};

use super::{Cache, CacheError, ObjectHandle, PageFuture, PageResult};
use crate::metrics as m;
use crate::origin::{OriginError, Origins};
use crate::tier::disk::{DiskError, DiskTier, ObjectId};

pub(super) struct RunFetch {
    pub obj: Arc<ObjectHandle>,
    pub first: u64,
    pub senders: Vec<oneshot::Sender<PageResult>>,
    pub geometry: PageGeometry,
}

impl RunFetch {
    pub async fn run(self, cache: &Cache) {
        let RunFetch { obj, first, senders, geometry, .. } = self;
        let count = senders.len() as u64;
        let start = geometry.page_bytes(first, obj.meta.size).start;
        let end = geometry.page_bytes(first + count - 1, obj.meta.size).end;
        let senders = senders.into_iter();
        let index = first;
        let fail_rest =
            |index: u64, senders: std::vec::IntoIter<oneshot::Sender<PageResult>>, e: CacheError| {
                fail_pages(cache, &obj, index, senders, e)
            };
        if start >= end {
            fail_rest(index, senders, CacheError::Internal("empty page run".into()));
            return;
        }
        let opts = GetOptions {
            range: Some(GetRange::Bounded(start..end)),
            // The bytes must be of the version the pages are keyed by.
            if_match: obj.meta.origin_etag.clone(),
            ..Default::default()
        };
        let result = cache.origins.call("get", obj.store.get_opts(&obj.path, opts)).await;
        let r = match result {
            Ok(r) => r,
            Err(e @ (OriginError::Precondition | OriginError::NotFound)) => {
                tracing::debug!(bucket = %obj.bucket, key = %obj.key, error = %e, "object changed at the origin");
                fail_rest(index, senders, CacheError::Changed);
                return;
            }
            Err(e) => {
                fail_rest(index, senders, CacheError::Origin(e));
                return;
            }
        };
        if !same_version(&obj.meta, &r.meta) {
            // An origin that ignores If-Match (some S3-compatible servers do) answered with
            // another version: those bytes must not be cached or served as this one.
            tracing::debug!(bucket = %obj.bucket, key = %obj.key, "the origin answered another version");
            fail_rest(index, senders, CacheError::Changed);
            return;
        }
        if r.range != (start..end) {
            fail_rest(
                index,
                senders,
                CacheError::ShortRead { want: end - start, got: r.range.end - r.range.start },
            );
            return;
        }
        RunFetch { obj, first, senders: senders.collect(), geometry }.fill(cache, r).await;
    }

    /// Cuts an origin answer that holds exactly this run's pages (checked by whoever asked
    /// for it) into pages, releasing each page's readers as soon as it is whole.
    pub async fn fill(self, cache: &Cache, r: object_store::GetResult) {
        let RunFetch { obj, first, senders, geometry, .. } = self;
        let count = senders.len() as u64;
        let end = geometry.page_bytes(first + count - 1, obj.meta.size).end;
        let start = geometry.page_bytes(first, obj.meta.size).start;
        let mut senders = senders.into_iter();
        let mut index = first;
        let fail_rest =
            |index: u64, senders: std::vec::IntoIter<oneshot::Sender<PageResult>>, e: CacheError| {
                fail_pages(cache, &obj, index, senders, e)
            };
        let mut stream = r.into_stream();
        let page_len = |i: u64| {
            let b = geometry.page_bytes(i, obj.meta.size);
            (b.end - b.start) as usize
        };
        let mut buf = BytesMut::with_capacity(page_len(index));
        let timeout = cache.origins.timeout();
        while index < first + count {
            let chunk = match tokio::time::timeout(timeout, stream.next()).await {
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) => {
                    fail_rest(index, senders, CacheError::Origin(OriginError::from_store(e)));
                    return;
                }
                Ok(None) => {
                    let got = (index - first) * geometry.page_size_bytes() + buf.len() as u64;
                    fail_rest(index, senders, CacheError::ShortRead { want: end - start, got });
                    return;
                }
                Err(_) => {
                    fail_rest(
                        index,
                        senders,
                        CacheError::Origin(OriginError::Unavailable("origin body stalled".into())),
                    );
                    return;
                }
            };
            metrics::counter!(m::ORIGIN_BYTES).increment(chunk.len() as u64);
            let mut chunk: Bytes = chunk;
            while !chunk.is_empty() && index < first + count {
                let need = page_len(index) - buf.len();
                let take = need.min(chunk.len());
                buf.extend_from_slice(&chunk.split_to(take));
                if buf.len() == page_len(index) {
                    let page = std::mem::replace(&mut buf, BytesMut::new()).freeze();
                    let r: PageResult = Ok(page);
                    let pinned_write = cache.complete_page(&obj, index, &r);
                    if let Some(tx) = senders.next() {
                        let _ = tx.send(r);
                    }
                    // Pinned pages must land: the fetch waits for room in the disk queue
                    // (readers already have their page) instead of dropping them.
                    if let (Some(w), Some(q)) = (pinned_write, &cache.disk_tx) {
                        let _ = q.send(w).await;
                    }
                    index += 1;
                    if index < first + count {
                        buf = BytesMut::with_capacity(page_len(index));
                    }
                }
            }
        }
    }
}

/// Fails the pages from `index` on: each waiting reader learns `e`.
fn fail_pages(
    cache: &Cache,
    obj: &ObjectHandle,
    index: u64,
    senders: std::vec::IntoIter<oneshot::Sender<PageResult>>,
    e: CacheError,
) {
    for (i, tx) in (index..).zip(senders) {
        let r: PageResult = Err(e.clone());
        let _ = cache.complete_page(obj, i, &r);
        let _ = tx.send(r);
    }
}

/// Whether an origin answer is of the version the read is keyed by: same ETag where both
/// have one, and the same size.
fn same_version(want: &super::ObjectMeta, got: &object_store::ObjectMeta) -> bool {
    let etag_ok = match (&want.origin_etag, &got.e_tag) {
        (Some(a), Some(b)) => a.trim_matches('"') == b.trim_matches('"'),
        _ => true,
    };
    etag_ok && got.size == want.size
}

pub(super) fn failed(e: CacheError) -> PageFuture {
    futures::FutureExt::shared(futures::FutureExt::boxed(async move { Err(e) }))
}

pub(super) struct DiskWrite {
    id: Arc<ObjectId>,
    meta: Arc<super::ObjectMeta>,
    index: u64,
    page: Bytes,
    pinned: bool,
}

/// Pages reach the disk through a bounded queue: a full queue drops the write (the page is
/// then only in memory), so a slow disk never slows a reader down.
pub(super) fn spawn_disk_writer(
    disk: Arc<DiskTier>,
    journal: Arc<super::journal::Journal>,
    queue: usize,
) -> mpsc::Sender<DiskWrite> {
    let (tx, mut rx) = mpsc::channel::<DiskWrite>(queue.max(1));
    let concurrency = Arc::new(tokio::sync::Semaphore::new(32));
    tokio::spawn(async move {
        while let Some(w) = rx.recv().await {
            let Ok(permit) = concurrency.clone().acquire_owned().await else { break };
            // The object is named in the journal before its first page lands, so a page
            // recovered after a crash always has its metadata.
            if let Err(e) = journal.record(&w.id, &w.meta) {
                metrics::counter!(m::DISK_ERRORS).increment(1);
                tracing::warn!(error = %e, path = %journal.path().display(), "object journal write failed; page not written");
                continue;
            }
            let disk = disk.clone();
            tokio::spawn(async move {
                match disk.write(&w.id, w.index, w.page, w.pinned).await {
                    Ok(()) => {}
                    Err(DiskError::Full) => metrics::counter!(m::DISK_WRITES_DROPPED).increment(1),
                    Err(e) => {
                        metrics::counter!(m::DISK_ERRORS).increment(1);
                        tracing::warn!(error = %e, "disk tier write failed");
                    }
                }
                drop(permit);
            });
        }
    });
    tx
}

/// Queues an unpinned page for the disk, dropping it when the queue is full; a pinned
/// page is handed back for the caller to send with backpressure.
pub(super) fn enqueue_disk_write(
    tx: &mpsc::Sender<DiskWrite>,
    id: Arc<ObjectId>,
    meta: Arc<super::ObjectMeta>,
    index: u64,
    page: Bytes,
    pinned: bool,
) -> Option<DiskWrite> {
    let w = DiskWrite { id, meta, index, page, pinned };
    if pinned {
        return Some(w);
    }
    if tx.try_send(w).is_err() {
        metrics::counter!(m::DISK_WRITES_DROPPED).increment(1);
    }
    None
}

/// Streams a range straight from the origin (keys that are never cached).
pub(super) async fn stream_direct(
    origins: &Origins,
    obj: &ObjectHandle,
    range: ByteRange,
    tx: &mpsc::Sender<PageResult>,
) {
    if range.is_empty() {
        return;
    }
    let opts = GetOptions {
        range: Some(GetRange::Bounded(range.start..range.end)),
        if_match: obj.meta.origin_etag.clone(),
        ..Default::default()
    };
    if !super::spend::charge(range.len()) {
        let _ = tx.send(Err(CacheError::OverBudget)).await;
        return;
    }
    let r = match origins.call("get", obj.store.get_opts(&obj.path, opts)).await {
        Ok(r) => r,
        Err(e @ (OriginError::Precondition | OriginError::NotFound)) => {
            tracing::debug!(bucket = %obj.bucket, key = %obj.key, error = %e, "object changed at the origin");
            let _ = tx.send(Err(CacheError::Changed)).await;
            return;
        }
        Err(e) => {
            let _ = tx.send(Err(CacheError::Origin(e))).await;
            return;
        }
    };
    if !same_version(&obj.meta, &r.meta) {
        let _ = tx.send(Err(CacheError::Changed)).await;
        return;
    }
    let mut sent = 0u64;
    let mut stream = r.into_stream();
    let timeout = origins.timeout();
    loop {
        let item = match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Some(Ok(c))) => Ok(c),
            Ok(Some(Err(e))) => Err(CacheError::Origin(OriginError::from_store(e))),
            Ok(None) => break,
            Err(_) => Err(CacheError::Origin(OriginError::Unavailable("origin body stalled".into()))),
        };
        if let Ok(c) = &item {
            sent += c.len() as u64;
            metrics::counter!(m::ORIGIN_BYTES).increment(c.len() as u64);
            metrics::counter!(m::CACHE_SERVED_BYTES, "tier" => "origin").increment(c.len() as u64);
        }
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            return;
        }
    }
    if sent != range.len() {
        let _ = tx.send(Err(CacheError::ShortRead { want: range.len(), got: sent })).await;
    }
}
