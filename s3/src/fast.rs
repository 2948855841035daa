//! The HTTP/1.1 fast path in front of hyper: a connection's bodiless GET and HEAD requests
//! are parsed here (httparse, in place) and, when the server's fast handler takes them,
//! answered here — no hyper dispatcher, no per-request task, the answer's head and first body
//! piece in one write. Everything else is handed to hyper with the bytes already read, and
//! hyper serves the rest of that connection: HTTP/2 (its preface), HTTP/1.0, bodies, upgrades,
//! `Expect`, heads that do not parse or are larger than `MAX_HEAD` (hyper answers those with its
//! own 400/431), and any request the handler declines.
//!
//! Owns: reading and parsing request heads, the framing of answers (Content-Length, chunked,
//! HEAD/204/304 without a body, `connection: close`, `date`), keep-alive and pipelining, the
//! header deadline on this part of a connection. Does not own: what a request means (the
//! handler's), the send timeout (the socket wrapper's), accepting (`listener.rs`).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::listener::BoxError;

/// The answer to a request the fast handler took; `None`: it declined after all, and the
/// request goes to hyper (and through it to the full handler) as if never seen.
pub type FastFuture<RB> = Pin<Box<dyn Future<Output = Option<Response<RB>>> + Send>>;

/// Looks at a bodiless HTTP/1.1 GET or HEAD and either takes it (the future answers it) or
/// returns `None`, handing the connection to hyper.
pub type FastHandler<RB> = Arc<dyn Fn(Request<()>) -> Option<FastFuture<RB>> + Send + Sync>;

/// Largest request head the fast path waits for (one read may bring up to `READ_CHUNK` more); a
/// longer one goes to hyper, which applies its own limits (about 400 KiB and 100 headers, then
/// 431) and its own header deadline from then on.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers in a request the fast path parses; more go to hyper.
const MAX_HEADERS: usize = 64;
const READ_CHUNK: usize = 8 * 1024;

/// How the fast part of a connection ended.
pub enum Outcome {
    /// The connection is done (closed by the client, `connection: close`, a timeout, an error,
    /// shutdown).
    Closed,
    /// hyper serves the rest; these bytes were read from the socket and not answered.
    HandOff(Bytes),
}

/// What the fast loop needs from its listener.
pub struct FastConn<'a, RB> {
    pub handler: &'a FastHandler<RB>,
    pub header_timeout: Duration,
    pub header_timeouts: &'a metrics::Counter,
    /// Turns true when the server shuts down: an idle connection closes, a busy one closes after
    /// its answer.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl<RB> FastConn<'_, RB>
where
    RB: Body<Data = Bytes> + Send + Unpin + 'static,
    RB::Error: Into<BoxError>,
{
    /// Serves requests on `io` until the connection ends or a request needs hyper.
    pub async fn serve<IO: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut IO) -> Outcome {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut out = Vec::with_capacity(1024);
        loop {
            let parsed = match self.read_head(io, &mut buf).await {
                Head::Parsed(p) => p,
                Head::HandOff => return Outcome::HandOff(buf.freeze()),
                Head::Closed => return Outcome::Closed,
            };
            let head_bytes = buf.split_to(parsed.len).freeze();
            let Some((req, close)) = build_request(&head_bytes, &parsed) else {
                return hand_back(head_bytes, buf);
            };
            let is_head = req.method() == Method::HEAD;
            let Some(answer) = (self.handler)(req) else { return hand_back(head_bytes, buf) };
            let Some(resp) = answer.await else { return hand_back(head_bytes, buf) };
            let close = close || *self.shutdown.borrow();
            match write_response(io, resp, is_head, close, &mut out).await {
                Ok(true) if !close => {}
                _ => {
                    let _ = io.shutdown().await;
                    return Outcome::Closed;
                }
            }
        }
    }

    /// Reads until `buf` starts with a complete request head the fast path can parse.
    async fn read_head<IO: AsyncRead + Unpin>(&mut self, io: &mut IO, buf: &mut BytesMut) -> Head {
        let deadline = tokio::time::Instant::now() + self.header_timeout;
        // Bytes already searched for a head's end: a head sent in small pieces is not parsed
        // again from its start on every read.
        let mut searched = 0;
        loop {
            if !buf.is_empty() && may_end_head(buf, searched) {
                match parse(buf) {
                    Parse::Complete(p) => return Head::Parsed(p),
                    Parse::NotOurs => return Head::HandOff,
                    Parse::Partial if buf.len() >= MAX_HEAD => return Head::HandOff,
                    Parse::Partial => {}
                }
            }
            if buf.len() >= MAX_HEAD {
                return Head::HandOff;
            }
            searched = buf.len();
            if buf.capacity() - buf.len() < READ_CHUNK / 2 {
                buf.reserve(READ_CHUNK);
            }
            let read = tokio::select! {
                r = tokio::time::timeout_at(deadline, io.read_buf(buf)) => r,
                _ = self.shutdown.wait_for(|stop| *stop) => return Head::Closed,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
                Ok(Ok(_)) => {}
                Err(_) => {
                    self.header_timeouts.increment(1);
                    return Head::Closed;
                }
            }
        }
    }
}

/// Whether `buf` may hold a complete head: nothing searched yet, or an empty line (LF LF or
/// LF CR LF, the endings httparse accepts) that ends among the bytes after `searched`.
fn may_end_head(buf: &[u8], searched: usize) -> bool {
    if searched == 0 {
        return true;
    }
    let from = searched.saturating_sub(2);
    buf[from..].windows(2).enumerate().any(|(i, w)| {
        w[0] == b'\n' && (w[1] == b'\n' || (w[1] == b'\r' && buf.get(from + i + 2) == Some(&b'\n')))
    })
}

fn hand_back(head: Bytes, rest: BytesMut) -> Outcome {
    if rest.is_empty() {
        return Outcome::HandOff(head);
    }
    let mut all = BytesMut::with_capacity(head.len() + rest.len());
    all.extend_from_slice(&head);
    all.extend_from_slice(&rest);
    Outcome::HandOff(all.freeze())
}

enum Head {
    Parsed(Parsed),
    HandOff,
    Closed,
}

enum Parse {
    Complete(Parsed),
    Partial,
    /// Not a request for the fast path: hyper takes it (and answers errors its way).
    NotOurs,
}

/// Where the parts of a parsed head lie in its bytes.
struct Parsed {
    len: usize,
    method: Method,
    path: (usize, usize),
    headers: Vec<((usize, usize), (usize, usize))>,
}

fn parse(buf: &[u8]) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::NotOurs,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parse::NotOurs,
    };
    if req.version != Some(1) {
        return Parse::NotOurs;
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start, start + s.len())
    };
    let Some(path) = req.path else { return Parse::NotOurs };
    let mut spans = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(TRANSFER_ENCODING.as_str().as_bytes())
            || name.eq_ignore_ascii_case(EXPECT.as_str().as_bytes())
            || name.eq_ignore_ascii_case(UPGRADE.as_str().as_bytes())
            || (name.eq_ignore_ascii_case(CONTENT_LENGTH.as_str().as_bytes()) && h.value.trim_ascii() != b"0")
        {
            return Parse::NotOurs;
        }
        spans.push((span(name), span(h.value)));
    }
    Parse::Complete(Parsed { len, method, path: span(path.as_bytes()), headers: spans })
}

/// The request as the handler sees it (header values share the head's bytes), and whether the
/// client asked for the connection to close. `None`: something `http` refuses — hyper decides.
fn build_request(head: &Bytes, p: &Parsed) -> Option<(Request<()>, bool)> {
    let uri = Uri::from_maybe_shared(head.slice(p.path.0..p.path.1)).ok()?;
    let mut headers = HeaderMap::with_capacity(p.headers.len());
    let mut close = false;
    for &((n0, n1), (v0, v1)) in &p.headers {
        let name = HeaderName::from_bytes(&head[n0..n1]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v1)).ok()?;
        if name == CONNECTION {
            let tokens = value.to_str().ok()?;
            for t in tokens.split(',').map(str::trim) {
                if t.eq_ignore_ascii_case("close") {
                    close = true;
                } else if t.eq_ignore_ascii_case("upgrade") {
                    return None;
                }
            }
        }
        headers.append(name, value);
    }
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some((req, close))
}

/// How the answer's body is framed on the wire.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Writes one answer. `Ok(true)`: the connection may carry another request; `Ok(false)` or an
/// error: it must close (the answer asked for that, or its body failed or did not match its
/// length — the client sees a cut answer, never one that looks whole).
async fn write_response<IO, RB>(
    io: &mut IO,
    resp: Response<RB>,
    is_head: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> io::Result<bool>
where
    IO: AsyncWrite + Unpin,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    // 1xx, 204 and 304 carry no body and, as hyper sends them, no Content-Length either.
    let no_body_status =
        status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    // The first Content-Length the handler set, digits only; none is needed without a body.
    let declared = match parts.headers.get(CONTENT_LENGTH) {
        Some(v) if !no_body_status => Some(
            content_length(v.as_bytes()).ok_or_else(|| io::Error::other("bad content-length in answer"))?,
        ),
        _ => None,
    };
    let close =
        close
            || parts.headers.get_all(CONNECTION).iter().any(|v| {
                v.to_str().is_ok_and(|t| t.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
            });
    let framing = if is_head || no_body_status {
        Framing::None
    } else if let Some(n) = declared {
        Framing::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        Framing::Length(n)
    } else {
        Framing::Chunked
    };
    // The Content-Length line: the body's, or for a HEAD the length its GET would have (as
    // hyper: stated, or known from a body that is not already at its end).
    let length_line = match framing {
        Framing::Length(n) => Some(n),
        Framing::None if is_head && !no_body_status => {
            declared.or_else(|| if body.is_end_stream() { None } else { body.size_hint().exact() })
        }
        _ => None,
    };

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == TRANSFER_ENCODING || name == CONNECTION || name == CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = length_line {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if matches!(framing, Framing::Chunked) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !parts.headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");

    let mut left = match framing {
        Framing::None | Framing::Length(0) => {
            io.write_all(out).await?;
            io.flush().await?;
            return Ok(!close);
        }
        Framing::Length(n) => Some(n),
        Framing::Chunked => None,
    };
    let mut head_sent = false;
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut state = BodyState::default();
    loop {
        pieces.clear();
        match next_pieces(&mut body, &mut pieces, &mut state).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                // The head goes out as hyper's would; the body stops short of its length (or
                // its last chunk) and the connection closes: the answer never looks whole.
                tracing::debug!(error = %e, "answer body failed; closing the connection");
                if !head_sent {
                    io.write_all(out).await?;
                    io.flush().await?;
                }
                return Ok(false);
            }
        }
        let mut overlong = false;
        if let Some(n) = left.as_mut() {
            let mut keep = 0;
            for p in pieces.iter_mut() {
                if p.len() as u64 > *n {
                    // More than it declared: never send bytes past the length, and close after.
                    p.truncate(*n as usize);
                    overlong = true;
                }
                *n -= p.len() as u64;
                keep += 1;
                if overlong {
                    break;
                }
            }
            pieces.truncate(keep);
        }
        let chunked = left.is_none();
        let chunk_heads: Vec<([u8; 18], usize)> = if chunked {
            pieces
                .iter()
                .map(|p| {
                    let mut h = [0u8; 18];
                    let n = chunk_prefix(p.len(), &mut h).len();
                    (h, n)
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + pieces.len() * if chunked { 3 } else { 1 });
        if !head_sent {
            parts.push(out);
        }
        for (i, p) in pieces.iter().enumerate() {
            if chunked {
                parts.push(&chunk_heads[i].0[..chunk_heads[i].1]);
                parts.push(p);
                parts.push(b"\r\n");
            } else {
                parts.push(p);
            }
        }
        write_all_vectored(io, &mut parts).await?;
        head_sent = true;
        if overlong {
            tracing::warn!(status = %status, "answer body longer than its Content-Length; cut and closing");
            io.flush().await?;
            return Ok(false);
        }
        if left == Some(0) {
            break;
        }
    }
    if !head_sent {
        io.write_all(out).await?;
    }
    match left {
        None => io.write_all(b"0\r\n\r\n").await?,
        Some(0) => {}
        // Fewer bytes than declared: the client's read stays short and the connection closes.
        Some(_) => return Ok(false),
    }
    io.flush().await?;
    Ok(!close)
}

/// A Content-Length value: ASCII digits only (no sign, no spaces inside), as hyper accepts.
fn content_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Most body pieces one write takes.
const MAX_GATHER: usize = 64;

/// Where a body stands between writes: ended, or failed after pieces that are still to go out.
#[derive(Default)]
struct BodyState {
    ended: bool,
    failed: Option<BoxError>,
}

/// Waits for the body's next data, then takes whatever more of it is ready at once (up to
/// [`MAX_GATHER`] pieces), so a body of many ready pieces leaves in one write. `Ok(false)`: the
/// body has ended; an error comes only once the pieces before it have been taken.
async fn next_pieces<RB>(
    body: &mut RB,
    pieces: &mut Vec<Bytes>,
    state: &mut BodyState,
) -> Result<bool, BoxError>
where
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| {
        if let Some(e) = state.failed.take() {
            return Poll::Ready(Err(e));
        }
        if state.ended {
            return Poll::Ready(Ok(false));
        }
        loop {
            if pieces.len() >= MAX_GATHER {
                return Poll::Ready(Ok(true));
            }
            match Pin::new(&mut *body).poll_frame(cx) {
                // Trailers: HTTP/1.1 answers here carry none.
                Poll::Ready(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data()
                        && !d.is_empty()
                    {
                        pieces.push(d);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    if pieces.is_empty() {
                        return Poll::Ready(Err(e.into()));
                    }
                    state.failed = Some(e.into());
                    return Poll::Ready(Ok(true));
                }
                Poll::Ready(None) => {
                    state.ended = true;
                    return Poll::Ready(Ok(!pieces.is_empty()));
                }
                Poll::Pending if pieces.is_empty() => return Poll::Pending,
                Poll::Pending => return Poll::Ready(Ok(true)),
            }
        }
    })
    .await
}

fn chunk_prefix(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let d = &digits[i..];
    buf[..d.len()].copy_from_slice(d);
    buf[d.len()..d.len() + 2].copy_from_slice(b"\r\n");
    &buf[..d.len() + 2]
}

/// Writes every byte of `parts`, in as few system calls as the socket takes.
async fn write_all_vectored<IO: AsyncWrite + Unpin>(io: &mut IO, parts: &mut [&[u8]]) -> io::Result<()> {
    let mut first = 0;
    while first < parts.len() {
        if parts[first].is_empty() {
            first += 1;
            continue;
        }
        let mut slices = [IoSlice::new(&[]); MAX_GATHER + 1];
        let count = (parts.len() - first).min(slices.len());
        for (slot, part) in slices.iter_mut().zip(&parts[first..first + count]) {
            *slot = IoSlice::new(part);
        }
        let mut n = io.write_vectored(&slices[..count]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 && first < parts.len() {
            let take = n.min(parts[first].len());
            parts[first] = &parts[first][take..];
            n -= take;
            if parts[first].is_empty() {
                first += 1;
            }
        }
    }
    Ok(())
}

/// `date` as hyper writes it (IMF-fixdate), formatted once a second per thread.
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

/// A socket whose first reads return bytes already taken from it, so hyper sees the connection
/// from its start.
pub struct Rewind<T> {
    pre: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(pre: Bytes, inner: T) -> Self {
        Self { pre, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

    fn full(s: &'static str) -> TestBody {
        Full::new(Bytes::from_static(s.as_bytes())).map_err(|e| match e {}).boxed_unsync()
    }

    /// A body of unknown length made of `pieces`, failing after them if `fail`.
    fn stream(pieces: &[&'static str], fail: bool) -> TestBody {
        let mut items: Vec<Result<Frame<Bytes>, BoxError>> =
            pieces.iter().map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))).collect();
        if fail {
            items.push(Err("node went away".into()));
        }
        StreamBody::new(futures::stream::iter(items)).boxed_unsync()
    }

    /// Answers by path: /ok (Content-Length), /chunked, /short (declares 10, sends 3), /broken
    /// (fails mid-body), /empty (204), /later (declines once it has looked); anything else is
    /// not taken.
    fn handler() -> FastHandler<TestBody> {
        Arc::new(|req: Request<()>| {
            let path = req.uri().path().to_string();
            let resp = |body: TestBody| {
                let mut r = Response::new(body);
                r.headers_mut().insert("x-path", HeaderValue::from_str(&path).unwrap());
                r
            };
            let answer = match path.as_str() {
                "/ok" => Some(resp(full("hello"))),
                "/chunked" => Some(resp(stream(&["ab", "", "cde"], false))),
                "/short" => {
                    let mut r = resp(stream(&["abc"], false));
                    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from_static("10"));
                    Some(r)
                }
                "/long" => {
                    let mut r = resp(stream(&["abcdef"], false));
                    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from_static("4"));
                    Some(r)
                }
                "/broken" => Some(resp(stream(&["abc"], true))),
                "/fail-first" => Some(resp(stream(&[], true))),
                "/plus" => {
                    let mut r = resp(full("hello"));
                    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from_static("+5"));
                    Some(r)
                }
                "/head-empty" => Some(resp(full(""))),
                "/two-lengths" => {
                    let mut r = resp(full(""));
                    r.headers_mut().append(CONTENT_LENGTH, HeaderValue::from_static("7"));
                    r.headers_mut().append(CONTENT_LENGTH, HeaderValue::from_static("8"));
                    Some(r)
                }
                "/close" => {
                    let mut r = resp(full("hello"));
                    r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                    Some(r)
                }
                "/empty" => {
                    let mut r = resp(full(""));
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    Some(r)
                }
                "/many" => {
                    let pieces: Vec<Result<Frame<Bytes>, BoxError>> =
                        (0..100).map(|i| Ok(Frame::data(Bytes::from(format!("{:02}", i))))).collect();
                    let mut r = resp(StreamBody::new(futures::stream::iter(pieces)).boxed_unsync());
                    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from_static("200"));
                    Some(r)
                }
                "/many-broken" => Some(resp(stream(&["a", "b", "c"], true))),
                "/later" => None,
                _ => return None,
            };
            Some(Box::pin(async move { answer }) as FastFuture<TestBody>)
        })
    }

    struct Run {
        outcome: Outcome,
        /// Everything the server wrote, in order.
        wrote: String,
        timeouts: u64,
    }

    /// Sends `input` (then keeps the client side open, or closes it if `eof`) and runs the fast
    /// loop on the other end until it ends.
    async fn run(input: &[u8], eof: bool, header_timeout: Duration) -> Run {
        let (mut client, mut server): (DuplexStream, DuplexStream) = tokio::io::duplex(1 << 20);
        client.write_all(input).await.unwrap();
        if eof {
            client.shutdown().await.unwrap();
        }
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = metrics::Counter::from_arc(count.clone());
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let h = handler();
        let mut conn = FastConn { handler: &h, header_timeout, header_timeouts: &counter, shutdown: stop };
        let outcome = conn.serve(&mut server).await;
        drop(server);
        let mut wrote = Vec::new();
        client.read_to_end(&mut wrote).await.unwrap();
        let timeouts = count.load(std::sync::atomic::Ordering::Relaxed);
        Run { outcome, wrote: String::from_utf8(wrote).unwrap(), timeouts }
    }

    const T: Duration = Duration::from_secs(5);

    /// A socket that takes every vectored write whole and counts the writes.
    struct Counting {
        inner: DuplexStream,
        writes: usize,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write(cx, buf);
            if matches!(r, Poll::Ready(Ok(_))) {
                self.writes += 1;
            }
            r
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.poll_write(cx, &all)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Serves one request on a counting socket: what was written, and in how many writes.
    async fn run_counted(input: &[u8]) -> (String, usize) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let counter = metrics::Counter::noop();
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let h = handler();
        let mut conn = FastConn { handler: &h, header_timeout: T, header_timeouts: &counter, shutdown: stop };
        let mut io = Counting { inner: server, writes: 0 };
        conn.serve(&mut io).await;
        let writes = io.writes;
        drop(io);
        let mut wrote = Vec::new();
        client.read_to_end(&mut wrote).await.unwrap();
        (String::from_utf8(wrote).unwrap(), writes)
    }

    #[tokio::test]
    async fn a_body_of_many_ready_pieces_leaves_in_few_writes() {
        let (wrote, writes) = run_counted(b"GET /many HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let body: String = (0..100).map(|i| format!("{i:02}")).collect();
        assert!(wrote.ends_with(&format!("\r\n\r\n{body}")), "{wrote}");
        // The head and 64 pieces, then the other 36: one write per gather of ready pieces.
        assert_eq!(writes, 2, "{wrote}");
        // Pieces before a failure still go out (chunked), and the answer never looks whole.
        let (wrote, _) = run_counted(b"GET /many-broken HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(wrote.ends_with("\r\n\r\n1\r\na\r\n1\r\nb\r\n1\r\nc\r\n"), "{wrote}");
    }

    fn handed(o: &Outcome) -> &[u8] {
        match o {
            Outcome::HandOff(b) => b,
            Outcome::Closed => panic!("expected a hand-off"),
        }
    }

    #[tokio::test]
    async fn pipelined_reads_are_answered_in_order_with_their_framing() {
        let input = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nHEAD /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /chunked HTTP/1.1\r\nHost: a\r\n\r\nGET /empty HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n";
        let r = run(input, true, T).await;
        assert!(matches!(r.outcome, Outcome::Closed));
        let answers: Vec<&str> = r.wrote.split("HTTP/1.1 ").filter(|s| !s.is_empty()).collect();
        assert_eq!(answers.len(), 4, "{}", r.wrote);
        assert!(answers[0].starts_with("200 OK\r\n"));
        assert!(
            answers[0].contains("\r\nx-path: /ok\r\n") && answers[0].contains("\r\ncontent-length: 5\r\n")
        );
        assert!(answers[0].contains("\r\ndate: ") && answers[0].ends_with("\r\n\r\nhello"));
        // HEAD: the length of the body it would have, no body.
        assert!(answers[1].contains("\r\ncontent-length: 5\r\n") && answers[1].ends_with("\r\n\r\n"));
        assert!(answers[2].contains("\r\ntransfer-encoding: chunked\r\n"));
        assert!(answers[2].ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"), "{}", answers[2]);
        assert!(answers[3].starts_with("204 No Content\r\n") && !answers[3].contains("content-length"));
        assert!(!r.wrote.contains("connection: close"));
    }

    #[tokio::test]
    async fn connection_close_is_honoured() {
        let input = b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n";
        let r = run(input, false, T).await;
        assert!(matches!(r.outcome, Outcome::Closed));
        assert_eq!(r.wrote.matches("HTTP/1.1 200").count(), 1, "{}", r.wrote);
        assert!(r.wrote.contains("\r\nconnection: close\r\n"));
    }

    #[tokio::test]
    async fn requests_it_does_not_take_go_to_hyper_byte_for_byte() {
        let cases: &[&[u8]] = &[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /ok HTTP/1.0\r\nHost: a\r\n\r\n",
            b"GET /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /ok HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /ok HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"GET /ok HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n",
            b"GET /other HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\n\r\n",
            b"GET /later HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\n\r\n",
            b"GET /ok HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GARBAGE\r\n\r\n",
        ];
        for input in cases {
            let r = run(input, false, T).await;
            assert_eq!(handed(&r.outcome), *input, "{}", String::from_utf8_lossy(input));
            assert!(r.wrote.is_empty());
        }
        // After answered requests, the rest (from the first it does not take) goes on.
        let input = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nPUT /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nz";
        let r = run(input, false, T).await;
        assert_eq!(handed(&r.outcome), b"PUT /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nz");
        assert_eq!(r.wrote.matches("HTTP/1.1 200").count(), 1);
    }

    #[tokio::test]
    async fn an_oversized_head_goes_to_hyper() {
        let mut input = b"GET /ok HTTP/1.1\r\nHost: a\r\n".to_vec();
        // Few headers (more than MAX_HEADERS is hyper's anyway), each long.
        while input.len() <= MAX_HEAD {
            input.extend_from_slice(b"X-Pad: ");
            input.extend_from_slice(&[b'p'; 4000]);
            input.extend_from_slice(b"\r\n");
        }
        let r = run(&input, false, T).await;
        // What it read so far goes to hyper; the rest is still in the socket for hyper to read.
        let handed = handed(&r.outcome);
        assert!(handed.len() >= MAX_HEAD && input.starts_with(handed), "handed {} bytes", handed.len());
        assert!(r.wrote.is_empty());
    }

    #[tokio::test]
    async fn a_body_that_breaks_its_framing_closes_the_connection() {
        // Short of its Content-Length or failing mid-way: the answer is cut (never padded, never
        // completed as if whole) and nothing more is read on the connection.
        for (path, expect_tail) in [("/short", "\r\n\r\nabc"), ("/broken", "\r\n3\r\nabc\r\n")] {
            let input = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n");
            let r = run(input.as_bytes(), false, T).await;
            assert!(matches!(r.outcome, Outcome::Closed), "{path}");
            assert!(r.wrote.ends_with(expect_tail), "{path}: {}", r.wrote);
            assert_eq!(r.wrote.matches("HTTP/1.1 ").count(), 1, "{path}: {}", r.wrote);
        }
    }

    #[tokio::test]
    async fn a_body_longer_than_declared_is_cut_at_its_length_and_closes() {
        let r =
            run(b"GET /long HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n", false, T).await;
        assert!(matches!(r.outcome, Outcome::Closed));
        assert!(
            r.wrote.contains("\r\ncontent-length: 4\r\n") && r.wrote.ends_with("\r\n\r\nabcd"),
            "{}",
            r.wrote
        );
        assert_eq!(r.wrote.matches("HTTP/1.1 ").count(), 1);
    }

    #[tokio::test]
    async fn edge_answers_are_framed_as_hyper_frames_them() {
        // A body that fails before its first byte: the head, no body, no last chunk, closed.
        let r = run(b"GET /fail-first HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\n\r\n", false, T).await;
        assert!(matches!(r.outcome, Outcome::Closed), "{}", r.wrote);
        assert!(
            r.wrote.contains("transfer-encoding: chunked") && r.wrote.ends_with("\r\n\r\n"),
            "{}",
            r.wrote
        );
        assert_eq!(r.wrote.matches("HTTP/1.1 ").count(), 1);
        // A Content-Length that is not plain digits: refused, nothing sent.
        let r = run(b"GET /plus HTTP/1.1\r\nHost: a\r\n\r\n", false, T).await;
        assert!(matches!(r.outcome, Outcome::Closed) && r.wrote.is_empty(), "{}", r.wrote);
        // HEAD of an empty body: no length line; a stated length is kept, once.
        let r = run(
            b"HEAD /head-empty HTTP/1.1\r\nHost: a\r\n\r\nHEAD /two-lengths HTTP/1.1\r\nHost: a\r\n\r\n",
            true,
            T,
        )
        .await;
        let (first, second) = r.wrote.split_once("HTTP/1.1 200 OK\r\nx-path: /two-lengths").unwrap();
        assert!(!first.contains("content-length"), "{first}");
        assert_eq!(second.matches("content-length").count(), 1, "{second}");
        assert!(second.contains("\r\ncontent-length: 7\r\n") && second.ends_with("\r\n\r\n"), "{second}");
        // An answer that asks to close: the connection closes after it.
        let r =
            run(b"GET /close HTTP/1.1\r\nHost: a\r\n\r\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n", false, T).await;
        assert!(matches!(r.outcome, Outcome::Closed));
        assert_eq!(r.wrote.matches("HTTP/1.1 ").count(), 1);
        assert!(r.wrote.contains("\r\nconnection: close\r\n") && r.wrote.ends_with("hello"));
    }

    #[tokio::test]
    async fn a_head_arriving_byte_by_byte_is_parsed_once_complete() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let input = b"GET /ok HTTP/1.1\nHost: a\n\nGET /ok HTTP/1.1\r\nHost: a\r\n\r\n";
        let writer = tokio::spawn(async move {
            for b in input {
                client.write_all(&[*b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            client.shutdown().await.unwrap();
            let mut wrote = Vec::new();
            client.read_to_end(&mut wrote).await.unwrap();
            String::from_utf8(wrote).unwrap()
        });
        let (h, counter) = (handler(), metrics::Counter::noop());
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let mut conn = FastConn { handler: &h, header_timeout: T, header_timeouts: &counter, shutdown: stop };
        assert!(matches!(conn.serve(&mut server).await, Outcome::Closed));
        drop(server);
        let wrote = writer.await.unwrap();
        assert_eq!(wrote.matches("\r\n\r\nhello").count(), 2, "{wrote}");
    }

    #[test]
    fn head_ends_are_found_across_reads() {
        assert!(may_end_head(b"GET / HTTP/1.1\r\n", 0));
        assert!(!may_end_head(b"GET / HTTP/1.1\r\nHost: a\r\n", 16));
        // 27 bytes; the empty line is bytes 24..27.
        assert!(may_end_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 26));
        assert!(may_end_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 25));
        assert!(!may_end_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27));
        assert!(may_end_head(b"GET / HTTP/1.1\nHost: a\n\n", 23));
        assert!(!may_end_head(b"GET / HTTP/1.1\r\nHost: a\r\nX: b", 27));
        assert_eq!(content_length(b" 12 "), Some(12));
        assert_eq!(content_length(b"+5"), None);
        assert_eq!(content_length(b"1 2"), None);
        assert_eq!(content_length(b""), None);
    }

    #[tokio::test]
    async fn a_slow_head_times_out_and_is_counted() {
        let r = run(b"GET /ok HTTP/1.1\r\nHost:", false, Duration::from_millis(200)).await;
        assert!(matches!(r.outcome, Outcome::Closed));
        assert!(r.wrote.is_empty());
        assert_eq!(r.timeouts, 1);
        // An idle keep-alive connection closes the same way.
        let r = run(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n", false, Duration::from_millis(200)).await;
        assert!(r.wrote.contains("hello"));
        assert_eq!(r.timeouts, 1);
    }

    #[tokio::test]
    async fn shutdown_closes_an_idle_connection() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let served = tokio::spawn(async move {
            let (h, counter) = (handler(), metrics::Counter::noop());
            let mut conn =
                FastConn { handler: &h, header_timeout: T, header_timeouts: &counter, shutdown: stop };
            matches!(conn.serve(&mut server).await, Outcome::Closed)
        });
        tokio::task::yield_now().await;
        stop_tx.send(true).unwrap();
        assert!(tokio::time::timeout(T, served).await.unwrap().unwrap());
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut b = [0u8; 18];
        assert_eq!(chunk_prefix(0, &mut b), b"0\r\n");
        assert_eq!(chunk_prefix(65536, &mut b), b"10000\r\n");
        assert_eq!(chunk_prefix(255, &mut b), b"ff\r\n");
    }

    #[test]
    fn rewind_replays_then_reads_on() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (mut a, b) = tokio::io::duplex(64);
            a.write_all(b"world").await.unwrap();
            drop(a);
            let mut r = Rewind::new(Bytes::from_static(b"hello "), b);
            let mut s = String::new();
            r.read_to_string(&mut s).await.unwrap();
            assert_eq!(s, "hello world");
        });
    }
}
