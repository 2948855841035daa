//! The integration tests' harness: a real S3 origin (s3s-fs over HTTP on loopback, or an
//! in-memory S3 server) that counts the requests it serves and fails on demand, real cache
//! nodes in-process on 127.0.0.1:0, routers in front of them (`fleet`), and real
//! aws-sdk-s3 clients. Search nodes are started by the search node's own tests (this crate
//! stays free of lance).
//!
//! Test code: it panics on any setup failure, which is what a test wants.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fleet;
pub mod mem_s3;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aws_sdk_s3::Client;
use lakecache_cache_node::config::{AccessKey, Config, OriginConfig, OriginKind};
use lakecache_cache_node::tier::disk::IoEngineChoice;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ACCESS_KEY: &str = "lakecache-test";
pub const SECRET_KEY: &str = "lakecache-test-secret";
pub const ORIGIN_KEY: &str = "origin-test";
pub const ORIGIN_SECRET: &str = "origin-test-secret";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
pub const FLEET_SECRET: &str = "fleet-secret-for-tests";

#[derive(Default)]
pub struct Counts {
    pub get: AtomicU64,
    pub head: AtomicU64,
    pub other: AtomicU64,
    /// While set, the origin answers 503 to everything.
    pub down: AtomicBool,
    /// While set, the origin answers every request with this status and S3 error code.
    pub fail_with: parking_lot::Mutex<Option<(u16, &'static str)>>,
    /// Headers of the last PUT the origin received.
    pub last_put: parking_lot::Mutex<Option<http::HeaderMap>>,
    /// Headers added to every GET and HEAD answer (attributes s3s-fs does not keep).
    pub extra_headers: parking_lot::Mutex<Vec<(&'static str, &'static str)>>,
}

impl Counts {
    pub fn gets(&self) -> u64 {
        self.get.load(Ordering::SeqCst)
    }
    pub fn heads(&self) -> u64 {
        self.head.load(Ordering::SeqCst)
    }
}

/// s3s-fs serving `root` (one directory per bucket) over HTTP on loopback.
pub struct Origin {
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub counts: Arc<Counts>,
    _stop: oneshot::Sender<()>,
}

impl Origin {
    pub async fn start(root: &Path) -> Origin {
        std::fs::create_dir_all(root).unwrap();
        let fs = s3s_fs::FileSystem::new(root).unwrap();
        Self::serve(fs, root).await
    }

    /// An in-memory S3 server (`mem_s3`) with the bucket `bkt`: S3's semantics for keys a
    /// file system cannot hold (`dir/`, `a//b`). `root` is unused by it.
    pub async fn start_memory() -> Origin {
        Self::serve(mem_s3::MemS3::new(&["bkt"]), Path::new("/nonexistent")).await
    }

    async fn serve(s3: impl s3s::S3, root: &Path) -> Origin {
        let mut b = s3s::service::S3ServiceBuilder::new(s3);
        b.set_auth(s3s::auth::SimpleAuth::from_single(ORIGIN_KEY, ORIGIN_SECRET));
        let svc = b.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let (tx, mut rx) = oneshot::channel::<()>();
        let c2 = counts.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = &mut rx => break,
                };
                let svc = svc.clone();
                let counts = c2.clone();
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let svc = svc.clone();
                    let counts = counts.clone();
                    async move {
                        let read = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
                        match *req.method() {
                            http::Method::GET => counts.get.fetch_add(1, Ordering::SeqCst),
                            http::Method::HEAD => counts.head.fetch_add(1, Ordering::SeqCst),
                            _ => counts.other.fetch_add(1, Ordering::SeqCst),
                        };
                        if *req.method() == http::Method::PUT {
                            *counts.last_put.lock() = Some(req.headers().clone());
                        }
                        if counts.down.load(Ordering::SeqCst) {
                            let mut r = http::Response::new(s3s::Body::from("down".to_string()));
                            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                            return Ok::<_, s3s::HttpError>(r);
                        }
                        let fail = *counts.fail_with.lock();
                        if let Some((status, code)) = fail {
                            let xml = format!(
                                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
                            );
                            let mut r = http::Response::new(s3s::Body::from(xml));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            return Ok(r);
                        }
                        let extra = counts.extra_headers.lock().clone();
                        let mut r = hyper::service::Service::call(&svc, req).await?;
                        if read && r.status().is_success() {
                            for (k, v) in extra {
                                r.headers_mut().insert(k, http::HeaderValue::from_static(v));
                            }
                        }
                        Ok(r)
                    }
                });
                tokio::spawn(async move {
                    let _ =
                        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                });
            }
        });
        Origin { addr, root: root.to_path_buf(), counts, _stop: tx }
    }

    pub fn origin_config(&self) -> OriginConfig {
        OriginConfig {
            bucket: "*".into(),
            kind: OriginKind::S3,
            root: None,
            endpoint: Some(format!("http://{}", self.addr)),
            region: Some("us-east-1".into()),
            origin_bucket: None,
            access_key_id: Some(ORIGIN_KEY.into()),
            secret_access_key: Some(ORIGIN_SECRET.into()),
            allow_http: true,
            anonymous: false,
        }
    }

    /// Writes an object straight into the origin's directory.
    pub fn put_file(&self, bucket: &str, key: &str, data: &[u8]) {
        let p = self.root.join(bucket).join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

/// A config for a node in front of `origin`, with its state under `dir`.
pub fn node_config(origin: &Origin, dir: &Path, engine: IoEngineChoice) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.auth.keys = vec![AccessKey { access_key: ACCESS_KEY.into(), secret_key: SECRET_KEY.into() }];
    c.admin.token = Some(ADMIN_TOKEN.into());
    c.fleet.secret = Some(FLEET_SECRET.into());
    c.cache.page_size = bytesize::ByteSize::kib(64);
    c.cache.memory_capacity = bytesize::ByteSize::mib(64);
    c.cache.multipart_dir = dir.join("multipart");
    c.cache.metadata_ttl = std::time::Duration::from_millis(200);
    c.disk.path = dir.join("pages.bin");
    c.disk.capacity = bytesize::ByteSize::mib(64);
    c.disk.io_engine = engine;
    c.pins.budget = bytesize::ByteSize::mib(8);
    c.pins.state_file = dir.join("pins.json");
    c.origins = vec![origin.origin_config()];
    c
}

pub struct Node {
    pub addr: SocketAddr,
    pub node: Arc<lakecache_cache_node::Node>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    pub async fn start(cfg: Config) -> Node {
        Self::start_on(cfg, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on a given address (a restart on the port a router knows).
    pub async fn start_on(cfg: Config, addr: SocketAddr) -> Node {
        let node = lakecache_cache_node::Node::build(cfg).await.unwrap();
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let n2 = node.clone();
        let task = tokio::spawn(async move {
            lakecache_cache_node::serve(listener, n2, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Node { addr, node, stop: Some(tx), task: Some(task) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> Client {
        client_for(&self.url(), ACCESS_KEY, SECRET_KEY)
    }

    /// Waits until the disk tier holds at least `pages` pages (writes are asynchronous).
    pub async fn wait_disk_pages(&self, pages: usize) {
        let disk = self.node.cache.disk.clone().expect("disk tier");
        for _ in 0..500 {
            if disk.page_count() >= pages {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("disk tier has {} pages, expected {pages}", disk.page_count());
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// An origin that accepts connections and never answers (a black hole).
pub async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

/// A client that does not retry, so that each call is one request.
pub fn client_no_retry(url: &str) -> Client {
    let creds = aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

/// One raw HTTP/1.1 exchange on a fresh connection: the status and the whole answer.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

pub fn client_for(url: &str, key: &str, secret: &str) -> Client {
    let creds = aws_credential_types::Credentials::new(key, secret, None, None, "test");
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    Client::from_conf(conf)
}

/// Deterministic, position-dependent bytes (no two 8-byte windows of one object repeat).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 0u64;
    while out.len() < len {
        let x = (seed ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(i + 1).rotate_left(17) ^ i;
        out.extend_from_slice(&x.to_le_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

pub async fn body(out: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Vec<u8> {
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// The S3 error code and HTTP status of a failed SDK call.
pub fn err_code<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> (String, u16)
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("").to_string();
    let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
    (code, status)
}

/// The answer to a raw HTTP/1.1 request: status, header block, body.
pub struct RawAnswer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// Sends `head` and `body` on a new connection (half-closing it after the body when
/// `close_write`), then reads the answer for up to 10 s.
pub async fn raw(addr: SocketAddr, head: String, body: &[u8], close_write: bool) -> RawAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    if close_write {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            // One answer is enough: stop once its body is complete.
            if let Some(end) = find(&out, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if out.len() >= end + 4 + len {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read).await.expect("no answer within 10 s");
    let end = find(&out, b"\r\n\r\n").unwrap_or(out.len());
    let head = String::from_utf8_lossy(&out[..end]).to_string();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    RawAnswer { status, head, body: out.get(end + 4..).unwrap_or_default().to_vec() }
}

/// One keep-alive connection: sends `batches` one after the other (a batch may hold several
/// pipelined requests) and reads `answers` answers (Content-Length framed; HEAD answers with
/// `heads`) after each batch. Then waits up to `idle` for the server to close the idle
/// connection: `true` if it did.
pub struct Conversation {
    pub answers: Vec<RawAnswer>,
    pub closed_when_idle: bool,
}

pub async fn converse(
    addr: SocketAddr,
    batches: &[(String, usize, bool)],
    idle: std::time::Duration,
) -> Conversation {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf: Vec<u8> = Vec::new();
    let mut answers = Vec::new();
    for (requests, count, head) in batches {
        s.write_all(requests.as_bytes()).await.unwrap();
        for _ in 0..*count {
            let answer = async {
                loop {
                    if let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head_text = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len = if *head {
                            0
                        } else {
                            head_text
                                .to_ascii_lowercase()
                                .lines()
                                .find_map(|l| {
                                    l.strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap())
                                })
                                .expect("an answer without content-length")
                        };
                        if buf.len() >= end + 4 + len {
                            let body = buf[end + 4..end + 4 + len].to_vec();
                            buf.drain(..end + 4 + len);
                            let status =
                                head_text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                            return RawAnswer { status, head: head_text, body };
                        }
                    }
                    let mut chunk = [0u8; 16384];
                    let n = s.read(&mut chunk).await.unwrap();
                    assert!(
                        n > 0,
                        "the connection closed before an answer: {}",
                        String::from_utf8_lossy(&buf)
                    );
                    buf.extend_from_slice(&chunk[..n]);
                }
            };
            answers.push(
                tokio::time::timeout(std::time::Duration::from_secs(10), answer).await.expect("no answer"),
            );
        }
    }
    let mut rest = [0u8; 1024];
    let closed_when_idle =
        matches!(tokio::time::timeout(idle, s.read(&mut rest)).await, Ok(Ok(0)) | Ok(Err(_)));
    Conversation { answers, closed_when_idle }
}

pub fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A request head signed with the test key; `extra` headers are signed too.
pub fn signed_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, String)],
    payload: &str,
) -> String {
    let signer = lakecache_fleet::sign::Signer::new(ACCESS_KEY, SECRET_KEY, "us-east-1");
    let mut h = http::HeaderMap::new();
    for (k, v) in extra {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let host = addr.to_string();
    // A query is signed as its name=value pairs.
    let (bare, query) = path.split_once('?').unwrap_or((path, ""));
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    signer.sign_with_payload(&method.parse().unwrap(), &host, bare, &pairs, &mut h, payload);
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in &h {
        head.push_str(&format!("{}: {}\r\n", k, v.to_str().unwrap()));
    }
    head.push_str("\r\n");
    head
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// One read for [`assert_unsigned_reads_answer_as_signed`]: method, path, headers.
pub type ReadCase<'a> = (&'a str, &'a str, Vec<(&'a str, String)>);

/// Sends each read to `addr` twice — unsigned (a server's own plain-read path) and signed
/// with the test key (through s3s) — and asserts the answers agree: status, error code,
/// body, and the headers that describe the answer (plus `more_headers`).
pub async fn assert_unsigned_reads_answer_as_signed(
    addr: SocketAddr,
    cases: &[ReadCase<'_>],
    more_headers: &[&str],
) {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut compared =
        vec!["content-length", "content-range", "content-type", "etag", "last-modified", "accept-ranges"];
    compared.extend_from_slice(more_headers);
    let header = |head: &str, name: &str| {
        head.lines().find_map(|l| {
            l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string())
        })
    };
    let code = |body: &[u8]| {
        let t = String::from_utf8_lossy(body);
        t.split("<Code>").nth(1).and_then(|r| r.split("</Code>").next()).map(str::to_string)
    };
    for (method, path, extra) in cases {
        let mut unsigned = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", addr);
        for (k, v) in extra {
            unsigned.push_str(&format!("{k}: {v}\r\n"));
        }
        unsigned.push_str("\r\n");
        let signed = signed_head(addr, method, path, extra, &sha256_hex(b""));
        let (plain, s3) = if *method == "HEAD" {
            // A HEAD answer has a Content-Length but no body: read the head only.
            let head_only = |h: String| async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(h.as_bytes()).await.unwrap();
                let mut out = Vec::new();
                let mut buf = [0u8; 4096];
                while find(&out, b"\r\n\r\n").is_none() {
                    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                        .await
                        .unwrap()
                        .unwrap();
                    assert!(n > 0, "connection closed before the answer's head");
                    out.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&out[..find(&out, b"\r\n\r\n").unwrap()]).to_string();
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                RawAnswer { status, head, body: Vec::new() }
            };
            (head_only(unsigned).await, head_only(signed).await)
        } else {
            (raw(addr, unsigned, b"", false).await, raw(addr, signed, b"", false).await)
        };
        let what = format!("{method} {path} {extra:?}");
        assert_eq!(plain.status, s3.status, "{what}: status (plain {} / s3s {})", plain.head, s3.head);
        for h in &compared {
            assert_eq!(header(&plain.head, h), header(&s3.head, h), "{what}: {h}");
        }
        assert_eq!(code(&plain.body), code(&s3.body), "{what}: error code");
        if plain.status < 300 {
            assert!(plain.body == s3.body, "{what}: bodies differ");
        }
    }
}
