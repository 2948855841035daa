//! The io_uring engine: one ring per core, with registered (fixed) buffers and a registered
//! file, driven from the tokio workers themselves — no ring thread.
//!
//! Owns: ring set-up and teardown, the in-flight table that keeps every buffer alive until
//! its completion arrives, the per-ring reaper task, and the waiter table through which each
//! completion reaches the task that asked for it (a slot reused from I/O to I/O: no channel
//! and no allocation per I/O). Does not own: what the I/O means.
//!
//! Threading: the task that wants an I/O takes the ring's lock, puts the SQE in the ring and
//! submits it with one `io_uring_enter` on its own thread (no hand-over to another thread).
//! Completions are found by one reaper task per ring: the ring's descriptor is registered with
//! tokio's reactor, which reports it readable when CQEs are posted; the reaper drains the
//! completion queue (shared memory, no system call), answers each request and submits any
//! request that had been waiting for room. A read therefore costs the submit call and the
//! reactor's wake-up, like fio's own loop, instead of two thread switches. Requests beyond the
//! queue depth wait in the ring's local queue; requests beyond free buffers wait in the buffer
//! pool before they get here.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use io_uring::{IoUring, opcode, squeue, types};
use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;
use tracing::{debug, error, warn};

use super::{IoEngine, IoFuture, IoOp};
use crate::RateLimit;
use crate::buffer::{FixedPool, IoBuf};

/// Registered buffers for small reads (one per queue slot); anything larger takes a
/// slot-sized buffer.
const SMALL_BUFFER_BYTES: usize = 32 * 1024;
/// Completions are batched into one submit only while at least this many I/Os stay in flight
/// (see `reap`). Measured on this project's bench VM (`scripts/bench-pagestore.sh`): batching
/// at 32 in flight left the core ~35% idle and cost a third of fio's IOPS; at 128 it gains
/// ~20% over one submit per I/O.
const BATCH_FLOOR: usize = 64;
/// user_data of the no-op that wakes the reaper at shutdown; in-flight I/O uses its table
/// index.
const WAKE_TOKEN: u64 = u64::MAX;

pub(crate) struct UringOptions {
    pub rings: usize,
    pub queue_depth: u32,
    /// Slot-sized registered buffers per ring.
    pub registered_buffers: usize,
    pub max_io_bytes: usize,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Read,
    Write,
}

struct Request {
    op: Op,
    buf: IoBuf,
    offset: u64,
    /// The request's slot in the waiter table.
    ticket: u32,
}

/// Where one request's outcome waits for its future. A slot is taken at submission and
/// given back by whichever of the two finishes last: the future (taking the result, or
/// dropped after it arrived) or the completion (arriving after the future was dropped).
enum Waiter {
    Free,
    /// Submitted; the waker of the task that last polled, if any did.
    Waiting(Option<Waker>),
    Done(io::Result<IoBuf>),
    /// The future went away first: the completion only returns the buffer.
    Abandoned,
}

#[derive(Default)]
struct Waiters {
    slots: Vec<Waiter>,
    free: Vec<u32>,
}

impl Waiters {
    fn open(&mut self) -> Option<u32> {
        if let Some(t) = self.free.pop() {
            self.slots[t as usize] = Waiter::Waiting(None);
            return Some(t);
        }
        let t = u32::try_from(self.slots.len()).ok()?;
        self.slots.push(Waiter::Waiting(None));
        Some(t)
    }

    /// Takes the outcome of request `t` if it has arrived, giving the slot back.
    fn take_done(&mut self, t: u32) -> Option<io::Result<IoBuf>> {
        let slot = self.slots.get_mut(t as usize)?;
        if !matches!(slot, Waiter::Done(_)) {
            return None;
        }
        let Waiter::Done(result) = std::mem::replace(slot, Waiter::Free) else { return None };
        self.free.push(t);
        Some(result)
    }

    /// Records the outcome of request `t`. Returns the waker to call (outside the ring's
    /// lock), or, if nobody waits any more, the outcome itself to be dropped there.
    fn finish(&mut self, t: u32, result: io::Result<IoBuf>) -> Finished {
        let Some(slot) = self.slots.get_mut(t as usize) else { return Finished::Unclaimed(result) };
        match slot {
            Waiter::Waiting(waker) => {
                let waker = waker.take();
                *slot = Waiter::Done(result);
                Finished::Wake(waker)
            }
            Waiter::Abandoned => {
                *slot = Waiter::Free;
                self.free.push(t);
                Finished::Unclaimed(result)
            }
            // Finished twice, or for a free slot: a bug. Keep the first outcome.
            Waiter::Done(_) | Waiter::Free => Finished::Unclaimed(result),
        }
    }
}

enum Finished {
    Wake(Option<Waker>),
    Unclaimed(io::Result<IoBuf>),
}

/// What a reaper pass hands out once it has let go of the ring's lock.
#[derive(Default)]
struct Handout {
    wake: Vec<Waker>,
    /// Buffers of requests whose future went away; they go back to their pool here.
    unclaimed: Vec<io::Result<IoBuf>>,
}

impl Handout {
    fn add(&mut self, f: Finished) {
        match f {
            Finished::Wake(Some(w)) => self.wake.push(w),
            Finished::Wake(None) => {}
            Finished::Unclaimed(r) => self.unclaimed.push(r),
        }
    }

    fn deliver(&mut self) {
        self.unclaimed.clear();
        for w in self.wake.drain(..) {
            w.wake();
        }
    }
}

/// The future of one submitted I/O: resolves when its completion has been reaped. Dropping
/// it early is safe: the I/O completes and its buffer goes back to the pool then.
pub(crate) struct IoWait {
    /// `None` once the result has been taken.
    ring: Option<Arc<Ring>>,
    ticket: u32,
}

impl Future for IoWait {
    type Output = io::Result<IoBuf>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<IoBuf>> {
        let ticket = self.ticket;
        let Some(ring) = self.ring.as_ref() else {
            return Poll::Ready(Err(io::Error::other("I/O polled after it finished")));
        };
        let mut st = ring.state.lock();
        if let Some(Waiter::Waiting(w)) = st.waiters.slots.get_mut(ticket as usize) {
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let result = st.waiters.take_done(ticket);
        drop(st);
        self.ring = None;
        Poll::Ready(result.unwrap_or_else(|| Err(io::Error::other("io_uring waiter lost"))))
    }
}

impl Drop for IoWait {
    fn drop(&mut self) {
        let Some(ring) = self.ring.take() else { return };
        let unclaimed = {
            let mut st = ring.state.lock();
            if let Some(slot @ Waiter::Waiting(_)) = st.waiters.slots.get_mut(self.ticket as usize) {
                *slot = Waiter::Abandoned;
            }
            st.waiters.take_done(self.ticket)
        };
        // The buffer goes back to its pool outside the ring's lock.
        drop(unclaimed);
    }
}

/// One ring and everything submitters and its reaper share. Field order matters: `state`
/// (which owns the ring, whose drop unregisters the buffers) drops before `pool`.
struct Ring {
    id: usize,
    state: Mutex<RingState>,
    pool: Arc<FixedPool>,
    /// The ring's descriptor, for the reactor; the ring itself owns it.
    fd: RawFd,
    /// Told when a submit failed, so the reaper retries it even if no completion comes.
    retry: tokio::sync::Notify,
}

struct RingState {
    ring: IoUring,
    slab: Slab,
    /// Requests waiting for a free in-flight slot.
    pending: VecDeque<Request>,
    closed: bool,
    /// The reaper has woken tasks and will submit whatever they queue once they have run;
    /// otherwise every I/O is submitted as it is queued.
    flush_due: bool,
    errors_log: RateLimit,
    /// Reused between drains so reaping allocates nothing.
    completions: Vec<(u64, i32)>,
    waiters: Waiters,
}

pub(crate) struct UringEngine {
    rings: Vec<Arc<Ring>>,
    reapers: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicUsize,
}

/// The ring's descriptor as the reactor sees it. Holding the ring keeps the descriptor open
/// for as long as the registration lives.
struct RingFd(Arc<Ring>);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd
    }
}

impl UringEngine {
    /// Creates `rings` rings, registers the file and buffers and starts one reaper task per
    /// ring on the current tokio runtime (which must have its I/O driver enabled: registering
    /// with a runtime built without it panics). Errors are a human-readable reason for the
    /// fallback log line.
    pub fn start(file: Arc<File>, opts: &UringOptions) -> Result<UringEngine, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the io_uring engine needs a tokio runtime to reap completions".to_string())?;
        let qd = opts.queue_depth.clamp(1, 4096);
        let mut rings = Vec::with_capacity(opts.rings.max(1));
        for id in 0..opts.rings.max(1) {
            rings.push(start_ring(id, &file, qd, opts)?);
        }
        // Registration with the reactor is checked here, before any reaper runs, so a kernel
        // whose ring descriptor cannot be polled falls back to pread instead of hanging.
        let mut fds = Vec::with_capacity(rings.len());
        for ring in &rings {
            let _enter = runtime.enter();
            // SAFETY: `RingFd` owns an Arc of the ring, whose `IoUring` owns the descriptor, so
            // it stays open and the same for the registration's whole life.
            let fd = unsafe {
                AsyncFd::register_with_interest(RingFd(Arc::clone(ring)), tokio::io::Interest::READABLE)
            }
            .map_err(|e| format!("registering the ring with the reactor: {e}"))?;
            fds.push(fd);
        }
        // The guard exists before the reaper is first polled: a runtime that goes away before
        // that still fails whatever waits on the ring instead of leaving it pending.
        let reapers = fds
            .into_iter()
            .map(|fd| {
                let guard = ReaperGuard(Arc::clone(&fd.get_ref().0));
                runtime.spawn(reap(fd, guard))
            })
            .collect();
        Ok(UringEngine { rings, reapers: Mutex::new(reapers), next: AtomicUsize::new(0) })
    }

    /// One real read (the superblock) through every ring with a registered buffer.
    pub async fn probe(&self) -> io::Result<()> {
        for (i, ring) in self.rings.iter().enumerate() {
            let buf = IoBuf::fixed(ring.pool.acquire(4096).await?);
            let buf = self.submit(Op::Read, buf, 0).await?;
            debug!(ring = i, bytes = buf.len(), "io_uring probe read ok");
        }
        Ok(())
    }

    /// Refuses new I/O and wakes each reaper, which exits once its ring has no I/O left.
    fn signal_close(&self) {
        for r in &self.rings {
            let mut st = r.state.lock();
            if st.closed {
                continue;
            }
            st.closed = true;
            // A completion is what wakes the reaper: a no-op makes one even on an idle ring.
            // If the queue is full the reaper has completions coming anyway.
            let nop = opcode::Nop::new().build().user_data(WAKE_TOKEN);
            if st.push_sqe(r.id, &nop) && !st.flush(r.id) {
                r.retry.notify_one();
            }
        }
    }

    fn submit(&self, op: Op, buf: IoBuf, offset: u64) -> IoOp {
        let ring = match buf.as_fixed() {
            Some(f) if f.pool().ring() < self.rings.len() => f.pool().ring(),
            _ => self.next.fetch_add(1, Ordering::Relaxed) % self.rings.len().max(1),
        };
        let Some(ring) = self.rings.get(ring) else {
            return IoOp::failed(io::Error::other("io_uring engine has no rings"));
        };
        if u32::try_from(buf.len()).is_err() {
            return IoOp::failed(io::Error::new(io::ErrorKind::InvalidInput, "I/O too large"));
        }
        let ticket = {
            let mut st = ring.state.lock();
            if st.closed {
                return IoOp::failed(io::Error::other("disk tier is closed"));
            }
            let Some(ticket) = st.waiters.open() else {
                return IoOp::failed(io::Error::other("too many I/Os waiting on one ring"));
            };
            st.pending.push_back(Request { op, buf, offset, ticket });
            st.push_pending(ring.id);
            // While the reaper owes a submit (see `reap`), this I/O goes with it.
            if !st.flush_due && !st.flush(ring.id) {
                ring.retry.notify_one();
            }
            ticket
        };
        IoOp::Uring(IoWait { ring: Some(Arc::clone(ring)), ticket })
    }
}

impl IoEngine for UringEngine {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn buffer(&self, len: usize) -> IoFuture<'_, io::Result<IoBuf>> {
        Box::pin(async move {
            let ring = self.next.fetch_add(1, Ordering::Relaxed) % self.rings.len().max(1);
            match self.rings.get(ring) {
                Some(r) => Ok(IoBuf::fixed(r.pool.acquire(len).await?)),
                None => Err(io::Error::other("io_uring engine has no rings")),
            }
        })
    }

    fn try_buffer(&self, len: usize) -> Option<io::Result<IoBuf>> {
        let ring = self.next.fetch_add(1, Ordering::Relaxed) % self.rings.len().max(1);
        match self.rings.get(ring) {
            Some(r) => r.pool.try_acquire(len).map(|b| b.map(IoBuf::fixed)),
            None => Some(Err(io::Error::other("io_uring engine has no rings"))),
        }
    }

    fn read(&self, buf: IoBuf, offset: u64) -> IoOp {
        self.submit(Op::Read, buf, offset)
    }

    fn write(&self, buf: IoBuf, offset: u64) -> IoOp {
        self.submit(Op::Write, buf, offset)
    }

    fn shutdown(&self) -> IoFuture<'_, ()> {
        self.signal_close();
        let reapers = std::mem::take(&mut *self.reapers.lock());
        Box::pin(async move {
            for r in reapers {
                let _ = r.await;
            }
        })
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        // Reapers finish the in-flight I/O and exit on their own.
        self.signal_close();
    }
}

/// The reaper of one ring: waits until the reactor reports the ring readable, then answers
/// every completion. Exits when the ring is closed and idle — or, if its runtime shuts down
/// first, fails whatever was waiting (see `ReaperGuard`).
async fn reap(fd: AsyncFd<RingFd>, _guard: ReaperGuard) {
    let ring = Arc::clone(&fd.get_ref().0);
    let mut handout = Handout::default();
    let mut stuck = false;
    loop {
        let ready = tokio::select! {
            r = fd.readable() => Some(r),
            () = ring.retry.notified() => None,
        };
        match ready {
            // Cleared before draining: a completion posted after the drain raises a new edge.
            Some(Ok(mut r)) => r.clear_ready(),
            Some(Err(e)) => {
                error!(ring = ring.id, error = %e, "io_uring ring cannot be polled; failing its I/O");
                return;
            }
            None => stuck = true,
        }
        if std::mem::take(&mut stuck) {
            // A submit failed (the kernel was short of something): retry shortly, not in a spin.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let (finished, batched) = {
            let mut st = ring.state.lock();
            st.drain(ring.id, &mut handout);
            st.push_pending(ring.id);
            if handout.wake.len() < 2 || st.slab.len() < BATCH_FLOOR {
                (st.flush_or_retry(&ring), false)
            } else {
                // The tasks about to be woken mostly queue their next I/O at once. With the
                // device already deep in work, one submit for all of them after they have run
                // (below) — every submit is a doorbell write to the device, a VM exit under a
                // hypervisor. With little in flight each submits its own at once: held back,
                // they come back as one clump and the device and this core take turns idling.
                st.flush_due = true;
                (false, true)
            }
        };
        // Waking the waiting tasks happens outside the lock they will take next.
        handout.deliver();
        if finished {
            return;
        }
        if !batched {
            continue;
        }
        // Runs again once the woken tasks (queued before it) have had their turn.
        tokio::task::yield_now().await;
        let finished = {
            let mut st = ring.state.lock();
            st.flush_due = false;
            st.push_pending(ring.id);
            st.flush_or_retry(&ring)
        };
        if finished {
            return;
        }
    }
}

/// Runs when a reaper stops, however it stops. After a normal exit nothing is left; if the
/// runtime dropped the reaper first, queued requests fail and in-flight ones are told so, but
/// their buffers stay in the table (the kernel may still use them) and are leaked with it.
struct ReaperGuard(Arc<Ring>);

impl Drop for ReaperGuard {
    fn drop(&mut self) {
        let mut handout = Handout::default();
        {
            let mut st = self.0.state.lock();
            st.closed = true;
            let queued = std::mem::take(&mut st.pending);
            let in_flight = st.slab.orphan();
            for r in queued {
                handout.add(st.waiters.finish(r.ticket, Err(io::Error::other("disk tier is closed"))));
            }
            for t in in_flight {
                let e = io::Error::other("io_uring reaper stopped with I/O in flight");
                handout.add(st.waiters.finish(t, Err(e)));
            }
        }
        handout.deliver();
    }
}

fn memlock_limit() -> String {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the rlimit struct we pass; no other memory is touched.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) };
    if rc != 0 {
        return "unknown".into();
    }
    if rl.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} KiB", rl.rlim_cur / 1024)
    }
}

fn start_ring(id: usize, file: &Arc<File>, qd: u32, opts: &UringOptions) -> Result<Arc<Ring>, String> {
    let pool = FixedPool::new(
        id,
        &[
            (SMALL_BUFFER_BYTES.min(opts.max_io_bytes), qd as usize),
            (opts.max_io_bytes, opts.registered_buffers.max(1)),
        ],
    )
    .map_err(|e| format!("allocating registered buffers: {e}"))?;
    let pool = Arc::new(pool);
    let ring = setup(file, &pool, qd)?;
    let fd = ring.as_raw_fd();
    let state = RingState {
        ring,
        slab: Slab::new(qd as usize),
        pending: VecDeque::new(),
        closed: false,
        flush_due: false,
        errors_log: RateLimit::new(),
        completions: Vec::with_capacity(qd as usize + 1),
        waiters: Waiters::default(),
    };
    Ok(Arc::new(Ring { id, state: Mutex::new(state), pool, fd, retry: tokio::sync::Notify::new() }))
}

/// No SINGLE_ISSUER / DEFER_TASKRUN: any tokio worker may submit, and completions must be
/// posted without an `io_uring_enter` from one particular thread so the reactor sees them.
/// COOP_TASKRUN (5.19+) spares a running submitter an interrupt per completion: the work runs
/// at its next system call, and a sleeping one is still woken. Older kernels refuse the flag
/// with EINVAL.
fn build_ring(entries: u32) -> io::Result<IoUring> {
    let mut b = IoUring::builder();
    b.setup_coop_taskrun();
    match b.build(entries) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::new(entries),
        r => r,
    }
}

fn setup(file: &File, pool: &FixedPool, qd: u32) -> Result<IoUring, String> {
    let entries = (qd + 1).next_power_of_two();
    let ring = build_ring(entries).map_err(|e| format!("io_uring_setup: {e}"))?;
    ring.submitter()
        .register_files(&[file.as_raw_fd()])
        .map_err(|e| format!("registering the page file: {e}"))?;
    let iovecs = pool.iovecs();
    // SAFETY: every iovec points into the pool's arenas, which the `Ring` keeps alive (its
    // `pool` field drops after `state`, which owns the ring and unregisters them).
    unsafe { ring.submitter().register_buffers(&iovecs) }.map_err(|e| {
        format!(
            "registering {} MiB of fixed buffers: {e} (RLIMIT_MEMLOCK is {}; raise it or lower \
             queue_depth / registered_buffers)",
            pool.registered_bytes().div_ceil(1 << 20),
            memlock_limit()
        )
    })?;
    Ok(ring)
}

/// An I/O the kernel may be using; its buffer must not be freed or reused until the CQE.
struct InFlight {
    buf: IoBuf,
    len: u32,
    op: Op,
    /// `None` once the request was failed early (the reaper stopped) — the buffer stays.
    ticket: Option<u32>,
}

struct Slab {
    entries: Vec<Option<InFlight>>,
    free: Vec<usize>,
}

impl Slab {
    fn new(cap: usize) -> Slab {
        Slab { entries: (0..cap).map(|_| None).collect(), free: (0..cap).rev().collect() }
    }
    fn has_room(&self) -> bool {
        !self.free.is_empty()
    }
    fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }
    fn insert(&mut self, f: InFlight) -> Result<usize, InFlight> {
        match self.free.pop() {
            Some(i) => {
                self.entries[i] = Some(f);
                Ok(i)
            }
            None => Err(f),
        }
    }
    fn remove(&mut self, i: usize) -> Option<InFlight> {
        let f = self.entries.get_mut(i)?.take()?;
        self.free.push(i);
        Some(f)
    }
    /// The waiter tickets of every in-flight I/O, taken out; buffers stay where they are.
    fn orphan(&mut self) -> Vec<u32> {
        self.entries.iter_mut().flatten().filter_map(|f| f.ticket.take()).collect()
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        // Only reached with entries left if the reaper never finished (its runtime went
        // away): the kernel may still write into these buffers, so they are leaked rather
        // than returned to the pool.
        // (Nobody waits on them: every waiting future holds the ring, so it is not dropped.)
        for f in self.entries.iter_mut().filter_map(Option::take) {
            std::mem::forget(f.buf);
        }
    }
}

impl RingState {
    /// Takes every posted completion off the queue and turns it into an answer.
    fn drain(&mut self, ring: usize, handout: &mut Handout) {
        let mut seen = std::mem::take(&mut self.completions);
        seen.extend(self.ring.completion().map(|cqe| (cqe.user_data(), cqe.result())));
        for (user_data, res) in seen.drain(..) {
            if user_data == WAKE_TOKEN {
                continue;
            }
            let Some(InFlight { buf, len, op, ticket }) =
                usize::try_from(user_data).ok().and_then(|i| self.slab.remove(i))
            else {
                if self.errors_log.ready() {
                    error!(ring, user_data, "completion for unknown request");
                }
                continue;
            };
            let result = if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else if res as u32 != len {
                let kind = match op {
                    Op::Read => io::ErrorKind::UnexpectedEof,
                    Op::Write => io::ErrorKind::WriteZero,
                };
                Err(io::Error::new(kind, format!("short {op:?}: {res} of {len} bytes")))
            } else {
                Ok(buf)
            };
            // The kernel is done with the buffer: returning it (or dropping it on error, or if
            // the caller went away) is now safe.
            if let Some(t) = ticket {
                let finished = self.waiters.finish(t, result);
                handout.add(finished);
            }
        }
        self.completions = seen;
    }

    /// Moves queued requests into the submission queue while the in-flight table has room.
    fn push_pending(&mut self, ring: usize) {
        while self.slab.has_room() {
            let Some(req) = self.pending.pop_front() else { return };
            let Request { op, mut buf, offset, ticket } = req;
            // `submit` refuses anything larger.
            let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
            let fixed_index = buf.as_fixed().filter(|f| f.pool().ring() == ring).map(|f| f.buf_index());
            let fd = types::Fixed(0);
            let entry = match (op, fixed_index) {
                (Op::Read, Some(idx)) => {
                    opcode::ReadFixed::new(fd, buf.as_mut_ptr(), len, idx).offset(offset).build()
                }
                (Op::Read, None) => opcode::Read::new(fd, buf.as_mut_ptr(), len).offset(offset).build(),
                (Op::Write, Some(idx)) => {
                    opcode::WriteFixed::new(fd, buf.as_ptr(), len, idx).offset(offset).build()
                }
                (Op::Write, None) => opcode::Write::new(fd, buf.as_ptr(), len).offset(offset).build(),
            };
            // The buffer moves into the table before the SQE is visible to the kernel and
            // leaves it only at its completion (or if the push below fails, before submit).
            let idx = match self.slab.insert(InFlight { buf, len, op, ticket: Some(ticket) }) {
                Ok(i) => i,
                Err(f) => {
                    self.requeue(f, offset);
                    return;
                }
            };
            let entry = entry.user_data(idx as u64);
            if !self.push_sqe(ring, &entry) {
                if let Some(f) = self.slab.remove(idx) {
                    self.requeue(f, offset);
                }
                return;
            }
        }
    }

    /// Puts an I/O that did not make it into the submission queue back at the head of the line.
    fn requeue(&mut self, f: InFlight, offset: u64) {
        if let Some(ticket) = f.ticket {
            self.pending.push_front(Request { op: f.op, buf: f.buf, offset, ticket });
        }
    }

    /// Hands the queued SQEs to the kernel without waiting for anything. `false` if some
    /// are still queued because the kernel refused them for now (EAGAIN/EBUSY: short of memory
    /// or of room for completions); they go with the next submit, or the reaper's retry.
    fn flush(&mut self, ring: usize) -> bool {
        loop {
            if self.ring.submission().is_empty() {
                return true;
            }
            match self.ring.submit() {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    if self.errors_log.ready() {
                        warn!(ring, error = %e, "io_uring submit failed; will retry");
                    }
                    return false;
                }
            }
        }
    }

    /// The reaper's submit: true once the ring is closed and has nothing left to do.
    fn flush_or_retry(&mut self, ring: &Ring) -> bool {
        if !self.flush(ring.id) {
            ring.retry.notify_one();
        }
        self.closed && self.pending.is_empty() && self.slab.len() == 0
    }

    /// Pushes one SQE, flushing the SQ to the kernel once if it is full.
    fn push_sqe(&mut self, ring: usize, entry: &squeue::Entry) -> bool {
        // SAFETY: every SQE we build points at a buffer held in `self.slab` until its CQE, and
        // at the registered file index 0 (a no-op points at nothing).
        if unsafe { self.ring.submission().push(entry) }.is_ok() {
            return true;
        }
        let _ = self.flush(ring);
        // SAFETY: as above.
        unsafe { self.ring.submission().push(entry) }.is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::time::Duration;

    fn open_direct(path: &std::path::Path) -> File {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ring_reads_writes_errors_and_queues() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("f");
        let file = open_direct(&path);
        file.set_len(1 << 20).unwrap();
        let file = Arc::new(file);
        let opts = UringOptions { rings: 2, queue_depth: 4, registered_buffers: 2, max_io_bytes: 64 * 1024 };
        let engine = match UringEngine::start(Arc::clone(&file), &opts) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                eprintln!("NOTE: io_uring unavailable here, skipping: {e}");
                return;
            }
        };
        engine.probe().await.unwrap();

        // Many more concurrent I/Os than queue depth and buffers: all complete.
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let e = Arc::clone(&engine);
            tasks.push(tokio::spawn(async move {
                let mut buf = e.buffer(8192).await.unwrap();
                buf.as_mut_slice().fill(i as u8);
                e.write(buf, i * 8192).await.unwrap();
                let buf = e.buffer(8192).await.unwrap();
                let buf = e.read(buf, i * 8192).await.unwrap();
                assert!(buf.as_slice().iter().all(|b| *b == i as u8));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut check = vec![0u8; 8192];
        // Through a buffered handle: O_DIRECT would refuse an unaligned Vec.
        std::fs::File::open(&path).unwrap().read_exact_at(&mut check, 5 * 8192).unwrap();
        assert!(check.iter().all(|b| *b == 5));

        // An unaligned offset under O_DIRECT fails through the completion; the ring lives on.
        let buf = engine.buffer(4096).await.unwrap();
        assert!(engine.read(buf, 100).await.is_err());
        // A read past EOF is short: an error, not silent zeros.
        let buf = engine.buffer(8192).await.unwrap();
        assert!(engine.read(buf, (1 << 20) - 4096).await.is_err());
        let buf = engine.buffer(4096).await.unwrap();
        assert!(engine.read(buf, 0).await.is_ok());

        engine.shutdown().await;
        let buf = IoBuf::heap(4096).unwrap();
        assert!(engine.read(buf, 0).await.is_err());
    }

    fn small_engine(path: &std::path::Path) -> Option<Arc<UringEngine>> {
        let file = Arc::new(open_direct(path));
        file.set_len(1 << 20).unwrap();
        let opts = UringOptions { rings: 1, queue_depth: 2, registered_buffers: 1, max_io_bytes: 8192 };
        match UringEngine::start(file, &opts) {
            Ok(e) => Some(Arc::new(e)),
            Err(e) => {
                eprintln!("NOTE: io_uring unavailable here, skipping: {e}");
                None
            }
        }
    }

    #[test]
    fn start_outside_a_runtime_is_refused() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let file = Arc::new(open_direct(&dir.path().join("f")));
        let opts = UringOptions { rings: 1, queue_depth: 2, registered_buffers: 1, max_io_bytes: 8192 };
        let Err(e) = UringEngine::start(file, &opts) else { panic!("started without a runtime") };
        assert!(e.contains("tokio runtime"), "{e}");
    }

    /// Dropping the engine with I/O queued and in flight: all of it still completes (close
    /// refuses only new I/O), nothing hangs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_engine_finishes_its_io() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let Some(engine) = small_engine(&dir.path().join("f")) else { return };
        // Heap buffers: more I/Os than the queue depth (2), so some wait in the ring's queue.
        let reads: Vec<_> = (0..16u64).map(|i| engine.read(IoBuf::heap(4096).unwrap(), i * 4096)).collect();
        drop(engine);
        let all =
            tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(reads)).await.unwrap();
        for r in &all {
            assert!(r.is_ok(), "{:?}", r.as_ref().err());
        }
    }

    /// Futures dropped before submission (still queued), in flight, and after their
    /// completion: every registered buffer comes back to the pool, every waiter slot ends
    /// free, and the table reuses its slots instead of growing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_futures_give_back_buffers_and_waiter_slots() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let Some(engine) = small_engine(&dir.path().join("f")) else { return };
        // small_engine: queue depth 2, so two 4 KiB-class buffers, and one slot-sized (8 KiB).
        // The large one first: a small request finding its class empty would take it.
        let take_all = || async {
            let c = engine.buffer(8192).await.unwrap();
            let a = engine.buffer(4096).await.unwrap();
            let b = engine.buffer(4096).await.unwrap();
            [a, b, c]
        };
        for round in 0..50u64 {
            let bufs = take_all().await;
            assert!(bufs.iter().all(|b| b.as_fixed().is_some()));
            let mut reads: Vec<_> = bufs
                .into_iter()
                .enumerate()
                .map(|(i, b)| engine.read(b, (round % 8 + i as u64) * 8192))
                .collect();
            // More I/Os than the queue depth: some of these wait in the ring's queue when dropped.
            reads.extend((0..8u64).map(|i| engine.read(IoBuf::heap(4096).unwrap(), i * 4096)));
            let last = reads.pop();
            drop(reads);
            if round % 2 == 0 {
                // Give the completion time to arrive first, so this drop finds it done.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            drop(last);
            // All three registered buffers return, whichever side finished last.
            let again = tokio::time::timeout(Duration::from_secs(10), take_all())
                .await
                .expect("a buffer of a dropped I/O never came back");
            drop(again);
        }
        // A future polled to the end reads what was written.
        let mut w = engine.buffer(4096).await.unwrap();
        w.as_mut_slice().fill(7);
        engine.write(w, 8192).await.unwrap();
        let r = engine.read(engine.buffer(4096).await.unwrap(), 8192).await.unwrap();
        assert!(r.as_slice().iter().all(|b| *b == 7));
        // Once the queued heap reads have completed too, every slot is free again.
        let settled = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                {
                    let st = engine.rings[0].state.lock();
                    if st.waiters.slots.iter().all(|w| matches!(w, Waiter::Free)) {
                        return st.waiters.slots.len();
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("waiter slots still taken after every I/O finished");
        // 550 I/Os in all; a round's heap reads may still be running during the next one.
        assert!(settled <= 64, "waiter table grew to {settled} slots: slots are not reused");
        engine.shutdown().await;
    }

    /// Starts a small engine on a runtime that is then dropped, after one probe read (so its
    /// reaper ran) when `probe`, else before the reaper was ever polled; then reads on a second
    /// runtime, which must fail, not hang. `after` runs on that runtime with the engine.
    fn read_once_its_runtime_is_gone(probe: bool, after: impl AsyncFnOnce(&UringEngine)) {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let first = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // `block_on` returns as soon as this is ready: the spawned reaper is not polled.
        let Some(engine) = first.block_on(async { small_engine(&dir.path().join("f")) }) else { return };
        if probe {
            first.block_on(async { engine.probe().await.unwrap() });
        }
        drop(first);
        let second = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        second.block_on(async {
            let r = tokio::time::timeout(Duration::from_secs(10), engine.read(IoBuf::heap(4096).unwrap(), 0))
                .await
                .expect("a read with no reaper hung");
            assert!(r.is_err());
            after(&engine).await;
        });
    }

    /// The reaper's runtime goes away before the reaper ever ran: I/O on the ring fails at
    /// once instead of waiting for a reaper that will never come.
    #[test]
    fn reaper_never_polled_fails_io() {
        read_once_its_runtime_is_gone(false, async |_| {});
    }

    /// The runtime that runs the reaper goes away: waiting and later I/O fails, never hangs.
    #[test]
    fn reaper_gone_with_its_runtime_fails_io() {
        read_once_its_runtime_is_gone(true, async |engine| {
            tokio::time::timeout(Duration::from_secs(10), engine.shutdown()).await.unwrap();
        });
    }
}
