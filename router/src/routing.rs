//! How a read finds its bytes in the fleet, shared by the router's S3 surface and the
//! in-process client: metadata from the owner of page 0, then runs of consecutive pages
//! with the same owner, each read from its owner with failover to the next owners and
//! resumed where a failed node stopped. Every page read carries `If-Match` with the
//! version resolved first, so a node holding stale metadata answers 412 instead of old
//! bytes; that node is told to forget the object and asked again.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use lakecache_common::page::{ByteRange, PageGeometry};
use object_store::path::Path;
use object_store::{GetOptions, GetRange};
use tokio::sync::mpsc;

use crate::membership::{Fleet, Member};
use crate::proxy::{ROUTER_FAILOVERS, ROUTER_REQUESTS};

pub const ROUTER_UPSTREAM_BYTES: &str = "router_upstream_bytes_total";
pub const ROUTER_UPSTREAM_LATENCY: &str = "router_upstream_first_byte_milliseconds";
pub const ROUTER_HEDGES: &str = "router_upstream_hedges_total";

static READ_SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The first answer to a read: from `m`, or — if `m` is silent for `hedge_after` — from
/// whichever of `m` and `alt` answers first. Returns the answer and who gave it.
async fn first_answer(
    fleet: &Fleet,
    bucket: &str,
    path: &Path,
    opts: GetOptions,
    m: &Arc<Member>,
    alt: Option<&Arc<Member>>,
) -> (object_store::Result<object_store::GetResult>, Arc<Member>) {
    let primary_store = match fleet.store(m, bucket) {
        Ok(s) => s,
        Err(e) => return (Err(e), m.clone()),
    };
    let (Some(delay), Some(alt)) = (fleet.cfg.hedge_after, alt) else {
        return (primary_store.get_opts(path, opts).await, m.clone());
    };
    let primary = primary_store.get_opts(path, opts.clone());
    tokio::pin!(primary);
    tokio::select! {
        r = &mut primary => return (r, m.clone()),
        () = tokio::time::sleep(delay) => {}
    }
    metrics::counter!(ROUTER_HEDGES).increment(1);
    let alt_store = match fleet.store(alt, bucket) {
        Ok(s) => s,
        Err(_) => return (primary.await, m.clone()),
    };
    metrics::counter!(ROUTER_REQUESTS, "node" => alt.cfg.id.clone(), "op" => "get").increment(1);
    let secondary = alt_store.get_opts(path, opts);
    tokio::select! {
        r = primary => (r, m.clone()),
        r = secondary => (r, alt.clone()),
    }
}

/// Metadata (and Content-Type) from the owner of the object's first page, with failover
/// and (if configured) hedging, as for page reads.
pub async fn head(
    fleet: &Fleet,
    bucket: &str,
    path: &Path,
) -> Result<(object_store::ObjectMeta, Option<String>), object_store::Error> {
    let key = path.as_ref();
    if let Some(m) = fleet.meta.get(bucket, key) {
        return Ok((*m).clone());
    }
    let owners = fleet.owners(bucket, key, 0, fleet.cfg.failover_attempts);
    let mut last = None;
    fleet.retry_budget.deposit();
    let mut i = 0;
    while let Some(m) = owners.get(i) {
        if i > 0 && !fleet.retry_budget.withdraw() {
            break;
        }
        metrics::counter!(ROUTER_REQUESTS, "node" => m.cfg.id.clone(), "op" => "head").increment(1);
        let opts = GetOptions { head: true, ..Default::default() };
        let (res, served_by) = first_answer(fleet, bucket, path, opts, m, owners.get(i + 1)).await;
        if !Arc::ptr_eq(&served_by, m) {
            i += 1;
        }
        match res {
            Ok(r) => {
                let ct = r.attributes.get(&object_store::Attribute::ContentType).map(|v| v.to_string());
                fleet.meta.put(bucket, key, (r.meta.clone(), ct.clone()));
                return Ok((r.meta, ct));
            }
            Err(e) if is_node_failure(&e) => {
                fleet.report_failure(&served_by);
                metrics::counter!(ROUTER_FAILOVERS).increment(1);
                last = Some(e);
                i += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| object_store::Error::Generic {
        store: "lakecache",
        source: "no cache node is available".into(),
    }))
}

/// Streams `range` of the object, one run of same-owner pages after another. `etag` is
/// the version the pages must be of.
pub fn stream(
    fleet: &Arc<Fleet>,
    geometry: PageGeometry,
    bucket: &str,
    key: &str,
    etag: Option<String>,
    range: ByteRange,
) -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(4);
    fleet.retry_budget.deposit();
    let replicas = fleet.replicas_for(key);
    // Which replica this read starts at: spreads a hot key's reads over its replicas.
    let spread =
        if replicas > 1 { READ_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % replicas } else { 0 };
    let mut runs: Vec<(ByteRange, Vec<Arc<Member>>)> = Vec::new();
    for s in geometry.slices(range.start..range.end) {
        let mut owners = fleet.owners(bucket, key, s.index, fleet.cfg.failover_attempts.max(replicas));
        let r = replicas.min(owners.len());
        if r > 1 {
            owners[..r].rotate_left(spread % r);
        }
        let start = s.index * geometry.page_size_bytes() + s.offset_in_page as u64;
        let end = start + s.len as u64;
        match runs.last_mut() {
            Some((r, o))
                if o.first().map(|m| &m.cfg.id) == owners.first().map(|m| &m.cfg.id) && r.end == start =>
            {
                r.end = end
            }
            _ => runs.push((ByteRange { start, end }, owners)),
        }
    }
    let fleet = fleet.clone();
    let (bucket, key) = (bucket.to_string(), key.to_string());
    let etag = etag.map(|e| format!("\"{}\"", e.trim_matches('"')));
    tokio::spawn(async move {
        for (r, owners) in runs {
            if !send_run(&fleet, &bucket, &key, etag.as_deref(), r, &owners, &tx).await {
                return;
            }
        }
    });
    rx
}

/// Sends one run, failing over between owners and resuming where the last one stopped.
/// Returns false when the response is over (error sent or client gone).
pub(crate) async fn send_run(
    fleet: &Fleet,
    bucket: &str,
    key: &str,
    etag: Option<&str>,
    run: ByteRange,
    owners: &[Arc<Member>],
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> bool {
    let Ok(path) = Path::parse(key) else { return false };
    let mut pos = run.start;
    let mut stale_retry = true;
    let mut i = 0;
    while pos < run.end {
        let Some(m) = owners.get(i) else {
            let _ = tx.send(Err(std::io::Error::other("no cache node could serve the range"))).await;
            return false;
        };
        metrics::counter!(ROUTER_REQUESTS, "node" => m.cfg.id.clone(), "op" => "get").increment(1);
        let opts = GetOptions {
            range: Some(GetRange::Bounded(pos..run.end)),
            if_match: etag.map(str::to_string),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let (res, served_by) = first_answer(fleet, bucket, &path, opts, m, owners.get(i + 1)).await;
        if !Arc::ptr_eq(&served_by, m) {
            // The hedge answered: continue (and fail over) from its position.
            i += 1;
        }
        let m = &served_by;
        metrics::histogram!(ROUTER_UPSTREAM_LATENCY, "node" => m.cfg.id.clone())
            .record(lakecache_cache_node::metrics::ms_since(started));
        let mut body = match res {
            Ok(r) => r.into_stream(),
            Err(object_store::Error::Precondition { .. }) if stale_retry => {
                // The node holds an older version than the router resolved: make it forget.
                stale_retry = false;
                fleet.invalidate_on(m, bucket, key).await;
                continue;
            }
            Err(object_store::Error::Precondition { .. }) => {
                // Still not that version: the object changed behind this router (a write
                // through another router). Forget it here; the client's retry sees the new one.
                fleet.meta.forget(bucket, key);
                let _ = tx.send(Err(std::io::Error::other("the object changed during the read"))).await;
                return false;
            }
            Err(e) if is_node_failure(&e) => {
                fleet.report_failure(m);
                if !fleet.retry_budget.withdraw() {
                    let _ = tx.send(Err(std::io::Error::other("retry budget exhausted"))).await;
                    return false;
                }
                metrics::counter!(ROUTER_FAILOVERS).increment(1);
                i += 1;
                continue;
            }
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return false;
            }
        };
        let mut failed = false;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => {
                    let take = c.len().min((run.end - pos) as usize);
                    pos += take as u64;
                    metrics::counter!(ROUTER_UPSTREAM_BYTES, "node" => m.cfg.id.clone())
                        .increment(take as u64);
                    if tx.send(Ok(c.slice(..take))).await.is_err() {
                        return false;
                    }
                }
                Err(_) => {
                    fleet.report_failure(m);
                    failed = true;
                    break;
                }
            }
        }
        if failed || pos < run.end {
            if !fleet.retry_budget.withdraw() {
                let _ = tx.send(Err(std::io::Error::other("retry budget exhausted"))).await;
                return false;
            }
            metrics::counter!(ROUTER_FAILOVERS).increment(1);
            i += 1;
        }
    }
    true
}

pub fn is_node_failure(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { .. })
        && !e.to_string().contains("NoSuchBucket")
        && !e.to_string().contains("InvalidRange")
}
