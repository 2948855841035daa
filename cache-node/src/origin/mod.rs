//! The origin: where objects really live, reached through `object_store` (S3-compatible
//! endpoints or a local directory). Owns the bucket → store mapping, time limits, error
//! classification and origin metrics; knows nothing of pages or caching.

pub mod multipart;

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
    #[error("origin unavailable: {0}")]
    Unavailable(String),
    #[error("origin error: {0}")]
    Other(String),
}

impl OriginError {
    pub fn from_store(e: object_store::Error) -> Self {
        use object_store::Error as E;
        match e {
            E::NotFound { .. } => OriginError::NotFound,
            E::Precondition { .. } => OriginError::Precondition,
            E::NotModified { .. } => OriginError::NotModified,
            E::AlreadyExists { .. } => OriginError::AlreadyExists,
            E::NotImplemented { .. } | E::NotSupported { .. } => OriginError::NotSupported,
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => OriginError::AccessDenied,
            E::InvalidPath { source } => OriginError::InvalidKey(source.to_string()),
            // S3 answers a missing bucket with its own error code, which object_store only
            // passes on in the message.
            other if other.to_string().contains("NoSuchBucket") => OriginError::NoSuchBucket,
            // Transport failures, throttling and 5xx all surface as Generic from the cloud
            // clients: to a reader they mean "try again later".
            other => OriginError::Unavailable(other.to_string()),
        }
    }
}

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

/// The stores behind each bucket.
pub struct Origins {
    configs: Vec<OriginConfig>,
    /// Bounded: with a `*` origin every bucket name a client sends builds a client.
    stores: moka::sync::Cache<String, Arc<dyn ObjectStore>>,
    timeout: Duration,
}

impl Origins {
    pub fn new(configs: Vec<OriginConfig>, timeout: Duration) -> Self {
        Self { configs, stores: moka::sync::Cache::new(10_000), timeout }
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
                Ok(Arc::new(fs))
            }
            OriginKind::S3 => {
                // Credentials not in the config come from the environment (AWS_* variables,
                // a web identity token as on EKS) or the instance role.
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(cfg.origin_bucket.clone().unwrap_or_else(|| bucket.to_string()))
                    .with_region(cfg.region.clone().unwrap_or_else(|| "us-east-1".into()))
                    .with_allow_http(cfg.allow_http)
                    .with_skip_signature(cfg.anonymous)
                    .with_retry(object_store::RetryConfig {
                        max_retries: 3,
                        retry_timeout: self.timeout,
                        ..Default::default()
                    })
                    .with_client_options(
                        ClientOptions::new()
                            .with_allow_http(cfg.allow_http)
                            .with_timeout(self.timeout)
                            .with_connect_timeout(Duration::from_secs(5)),
                    );
                if let Some(ep) = &cfg.endpoint {
                    b = b.with_endpoint(ep.clone());
                }
                if let (Some(k), Some(s)) = (&cfg.access_key_id, &cfg.secret_access_key) {
                    b = b.with_access_key_id(k.clone()).with_secret_access_key(s.clone());
                }
                Ok(Arc::new(b.build().map_err(|e| OriginError::Other(e.to_string()))?))
            }
        }
    }

    /// Whether the store for `bucket` keeps object attributes such as Content-Type.
    pub fn keeps_attributes(&self, bucket: &str) -> bool {
        self.configs
            .iter()
            .find(|c| c.bucket == bucket)
            .or_else(|| self.configs.iter().find(|c| c.bucket == "*"))
            .is_some_and(|c| c.kind == OriginKind::S3)
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
            Ok(r) => r.map_err(OriginError::from_store),
            Err(_) => Err(OriginError::Unavailable(format!("timed out after {:?}", self.timeout))),
        };
        metrics::histogram!(m::ORIGIN_LATENCY, "op" => op).record(m::ms_since(t0));
        if let Err(e) = &out
            && matches!(e, OriginError::Unavailable(_) | OriginError::Other(_))
        {
            metrics::counter!(m::ORIGIN_ERRORS, "op" => op).increment(1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_a_store_would_rewrite_are_refused() {
        assert_eq!(key_path("a/b.lance").unwrap().as_ref(), "a/b.lance");
        for bad in ["", "/", "/a", "a/", "a//b", "a/../b", "./a", "a/."] {
            assert!(key_path(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
