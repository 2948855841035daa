//! The cache node's configuration: one TOML file (`config/cache-node.toml` documents every
//! key), then environment variables and flags on top (see `main.rs`), then `validate()`.
//! Defaults live in the `Default` impls here and nowhere else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use lakecache_common::config::{ConfigError, Validate};
use serde::Deserialize;

use crate::tier::disk::IoEngineChoice;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    pub fleet: NodeFleetConfig,
    pub cache: CacheConfig,
    pub disk: DiskConfig,
    pub pins: PinConfig,
    pub pricing: PricingConfig,
    pub origins: Vec<OriginConfig>,
}

/// What the origin charges, for the dashboard's "saved" panels (exported as gauges; the
/// node itself bills nothing).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// Dollars per 1000 GET requests (S3 Standard: 0.0004).
    pub get_per_1000: f64,
    /// Dollars per GiB read out of the origin (0 within an AWS region; across regions or
    /// to the internet it is not).
    pub transfer_per_gib: f64,
}

impl Default for PricingConfig {
    fn default() -> Self {
        Self { get_per_1000: 0.0004, transfer_per_gib: 0.0 }
    }
}

pub use lakecache_s3::config::{AccessKey, AdminConfig, AuthConfig, ServerConfig};

/// The internal page protocol other fleet members (routers, search nodes) read through.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeFleetConfig {
    /// The fleet secret (the same on every member) that signs internal page reads; the
    /// internal endpoint answers 403 to everything while it is unset.
    pub secret: Option<String>,
    /// A second listener that serves only the internal endpoint (and /healthz), for
    /// operators who keep it on the cluster network; the S3 port serves it too.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Unit of caching: a multiple of 4 KiB, at most 2 MiB.
    pub page_size: ByteSize,
    /// Byte budget of the memory tier.
    pub memory_capacity: ByteSize,
    /// Largest ranged GET sent to the origin for a run of adjacent missing pages.
    pub max_fetch: ByteSize,
    /// How far ahead of the bytes being sent a large range fetches missing pages.
    pub readahead: ByteSize,
    /// How long metadata (size, ETag) of a mutable object is trusted before a HEAD revalidates it.
    #[serde(with = "humantime_serde")]
    pub metadata_ttl: Duration,
    /// How long a ListObjectsV2 answer is reused; 0 passes every list to the origin.
    #[serde(with = "humantime_serde")]
    pub list_ttl: Duration,
    /// Keys (globs, `**` crosses `/`) whose content never changes once written: cached with no revalidation.
    pub immutable: Vec<String>,
    /// Keys that are always read from the origin (mutable pointers such as Lance version hints).
    pub never_cache: Vec<String>,
    /// Time limit for one origin request.
    #[serde(with = "humantime_serde")]
    pub origin_timeout: Duration,
    /// Where parts of multipart uploads are staged until completion.
    pub multipart_dir: PathBuf,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            page_size: ByteSize::mib(1),
            memory_capacity: ByteSize::mib(512),
            max_fetch: ByteSize::mib(16),
            readahead: ByteSize::mib(32),
            metadata_ttl: Duration::from_secs(2),
            list_ttl: Duration::ZERO,
            immutable: default_immutable(),
            never_cache: default_never_cache(),
            origin_timeout: Duration::from_secs(30),
            multipart_dir: PathBuf::from(".lakecache/multipart"),
        }
    }
}

pub use lakecache_common::keys::{default_immutable, default_never_cache};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskConfig {
    /// Off: memory tier only.
    pub enabled: bool,
    /// The page file (created and preallocated if missing; a raw device also works).
    pub path: PathBuf,
    pub capacity: ByteSize,
    /// "auto" probes io_uring and falls back to pread; "uring" or "pread" force one.
    pub io_engine: IoEngineChoice,
    /// io_uring rings (one thread each); 0 = one per core.
    pub rings: usize,
    pub queue_depth: u32,
    /// Registered buffers per ring.
    pub registered_buffers: usize,
    /// Concurrent page writes queued to the disk before new ones are dropped (a dropped write
    /// only means the page is not cached on disk).
    pub write_queue: usize,
}

impl Default for DiskConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: PathBuf::from(".lakecache/pages.bin"),
            capacity: ByteSize::gib(4),
            io_engine: IoEngineChoice::Auto,
            rings: 0,
            queue_depth: 128,
            registered_buffers: 64,
            write_queue: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PinConfig {
    /// Most bytes that may be pinned on disk; a pin that would exceed it is refused.
    pub budget: ByteSize,
    /// Rules from the config file; the admin API adds more (kept in `state_file`).
    pub rules: Vec<PinRule>,
    /// Where rules added through the admin API are kept across restarts.
    pub state_file: PathBuf,
    /// Fetch everything pinned into the disk tier at start.
    pub prewarm_on_start: bool,
}

impl Default for PinConfig {
    fn default() -> Self {
        Self {
            budget: ByteSize::gib(1),
            rules: Vec::new(),
            state_file: PathBuf::from(".lakecache/pins.json"),
            prewarm_on_start: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PinRule {
    /// Bucket glob (`*` = any bucket).
    pub bucket: String,
    /// Key glob; `**` crosses `/`.
    pub key: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OriginKind {
    /// A local directory: bucket `b` is the directory `<root>/b`.
    Local,
    /// Any S3-compatible endpoint.
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// The bucket name clients use, or `*` for every bucket not named elsewhere.
    pub bucket: String,
    pub kind: OriginKind,
    /// Local: the directory holding one subdirectory per bucket.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// S3: endpoint URL (unset = AWS).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// S3: bucket name at the origin (unset = the client's bucket name).
    #[serde(default)]
    pub origin_bucket: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// S3: allow plain-HTTP endpoints.
    #[serde(default)]
    pub allow_http: bool,
    /// S3: send unsigned requests.
    #[serde(default)]
    pub anonymous: bool,
}

impl OriginConfig {
    /// A local-directory origin: bucket `b` is the directory `<root>/b`.
    pub fn local(bucket: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        Self {
            bucket: bucket.into(),
            kind: OriginKind::Local,
            root: Some(root.into()),
            endpoint: None,
            region: None,
            origin_bucket: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            anonymous: false,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let ps = self.cache.page_size.as_u64();
        if ps == 0 || !ps.is_multiple_of(4096) || ps > 2 * 1024 * 1024 {
            return bad(format!("cache.page_size must be a multiple of 4 KiB and at most 2 MiB, got {ps}"));
        }
        if self.cache.max_fetch.as_u64() < ps {
            return bad("cache.max_fetch must be at least one page".into());
        }
        if self.cache.memory_capacity.as_u64() < ps {
            return bad("cache.memory_capacity must hold at least one page".into());
        }
        if self.disk.enabled {
            if self.disk.capacity.as_u64() < 4 * (ps + 4096) {
                return bad("disk.capacity must hold at least four pages".into());
            }
            if self.pins.budget.as_u64() > self.disk.capacity.as_u64() / 2 {
                return bad("pins.budget may be at most half of disk.capacity".into());
            }
        }
        self.server.validate_limits()?;
        let p = &self.pricing;
        let price_ok = |x: f64| x.is_finite() && x >= 0.0;
        if !price_ok(p.get_per_1000) || !price_ok(p.transfer_per_gib) {
            return bad("pricing: prices must be finite and not negative".into());
        }
        if self.auth.keys.is_empty() && !self.auth.anonymous {
            return bad("auth: no access keys and anonymous access off: nobody could use this node".into());
        }
        for k in &self.auth.keys {
            if k.access_key.is_empty() || k.secret_key.is_empty() {
                return bad("auth.keys: access_key and secret_key must not be empty".into());
            }
        }
        if self
            .fleet
            .secret
            .as_deref()
            .is_some_and(|s| s.len() < lakecache_common::wire::FLEET_SECRET_MIN_LEN)
        {
            return bad(format!(
                "fleet.secret must be at least {} characters",
                lakecache_common::wire::FLEET_SECRET_MIN_LEN
            ));
        }
        if self.fleet.listen.is_some() && self.fleet.secret.is_none() {
            return bad(
                "fleet.listen is set but fleet.secret is not: the endpoint would refuse everyone".into()
            );
        }
        if self.admin.token.as_deref().is_some_and(|t| t.len() < 8) {
            return bad("admin.token must be at least 8 characters".into());
        }
        if self.origins.is_empty() {
            return bad("at least one [[origins]] entry is needed".into());
        }
        let mut seen = std::collections::HashSet::new();
        for o in &self.origins {
            if !seen.insert(o.bucket.as_str()) {
                return bad(format!("origins: bucket {:?} is mapped twice", o.bucket));
            }
            match o.kind {
                OriginKind::Local if o.root.is_none() => {
                    return bad(format!("origins: local origin for {:?} needs `root`", o.bucket));
                }
                OriginKind::S3 if o.access_key_id.is_some() != o.secret_access_key.is_some() => {
                    return bad(format!(
                        "origins: {:?} needs both access_key_id and secret_access_key, or neither",
                        o.bucket
                    ));
                }
                _ => {}
            }
        }
        for g in self.cache.immutable.iter().chain(&self.cache.never_cache) {
            crate::policy::compile_glob(g).map_err(ConfigError::Invalid)?;
        }
        for r in &self.pins.rules {
            crate::policy::compile_glob(&r.bucket).map_err(ConfigError::Invalid)?;
            crate::policy::compile_glob(&r.key).map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }
}
