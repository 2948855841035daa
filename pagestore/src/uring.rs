//! The io_uring engine: one ring per core, each driven by its own OS thread, with registered
//! (fixed) buffers and a registered file.
//!
//! Owns: ring set-up and teardown, the per-ring request queue and its eventfd wake-up, the
//! in-flight table that keeps every buffer alive until its completion arrives, and turning
//! completions into results on tokio oneshot channels. Does not own: what the I/O means.
//!
//! Threading: a tokio task pushes a request onto the ring's queue (a mutex-guarded deque) and
//! writes the ring's eventfd only if the ring thread said it was going to sleep. The ring
//! thread always has a read of that eventfd armed in its ring, so a sleeping
//! `io_uring_enter(GETEVENTS)` returns on either an I/O completion or new work — no spinning.
//! Requests beyond the queue depth wait in the thread's local queue; requests beyond free
//! buffers wait in the buffer pool before they get here.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use super::RateLimit;
use super::buffer::{FixedPool, IoBuf};
use super::engine::{IoEngine, IoFuture};

/// Registered buffers for small reads (one per queue slot); anything larger takes a
/// slot-sized buffer.
const SMALL_BUFFER_BYTES: usize = 32 * 1024;
/// user_data of the eventfd read; in-flight I/O uses its table index.
const WAKE_TOKEN: u64 = u64::MAX;
/// `IORING_ENTER_GETEVENTS` from the kernel ABI (io_uring.h).
const IORING_ENTER_GETEVENTS: u32 = 1;

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
    done: oneshot::Sender<io::Result<IoBuf>>,
}

struct QueueState {
    queue: VecDeque<Request>,
    /// The ring thread is (about to be) blocked in io_uring_enter and needs an eventfd write.
    sleeping: bool,
    closed: bool,
}

/// What a ring's thread shares with submitters.
struct Shared {
    state: Mutex<QueueState>,
    eventfd: OwnedFd,
}

impl Shared {
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to an eventfd we own; the fd stays open
        // for as long as `self` exists.
        let rc = unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if rc != 8 {
            // EAGAIN means the counter is saturated, i.e. a wake-up is already pending.
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EAGAIN) {
                warn!(error = %e, "io_uring wake-up eventfd write failed");
            }
        }
    }
}

struct RingHandle {
    shared: Arc<Shared>,
    pool: Arc<FixedPool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) struct UringEngine {
    rings: Vec<RingHandle>,
    next: AtomicUsize,
}

impl UringEngine {
    /// Creates `rings` rings, each on its own thread, and registers the file and buffers.
    /// Blocking; errors are a human-readable reason for the fallback log line.
    pub fn start(file: Arc<File>, opts: &UringOptions) -> Result<UringEngine, String> {
        let qd = opts.queue_depth.clamp(1, 4096);
        let mut engine = UringEngine { rings: Vec::with_capacity(opts.rings), next: AtomicUsize::new(0) };
        for id in 0..opts.rings.max(1) {
            match start_ring(id, Arc::clone(&file), qd, opts) {
                Ok(r) => engine.rings.push(r),
                Err(e) => {
                    engine.signal_close();
                    engine.join_blocking();
                    return Err(e);
                }
            }
        }
        Ok(engine)
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

    fn signal_close(&self) {
        for r in &self.rings {
            r.shared.state.lock().closed = true;
            r.shared.wake();
        }
    }

    fn take_threads(&self) -> Vec<JoinHandle<()>> {
        self.rings.iter().filter_map(|r| r.thread.lock().take()).collect()
    }

    fn join_blocking(&self) {
        for t in self.take_threads() {
            let _ = t.join();
        }
    }

    fn submit(&self, op: Op, buf: IoBuf, offset: u64) -> IoFuture<'static, io::Result<IoBuf>> {
        let ring = match buf.as_fixed() {
            Some(f) if f.pool().ring() < self.rings.len() => f.pool().ring(),
            _ => self.next.fetch_add(1, Ordering::Relaxed) % self.rings.len().max(1),
        };
        let Some(handle) = self.rings.get(ring) else {
            return Box::pin(async { Err(io::Error::other("io_uring engine has no rings")) });
        };
        let (tx, rx) = oneshot::channel();
        let wake = {
            let mut st = handle.shared.state.lock();
            if st.closed {
                return Box::pin(async { Err(io::Error::other("disk tier is closed")) });
            }
            st.queue.push_back(Request { op, buf, offset, done: tx });
            std::mem::take(&mut st.sleeping)
        };
        if wake {
            handle.shared.wake();
        }
        Box::pin(async move { rx.await.map_err(|_| io::Error::other("io_uring thread exited"))? })
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

    fn read(&self, buf: IoBuf, offset: u64) -> IoFuture<'static, io::Result<IoBuf>> {
        self.submit(Op::Read, buf, offset)
    }

    fn write(&self, buf: IoBuf, offset: u64) -> IoFuture<'static, io::Result<IoBuf>> {
        self.submit(Op::Write, buf, offset)
    }

    fn shutdown(&self) -> IoFuture<'_, ()> {
        self.signal_close();
        let threads = self.take_threads();
        Box::pin(async move {
            if threads.is_empty() {
                return;
            }
            let joined = tokio::task::spawn_blocking(move || {
                for t in threads {
                    let _ = t.join();
                }
            });
            let _ = joined.await;
        })
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        // Threads finish their in-flight I/O and exit on their own; joining here could block
        // an async context, so they are detached.
        self.signal_close();
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

fn start_ring(id: usize, file: Arc<File>, qd: u32, opts: &UringOptions) -> Result<RingHandle, String> {
    let pool = FixedPool::new(
        id,
        &[
            (SMALL_BUFFER_BYTES.min(opts.max_io_bytes), qd as usize),
            (opts.max_io_bytes, opts.registered_buffers.max(1)),
        ],
    )
    .map_err(|e| format!("allocating registered buffers: {e}"))?;
    let pool = Arc::new(pool);
    // SAFETY: plain syscall; the returned fd (if any) is immediately owned by OwnedFd.
    // Blocking on purpose: io_uring returns EAGAIN for a read on an O_NONBLOCK fd instead of
    // waiting for it to become readable.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(format!("eventfd: {}", io::Error::last_os_error()));
    }
    // SAFETY: efd is a freshly created, valid descriptor that nothing else owns.
    let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
    let shared = Arc::new(Shared {
        state: Mutex::new(QueueState { queue: VecDeque::new(), sleeping: false, closed: false }),
        eventfd,
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
    let thread_shared = Arc::clone(&shared);
    let thread_pool = Arc::clone(&pool);
    let thread = std::thread::Builder::new()
        .name(format!("lakecache-uring-{id}"))
        .spawn(move || ring_thread(id, file, thread_pool, thread_shared, qd, ready_tx))
        .map_err(|e| format!("spawning io_uring thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(RingHandle { shared, pool, thread: Mutex::new(Some(thread)) }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err("io_uring thread exited during set-up".into())
        }
    }
}

fn build_ring(entries: u32) -> io::Result<IoUring> {
    // Newest flags first: a single submitting thread that always waits for completions is
    // exactly what DEFER_TASKRUN is for (6.1+); older kernels refuse the flags with EINVAL.
    let mut b = IoUring::builder();
    b.setup_single_issuer().setup_defer_taskrun();
    match b.build(entries) {
        Ok(r) => return Ok(r),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    let mut b = IoUring::builder();
    b.setup_coop_taskrun();
    match b.build(entries) {
        Ok(r) => return Ok(r),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(e),
    }
    IoUring::new(entries)
}

fn setup(file: &File, pool: &FixedPool, qd: u32) -> Result<IoUring, String> {
    let entries = (qd + 1).next_power_of_two();
    let ring = build_ring(entries).map_err(|e| format!("io_uring_setup: {e}"))?;
    ring.submitter()
        .register_files(&[file.as_raw_fd()])
        .map_err(|e| format!("registering the page file: {e}"))?;
    let iovecs = pool.iovecs();
    // SAFETY: every iovec points into the pool's arenas, which the ring thread keeps alive
    // (it holds an Arc<FixedPool>) until after the ring is dropped, which unregisters them.
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
    done: oneshot::Sender<io::Result<IoBuf>>,
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
}

impl Drop for Slab {
    fn drop(&mut self) {
        // Only reached with entries left if the thread is unwinding: the kernel may still
        // write into these buffers, so they are leaked rather than returned to the pool.
        for f in self.entries.iter_mut().filter_map(Option::take) {
            let InFlight { buf, done, .. } = f;
            std::mem::forget(buf);
            let _ = done.send(Err(io::Error::other("io_uring thread exited with I/O in flight")));
        }
    }
}

/// Marks the ring closed and fails queued requests when the thread exits, however it exits.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let queued = {
            let mut st = self.0.state.lock();
            st.closed = true;
            std::mem::take(&mut st.queue)
        };
        for r in queued {
            let _ = r.done.send(Err(io::Error::other("disk tier is closed")));
        }
    }
}

fn ring_thread(
    id: usize,
    file: Arc<File>,
    pool: Arc<FixedPool>,
    shared: Arc<Shared>,
    qd: u32,
    ready: std::sync::mpsc::SyncSender<Result<(), String>>,
) {
    let _guard = ExitGuard(Arc::clone(&shared));
    let ring = match setup(&file, &pool, qd) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut w = Worker {
        id,
        ring,
        slab: Slab::new(qd as usize),
        pending: VecDeque::new(),
        eventfd: shared.eventfd.as_raw_fd(),
        shared,
        errors_log: RateLimit::new(),
        completions: Vec::with_capacity(qd as usize + 1),
    };
    w.run();
    // Field order matters: the ring is dropped (unregistering buffers) before `pool`, which
    // this function owns, and before `file`.
    drop(w);
    drop(pool);
    drop(file);
}

struct Worker {
    id: usize,
    ring: IoUring,
    slab: Slab,
    pending: VecDeque<Request>,
    eventfd: RawFd,
    shared: Arc<Shared>,
    errors_log: RateLimit,
    /// Reused between turns so reaping allocates nothing.
    completions: Vec<(u64, i32)>,
}

impl Worker {
    fn run(&mut self) {
        // The eventfd read lands here. Leaked on purpose: if the thread exits with the read
        // still armed, the kernel may complete it during ring teardown, after we are gone.
        let wake_ptr: *mut u8 = Box::into_raw(Box::new(0u64)).cast();
        let mut wake_armed = false;
        loop {
            let closed = {
                let mut st = self.shared.state.lock();
                st.sleeping = false;
                self.pending.extend(st.queue.drain(..));
                st.closed
            };
            self.push_pending();
            if closed && self.pending.is_empty() && self.slab.len() == 0 {
                break;
            }
            if !wake_armed && !closed {
                // Reading the eventfd through the ring both waits for it and resets its
                // counter: one operation, no extra syscall per wake-up.
                let read =
                    opcode::Read::new(types::Fd(self.eventfd), wake_ptr, 8).build().user_data(WAKE_TOKEN);
                wake_armed = self.push_sqe(&read);
            }

            let waitable = self.slab.len() > 0 || wake_armed;
            let want = if waitable {
                let mut st = self.shared.state.lock();
                if st.queue.is_empty() && st.closed == closed {
                    st.sleeping = true;
                    1
                } else {
                    0
                }
            } else {
                0
            };
            if let Err(e) = self.enter(want) {
                match e.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::EBUSY) => {}
                    _ => {
                        if self.errors_log.ready() {
                            error!(ring = self.id, error = %e, "io_uring_enter failed; retrying");
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            if !waitable && !closed {
                // Could not even arm the wake-up read (SQ full): avoid a hot loop.
                std::thread::sleep(Duration::from_micros(100));
            }

            let mut completions = std::mem::take(&mut self.completions);
            completions.extend(self.ring.completion().map(|cqe| (cqe.user_data(), cqe.result())));
            for (user_data, res) in completions.drain(..) {
                if user_data == WAKE_TOKEN {
                    wake_armed = false;
                    if res < 0 && self.errors_log.ready() {
                        warn!(ring = self.id, error = %io::Error::from_raw_os_error(-res), "eventfd read failed");
                    }
                    if res < 0 {
                        // Do not re-arm a failing read in a hot loop.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    continue;
                }
                self.complete(user_data, res);
            }
            self.completions = completions;
        }
    }

    fn complete(&mut self, user_data: u64, res: i32) {
        let Some(InFlight { buf, len, op, done }) =
            usize::try_from(user_data).ok().and_then(|i| self.slab.remove(i))
        else {
            if self.errors_log.ready() {
                error!(ring = self.id, user_data, "completion for unknown request");
            }
            return;
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
        // The kernel is done with the buffer: returning it (or dropping it on error, or if the
        // caller went away) is now safe.
        let _ = done.send(result);
    }

    /// Moves queued requests into the submission queue while the in-flight table has room.
    fn push_pending(&mut self) {
        while self.slab.has_room() {
            let Some(req) = self.pending.pop_front() else { return };
            let Request { op, mut buf, offset, done } = req;
            let Ok(len) = u32::try_from(buf.len()) else {
                let _ = done.send(Err(io::Error::new(io::ErrorKind::InvalidInput, "I/O too large")));
                continue;
            };
            let fixed_index = buf.as_fixed().filter(|f| f.pool().ring() == self.id).map(|f| f.buf_index());
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
            let idx = match self.slab.insert(InFlight { buf, len, op, done }) {
                Ok(i) => i,
                Err(f) => {
                    self.pending.push_front(Request { op: f.op, buf: f.buf, offset, done: f.done });
                    return;
                }
            };
            let entry = entry.user_data(idx as u64);
            if !self.push_sqe(&entry) {
                if let Some(f) = self.slab.remove(idx) {
                    self.pending.push_front(Request { op: f.op, buf: f.buf, offset, done: f.done });
                }
                return;
            }
        }
    }

    /// Submits queued SQEs and reaps completions, sleeping until `want` have arrived.
    /// Always passes GETEVENTS: with DEFER_TASKRUN completions are only posted by an enter
    /// that asks for events, and a busy ring (new work every turn, `want == 0`) must still
    /// see its completions.
    fn enter(&mut self, want: u32) -> io::Result<usize> {
        let to_submit = self.ring.submission().len() as u32;
        // SAFETY: no extended argument is passed; the SQEs being submitted point at buffers
        // held in `self.slab` (see push_sqe).
        unsafe {
            self.ring.submitter().enter::<libc::sigset_t>(to_submit, want, IORING_ENTER_GETEVENTS, None)
        }
    }

    /// Pushes one SQE, flushing the SQ to the kernel once if it is full.
    fn push_sqe(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: every SQE we build points at a buffer held in `self.slab` until its CQE
        // (or at the leaked wake-up word, for the eventfd read), and at the registered file
        // index 0.
        if unsafe { self.ring.submission().push(entry) }.is_ok() {
            return true;
        }
        if let Err(e) = self.ring.submit()
            && self.errors_log.ready()
        {
            warn!(ring = self.id, error = %e, "io_uring submit failed");
        }
        // SAFETY: as above.
        unsafe { self.ring.submission().push(entry) }.is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

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

    #[test]
    fn drop_without_runtime_does_not_hang() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let file = Arc::new(open_direct(&dir.path().join("f")));
        file.set_len(1 << 16).unwrap();
        let opts = UringOptions { rings: 1, queue_depth: 2, registered_buffers: 1, max_io_bytes: 8192 };
        if let Ok(e) = UringEngine::start(file, &opts) {
            drop(e);
        }
    }
}
