//! The client side of the internal page protocol on the wire: HTTP/1.1 connections to one
//! node, kept alive in a pool and driven by the read that holds one — no connection task,
//! no channel between the socket and the reader. A request is written in one piece, its
//! answer's head parsed in place (`httparse`), and its body handed on as it comes off the
//! socket (`Bytes` split from the read buffer, no copy). A connection goes back to the pool
//! once its answer has been read to the end; a read dropped halfway closes it.
//!
//! Answers must carry `Content-Length` (the node always sends it); one without it, or
//! with `Transfer-Encoding`, is a broken answer. A reused connection that the node had
//! closed in the meantime (its keep-alive timeout) fails before any byte of the answer:
//! the request goes once more on a fresh connection, and that is not the node's fault.
//!
//! Owns: connecting, pooling, request writing, answer framing, timeouts. Does not own what
//! requests mean or how failures are sorted (`upstream`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Longest answer head accepted (the node's are a few hundred bytes).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers an answer may have.
const MAX_HEADERS: usize = 64;
/// First read of an answer: room for a head and a 4 KiB page slice.
const FIRST_READ: usize = 16 * 1024;
/// Room for an answer's head beside the body a caller expects.
const HEAD_ROOM: usize = 1024;
/// The most room made in advance for an expected body (a full batch is 4 MiB).
const MAX_EXPECT: usize = 8 << 20;
/// Largest single read of a body.
const MAX_READ: usize = 256 * 1024;
/// Idle connections kept per node.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused (the node's own
/// keep-alive timeout defaults to 60 s).
const IDLE_FOR: Duration = Duration::from_secs(50);

/// Why an exchange failed: no trustworthy answer came back.
#[derive(Debug)]
pub struct Broken(pub String);

/// Why `send` gave up.
#[derive(Debug)]
pub enum Failure {
    /// The node (or the way to it) failed: a node fault.
    Broken(Broken),
    /// Every connection this pool may open was in use for the whole time limit: this member's
    /// own congestion, which says nothing about the node.
    Busy(String),
}

impl Failure {
    pub fn reason(&self) -> &str {
        match self {
            Failure::Broken(b) => &b.0,
            Failure::Busy(r) => r,
        }
    }
}

/// Connections to one node.
pub struct Pool {
    /// The node's id (for errors).
    id: String,
    /// Where to connect (`host:port`) and what `Host` says.
    addr: Result<String, String>,
    /// The URL's path, prefixed to every request path (empty for a node at `/`).
    base: String,
    idle: parking_lot::Mutex<Vec<(Conn, Instant)>>,
    /// One permit per connection that may be open (in use or idle); a connection holds its
    /// permit until it closes.
    slots: Arc<Semaphore>,
    max_connections: usize,
    /// Told when a connection goes back to the idle list, for reads waiting for one.
    returned: Notify,
    connect_timeout: Duration,
    timeout: Duration,
}

struct Conn {
    _slot: OwnedSemaphorePermit,
    io: TcpStream,
    /// Bytes read and not yet handed on.
    buf: BytesMut,
    reused: bool,
}

/// An answer whose head has arrived.
pub struct Answer {
    pub status: StatusCode,
    head: Bytes,
    /// (name, value) byte spans of each header inside `head`.
    spans: Vec<((usize, usize), (usize, usize))>,
    pub body: Body,
}

/// An answer's body as it comes off the socket, each piece within the pool's timeout.
pub struct Body {
    conn: Option<Conn>,
    pool: std::sync::Arc<Pool>,
    left: u64,
    keep_alive: bool,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Pool {
    /// A pool for the node at `url` (`http://host:port[/prefix]`). A URL that cannot be
    /// used makes every request fail with the reason.
    pub fn new(
        id: &str,
        url: &str,
        max_connections: usize,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Self {
        let (addr, base) = match split_url(url) {
            Ok((a, b)) => (Ok(a), b),
            Err(e) => (Err(e), String::new()),
        };
        Self {
            id: id.to_string(),
            addr,
            base,
            idle: parking_lot::Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            max_connections: max_connections.max(1),
            returned: Notify::new(),
            connect_timeout,
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `method path` with `headers` (names lower-case, values header-safe) and waits
    /// (within the timeout) for the answer's head.
    pub async fn send(
        self: &std::sync::Arc<Self>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, Failure> {
        self.send_expecting(method, path, headers, 0).await
    }

    /// [`Pool::send`] for an answer whose body will be about `expect` bytes and read whole
    /// ([`Body::read_all`]): room for it is made before the first read, so the body never
    /// has to be moved to a larger buffer once part of it has arrived.
    pub async fn send_expecting(
        self: &std::sync::Arc<Self>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        expect: usize,
    ) -> Result<Answer, Failure> {
        let first_read = FIRST_READ.max(expect.min(MAX_EXPECT).saturating_add(HEAD_ROOM));
        let addr = self.addr.as_ref().map_err(|e| Failure::Broken(Broken(e.clone())))?;
        let mut req = Vec::with_capacity(64 + self.base.len() + path.len() + addr.len() + 160);
        req.extend_from_slice(method.as_bytes());
        req.push(b' ');
        req.extend_from_slice(self.base.as_bytes());
        req.extend_from_slice(path.as_bytes());
        req.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        req.extend_from_slice(addr.as_bytes());
        for (n, v) in headers {
            if v.bytes().any(|b| b == b'\r' || b == b'\n') {
                return Err(Failure::Broken(Broken(format!("header {n} has a line break"))));
            }
            req.extend_from_slice(b"\r\n");
            req.extend_from_slice(n.as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(v.as_bytes());
        }
        req.extend_from_slice(b"\r\n\r\n");
        let head_only = method == "HEAD";
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let conn = match self.checkout() {
                Some(c) => c,
                None => match self.slots.clone().try_acquire_owned() {
                    // Boxed: connecting is rare and its future large.
                    Ok(slot) => {
                        Box::pin(self.connect_until(addr, slot, deadline)).await.map_err(Failure::Broken)?
                    }
                    Err(_) => match Box::pin(self.wait_for_conn(addr, deadline)).await {
                        Some(c) => c.map_err(Failure::Broken)?,
                        None => {
                            return Err(Failure::Busy(format!(
                                "all {} connections to cache node {} stayed busy for {:?}",
                                self.max_connections, self.id, self.timeout
                            )));
                        }
                    },
                },
            };
            let reused = conn.reused;
            match tokio::time::timeout_at(deadline, self.exchange(conn, &req, head_only, first_read)).await {
                Ok(Ok(a)) => return Ok(a),
                // Closed by the node while idle: once more on a fresh connection.
                Ok(Err((e, true))) if reused => tracing::debug!(error = %e.0, "stale connection"),
                Ok(Err((e, _))) => return Err(Failure::Broken(e)),
                Err(_) => {
                    return Err(Failure::Broken(Broken(format!("no answer within {:?}", self.timeout))));
                }
            }
        }
    }

    /// Every connection is in use: waits until one comes back idle or one closes (then a new
    /// one may open). `None` at the deadline.
    async fn wait_for_conn(
        &self,
        addr: &str,
        deadline: tokio::time::Instant,
    ) -> Option<Result<Conn, Broken>> {
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(c) = self.checkout() {
                return Some(Ok(c));
            }
            let slot = tokio::select! {
                () = &mut returned => continue,
                slot = self.slots.clone().acquire_owned() => slot.ok()?,
                () = tokio::time::sleep_until(deadline) => return None,
            };
            return Some(self.connect_until(addr, slot, deadline).await);
        }
    }

    async fn connect_until(
        &self,
        addr: &str,
        slot: OwnedSemaphorePermit,
        deadline: tokio::time::Instant,
    ) -> Result<Conn, Broken> {
        match tokio::time::timeout_at(deadline, self.connect(addr, slot)).await {
            Ok(r) => r,
            Err(_) => Err(Broken(format!("no answer within {:?}", self.timeout))),
        }
    }

    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock();
        while let Some((c, since)) = idle.pop() {
            if since.elapsed() < IDLE_FOR {
                return Some(c);
            }
        }
        None
    }

    fn checkin(&self, mut conn: Conn) {
        conn.reused = true;
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
            drop(idle);
            self.returned.notify_one();
        }
    }

    async fn connect(&self, addr: &str, slot: OwnedSemaphorePermit) -> Result<Conn, Broken> {
        let io = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Broken(format!("cannot connect to {addr}: {e}"))),
            Err(_) => {
                return Err(Broken(format!("cannot connect to {addr} within {:?}", self.connect_timeout)));
            }
        };
        let _ = io.set_nodelay(true);
        Ok(Conn { _slot: slot, io, buf: BytesMut::new(), reused: false })
    }

    /// Writes `req` and reads the answer's head. The error says whether it came before
    /// any byte of an answer (a stale connection looks like that).
    async fn exchange(
        self: &std::sync::Arc<Self>,
        mut conn: Conn,
        req: &[u8],
        head_only: bool,
        first_read: usize,
    ) -> Result<Answer, (Broken, bool)> {
        // The socket may still be marked readable from the last answer: forget that (no
        // system call), so the first read waits for this answer instead of trying a read
        // that finds nothing. A close by the node stays marked and is seen at once.
        let _ = conn.io.try_io(tokio::io::Interest::READABLE, || {
            Err::<(), _>(std::io::Error::from(std::io::ErrorKind::WouldBlock))
        });
        if let Err(e) = conn.io.write_all(req).await {
            return Err((Broken(format!("cannot send the request: {e}")), true));
        }
        conn.buf.reserve(first_read);
        loop {
            let n = match read_some(&mut conn.io, &mut conn.buf).await {
                Ok(n) => n,
                Err(e) => {
                    let before = conn.buf.is_empty();
                    return Err((Broken(format!("the answer broke off: {e}")), before));
                }
            };
            if n == 0 {
                let before = conn.buf.is_empty();
                return Err((Broken("the node closed the connection".into()), before));
            }
            match parse_head(&conn.buf, head_only) {
                Ok(None) => {
                    if conn.buf.len() >= MAX_HEAD_BYTES {
                        return Err((Broken("the answer's head is too long".into()), false));
                    }
                    conn.buf.reserve(FIRST_READ);
                }
                Ok(Some(p)) => {
                    let head = conn.buf.split_to(p.head_len).freeze();
                    let mut body = Body {
                        conn: Some(conn),
                        pool: self.clone(),
                        left: p.left,
                        keep_alive: p.keep_alive,
                        timer: None,
                    };
                    body.settle();
                    return Ok(Answer { status: p.status, head, spans: p.spans, body });
                }
                Err(e) => return Err((e, false)),
            }
        }
    }
}

/// An answer's head, parsed: where it ends, its status and headers, and how long its body is.
struct Head {
    head_len: usize,
    status: StatusCode,
    spans: Vec<((usize, usize), (usize, usize))>,
    left: u64,
    keep_alive: bool,
}

/// The head at the start of `buf`, if it has all arrived. (Not async: the header array
/// stays on this function's stack, out of every read's future.)
fn parse_head(buf: &[u8], head_only: bool) -> Result<Option<Head>, Broken> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(n)) => n,
        Err(e) => return Err(Broken(format!("the answer is not HTTP/1.1: {e}"))),
    };
    let code = parsed.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| Broken(format!("the answer's status {code} is not valid")))?;
    if code < 200 {
        return Err(Broken(format!("an interim answer {code} was not asked for")));
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| (s.as_ptr() as usize - base, s.as_ptr() as usize - base + s.len());
    let spans: Vec<_> = parsed.headers.iter().map(|h| (span(h.name.as_bytes()), span(h.value))).collect();
    let mut length = None;
    let mut keep_alive = parsed.version == Some(1);
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok());
            match (v, length) {
                (Some(v), None) => length = Some(v),
                (Some(v), Some(l)) if v == l => {}
                _ => return Err(Broken("the answer's Content-Length is not valid".into())),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Broken("the answer is not length-delimited".into()));
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep_alive &= !h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let no_body = head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let left = match (no_body, length) {
        (true, _) => 0,
        (false, Some(l)) => l,
        (false, None) => return Err(Broken("the answer has no Content-Length".into())),
    };
    Ok(Some(Head { head_len, status, spans, left, keep_alive }))
}

impl Answer {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.spans
            .iter()
            .find(|((a, b), _)| self.head[*a..*b].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, (a, b))| &self.head[*a..*b])
    }

    /// Every header, as a map whose values are copies (they keep no read buffer alive).
    pub fn headers(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.spans.len());
        for ((na, nb), (va, vb)) in &self.spans {
            if let (Ok(n), Ok(v)) =
                (HeaderName::from_bytes(&self.head[*na..*nb]), HeaderValue::from_bytes(&self.head[*va..*vb]))
            {
                map.append(n, v);
            }
        }
        map
    }
}

impl Body {
    /// The node sending it.
    pub fn node(&self) -> &str {
        &self.pool.id
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.left
    }

    /// Once the whole body has been handed on, the connection goes back to the pool (if
    /// nothing beyond the answer was sent and the node keeps it open).
    fn settle(&mut self) {
        if self.left > 0 {
            return;
        }
        if let Some(conn) = self.conn.take()
            && conn.buf.is_empty()
            && self.keep_alive
        {
            self.pool.checkin(conn);
        }
    }

    /// The next piece of the body; `None` at its end.
    pub fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Broken>>> {
        if self.left == 0 {
            self.settle();
            return Poll::Ready(None);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Some(Err(Broken("the body was already cut".into()))));
        };
        if conn.buf.is_empty() {
            conn.buf.reserve((self.left as usize).min(MAX_READ));
            let read = loop {
                match conn.io.try_read_buf(&mut conn.buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    r => break r,
                }
                match conn.io.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(e)) => break Err(e),
                    Poll::Pending => {}
                }
                let timeout = self.pool.timeout;
                let t = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(t.as_mut().poll(cx));
                self.conn = None;
                return Poll::Ready(Some(Err(Broken(format!(
                    "the body paused for longer than {timeout:?}"
                )))));
            };
            self.timer = None;
            match read {
                Ok(0) => {
                    self.conn = None;
                    let left = self.left;
                    return Poll::Ready(Some(Err(Broken(format!("the body ended {left} bytes early")))));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(Broken(format!("the body broke off: {e}")))));
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else { unreachable!("checked above") };
        let take = (conn.buf.len() as u64).min(self.left) as usize;
        let piece = conn.buf.split_to(take).freeze();
        self.left -= take as u64;
        self.settle();
        Poll::Ready(Some(Ok(piece)))
    }

    /// The whole body in one piece: room for all of it is made in the connection's read
    /// buffer first, so it arrives contiguous and is handed on without a copy. The caller
    /// has bounded [`remaining`](Self::remaining); each read waits at most the pool's timeout.
    pub async fn read_all(mut self) -> Result<Bytes, Broken> {
        let total = self.left as usize;
        let timeout = self.pool.timeout;
        let Some(conn) = self.conn.as_mut() else {
            return if total == 0 {
                Ok(Bytes::new())
            } else {
                Err(Broken("the body was already cut".into()))
            };
        };
        if conn.buf.len() < total {
            conn.buf.reserve(total - conn.buf.len());
        }
        while conn.buf.len() < total {
            let failed = match tokio::time::timeout(timeout, conn.io.read_buf(&mut conn.buf)).await {
                Ok(Ok(0)) => Broken(format!("the body ended {} bytes early", total - conn.buf.len())),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => Broken(format!("the body broke off: {e}")),
                Err(_) => Broken(format!("the body paused for longer than {timeout:?}")),
            };
            self.conn = None;
            return Err(failed);
        }
        let body = conn.buf.split_to(total).freeze();
        self.left = 0;
        self.settle();
        Ok(body)
    }

    /// The whole body, at most `max` bytes of it (the rest is dropped with the connection).
    pub async fn read_to_end(mut self, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(Ok(piece)) = std::future::poll_fn(|cx| self.poll_piece(cx)).await {
            let room = max.saturating_sub(out.len());
            out.extend_from_slice(&piece[..piece.len().min(room)]);
            if out.len() >= max {
                break;
            }
        }
        out
    }
}

impl futures::Stream for Body {
    type Item = Result<Bytes, Broken>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_piece(cx)
    }
}

/// Reads what the socket has into `buf` (at least one byte, or 0 at its end), once it is
/// readable.
async fn read_some(io: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    loop {
        io.readable().await?;
        match io.try_read_buf(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            r => return r,
        }
    }
}

/// `http://host:port/prefix` → (`host:port`, `/prefix` without its trailing `/`).
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("node URL {url} is not http:// (the page protocol has no TLS)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("node URL {url} names no host:port"));
    }
    let addr = if authority.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((addr, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_split_into_address_and_prefix() {
        assert_eq!(split_url("http://127.0.0.1:9000").unwrap(), ("127.0.0.1:9000".into(), "".into()));
        assert_eq!(split_url("http://node-1:9000/").unwrap(), ("node-1:9000".into(), "".into()));
        assert_eq!(split_url("http://node-1/cache/").unwrap(), ("node-1:80".into(), "/cache".into()));
        assert_eq!(split_url("http://[::1]:9000").unwrap(), ("[::1]:9000".into(), "".into()));
        assert!(split_url("https://node-1:9000").is_err());
        assert!(split_url("http://").is_err());
        assert!(split_url("http://u:p@node:1").is_err());
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;
    use futures::StreamExt;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A node that answers each request on a connection with the next of `answers` (raw
    /// bytes) and then closes the connection if `close_after` answers were given.
    async fn node(
        answers: Vec<&'static [u8]>,
        close_after: usize,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = conns.clone();
        tokio::spawn(async move {
            let mut next = 0;
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut given = 0;
                let mut buf = Vec::new();
                loop {
                    let mut b = [0u8; 4096];
                    let Ok(n) = s.read(&mut b).await else { break };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&b[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let a = answers[next.min(answers.len() - 1)];
                        next += 1;
                        s.write_all(a).await.unwrap();
                        given += 1;
                    }
                    if given >= close_after {
                        break;
                    }
                }
            }
        });
        (url, conns)
    }

    fn pool(url: &str) -> Arc<Pool> {
        Arc::new(Pool::new("n1", url, 64, Duration::from_secs(1), Duration::from_millis(500)))
    }

    async fn body(a: Answer) -> Result<Vec<u8>, String> {
        let mut b = a.body;
        let mut out = Vec::new();
        while let Some(p) = b.next().await {
            out.extend_from_slice(&p.map_err(|e| e.0)?);
        }
        Ok(out)
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello";

    #[tokio::test]
    async fn answers_are_framed_and_connections_reused() {
        let (url, conns) = node(vec![OK], usize::MAX).await;
        let p = pool(&url);
        for _ in 0..3 {
            let a = p.send("GET", "/x", &[("x-h", "v")]).await.unwrap();
            assert_eq!(a.status, StatusCode::OK);
            assert_eq!(a.header("X-A"), Some(&b"1"[..]));
            assert_eq!(a.headers().get("x-a").unwrap(), "1");
            assert_eq!(body(a).await.unwrap(), b"hello");
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1, "one connection for three reads");
    }

    #[tokio::test]
    async fn a_connection_the_node_closed_while_idle_is_replaced_without_an_error() {
        // The node closes every connection after one answer.
        let (url, conns) = node(vec![OK], 1).await;
        let p = pool(&url);
        for _ in 0..3 {
            let a = p.send("GET", "/x", &[]).await.unwrap();
            assert_eq!(body(a).await.unwrap(), b"hello");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn broken_answers_are_errors_never_short_bodies() {
        for (answer, want) in [
            (&b"HTTP/1.1 200 OK\r\n\r\nhello"[..], "no Content-Length"),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                "not length-delimited",
            ),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello", "Content-Length"),
            (b"HTTP/1.1 100 Continue\r\n\r\n", "interim"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP/1.1"),
        ] {
            let (url, _) = node(vec![answer], usize::MAX).await;
            let e = pool(&url).send("GET", "/x", &[]).await.err().expect("an error");
            assert!(e.reason().contains(want), "{answer:?}: {}", e.reason());
        }
        // A body cut short: the head arrives, the body breaks off with an error.
        let (url, _) = node(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"], 1).await;
        let a = pool(&url).send("GET", "/x", &[]).await.unwrap();
        let e = body(a).await.unwrap_err();
        assert!(e.contains("5 bytes early"), "{e}");
    }

    #[tokio::test]
    async fn a_silent_node_and_a_stalled_body_time_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s1, _) = l.accept().await.unwrap();
            let mut b = [0u8; 1024];
            let _ = s1.read(&mut b).await;
            // Silent on the first connection; half a body on the second.
            let (mut s2, _) = l.accept().await.unwrap();
            let _ = s2.read(&mut b).await;
            s2.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello").await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop((s1, s2));
        });
        let p = pool(&url);
        let started = Instant::now();
        let e = p.send("GET", "/x", &[]).await.err().unwrap();
        assert!(matches!(e, Failure::Broken(_)) && e.reason().contains("no answer within"), "{}", e.reason());
        let a = p.send("GET", "/x", &[]).await.unwrap();
        let e = body(a).await.unwrap_err();
        assert!(e.contains("paused"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn head_answers_have_no_body_and_headers_cannot_be_smuggled() {
        let (url, conns) = node(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", OK], usize::MAX).await;
        let p = pool(&url);
        let a = p.send("HEAD", "/x", &[]).await.unwrap();
        assert_eq!(a.body.remaining(), 0);
        assert_eq!(body(a).await.unwrap(), b"");
        let a = p.send("GET", "/x", &[]).await.unwrap();
        assert_eq!(body(a).await.unwrap(), b"hello", "the connection after a HEAD is in step");
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(p.send("GET", "/x", &[("x-h", "a\r\nx-evil: 1")]).await.is_err());
        let refused =
            Arc::new(Pool::new("n1", "https://n:1", 4, Duration::from_secs(1), Duration::from_secs(1)));
        assert!(refused.send("GET", "/x", &[]).await.err().unwrap().reason().contains("no TLS"));
    }

    /// A node serving every connection at once: each answer's head comes after `delay`; the body
    /// (5 bytes) follows after `body_delay`. Counts connections and the most open at once.
    async fn slow_node(
        delay: Duration,
        body_delay: Duration,
    ) -> (String, Arc<(AtomicUsize, AtomicUsize, AtomicUsize)>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        // (connections, open now, most open at once)
        let stats = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)));
        let seen = stats.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let seen = seen.clone();
                seen.0.fetch_add(1, SeqCst);
                let open = seen.1.fetch_add(1, SeqCst) + 1;
                seen.2.fetch_max(open, SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    'conn: loop {
                        let mut b = [0u8; 4096];
                        let n = match s.read(&mut b).await {
                            Ok(n) if n > 0 => n,
                            _ => break,
                        };
                        buf.extend_from_slice(&b[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            tokio::time::sleep(delay).await;
                            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n").await.is_err() {
                                break 'conn;
                            }
                            tokio::time::sleep(body_delay).await;
                            if s.write_all(b"hello").await.is_err() {
                                break 'conn;
                            }
                        }
                    }
                    seen.1.fetch_sub(1, SeqCst);
                });
            }
        });
        (url, stats)
    }

    #[tokio::test]
    async fn a_whole_body_is_read_in_one_piece_or_is_an_error() {
        // Sent in two pieces 50 ms apart: one contiguous body, and the connection is reused.
        let (url, stats) = slow_node(Duration::ZERO, Duration::from_millis(50)).await;
        let p = pool(&url);
        for _ in 0..2 {
            let a = p.send("GET", "/x", &[]).await.unwrap();
            assert_eq!(&a.body.read_all().await.unwrap()[..], b"hello");
        }
        assert_eq!(stats.0.load(SeqCst), 1, "the connection went back to the pool");
        // A body that stalls past the timeout, and one that ends early, are errors.
        let (url, _) = slow_node(Duration::ZERO, Duration::from_secs(2)).await;
        let a = pool(&url).send("GET", "/x", &[]).await.unwrap();
        assert!(a.body.read_all().await.unwrap_err().0.contains("paused"));
        let (url, _) = node(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhello"], 1).await;
        let a = pool(&url).send("GET", "/x", &[]).await.unwrap();
        assert!(a.body.read_all().await.unwrap_err().0.contains("4 bytes early"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_per_node_are_capped_and_reads_wait_for_one() {
        let (url, stats) = slow_node(Duration::from_millis(100), Duration::ZERO).await;
        let p = Arc::new(Pool::new("n1", &url, 2, Duration::from_secs(1), Duration::from_secs(5)));
        let reads: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    body(p.send("GET", "/x", &[]).await.map_err(|e| e.reason().to_string())?).await
                })
            })
            .collect();
        for r in reads {
            assert_eq!(r.await.unwrap().unwrap(), b"hello");
        }
        assert_eq!(stats.0.load(SeqCst), 2, "8 reads over 2 connections");
        assert_eq!(stats.2.load(SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_that_finds_every_connection_busy_is_this_members_congestion() {
        // One connection allowed, held by a read whose body is slow to come.
        let (url, stats) = slow_node(Duration::ZERO, Duration::from_secs(3)).await;
        let p = Arc::new(Pool::new("n1", &url, 1, Duration::from_secs(1), Duration::from_millis(300)));
        let held = p.send("GET", "/x", &[]).await.unwrap();
        let started = Instant::now();
        let e = p.send("GET", "/x", &[]).await.err().expect("no connection was free");
        assert!(matches!(e, Failure::Busy(_)), "{}", e.reason());
        assert!(e.reason().contains("all 1 connections to cache node n1"), "{}", e.reason());
        assert!(started.elapsed() >= Duration::from_millis(250));
        // The held connection closing frees its slot: the next read opens a new one.
        drop(held);
        let a = p.send("GET", "/x", &[]).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(stats.0.load(SeqCst), 2);
    }
}
