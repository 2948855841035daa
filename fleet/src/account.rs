//! The I/O account of one piece of work — a search node's query — as it reads through the
//! fleet: what the reader asked for, what its own page cache answered, the page reads it
//! sent to cache nodes and what those reads cost at the origin (each node says so in
//! `wire::ORIGIN_REQUESTS`), and how long the work waited with I/O outstanding.
//!
//! The work runs inside [`scope`]; every layer below finds the account with [`current`]
//! (a task-local, so a task spawned for the work must carry it: the reader's object store
//! wrapper re-enters the scope on every call and every poll of a body).
//!
//! An account may carry a budget of origin requests. Each page read reserves the most it
//! could cost (its pages, plus a HEAD) from what is left, names that reservation to the
//! node as its `wire::ORIGIN_BUDGET`, and gives back what the node did not spend: reads in
//! flight together can never spend more than the budget, and a read the node cannot serve
//! within its share is refused before the origin is asked anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

tokio::task_local! {
    static ACCOUNT: Arc<IoAccount>;
}

/// Counters of one piece of work. Every field only grows.
#[derive(Debug, Default)]
pub struct IoAccount {
    budget: Option<u64>,
    /// Origin requests reserved by reads in flight (their worst case).
    reserved: AtomicU64,
    refused: AtomicBool,
    /// Object-store requests the reader made (lance's, above every cache).
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    /// Blocks the search node's page cache answered, missed, and the bytes it answered.
    pub page_cache_hits: AtomicU64,
    pub page_cache_misses: AtomicU64,
    pub page_cache_bytes: AtomicU64,
    /// Reads sent to cache nodes (page reads, HEADs, lists) and the bytes they returned.
    pub fleet_requests: AtomicU64,
    pub fleet_bytes: AtomicU64,
    /// Origin requests and bytes the cache nodes started for this work.
    pub origin_requests: AtomicU64,
    pub origin_bytes: AtomicU64,
    /// The origin requests by what they read ([`FileKind`]).
    origin_by_kind: [AtomicU64; 4],
    clock: Mutex<IoClock>,
}

/// What part of a Lance table a key is: where a query's origin requests go (opening the
/// table, its index, its rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Version manifests, the latest-version pointer, transactions, listings of them.
    Manifest = 0,
    /// Anything under `_indices/`.
    Index = 1,
    /// Data files and deletion files: the rows.
    Data = 2,
    Other = 3,
}

impl FileKind {
    pub fn of(key: &str) -> FileKind {
        let has = |seg: &str| key.starts_with(seg) || key.contains(&format!("/{seg}"));
        if has("_indices/") {
            FileKind::Index
        } else if has("data/") || has("_deletions/") {
            FileKind::Data
        } else if has("_versions/") || has("_transactions/") || key.ends_with("_latest.manifest") {
            FileKind::Manifest
        } else {
            FileKind::Other
        }
    }
}

/// Origin requests of one answer by [`FileKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ByKind {
    pub manifest: u64,
    pub index: u64,
    pub data: u64,
    pub other: u64,
}

/// Time with at least one request outstanding.
#[derive(Debug, Default)]
struct IoClock {
    outstanding: u32,
    since: Option<Instant>,
    total: Duration,
}

/// An [`IoAccount`] read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct IoSnapshot {
    pub requests: u64,
    pub bytes: u64,
    pub page_cache_hits: u64,
    pub page_cache_misses: u64,
    pub page_cache_bytes: u64,
    pub fleet_requests: u64,
    pub fleet_bytes: u64,
    pub origin_requests: u64,
    pub origin_bytes: u64,
    pub origin_requests_by_kind: ByKind,
    pub io_wait_us: u64,
}

impl IoAccount {
    pub fn new(budget: Option<u64>) -> Arc<Self> {
        Arc::new(Self { budget, ..Default::default() })
    }

    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Whether a node refused a read of this work for its budget.
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    pub fn mark_refused(&self) {
        self.refused.store(true, Ordering::Release);
    }

    /// Origin requests spent or reserved by reads in flight.
    fn committed(&self) -> u64 {
        self.origin_requests.load(Ordering::Acquire) + self.reserved.load(Ordering::Acquire)
    }

    /// Reserves up to `most` origin requests of what the budget has left; returns the
    /// reservation (`None`: no budget, nothing reserved).
    fn reserve(&self, most: u64) -> Option<u64> {
        let budget = self.budget?;
        let mut got = 0;
        let _ = self.reserved.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
            let spent = self.origin_requests.load(Ordering::Acquire);
            got = budget.saturating_sub(spent + r).min(most);
            Some(r + got)
        });
        Some(got)
    }

    fn release(&self, n: u64) {
        let _ =
            self.reserved.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| Some(r.saturating_sub(n)));
    }

    /// Counts `n` origin requests that read `kind`.
    pub fn add_origin(&self, kind: FileKind, n: u64) {
        self.origin_requests.fetch_add(n, Ordering::AcqRel);
        self.origin_by_kind[kind as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Whether one more origin request fits in the budget (always, without one).
    pub fn affordable(&self) -> bool {
        self.budget.is_none_or(|b| self.committed() < b)
    }

    /// One request started: the clock runs while any is outstanding.
    pub fn io_started(&self) {
        let mut c = self.clock.lock();
        if c.outstanding == 0 {
            c.since = Some(Instant::now());
        }
        c.outstanding += 1;
    }

    pub fn io_ended(&self) {
        let mut c = self.clock.lock();
        c.outstanding = c.outstanding.saturating_sub(1);
        if c.outstanding == 0
            && let Some(t) = c.since.take()
        {
            c.total += t.elapsed();
        }
    }

    pub fn snapshot(&self) -> IoSnapshot {
        let wait = {
            let c = self.clock.lock();
            c.total + c.since.map_or(Duration::ZERO, |t| t.elapsed())
        };
        let l = |a: &AtomicU64| a.load(Ordering::Acquire);
        IoSnapshot {
            requests: l(&self.requests),
            bytes: l(&self.bytes),
            page_cache_hits: l(&self.page_cache_hits),
            page_cache_misses: l(&self.page_cache_misses),
            page_cache_bytes: l(&self.page_cache_bytes),
            fleet_requests: l(&self.fleet_requests),
            fleet_bytes: l(&self.fleet_bytes),
            origin_requests: l(&self.origin_requests),
            origin_bytes: l(&self.origin_bytes),
            origin_requests_by_kind: ByKind {
                manifest: l(&self.origin_by_kind[0]),
                index: l(&self.origin_by_kind[1]),
                data: l(&self.origin_by_kind[2]),
                other: l(&self.origin_by_kind[3]),
            },
            io_wait_us: wait.as_micros().try_into().unwrap_or(u64::MAX),
        }
    }
}

/// Runs `f` as the work `account` accounts for.
pub async fn scope<F: Future>(account: Arc<IoAccount>, f: F) -> F::Output {
    ACCOUNT.scope(account, f).await
}

/// Runs `f` (one poll, one call) as the work `account` accounts for.
pub fn sync_scope<R>(account: &Arc<IoAccount>, f: impl FnOnce() -> R) -> R {
    ACCOUNT.sync_scope(account.clone(), f)
}

/// The account of the work running now, if any.
pub fn current() -> Option<Arc<IoAccount>> {
    ACCOUNT.try_with(Arc::clone).ok()
}

/// Adds `n` to a counter of the current account, if there is one.
pub fn add(field: impl FnOnce(&IoAccount) -> &AtomicU64, n: u64) {
    let _ = ACCOUNT.try_with(|a| field(a).fetch_add(n, Ordering::Relaxed));
}

/// One page read's share of its work's budget, held while the read is in flight.
pub(crate) struct Grant {
    account: Option<Arc<IoAccount>>,
    kind: FileKind,
    reserved: u64,
    /// What the read may spend, as the node is told (`None`: no budget).
    pub budget: Option<u64>,
}

impl Grant {
    /// Reserves what a read that may cost up to `most` origin requests needs.
    pub fn take(most: u64, kind: FileKind) -> Grant {
        let account = current();
        let budget = account.as_ref().and_then(|a| a.reserve(most));
        Grant { account, kind, reserved: budget.unwrap_or(0), budget }
    }

    /// The node's answer: counts the read and what it cost, returns the reservation.
    pub fn settle(mut self, origin_requests: u64, origin_bytes: u64, refused: bool) {
        if let Some(a) = self.account.take() {
            a.fleet_requests.fetch_add(1, Ordering::Relaxed);
            a.add_origin(self.kind, origin_requests);
            a.origin_bytes.fetch_add(origin_bytes, Ordering::Relaxed);
            a.release(self.reserved);
            if refused {
                a.mark_refused();
            }
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if let Some(a) = self.account.take() {
            a.fleet_requests.fetch_add(1, Ordering::Relaxed);
            a.release(self.reserved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_in_flight_never_reserve_more_than_the_budget() {
        let a = IoAccount::new(Some(5));
        scope(a.clone(), async {
            let g1 = Grant::take(3, FileKind::Data);
            let g2 = Grant::take(3, FileKind::Data);
            assert_eq!((g1.budget, g2.budget), (Some(3), Some(2)), "the second gets what is left");
            let g3 = Grant::take(1, FileKind::Data);
            assert_eq!(g3.budget, Some(0), "nothing left while both are in flight");
            g1.settle(1, 100, false);
            assert_eq!(Grant::take(4, FileKind::Data).budget, Some(2), "g1 gave back 2 of its 3");
            g3.settle(0, 0, true);
            drop(g2);
        })
        .await;
        let s = a.snapshot();
        assert_eq!((s.origin_requests, s.origin_bytes, s.fleet_requests), (1, 100, 4));
        assert!(a.refused());
        assert!(a.affordable(), "1 spent of 5, nothing reserved");
        assert_eq!(a.reserved.load(Ordering::Acquire), 0);
    }

    #[test]
    fn keys_are_sorted_by_what_they_hold() {
        assert_eq!(FileKind::of("t.lance/_indices/u/index.idx"), FileKind::Index);
        assert_eq!(FileKind::of("ns/t.lance/data/a.lance"), FileKind::Data);
        assert_eq!(FileKind::of("t.lance/_deletions/1-2.arrow"), FileKind::Data);
        assert_eq!(FileKind::of("t.lance/_versions/18446744073709551614.manifest"), FileKind::Manifest);
        assert_eq!(FileKind::of("t.lance/_latest.manifest"), FileKind::Manifest);
        assert_eq!(FileKind::of("t.lance/_versions/"), FileKind::Manifest);
        assert_eq!(FileKind::of("t.lance/metadata.json"), FileKind::Other);
        assert_eq!(FileKind::of("mydata/x"), FileKind::Other, "a segment named like one is not it");
    }

    #[tokio::test]
    async fn without_a_budget_nothing_is_reserved_and_outside_a_scope_nothing_counts() {
        let g = Grant::take(10, FileKind::Index);
        assert_eq!(g.budget, None);
        g.settle(3, 3, false);
        let a = IoAccount::new(None);
        scope(a.clone(), async { Grant::take(10, FileKind::Index) }).await.settle(2, 20, false);
        assert_eq!(a.snapshot().origin_requests, 2);
        assert!(a.affordable());
    }

    #[tokio::test]
    async fn the_wait_clock_runs_while_any_request_is_outstanding() {
        let a = IoAccount::new(None);
        let t0 = Instant::now();
        a.io_started();
        a.io_started();
        tokio::time::sleep(Duration::from_millis(20)).await;
        a.io_ended();
        tokio::time::sleep(Duration::from_millis(20)).await;
        a.io_ended();
        let busy = t0.elapsed().as_micros() as u64;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let w = a.snapshot().io_wait_us;
        // Overlapping requests count once; the idle time after them not at all.
        assert!((40_000..=busy).contains(&w), "{w} us waited of {busy} us busy");
    }
}
