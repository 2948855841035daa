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

use crate::membership::{Fleet, Member};
use crate::metrics::{ROUTER_FAILOVERS, ROUTER_HEDGES};
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
    alt.stats.hedge.increment(1);
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
        m.stats.head.increment(1);
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

/// The first read of an object this member knows nothing about: `want` (inside one page)
/// is asked of that page's owners without a version — failover and hedging as for any page
/// read — and the answer's headers describe the object (remembered, as a HEAD's would be),
/// so the read needs no HEAD first. Returns the description, the answer's body (the bytes
/// of `want` up to the object's end) and who gives it.
pub async fn first_read(
    fleet: &Fleet,
    bucket: &str,
    key: &str,
    page: u64,
    want: ByteRange,
) -> Result<(Arc<ObjectInfo>, BodyStream, Arc<Member>), UpstreamError> {
    let owners = fleet.owners(bucket, key, page, fleet.cfg.failover_attempts);
    let mut last = None;
    fleet.retry_budget.deposit();
    let mut i = 0;
    let current = ReadVersion::default();
    while let Some(m) = owners.get(i) {
        if i > 0 && !fleet.retry_budget.withdraw() {
            break;
        }
        m.stats.get.increment(1);
        let started = std::time::Instant::now();
        let (res, served_by) = first_answer(fleet, m, owners.get(i + 1), |n| {
            let current = &current;
            async move { fleet.nodes.get_ranges(&n, bucket, key, &[want], current).await }
        })
        .await;
        served_by.stats.upstream_latency.record(lakecache_common::metrics::ms_since(started));
        i += if Arc::ptr_eq(&served_by, m) { 1 } else { 2 };
        match res {
            Ok((info, body)) => {
                let info = Arc::new(info);
                fleet.meta.put(bucket, key, info.clone());
                return Ok((info, body, served_by));
            }
            Err(e) if e.is_node_fault() => {
                fleet.report_failure(&served_by);
                metrics::counter!(ROUTER_FAILOVERS).increment(1);
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(no_node))
}

fn no_node() -> UpstreamError {
    UpstreamError::NoAnswer { node: "-".into(), reason: "no cache node is available".into() }
}

/// A read's bytes as its consumer pulls them: no task and no channel between the node's
/// answer and whoever sends the bytes on.
pub type ReadStream = std::pin::Pin<Box<dyn futures::Stream<Item = ReadItem> + Send + Sync>>;

/// Streams `range` of the object at `version`, one run of same-owner pages after another.
/// A run is asked of its owner when the previous one has been sent; a node that fails
/// before or during a run is replaced by the next owner from where it stopped.
pub fn stream(
    fleet: &Arc<Fleet>,
    geometry: PageGeometry,
    bucket: &str,
    key: &str,
    version: ReadVersion,
    range: ByteRange,
) -> ReadStream {
    stream_from(fleet, geometry, bucket, key, version, range, None)
}

/// [`stream`], with the first run's bytes up to `first.1` already being answered by the
/// body `first.0` (a [`first_read`]'s); the rest of the run is asked for when it is spent.
pub fn stream_from(
    fleet: &Arc<Fleet>,
    geometry: PageGeometry,
    bucket: &str,
    key: &str,
    version: ReadVersion,
    range: ByteRange,
    first: Option<(BodyStream, u64, Arc<Member>)>,
) -> ReadStream {
    fleet.retry_budget.deposit();
    let replicas = fleet.replicas_for(key);
    // Which replica this read starts at: spreads a hot key's reads over its replicas.
    let spread = if replicas > 1 && fleet.spread_reads(bucket, key) {
        READ_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % replicas
    } else {
        0
    };
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
            // A run is one request: at most MAX_ACCOUNTED_READ, so its node starts every
            // origin fetch it needs before answering, and its account is whole.
            Some((r, o))
                if o.first().map(|m| &m.cfg.id) == owners.first().map(|m| &m.cfg.id)
                    && r.end == start
                    && end - r.start <= lakecache_common::wire::MAX_ACCOUNTED_READ =>
            {
                r.end = end
            }
            _ => runs.push((ByteRange { start, end }, owners)),
        }
    }
    let mut runs = runs.into_iter();
    let run = first.and_then(|(body, body_end, m)| {
        let (r, owners) = runs.next()?;
        Some(Run { end: r.end, owners, pos: r.start, next: 0, last: None, body: Some((body, m, body_end)) })
    });
    let reader = Reader {
        fleet: fleet.clone(),
        bucket: bucket.to_string(),
        key: key.to_string(),
        version,
        runs,
        run,
        done: false,
    };
    Box::pin(futures::stream::unfold(reader, |mut r| async move {
        let item = r.next().await?;
        Some((item, r))
    }))
}

/// Where a read stands: the runs still to send and the one being sent.
struct Reader {
    fleet: Arc<Fleet>,
    bucket: String,
    key: String,
    version: ReadVersion,
    runs: std::vec::IntoIter<(ByteRange, Vec<Arc<Member>>)>,
    run: Option<Run>,
    done: bool,
}

/// One run of same-owner pages: its owners in order, how far it has been sent, who is
/// sending it now.
struct Run {
    end: u64,
    owners: Vec<Arc<Member>>,
    pos: u64,
    /// The owner asked next.
    next: usize,
    last: Option<UpstreamError>,
    /// The answer being sent, who gives it, and where its bytes end.
    body: Option<(BodyStream, Arc<Member>, u64)>,
}

impl Reader {
    /// The read's next piece; after an error, nothing more.
    async fn next(&mut self) -> Option<ReadItem> {
        if self.done {
            return None;
        }
        let res = self.advance().await;
        match res {
            Some(Ok(b)) => Some(Ok(b)),
            None => {
                self.done = true;
                None
            }
            Some(Err(e)) => {
                self.done = true;
                if e.is_version_mismatch() {
                    // The object changed behind this reader (a write elsewhere) and no
                    // node still holds the version the read started on.
                    self.fleet.meta.forget(&self.bucket, &self.key);
                }
                Some(Err(e))
            }
        }
    }

    async fn advance(&mut self) -> Option<ReadItem> {
        let Reader { fleet, bucket, key, version, runs, run, .. } = self;
        loop {
            let Some(r) = run else {
                let (range, owners) = runs.next()?;
                *run =
                    Some(Run { end: range.end, owners, pos: range.start, next: 0, last: None, body: None });
                continue;
            };
            if r.pos >= r.end {
                *run = None;
                continue;
            }
            if let Some((body, m, body_end)) = &mut r.body {
                let cut = match body.next().await {
                    Some(Ok(c)) => {
                        let take = c.len().min((*body_end - r.pos) as usize);
                        r.pos += take as u64;
                        m.stats.upstream_bytes.increment(take as u64);
                        crate::account::add(|a| &a.fleet_bytes, take as u64);
                        if r.pos >= *body_end {
                            // Spent (a first read's answer may cover less than the run:
                            // the rest is asked for next, of the same owners).
                            r.body = None;
                        }
                        return Some(Ok(c.slice(..take)));
                    }
                    Some(Err(e)) => e,
                    None => UpstreamError::NoAnswer {
                        node: m.cfg.id.clone(),
                        reason: format!("the body ended {} bytes early", *body_end - r.pos),
                    },
                };
                // A body that broke off is not held against the node: a node cuts a body
                // when its own origin fails mid-read, which another owner may get past. A
                // dead node is found by the health checks.
                r.body = None;
                if !fleet.retry_budget.withdraw() {
                    return Some(Err(cut));
                }
                metrics::counter!(ROUTER_FAILOVERS).increment(1);
                r.last = Some(cut);
                continue;
            }
            let Some(m) = r.owners.get(r.next).cloned() else {
                return Some(Err(r.last.take().unwrap_or_else(no_node)));
            };
            m.stats.get.increment(1);
            let started = std::time::Instant::now();
            let want = ByteRange { start: r.pos, end: r.end };
            let (fleet_ref, bucket_ref, key_ref, version_ref) = (&**fleet, &**bucket, &**key, &*version);
            let (res, served_by) = first_answer(fleet_ref, &m, r.owners.get(r.next + 1), |n| async move {
                fleet_ref.nodes.get(&n, bucket_ref, key_ref, want, version_ref).await
            })
            .await;
            // The next owner to ask if this answer fails: after the hedge if it answered.
            r.next += if Arc::ptr_eq(&served_by, &m) { 1 } else { 2 };
            served_by.stats.upstream_latency.record(lakecache_common::metrics::ms_since(started));
            match res {
                Ok(b) => r.body = Some((b, served_by, r.end)),
                Err(e) if e.is_node_fault() => {
                    fleet.report_failure(&served_by);
                    if !fleet.retry_budget.withdraw() {
                        return Some(Err(e));
                    }
                    metrics::counter!(ROUTER_FAILOVERS).increment(1);
                    r.last = Some(e);
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
