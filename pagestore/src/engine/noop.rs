//! The engine that touches no device: every I/O completes at once, a write is dropped and a
//! read leaves its buffer as it was. For tests: a page store whose device keeps nothing must
//! answer misses, never bytes, and must open, write and close without a working device.
//!
//! Owns: nothing but whether it is closed. Not selectable in a config file.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{IoEngine, IoFuture, IoOp};
use crate::buffer::IoBuf;

#[derive(Default)]
pub(crate) struct NoopEngine {
    closed: AtomicBool,
}

impl NoopEngine {
    fn complete(&self, buf: IoBuf) -> IoOp {
        if self.closed.load(Ordering::Acquire) {
            return IoOp::failed(io::Error::other("disk tier is closed"));
        }
        IoOp::Ready(Some(Ok(buf)))
    }
}

impl IoEngine for NoopEngine {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn buffer(&self, len: usize) -> IoFuture<'_, io::Result<IoBuf>> {
        Box::pin(async move { IoBuf::heap(len) })
    }

    fn try_buffer(&self, len: usize) -> Option<io::Result<IoBuf>> {
        Some(IoBuf::heap(len))
    }

    fn read(&self, buf: IoBuf, _offset: u64) -> IoOp {
        self.complete(buf)
    }

    fn write(&self, buf: IoBuf, _offset: u64) -> IoOp {
        self.complete(buf)
    }

    fn shutdown(&self) -> IoFuture<'_, ()> {
        self.closed.store(true, Ordering::Release);
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn completes_at_once_without_touching_the_buffer() {
        let e = NoopEngine::default();
        let mut buf = e.try_buffer(4096).unwrap().unwrap();
        buf.as_mut_slice().fill(0xA5);
        let buf = e.write(buf, 8192).await.unwrap();
        let back = e.read(buf, 8192).await.unwrap();
        assert!(back.as_slice().iter().all(|&b| b == 0xA5), "a read leaves the buffer as it was");
        e.shutdown().await;
        let buf = super::super::buffer(&e, 4096).await.unwrap();
        assert!(e.read(buf, 0).await.is_err(), "closed: I/O is refused");
    }
}
