//! The HTTP/1.1 + HTTP/2 accept loop every fleet server runs (cache node, router, search
//! node), with the limits that keep one client from holding a server: a cap on open
//! connections per listener, a deadline for each request head (which is also how long an
//! idle keep-alive connection stays open), a longest pause inside a request body, and a
//! longest stall while the client does not take the response. Each value has a config key
//! (see `ConnLimits`); defaults follow nginx's.
//!
//! Owns: accepting, per-connection tasks, timeouts, graceful drain. Does not own what a
//! request means (the handler's).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;

use crate::fast::{FastConn, FastHandler, Outcome, Rewind};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Limits of one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A connection must deliver a complete request head within this long after it opens
    /// or after its previous response: slow heads and idle keep-alive connections close.
    pub header_timeout: Duration,
    /// Longest pause between two pieces of a request body.
    pub body_timeout: Duration,
    /// Longest a response write may wait for the client to take bytes.
    pub send_timeout: Duration,
    /// Open connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
}

impl ConnLimits {
    /// Limits that leave a server usable; the message names the `[server]` key.
    pub fn validate(&self) -> Result<(), String> {
        for (name, d) in [
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
            ("send_timeout", self.send_timeout),
        ] {
            if d < Duration::from_millis(100) {
                return Err(format!("server.{name} must be at least 100ms"));
            }
        }
        if self.max_connections == 0 {
            return Err("server.max_connections must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// Metric names of one server (created once, at start).
struct ConnMetrics {
    open: String,
    refused: String,
    timeouts: String,
}

impl ConnMetrics {
    fn new(component: &str) -> Self {
        let m = ConnMetrics {
            open: format!("{component}_http_connections_open"),
            refused: format!("{component}_http_connections_refused_total"),
            timeouts: format!("{component}_http_timeouts_total"),
        };
        metrics::gauge!(m.open.clone()).set(0.0);
        metrics::counter!(m.refused.clone()).absolute(0);
        for kind in ["header", "body", "send"] {
            metrics::counter!(m.timeouts.clone(), "kind" => kind).absolute(0);
        }
        m
    }
}

/// Why a request body stopped: the client paused longer than `body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body paused for longer than {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A request body whose every piece must arrive within `timeout` of the previous one.
pub struct TimedBody<B = Incoming> {
    inner: B,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    on_timeout: Option<metrics::Counter>,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self { inner, timeout, deadline: None, on_timeout: None }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.deadline = None;
                Poll::Ready(r.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let d = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match d.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.deadline = None;
                        if let Some(c) = &this.on_timeout {
                            c.increment(1);
                        }
                        Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket whose writes fail once the peer has taken nothing for `send_timeout`.
struct SendTimeout<T> {
    inner: T,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    on_timeout: metrics::Counter,
}

impl<T: AsyncRead + Unpin> AsyncRead for SendTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> SendTimeout<T> {
    fn stall<R>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<R>> {
        let timeout = self.timeout;
        let s = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match s.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stalled = None;
                self.on_timeout.increment(1);
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the client took no response bytes for {timeout:?}"),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stall(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stall(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stall(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 25\r\nConnection: close\r\n\r\ntoo many open connections";

/// Serves `handler` on `listener` until `shutdown` resolves; in-flight requests then get
/// up to 10 s to finish. `component` prefixes the connection metrics
/// (`<component>_http_connections_open`, …).
///
/// `fast`, when given, sees each connection's bodiless HTTP/1.1 GET and HEAD requests first and
/// answers those it takes itself (see `fast.rs`); the first request it does not take hands the
/// connection to hyper and `handler`.
pub async fn serve_http<F, Fut, RB>(
    listener: TcpListener,
    limits: ConnLimits,
    component: &'static str,
    handler: F,
    fast: Option<FastHandler<RB>>,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(Request<TimedBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<RB>> + Send + 'static,
    RB: Body<Data = Bytes> + Send + Unpin + 'static,
    RB::Error: Into<BoxError>,
{
    let metrics = Arc::new(ConnMetrics::new(component));
    let body_timeouts = metrics::counter!(metrics.timeouts.clone(), "kind" => "body");
    let send_timeouts = metrics::counter!(metrics.timeouts.clone(), "kind" => "send");
    let header_timeouts = metrics::counter!(metrics.timeouts.clone(), "kind" => "header");
    let open = metrics::gauge!(metrics.open.clone());
    let refused = metrics::counter!(metrics.refused.clone());
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    refused.increment(1);
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(REFUSED)).await;
                        let _ = stream.shutdown().await;
                    });
                    continue;
                };
                let handler = handler.clone();
                let body_timeout = limits.body_timeout;
                let body_timeouts = body_timeouts.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let span = tracing::debug_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        range = req.headers().get(http::header::RANGE).and_then(|v| v.to_str().ok()).unwrap_or(""),
                    );
                    let req = req.map(|b| {
                        let mut t = TimedBody::new(b, body_timeout);
                        t.on_timeout = Some(body_timeouts.clone());
                        t
                    });
                    let fut = handler(req);
                    tracing::Instrument::instrument(async move { Ok::<_, std::convert::Infallible>(fut.await) }, span)
                });
                let mut io = SendTimeout {
                    inner: stream,
                    timeout: limits.send_timeout,
                    stalled: None,
                    on_timeout: send_timeouts.clone(),
                };
                let (open, header_timeouts) = (open.clone(), header_timeouts.clone());
                let (builder, watcher, fast, stop) = (builder.clone(), graceful.watcher(), fast.clone(), stop_rx.clone());
                let header_timeout = limits.header_timeout;
                open.increment(1.0);
                tokio::spawn(async move {
                    let stopping = stop.clone();
                    let pre = match &fast {
                        Some(handler) => {
                            let mut conn = FastConn { handler, header_timeout, header_timeouts: &header_timeouts, shutdown: stop };
                            match conn.serve(&mut io).await {
                                Outcome::Closed => None,
                                Outcome::HandOff(pre) => Some(pre),
                            }
                        }
                        None => Some(Bytes::new()),
                    };
                    if let Some(pre) = pre {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(Rewind::new(pre, io)), svc);
                        // Handed over once shutdown began, with a request already read: served
                        // unwatched (a watched one would be closed before answering it); the
                        // drain's time limit still bounds it.
                        let served = if *stopping.borrow() && fast.is_some() {
                            drop(watcher);
                            conn.into_owned().await
                        } else {
                            watcher.watch(conn.into_owned()).await
                        };
                        if let Err(e) = served {
                            let timed_out = e
                                .downcast_ref::<hyper::Error>()
                                .is_some_and(|h| h.is_timeout());
                            if timed_out {
                                header_timeouts.increment(1);
                            }
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    }
                    open.decrement(1.0);
                    drop(permit);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = async {
        graceful.shutdown().await;
        // Connections the fast path still holds end at their next request boundary.
        let _ = permits.acquire_many(u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX)).await;
    };
    if tokio::time::timeout(Duration::from_secs(10), drained).await.is_err() {
        tracing::warn!("connections still open after 10 s; closing them");
    }
}
