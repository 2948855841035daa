//! How I/O is submitted: the [`IoEngine`] seam and the start-up choice between io_uring and
//! pread.
//!
//! Owns: the engine trait (buffers in, buffers out, nothing about slots or pages) and the
//! probe that picks an engine at open. Does not own: the engines themselves (`uring.rs`,
//! `pread.rs`, `noop.rs`) or what is read and written (`store.rs`).

use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tracing::warn;

mod noop;
mod pread;
mod uring;

use noop::NoopEngine;
use pread::PreadEngine;
use uring::{IoWait, UringEngine, UringOptions};

use super::buffer::IoBuf;
use super::{DiskError, IoEngineChoice};

pub(crate) type IoFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A submitted read or write. io_uring's is a plain struct (no allocation per I/O); the
/// pread engine's is boxed; an I/O refused before submission is answered at once.
#[must_use = "an I/O of the pread engine does nothing until awaited"]
pub(crate) enum IoOp {
    Uring(IoWait),
    Boxed(IoFuture<'static, io::Result<IoBuf>>),
    Ready(Option<io::Result<IoBuf>>),
}

impl IoOp {
    pub fn failed(e: io::Error) -> IoOp {
        IoOp::Ready(Some(Err(e)))
    }
}

impl Future for IoOp {
    type Output = io::Result<IoBuf>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<IoBuf>> {
        match self.get_mut() {
            IoOp::Uring(w) => Pin::new(w).poll(cx),
            IoOp::Boxed(f) => f.as_mut().poll(cx),
            IoOp::Ready(r) => {
                Poll::Ready(r.take().unwrap_or_else(|| Err(io::Error::other("I/O polled after it finished"))))
            }
        }
    }
}

/// Positional, sector-aligned I/O on the page file.
///
/// Offsets and buffer lengths are multiples of 4096. A read or write either transfers the
/// whole buffer or fails (short transfers are errors). The engine owns the buffer while the
/// kernel uses it: if the caller drops the future, the I/O still completes and the buffer is
/// released afterwards.
pub(crate) trait IoEngine: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// A buffer of `len` bytes suited to this engine (registered for io_uring). May wait for
    /// one to become free. Its contents are unspecified: callers overwrite every byte they
    /// write.
    fn buffer(&self, len: usize) -> IoFuture<'_, io::Result<IoBuf>>;

    /// [`IoEngine::buffer`] when one is free right now (the common case, without a future);
    /// `None` when the caller would have to wait.
    fn try_buffer(&self, len: usize) -> Option<io::Result<IoBuf>>;

    /// Fills `buf` from the file at `offset`.
    fn read(&self, buf: IoBuf, offset: u64) -> IoOp;

    /// Writes all of `buf` to the file at `offset`.
    fn write(&self, buf: IoBuf, offset: u64) -> IoOp;

    /// Stops accepting I/O, lets in-flight I/O finish and stops engine threads.
    fn shutdown(&self) -> IoFuture<'_, ()>;
}

/// A buffer of `len` bytes from `engine`: at once when one is free, else once one is.
pub(crate) async fn buffer(engine: &dyn IoEngine, len: usize) -> io::Result<IoBuf> {
    match engine.try_buffer(len) {
        Some(r) => r,
        None => engine.buffer(len).await,
    }
}

/// Engine parameters from the tier's config.
pub(crate) struct EngineOptions {
    pub choice: IoEngineChoice,
    pub rings: usize,
    pub queue_depth: u32,
    pub registered_buffers: usize,
    /// Largest single I/O (a whole slot: header sector + page).
    pub max_io_bytes: usize,
}

/// Starts the engine `opts.choice` asks for. `Auto` tries io_uring (ring setup, buffer
/// registration, one real read per ring) and falls back to pread with one warning.
pub(crate) async fn start(file: Arc<File>, opts: &EngineOptions) -> Result<Arc<dyn IoEngine>, DiskError> {
    match opts.choice {
        IoEngineChoice::Pread => Ok(Arc::new(PreadEngine::new(file))),
        IoEngineChoice::Noop => Ok(Arc::new(NoopEngine::default())),
        IoEngineChoice::Uring => match start_uring(Arc::clone(&file), opts).await {
            Ok(e) => Ok(e),
            Err(reason) => Err(DiskError::EngineUnavailable(reason)),
        },
        IoEngineChoice::Auto => match start_uring(Arc::clone(&file), opts).await {
            Ok(e) => Ok(e),
            Err(reason) => {
                warn!(%reason, "io_uring unavailable; disk tier uses pread on the blocking pool");
                Ok(Arc::new(PreadEngine::new(file)))
            }
        },
    }
}

async fn start_uring(file: Arc<File>, opts: &EngineOptions) -> Result<Arc<dyn IoEngine>, String> {
    let rings = if opts.rings == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        opts.rings
    };
    let uopts = UringOptions {
        rings,
        queue_depth: opts.queue_depth,
        registered_buffers: opts.registered_buffers,
        max_io_bytes: opts.max_io_bytes,
    };
    let engine = tokio::task::spawn_blocking(move || UringEngine::start(file, &uopts))
        .await
        .map_err(|e| format!("io_uring start-up task failed: {e}"))??;
    if let Err(e) = engine.probe().await {
        engine.shutdown().await;
        return Err(format!("io_uring probe read failed: {e}"));
    }
    Ok(Arc::new(engine))
}
