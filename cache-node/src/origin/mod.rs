//! The origin: where objects really live, reached through `object_store` (S3-compatible
//! endpoints or a local directory). Owns the bucket → store mapping, time limits, error
//! classification and origin metrics; knows nothing of pages or caching.

pub mod local;
pub mod multipart;
pub mod s3;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore};

use crate::config::{OriginConfig, OriginKind};
use crate::metrics as m;

#[derive(Debug, Clone, thiserror::Error)]
pub enum OriginError {
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("not found")]
    NotFound,
    #[error("precondition failed")]
    Precondition,
    #[error("not modified")]
    NotModified,
    #[error("already exists")]
    AlreadyExists,
    #[error("the origin refused our credentials")]
    AccessDenied,
    #[error("not supported by this origin")]
    NotSupported,
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The origin cannot hold this key next to what it already holds: a parent of the key
    /// is an object (ENOTDIR), or the key is a directory of other objects (EISDIR). For a
    /// read this means the object does not exist.
    #[error("the origin cannot hold this key: {0}")]
    KeyConflict(String),
    /// A segment of the key is longer than the origin allows (ENAMETOOLONG).
    #[error("key too long for the origin: {0}")]
    KeyTooLong(String),
    /// The origin is out of space or quota (ENOSPC, EDQUOT, EFBIG).
    #[error("the origin is out of space: {0}")]
    InsufficientStorage(String),
    /// The origin refused the request with a 4xx of its own (other than those above).
    #[error("the origin refused the request ({status} {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    /// No answer within the time limit of one origin request.
    #[error("the origin did not answer within {0:?}")]
    TimedOut(Duration),
    /// The origin could not be reached, or answered 5xx or 429: worth a retry.
    #[error("origin unavailable: {0}")]
    Unavailable(String),
    /// The origin failed in a way a retry will not fix (an I/O error of a local origin).
    #[error("origin failed: {0}")]
    Failed(String),
    /// This node's own fault (a store it could not build, a bug).
    #[error("origin error: {0}")]
    Other(String),
}

impl OriginError {
    pub fn from_store(e: object_store::Error) -> Self {
        use object_store::Error as E;
        match e {
            // S3 answers a missing bucket with 404 and its own error code, which
            // object_store only keeps in the error's text.
            E::NotFound { source, .. } => match response_of(source.as_ref()) {
                Some(r) if r.code == "NoSuchBucket" => OriginError::NoSuchBucket,
                _ => OriginError::NotFound,
            },
            E::Precondition { .. } => OriginError::Precondition,
            E::NotModified { .. } => OriginError::NotModified,
            E::AlreadyExists { .. } => OriginError::AlreadyExists,
            E::NotImplemented { .. } | E::NotSupported { .. } => OriginError::NotSupported,
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => OriginError::AccessDenied,
            E::InvalidPath { source } => OriginError::InvalidKey(source.to_string()),
            E::Generic { source, .. } => classify_generic(source.as_ref()),
            other => OriginError::Unavailable(other.to_string()),
        }
    }

    /// Whether the origin, not this node and not the client, is at fault: such answers
    /// carry `x-lakecache-error-source: origin`, so a router neither fails over nor
    /// counts them against the node.
    pub fn is_origin_fault(&self) -> bool {
        matches!(
            self,
            OriginError::AccessDenied
                | OriginError::InsufficientStorage(_)
                | OriginError::Refused { .. }
                | OriginError::TimedOut(_)
                | OriginError::Unavailable(_)
                | OriginError::Failed(_)
        )
    }
}

/// An error answer of an HTTP origin as object_store reports it.
struct OriginResponse {
    status: u16,
    code: String,
    message: String,
}

/// Finds the origin's error answer in an error chain. object_store keeps the status and
/// body of a failed request in an error type it does not export, so its text (one fixed
/// format, "Server returned non-2xx status code: <status> <reason>: <body>") is the only
/// way to them; this is the one place that reads it.
fn response_of(e: &(dyn std::error::Error + 'static)) -> Option<OriginResponse> {
    const PREFIX: &str = "Server returned non-2xx status code: ";
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if let Some(rest) = text.strip_prefix(PREFIX) {
            let status: u16 = rest.get(..3).and_then(|s| s.parse().ok())?;
            let body = rest.split_once(": ").map_or("", |(_, b)| b);
            let tag = |name: &str| {
                let open = format!("<{name}>");
                let close = format!("</{name}>");
                let start = body.find(&open)? + open.len();
                let end = start + body[start..].find(&close)?;
                Some(body[start..end].to_string())
            };
            return Some(OriginResponse {
                status,
                code: tag("Code").unwrap_or_default(),
                message: tag("Message").unwrap_or_default(),
            });
        }
        cur = err.source();
    }
    None
}

/// Sorts a failure that object_store could not name: a transport error, an HTTP status
/// it has no variant for, or an I/O error of the local file system.
fn classify_generic(e: &(dyn std::error::Error + 'static)) -> OriginError {
    use std::io::ErrorKind as K;
    let text = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<object_store::client::HttpError>() {
            return match h.kind() {
                // The client's own per-request limit; `Origins::call` names the duration.
                object_store::client::HttpErrorKind::Timeout => OriginError::TimedOut(Duration::ZERO),
                _ => OriginError::Unavailable(text),
            };
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                K::NotADirectory | K::IsADirectory | K::DirectoryNotEmpty => OriginError::KeyConflict(text),
                K::InvalidFilename => OriginError::KeyTooLong(text),
                K::StorageFull | K::QuotaExceeded | K::FileTooLarge => OriginError::InsufficientStorage(text),
                K::TimedOut => OriginError::Unavailable(text),
                _ => OriginError::Failed(text),
            };
        }
        cur = err.source();
    }
    match response_of(e) {
        // Listings report a 404 here rather than as NotFound.
        Some(r) if r.status == 404 && r.code == "NoSuchBucket" => OriginError::NoSuchBucket,
        Some(r) if r.status == 404 => OriginError::NotFound,
        Some(r) if r.status == 429 || r.status >= 500 => OriginError::Unavailable(text),
        Some(r) if (400..500).contains(&r.status) => OriginError::Refused {
            status: r.status,
            code: if r.code.is_empty() { "InvalidRequest".into() } else { r.code },
            message: r.message,
        },
        _ => OriginError::Unavailable(text),
    }
}

/// Marks a ranged GET (in `GetOptions::extensions`) that wants the object's stored
/// attributes as well as its bytes: the first read of an object, which stands in for its
/// HEAD. Page fetches want bytes only.
#[derive(Debug, Clone, Copy)]
pub struct WantAttributes;

/// Parses an S3 key into an object_store path, refusing what a store cannot represent
/// exactly: empty segments (`a//b`, a leading or trailing `/`), `.` and `..`. A key that
/// a store would silently normalise would alias another object (or the bucket itself),
/// so it is refused rather than rewritten.
pub fn key_path(key: &str) -> Result<Path, OriginError> {
    if key.is_empty() {
        return Err(OriginError::InvalidKey("empty key".into()));
    }
    let p = Path::parse(key).map_err(|e| OriginError::InvalidKey(e.to_string()))?;
    if p.as_ref() != key {
        return Err(OriginError::InvalidKey(format!(
            "{key:?} is not a canonical object path (empty segment)"
        )));
    }
    Ok(p)
}

/// The first segment of an escaped path (see `object_path`). `%` followed by `lc` is no
/// percent-escape, and a key that starts with this segment is escaped too, so the mapping
/// stays one-to-one.
const ESCAPED: &str = "%lc";

/// The object_store path that stands for the S3 key `key` at this node's origins. A key
/// that a path can hold exactly is that path (as `key_path` gives it). Any other non-empty
/// key — ending in `/` (a folder marker), holding `//`, a `.`/`..` segment or a control
/// character — is escaped as `%lc/<hex of the key>`: the S3 origin (`s3::S3Store`) sends
/// such keys as they are, a local directory refuses them (it has no file for `dir/`).
pub fn object_path(key: &str) -> Result<Path, OriginError> {
    match key_path(key) {
        Ok(p) if p.parts().next().is_none_or(|first| first.as_ref() != ESCAPED) => Ok(p),
        Err(e) if key.is_empty() => Err(e),
        _ => Path::parse(format!("{ESCAPED}/{}", lakecache_common::auth::hex(key.as_bytes())))
            .map_err(|e| OriginError::InvalidKey(e.to_string())),
    }
}

/// The key an escaped path stands for (`None` for a path that is its own key).
pub fn raw_key(p: &Path) -> Option<String> {
    let rest = p.as_ref().strip_prefix(ESCAPED)?.strip_prefix('/')?;
    if rest.contains('/') || rest.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..rest.len() / 2).map(|i| u8::from_str_radix(rest.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// The S3 key of a path: the inverse of `object_path`.
pub fn path_key(p: &Path) -> String {
    raw_key(p).unwrap_or_else(|| p.to_string())
}

/// Whether `p` is an escaped key (which only an S3 origin can hold).
pub fn is_escaped(p: &Path) -> bool {
    p.parts().next().is_some_and(|first| first.as_ref() == ESCAPED)
}

/// The stores behind each bucket.
pub struct Origins {
    configs: Vec<OriginConfig>,
    /// Bounded: with a `*` origin every bucket name a client sends builds a client.
    stores: moka::sync::Cache<String, Arc<dyn ObjectStore>>,
    /// Buckets recently seen to exist at the origin (see `missing`).
    known_buckets: moka::sync::Cache<String, ()>,
    timeout: Duration,
}

impl Origins {
    pub fn new(configs: Vec<OriginConfig>, timeout: Duration) -> Self {
        Self {
            configs,
            stores: moka::sync::Cache::new(10_000),
            known_buckets: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            timeout,
        }
    }

    /// What a HEAD's 404 means: a HEAD answer has no body, so an S3 origin's 404 does not
    /// say whether the key or the whole bucket is missing. Asks the origin once (a listing
    /// of at most one entry) and remembers a bucket that exists for a minute.
    pub async fn missing(&self, bucket: &str, store: &Arc<dyn ObjectStore>) -> OriginError {
        if self.known_buckets.contains_key(bucket) {
            return OriginError::NotFound;
        }
        // A read out of origin budget learns only that the key is missing.
        if !crate::cache::spend::charge(0) {
            return OriginError::NotFound;
        }
        let mut listing = store.list(None);
        let first = async move { futures::StreamExt::next(&mut listing).await.transpose() };
        match self.call("list", first).await {
            Err(OriginError::NoSuchBucket) => OriginError::NoSuchBucket,
            Ok(_) => {
                self.known_buckets.insert(bucket.to_string(), ());
                OriginError::NotFound
            }
            Err(_) => OriginError::NotFound,
        }
    }

    /// The store for `bucket`, built on first use.
    pub fn store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, OriginError> {
        if let Some(s) = self.stores.get(bucket) {
            return Ok(s);
        }
        let cfg = self
            .configs
            .iter()
            .find(|c| c.bucket == bucket)
            .or_else(|| self.configs.iter().find(|c| c.bucket == "*"))
            .ok_or(OriginError::NoSuchBucket)?;
        let store = self.build(cfg, bucket)?;
        self.stores.insert(bucket.to_string(), store.clone());
        Ok(store)
    }

    fn build(&self, cfg: &OriginConfig, bucket: &str) -> Result<Arc<dyn ObjectStore>, OriginError> {
        match cfg.kind {
            OriginKind::Local => {
                let root = cfg.root.as_ref().ok_or(OriginError::NoSuchBucket)?;
                if bucket.contains('/') || bucket.starts_with('.') || bucket.is_empty() {
                    return Err(OriginError::NoSuchBucket);
                }
                let dir = root.join(bucket);
                if !dir.is_dir() {
                    return Err(OriginError::NoSuchBucket);
                }
                let fs = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| OriginError::Other(e.to_string()))?
                    .with_automatic_cleanup(true);
                Ok(Arc::new(local::LocalStore::new(fs)))
            }
            OriginKind::S3 => {
                // Credentials not in the config come from the environment (AWS_* variables,
                // a web identity token as on EKS) or the instance role.
                let origin_bucket = cfg.origin_bucket.clone().unwrap_or_else(|| bucket.to_string());
                let options = ClientOptions::new()
                    .with_allow_http(cfg.allow_http)
                    .with_timeout(self.timeout)
                    .with_connect_timeout(Duration::from_secs(5));
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(origin_bucket.clone())
                    .with_region(cfg.region.clone().unwrap_or_else(|| "us-east-1".into()))
                    .with_allow_http(cfg.allow_http)
                    .with_skip_signature(cfg.anonymous)
                    .with_retry(object_store::RetryConfig {
                        max_retries: 3,
                        retry_timeout: self.timeout,
                        ..Default::default()
                    })
                    .with_client_options(options.clone());
                if let Some(ep) = &cfg.endpoint {
                    b = b.with_endpoint(ep.clone());
                }
                if let (Some(k), Some(s)) = (&cfg.access_key_id, &cfg.secret_access_key) {
                    b = b.with_access_key_id(k.clone()).with_secret_access_key(s.clone());
                }
                use object_store::aws::AmazonS3ConfigKey as K;
                let region = b.get_config_value(&K::Region).unwrap_or_else(|| "us-east-1".into());
                let endpoint = b
                    .get_config_value(&K::Endpoint)
                    .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
                let store = b.build().map_err(|e| OriginError::Other(e.to_string()))?;
                let store =
                    s3::S3Store::new(store, &endpoint, &origin_bucket, &region, cfg.anonymous, &options)
                        .map_err(|e| OriginError::Other(e.to_string()))?;
                Ok(Arc::new(store))
            }
        }
    }

    /// Buckets this node can name: those mapped explicitly, plus the directories under a
    /// local `*` origin (an S3 `*` origin's buckets cannot be enumerated without listing
    /// the whole account, which a cache has no business doing).
    pub fn bucket_names(&self) -> Vec<(String, std::time::SystemTime)> {
        let mut out = Vec::new();
        for c in &self.configs {
            if c.bucket != "*" {
                out.push((c.bucket.clone(), std::time::SystemTime::UNIX_EPOCH));
            } else if let (OriginKind::Local, Some(root)) = (c.kind, &c.root)
                && let Ok(rd) = std::fs::read_dir(root)
            {
                for e in rd.flatten() {
                    let Ok(md) = e.metadata() else { continue };
                    let name = e.file_name().to_string_lossy().to_string();
                    if md.is_dir() && !name.starts_with('.') {
                        out.push((
                            name,
                            md.created()
                                .or_else(|_| md.modified())
                                .unwrap_or(std::time::SystemTime::UNIX_EPOCH),
                        ));
                    }
                }
            }
        }
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one origin call with the time limit, counting it under `op`.
    pub async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, OriginError> {
        let t0 = Instant::now();
        metrics::counter!(m::ORIGIN_REQUESTS, "op" => op).increment(1);
        let out = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(|e| match OriginError::from_store(e) {
                OriginError::TimedOut(_) => OriginError::TimedOut(self.timeout),
                e => e,
            }),
            Err(_) => Err(OriginError::TimedOut(self.timeout)),
        };
        metrics::histogram!(m::ORIGIN_LATENCY, "op" => op).record(m::ms_since(t0));
        if let Err(e) = &out
            && (e.is_origin_fault() || matches!(e, OriginError::Other(_)))
        {
            metrics::counter!(m::ORIGIN_ERRORS, "op" => op).increment(1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(source: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
        object_store::Error::Generic { store: "test", source: Box::new(source) }
    }

    #[test]
    fn io_errors_of_a_local_origin_are_sorted_by_kind() {
        use std::io::{Error, ErrorKind};
        let cases = [
            (ErrorKind::StorageFull, "InsufficientStorage"),
            (ErrorKind::QuotaExceeded, "InsufficientStorage"),
            (ErrorKind::NotADirectory, "KeyConflict"),
            (ErrorKind::IsADirectory, "KeyConflict"),
            (ErrorKind::InvalidFilename, "KeyTooLong"),
            (ErrorKind::PermissionDenied, "Failed"),
            (ErrorKind::Other, "Failed"),
        ];
        for (kind, want) in cases {
            let e = OriginError::from_store(generic(Error::new(kind, "test")));
            let got = format!("{e:?}");
            assert!(got.starts_with(want), "{kind:?}: {got}");
        }
        assert!(OriginError::from_store(generic(Error::new(ErrorKind::StorageFull, "x"))).is_origin_fault());
        assert!(
            !OriginError::from_store(generic(Error::new(ErrorKind::NotADirectory, "x"))).is_origin_fault()
        );
    }

    #[test]
    fn origin_answers_are_read_from_the_error_text() {
        #[derive(Debug)]
        struct Status(&'static str);
        impl std::fmt::Display for Status {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Status {}
        let refused = Status(
            "Server returned non-2xx status code: 400 Bad Request: <Error><Code>InvalidArgument</Code><Message>no</Message></Error>",
        );
        match OriginError::from_store(generic(refused)) {
            OriginError::Refused { status: 400, code, message } => {
                assert_eq!((code.as_str(), message.as_str()), ("InvalidArgument", "no"));
            }
            other => panic!("{other:?}"),
        }
        let failed = Status("Server returned non-2xx status code: 500 Internal Server Error: ");
        assert!(matches!(OriginError::from_store(generic(failed)), OriginError::Unavailable(_)));
        let bucket = Status(
            "Server returned non-2xx status code: 404 Not Found: <Error><Code>NoSuchBucket</Code></Error>",
        );
        assert!(matches!(OriginError::from_store(generic(bucket)), OriginError::NoSuchBucket));
        let nf = object_store::Error::NotFound {
            path: "k".into(),
            source: Box::new(Status(
                "Server returned non-2xx status code: 404 Not Found: <Error><Code>NoSuchBucket</Code></Error>",
            )),
        };
        assert!(matches!(OriginError::from_store(nf), OriginError::NoSuchBucket));
    }

    #[test]
    fn every_key_has_a_path_and_back() {
        for key in ["a/b.lance", "dir/", "a//b", "/lead", "a/../b", "%lc/x", "%lc", "x/%lc", "tab\there", "é"]
        {
            let p = object_path(key).unwrap();
            assert_eq!(path_key(&p), key, "{key:?} -> {p}");
        }
        assert_eq!(object_path("a/b.lance").unwrap().as_ref(), "a/b.lance");
        assert!(is_escaped(&object_path("dir/").unwrap()));
        assert!(is_escaped(&object_path("%lc/x").unwrap()));
        assert!(!is_escaped(&object_path("x/%lc").unwrap()));
        assert!(object_path("").is_err());
    }

    #[test]
    fn keys_that_a_store_would_rewrite_are_refused() {
        assert_eq!(key_path("a/b.lance").unwrap().as_ref(), "a/b.lance");
        for bad in ["", "/", "/a", "a/", "a//b", "a/../b", "./a", "a/."] {
            assert!(key_path(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
