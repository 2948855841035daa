//! How a read finds its bytes in the fleet, shared by the router's S3 surface and the
//! in-process client: metadata from the owner of page 0, then runs of consecutive pages
//! with the same owner, each read from its owner with failover to the next owners and
//! resumed where a failed node stopped. Every page read names the version resolved first
//! (`x-lakecache-read-version`), so a node serves that version from what it holds — a read
//! completes with the version it started on — or answers 412, never other bytes.
//!
//! Only node faults (no answer, a node's own 5xx) fail over and count against a node; a
//! client's error or the origin's is the answer (see `upstream`).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use lakecache_common::page::{ByteRange, PageGeometry};
use tokio::sync::mpsc;

use crate::membership::{Fleet, Member};
use crate::metrics::{
    ROUTER_FAILOVERS, ROUTER_HEDGES, ROUTER_REQUESTS, ROUTER_UPSTREAM_BYTES, ROUTER_UPSTREAM_LATENCY,
};
use crate::upstream::{BodyStream, ObjectInfo, ReadVersion, UpstreamError};

static READ_SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A read's bytes as they arrive, in order; an error ends it.
pub type ReadItem = Result<Bytes, UpstreamError>;

/// The first answer to a call: from `m`, or — if `m` is silent for `hedge_after` — from
/// whichever of `m` and `alt` answers first. Returns the answer and who gave it.
async fn first_answer<T, F, Fut>(
    fleet: &Fleet,
    m: &Arc<Member>,
    alt: Option<&Arc<Member>>,
    call: F,
) -> (Result<T, UpstreamError>, Arc<Member>)
where
    F: Fn(Arc<Member>) -> Fut,
    Fut: std::future::Future<Output = Result<T, UpstreamError>>,
{
    let (Some(delay), Some(alt)) = (fleet.cfg.hedge_after, alt) else {
        return (call(m.clone()).await, m.clone());
    };
    let primary = call(m.clone());
    tokio::pin!(primary);
    tokio::select! {
        r = &mut primary => return (r, m.clone()),
        () = tokio::time::sleep(delay) => {}
    }
    metrics::counter!(ROUTER_HEDGES).increment(1);
    metrics::counter!(ROUTER_REQUESTS, "node" => alt.cfg.id.clone(), "op" => "hedge").increment(1);
    let secondary = call(alt.clone());
    tokio::select! {
        r = primary => (r, m.clone()),
        r = secondary => (r, alt.clone()),
    }
}

/// Metadata from the owner of the object's first page, with failover (on node faults
/// only) and hedging as for page reads.
pub async fn head(fleet: &Fleet, bucket: &str, key: &str) -> Result<Arc<ObjectInfo>, UpstreamError> {
    if let Some(m) = fleet.meta.get(bucket, key) {
        return Ok(m);
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
        let (res, served_by) =
            first_answer(
                fleet,
                m,
                owners.get(i + 1),
                |n| async move { fleet.nodes.head(&n, bucket, key).await },
            )
            .await;
        if !Arc::ptr_eq(&served_by, m) {
            i += 1;
        }
        match res {
            Ok(info) => {
                let info = Arc::new(info);
                fleet.meta.put(bucket, key, info.clone());
                return Ok(info);
            }
            Err(e) if e.is_node_fault() => {
                fleet.report_failure(&served_by);
                metrics::counter!(ROUTER_FAILOVERS).increment(1);
                last = Some(e);
                i += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(no_node))
}

fn no_node() -> UpstreamError {
    UpstreamError::NoAnswer { node: "-".into(), reason: "no cache node is available".into() }
}

/// Streams `range` of the object at `version`, one run of same-owner pages after another.
pub fn stream(
    fleet: &Arc<Fleet>,
    geometry: PageGeometry,
    bucket: &str,
    key: &str,
    version: ReadVersion,
    range: ByteRange,
) -> mpsc::Receiver<ReadItem> {
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
    tokio::spawn(async move {
        for (r, owners) in runs {
            match send_run(&fleet, &bucket, &key, &version, r, &owners, &tx).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    if e.is_version_mismatch() {
                        // The object changed behind this router (a write elsewhere) and no
                        // node still holds the version the read started on.
                        fleet.meta.forget(&bucket, &key);
                    }
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    rx
}

/// Sends one run, failing over between owners on node faults and resuming where the last
/// one stopped. `Ok(false)`: the reader went away.
async fn send_run(
    fleet: &Fleet,
    bucket: &str,
    key: &str,
    version: &ReadVersion,
    run: ByteRange,
    owners: &[Arc<Member>],
    tx: &mpsc::Sender<ReadItem>,
) -> Result<bool, UpstreamError> {
    let mut pos = run.start;
    let mut last: Option<UpstreamError> = None;
    let mut i = 0;
    while pos < run.end {
        let Some(m) = owners.get(i) else {
            return Err(last.unwrap_or_else(no_node));
        };
        metrics::counter!(ROUTER_REQUESTS, "node" => m.cfg.id.clone(), "op" => "get").increment(1);
        let started = std::time::Instant::now();
        let want = ByteRange { start: pos, end: run.end };
        let (res, served_by) = first_answer(fleet, m, owners.get(i + 1), |n| async move {
            fleet.nodes.get(&n, bucket, key, want, version).await
        })
        .await;
        if !Arc::ptr_eq(&served_by, m) {
            // The hedge answered: continue (and fail over) from its position.
            i += 1;
        }
        let m = &served_by;
        metrics::histogram!(ROUTER_UPSTREAM_LATENCY, "node" => m.cfg.id.clone())
            .record(lakecache_common::metrics::ms_since(started));
        let mut body: BodyStream = match res {
            Ok(b) => b,
            Err(e) if e.is_node_fault() => {
                fleet.report_failure(m);
                if !fleet.retry_budget.withdraw() {
                    return Err(e);
                }
                metrics::counter!(ROUTER_FAILOVERS).increment(1);
                last = Some(e);
                i += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut cut = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => {
                    let take = c.len().min((run.end - pos) as usize);
                    pos += take as u64;
                    metrics::counter!(ROUTER_UPSTREAM_BYTES, "node" => m.cfg.id.clone())
                        .increment(take as u64);
                    if tx.send(Ok(c.slice(..take))).await.is_err() {
                        return Ok(false);
                    }
                    if pos >= run.end {
                        break;
                    }
                }
                Err(e) => {
                    cut = Some(e);
                    break;
                }
            }
        }
        if pos < run.end {
            // A body that broke off is not held against the node: a node cuts a body when
            // its own origin fails mid-read, which another owner may get past. A dead node
            // is found by the health checks.
            let e = cut.unwrap_or_else(|| UpstreamError::NoAnswer {
                node: m.cfg.id.clone(),
                reason: format!("the body ended {} bytes early", run.end - pos),
            });
            if !fleet.retry_budget.withdraw() {
                return Err(e);
            }
            metrics::counter!(ROUTER_FAILOVERS).increment(1);
            last = Some(e);
            i += 1;
        }
    }
    Ok(true)
}
