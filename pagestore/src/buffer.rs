//! Sector-aligned I/O buffers: heap buffers for the pread engine and a pool of registered
//! (fixed) buffers per io_uring ring.
//!
//! Owns: aligned allocation, the fixed-buffer pool (size classes, free lists, waiting for a
//! free buffer), and [`IoBuf`], the one buffer type every engine reads into and writes from.
//! Does not own: submitting I/O or registering the pool with a ring (see `uring.rs`).
//!
//! A buffer is owned by exactly one party at a time: the caller filling or reading it, or an
//! engine while the kernel uses it. A fixed buffer goes back to its pool when dropped, which
//! an engine does only after the kernel has completed the I/O on it.

use std::alloc::{self, Layout};
use std::io;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::layout::{SECTOR_BYTES, align_up};

/// A zero-initialised heap allocation aligned to [`SECTOR_BYTES`], at least one sector long.
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf uniquely owns its allocation (like Box<[u8]>); no interior mutability.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give out &[u8].
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` bytes rounded up to whole sectors.
    pub fn zeroed(len: usize) -> io::Result<AlignedBuf> {
        let len = align_up(len.max(1));
        let layout = Layout::from_size_align(len, SECTOR_BYTES)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: layout has a non-zero size (len >= SECTOR_BYTES).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(AlignedBuf { ptr, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is a live allocation of len initialised (zeroed) bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Ok(layout) = Layout::from_size_align(self.len, SECTOR_BYTES) {
            // SAFETY: allocated in `zeroed` with exactly this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

/// One size class of a fixed-buffer pool: `count` buffers of `buf_bytes`, registered with
/// the ring as buffer indices `first_index..first_index + count`.
struct Class {
    buf_bytes: usize,
    first_index: u16,
    arena: AlignedBuf,
    free: Mutex<Vec<u16>>,
    /// One permit per free buffer; waiting on it is how requests beyond free buffers queue
    /// (FIFO, cancellation-safe).
    permits: Semaphore,
}

/// The registered buffers of one io_uring ring.
pub(crate) struct FixedPool {
    ring: usize,
    classes: Vec<Class>,
}

impl FixedPool {
    /// `classes`: (buffer size, count) pairs. Sizes are rounded up to sectors.
    pub fn new(ring: usize, classes: &[(usize, usize)]) -> io::Result<FixedPool> {
        let mut classes = classes.to_vec();
        classes.sort_by_key(|&(size, _)| size);
        let mut out = Vec::with_capacity(classes.len());
        let mut next_index: usize = 0;
        for (buf_bytes, count) in classes {
            if count == 0 {
                continue;
            }
            let buf_bytes = align_up(buf_bytes);
            let first_index = u16::try_from(next_index)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many fixed buffers"))?;
            next_index += count;
            if next_index > usize::from(u16::MAX) {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many fixed buffers"));
            }
            let arena_bytes = buf_bytes
                .checked_mul(count)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "fixed buffer pool too large"))?;
            let arena = AlignedBuf::zeroed(arena_bytes)?;
            // Indices are popped from the end; keep low indices first for tidiness.
            let free = (0..count as u16).rev().map(|i| first_index + i).collect();
            out.push(Class {
                buf_bytes,
                first_index,
                arena,
                free: Mutex::new(free),
                permits: Semaphore::new(count),
            });
        }
        Ok(FixedPool { ring, classes: out })
    }

    pub fn ring(&self) -> usize {
        self.ring
    }

    /// Total bytes the pool pins when registered.
    pub fn registered_bytes(&self) -> usize {
        self.classes.iter().map(|c| c.arena.len()).sum()
    }

    pub fn largest_buffer(&self) -> usize {
        self.classes.iter().map(|c| c.buf_bytes).max().unwrap_or(0)
    }

    /// One iovec per buffer, in buffer-index order, for `register_buffers`.
    pub fn iovecs(&self) -> Vec<libc::iovec> {
        let mut v = Vec::new();
        for c in &self.classes {
            let count = c.arena.len() / c.buf_bytes;
            for i in 0..count {
                v.push(libc::iovec {
                    // SAFETY: i * buf_bytes < arena.len(), so the offset stays inside the arena.
                    iov_base: unsafe { c.arena.as_ptr().add(i * c.buf_bytes) } as *mut libc::c_void,
                    iov_len: c.buf_bytes,
                });
            }
        }
        v
    }

    /// A buffer of at least `len` bytes (its length is set to `len`). Takes the smallest class
    /// that fits, or any larger class with a free buffer; otherwise waits for the smallest
    /// fitting class.
    pub async fn acquire(self: &Arc<Self>, len: usize) -> io::Result<FixedBuf> {
        if let Some(r) = self.try_acquire(len) {
            return r;
        }
        let Some(smallest) = self.smallest_fitting(len) else { return Err(self.too_large(len)) };
        let permit = self.classes[smallest]
            .permits
            .acquire()
            .await
            .map_err(|_| io::Error::other("fixed buffer pool closed"))?;
        permit.forget();
        self.take(smallest, len)
    }

    /// [`FixedPool::acquire`] without waiting: `None` when every class that fits is taken.
    pub fn try_acquire(self: &Arc<Self>, len: usize) -> Option<io::Result<FixedBuf>> {
        let Some(smallest) = self.smallest_fitting(len) else { return Some(Err(self.too_large(len))) };
        for c in smallest..self.classes.len() {
            if let Ok(permit) = self.classes[c].permits.try_acquire() {
                permit.forget();
                return Some(self.take(c, len));
            }
        }
        None
    }

    /// Classes are sorted by size: the first that fits is the smallest.
    fn smallest_fitting(&self, len: usize) -> Option<usize> {
        self.classes.iter().position(|c| c.buf_bytes >= len)
    }

    fn too_large(&self, len: usize) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("I/O of {len} bytes exceeds the largest registered buffer ({})", self.largest_buffer()),
        )
    }

    /// Pops a free buffer of class `c`; the caller holds (and has forgotten) one permit.
    fn take(self: &Arc<Self>, c: usize, len: usize) -> io::Result<FixedBuf> {
        let class = &self.classes[c];
        let Some(index) = class.free.lock().pop() else {
            // Permits and free list disagree: a bug, but never worth a panic on the I/O path.
            class.permits.add_permits(1);
            return Err(io::Error::other("fixed buffer pool accounting error"));
        };
        let slot = usize::from(index - class.first_index);
        // SAFETY: slot < count, so the buffer lies inside the arena; the free list handed out
        // `index` to us alone, so nobody else accesses this range until we push it back.
        let ptr = unsafe { class.arena.as_ptr().add(slot * class.buf_bytes) } as *mut u8;
        Ok(FixedBuf { pool: Arc::clone(self), class: c, index, ptr, cap: class.buf_bytes, len })
    }

    fn release(&self, class: usize, index: u16) {
        let c = &self.classes[class];
        c.free.lock().push(index);
        c.permits.add_permits(1);
    }
}

/// A registered buffer on loan from a [`FixedPool`]; returns itself to the pool on drop.
pub(crate) struct FixedBuf {
    pool: Arc<FixedPool>,
    class: usize,
    index: u16,
    ptr: *mut u8,
    cap: usize,
    len: usize,
}

// SAFETY: FixedBuf has exclusive use of its range of the pool's arena (handed out once by the
// free list), and the arena lives as long as the Arc<FixedPool> it holds.
unsafe impl Send for FixedBuf {}
// SAFETY: shared references only give out &[u8].
unsafe impl Sync for FixedBuf {}

impl FixedBuf {
    pub fn pool(&self) -> &Arc<FixedPool> {
        &self.pool
    }
    pub fn buf_index(&self) -> u16 {
        self.index
    }
}

impl Drop for FixedBuf {
    fn drop(&mut self) {
        self.pool.release(self.class, self.index);
    }
}

enum Storage {
    Heap(AlignedBuf),
    Fixed(FixedBuf),
}

/// A sector-aligned buffer of `len` bytes that an engine reads into or writes from.
pub(crate) struct IoBuf {
    storage: Storage,
    len: usize,
}

impl IoBuf {
    pub fn heap(len: usize) -> io::Result<IoBuf> {
        Ok(IoBuf { storage: Storage::Heap(AlignedBuf::zeroed(len)?), len })
    }

    pub fn fixed(buf: FixedBuf) -> IoBuf {
        let len = buf.len;
        IoBuf { storage: Storage::Fixed(buf), len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The registered buffer behind this one, if any.
    pub fn as_fixed(&self) -> Option<&FixedBuf> {
        match &self.storage {
            Storage::Fixed(f) => Some(f),
            Storage::Heap(_) => None,
        }
    }

    pub fn as_ptr(&self) -> *const u8 {
        match &self.storage {
            Storage::Heap(h) => h.as_ptr(),
            Storage::Fixed(f) => f.ptr,
        }
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        match &mut self.storage {
            Storage::Heap(h) => h.as_mut_ptr(),
            Storage::Fixed(f) => f.ptr,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match &self.storage {
            Storage::Heap(h) => &h.as_slice()[..self.len],
            // SAFETY: ptr..ptr+cap is this buffer's exclusive range of the arena (see FixedBuf)
            // and len <= cap; the arena was zero-initialised.
            Storage::Fixed(f) => unsafe { std::slice::from_raw_parts(f.ptr, self.len.min(f.cap)) },
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        match &mut self.storage {
            Storage::Heap(h) => &mut h.as_mut_slice()[..len],
            // SAFETY: as in as_slice, and &mut self gives exclusive access.
            Storage::Fixed(f) => unsafe { std::slice::from_raw_parts_mut(f.ptr, len.min(f.cap)) },
        }
    }

    /// The bytes in `range` as [`Bytes`]: a heap buffer becomes the owner (no copy); a
    /// registered buffer is copied out so it can go back to its pool at once.
    pub fn into_bytes(self, range: Range<usize>) -> Bytes {
        match self.storage {
            Storage::Heap(h) => Bytes::from_owner(h).slice(range),
            Storage::Fixed(_) => Bytes::copy_from_slice(&self.as_slice()[range]),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned_and_zeroed() {
        let b = AlignedBuf::zeroed(5000).unwrap();
        assert_eq!(b.len(), 8192);
        assert_eq!(b.as_ptr() as usize % SECTOR_BYTES, 0);
        assert!(b.as_slice().iter().all(|x| *x == 0));
        let mut io = IoBuf::heap(100).unwrap();
        assert_eq!(io.len(), 100);
        io.as_mut_slice().copy_from_slice(&[3u8; 100]);
        let bytes = io.into_bytes(10..20);
        assert_eq!(&bytes[..], &[3u8; 10]);
    }

    #[tokio::test]
    async fn pool_hands_out_distinct_buffers_and_queues() {
        let pool = Arc::new(FixedPool::new(0, &[(4096, 2), (16384, 1)]).unwrap());
        assert_eq!(pool.iovecs().len(), 3);
        assert_eq!(pool.registered_bytes(), 2 * 4096 + 16384);
        let a = pool.acquire(100).await.unwrap();
        let b = pool.acquire(4096).await.unwrap();
        // Small class exhausted: spills into the larger class.
        let c = pool.acquire(10).await.unwrap();
        assert_eq!(c.cap, 16384);
        let idx: std::collections::HashSet<u16> = [a.index, b.index, c.index].into_iter().collect();
        assert_eq!(idx.len(), 3);
        assert!(pool.acquire(20_000).await.is_err());
        // Everything taken: the next request waits until a buffer comes back.
        let p2 = Arc::clone(&pool);
        let waiter = tokio::spawn(async move { p2.acquire(10).await.map(|b| b.index) });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        let freed = a.index;
        drop(a);
        assert_eq!(waiter.await.unwrap().unwrap(), freed);
        drop((b, c));
    }
}
