//! The portable engine: positional `read_at`/`write_at` on tokio's blocking pool.
//!
//! Owns: nothing but a handle to the file. Used where io_uring is refused (seccomp, old
//! kernels, memlock) and as the trivial engine in tests. Each I/O is one blocking-pool task
//! that owns its buffer until the syscall returns, so a dropped caller never frees memory the
//! kernel is still writing.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{IoEngine, IoFuture, IoOp};
use crate::buffer::IoBuf;

pub(crate) struct PreadEngine {
    file: Arc<File>,
    closed: Arc<AtomicBool>,
}

impl PreadEngine {
    pub fn new(file: Arc<File>) -> PreadEngine {
        PreadEngine { file, closed: Arc::new(AtomicBool::new(false)) }
    }

    fn run(&self, mut buf: IoBuf, offset: u64, write: bool) -> IoOp {
        let file = Arc::clone(&self.file);
        let closed = Arc::clone(&self.closed);
        IoOp::Boxed(Box::pin(async move {
            if closed.load(Ordering::Acquire) {
                return Err(io::Error::other("disk tier is closed"));
            }
            let task = tokio::task::spawn_blocking(move || {
                let res = if write {
                    file.write_all_at(buf.as_slice(), offset)
                } else {
                    match file.read_exact_at(buf.as_mut_slice(), offset) {
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read from page file"))
                        }
                        other => other,
                    }
                };
                res.map(|()| buf)
            });
            task.await.map_err(|e| io::Error::other(format!("blocking I/O task failed: {e}")))?
        }))
    }
}

impl IoEngine for PreadEngine {
    fn name(&self) -> &'static str {
        "pread"
    }

    fn buffer(&self, len: usize) -> IoFuture<'_, io::Result<IoBuf>> {
        Box::pin(async move { IoBuf::heap(len) })
    }

    fn try_buffer(&self, len: usize) -> Option<io::Result<IoBuf>> {
        Some(IoBuf::heap(len))
    }

    fn read(&self, buf: IoBuf, offset: u64) -> IoOp {
        self.run(buf, offset, false)
    }

    fn write(&self, buf: IoBuf, offset: u64) -> IoOp {
        self.run(buf, offset, true)
    }

    fn shutdown(&self) -> IoFuture<'_, ()> {
        self.closed.store(true, Ordering::Release);
        Box::pin(async {})
    }
}
