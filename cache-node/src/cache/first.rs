//! The first read of an object this node knows nothing about, without a HEAD: the ranged
//! GET of the read's first pages (at most `max_fetch_pages`) describes the object as a
//! HEAD would — size, ETag, Last-Modified and the stored attributes — and its bytes become
//! those pages. One origin request where a HEAD and a GET were two. (A mutable key whose
//! pages the disk tier recovered after a restart has its first pages fetched again, where
//! a HEAD and a disk read did: the same number of requests, more bytes.)
//!
//! The pages are registered as in flight before the metadata is handed out, so the reads
//! waiting for it join that GET instead of starting their own. A GET the origin cannot
//! answer with bytes (an empty object, a range past the end, an origin that will not say
//! what it holds) falls back to the HEAD; errors that say the object is missing or the
//! origin is down are the answer, as a HEAD's would be.

use std::sync::Arc;

use futures::FutureExt;
use lakecache_common::page::ByteRange;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};

use super::meta::{ObjectAttrs, ObjectMeta, Probe};
use super::{Cache, CacheError, PageKey, PageResult, fetch, spend};
use crate::origin::OriginError;
use crate::policy::KeyClass;

impl Cache {
    /// The probe that resolves `key` by reading `first` (the read's first range; its end
    /// may run past the object's). None for a key never cached (it has its HEAD and its
    /// pass-through GET) or a caller that does not read.
    pub(super) fn first_read(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        path: &Path,
        store: &Arc<dyn ObjectStore>,
        class: KeyClass,
        first: Option<ByteRange>,
    ) -> Option<Probe> {
        let want = first.filter(|_| class != KeyClass::NeverCache)?;
        let (this, bucket, key, path, store) =
            (self.clone(), bucket.to_string(), key.to_string(), path.clone(), store.clone());
        async move {
            let ps = this.cfg.geometry.page_size_bytes();
            let run = this.cfg.max_fetch_pages.max(1);
            let first = want.start / ps;
            let last = if want.is_empty() { first } else { (want.end - 1) / ps };
            let (first, last) = if lakecache_common::ring::is_index_file(&key) {
                // An index file's pieces are read scattered: the probe reads the aligned run
                // around the read's first page — a small index file whole — and the rest
                // of an index file fetched whole follows at once (fill_first).
                let from = first - first % run;
                (from, from + run - 1)
            } else {
                (first, last.min(first + run - 1))
            };
            let (start, end) = (first * ps, (last + 1).saturating_mul(ps));
            // (The GET was charged as the metadata's request; its bytes are added once the
            // answer says how many there are.)
            let mut opts = GetOptions { range: Some(GetRange::Bounded(start..end)), ..Default::default() };
            // The object's stored attributes too, which a page fetch does not need.
            opts.extensions.insert(crate::origin::WantAttributes);
            let r = match this.origins.call("get", store.get_opts(&path, opts)).await {
                Ok(r) => r,
                Err(OriginError::NotFound) => return Err(this.origins.missing(&bucket, &store).await.into()),
                Err(OriginError::InvalidKey(_) | OriginError::KeyConflict(_) | OriginError::KeyTooLong(_)) => {
                    return Err(OriginError::NotFound.into());
                }
                Err(e @ (OriginError::NoSuchBucket | OriginError::AccessDenied | OriginError::TimedOut(_))) => {
                    return Err(e.into());
                }
                // Anything else — an empty object, a range past the end (which a local origin
                // reports as a failure of its own), an origin that will not answer a range —
                // is asked again as a HEAD, which is charged as a request of its own; if the
                // origin is down, the HEAD says so.
                Err(e) => {
                    tracing::debug!(%bucket, %key, error = %e, "first read could not be a GET; asking with a HEAD");
                    if !spend::charge(0) {
                        return Err(CacheError::OverBudget);
                    }
                    return super::meta::head(&this.origins, &store, &bucket, &path).await;
                }
            };
            spend::add_bytes(r.range.end - r.range.start);
            let meta = ObjectMeta::from_store(&r.meta, ObjectAttrs::from_store(&r.attributes));
            if meta.size == 0 || start >= meta.size || r.range != (start..end.min(meta.size)) {
                // Not the bytes asked for: the metadata stands, the bytes are not used.
                return Ok(meta);
            }
            this.fill_first(&bucket, &key, path, store, class, &meta, first, r);
            Ok(meta)
        }
        .boxed()
        .into()
    }

    /// Hands the answer of a first read to a fetch of its pages, registered as in flight —
    /// unless one of them is being fetched already (then the bytes are not used).
    #[allow(clippy::too_many_arguments)]
    fn fill_first(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        path: Path,
        store: Arc<dyn ObjectStore>,
        class: KeyClass,
        meta: &ObjectMeta,
        first: u64,
        r: object_store::GetResult,
    ) {
        let g = self.cfg.geometry;
        let last = (r.range.end - 1) / g.page_size_bytes();
        let obj = self.handle(bucket, key, path, store, Arc::new(meta.clone()), class);
        let mut senders = Vec::new();
        {
            let mut inflight = self.inflight.lock();
            if (first..=last).any(|i| inflight.contains_key(&PageKey { object: obj.id.hash(), index: i })) {
                return;
            }
            for i in first..=last {
                let k = PageKey { object: obj.id.hash(), index: i };
                let (tx, rx) = tokio::sync::oneshot::channel::<PageResult>();
                let fut = async move {
                    rx.await.unwrap_or_else(|_| Err(CacheError::Internal("page fetch abandoned".into())))
                }
                .boxed()
                .shared();
                inflight.insert(k, fut);
                senders.push(tx);
            }
        }
        let job = fetch::RunFetch { obj: obj.clone(), first, senders, geometry: g };
        let this = self.clone();
        tokio::spawn(async move { job.fill(&this, r).await });
        if let Some(end) = self.whole(&obj) {
            self.plan(&obj, 0, end);
        }
    }
}
