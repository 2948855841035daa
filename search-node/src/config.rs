//! The search node's configuration (`config/search-node.toml` documents every key).

use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use lakecache_common::config::{ConfigError, Validate};
use lakecache_fleet::config::{FleetConfig, NodeConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    /// Where tables live. A table `t` of namespace `ns` is `<uri>/t.lance`; the namespace
    /// named "" holds the tables addressed without a namespace.
    pub namespaces: Vec<NamespaceConfig>,
    /// Region the fleet's S3 endpoints (cache nodes or router) are signed for.
    pub region: String,
    /// Ring, node key and health settings: the same keys as the router's [fleet]. The node
    /// key signs requests to the cache nodes (or the router); the admin token pins and
    /// prewarms.
    pub fleet: FleetConfig,
    /// The cache nodes, read directly through the in-process ring client (the default
    /// whenever nodes are listed): no router hop.
    pub nodes: Vec<NodeConfig>,
    /// Otherwise: the router.
    pub router: Option<RouterAccess>,
    pub cache: CacheConfig,
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the REST API (also /healthz, /readyz and /metrics).
    pub listen: SocketAddr,
    /// Address of SQL over Arrow Flight SQL (gRPC); off when unset. The lancedb client looks
    /// for it at the REST port + 1 unless given `sql_host_override`.
    pub flight_listen: Option<SocketAddr>,
    /// Longest a query may run; a request's `x-request-timeout-ms` can only shorten it.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request body (Arrow IPC inserts).
    pub max_body: ByteSize,
    /// New table versions become visible within this interval; a request can ask for a
    /// newer one explicitly (`x-lancedb-min-version`-style min version in the body).
    #[serde(with = "humantime_serde")]
    pub read_consistency_interval: Duration,
    /// A connection must send a complete request head within this long after it opens or
    /// after its previous response (also how long an idle keep-alive connection stays).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest pause between two pieces of a request body.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Longest a response may wait for the client to take bytes.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Open connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
}

impl ServerConfig {
    pub fn conn_limits(&self) -> lakecache_s3::listener::ConnLimits {
        lakecache_s3::listener::ConnLimits {
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            send_timeout: self.send_timeout,
            max_connections: self.max_connections,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            flight_listen: None,
            request_timeout: Duration::from_secs(30),
            max_body: ByteSize::mib(256),
            read_consistency_interval: Duration::from_secs(5),
            header_timeout: lakecache_s3::listener::ConnLimits::default().header_timeout,
            body_timeout: lakecache_s3::listener::ConnLimits::default().body_timeout,
            send_timeout: lakecache_s3::listener::ConnLimits::default().send_timeout,
            max_connections: lakecache_s3::listener::ConnLimits::default().max_connections,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accepted `x-api-key` values. Empty: every request is refused unless `anonymous`.
    pub api_keys: Vec<String>,
    /// Serve requests without an API key (local development only).
    pub anonymous: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    #[serde(default)]
    pub name: String,
    /// `s3://bucket/prefix` (the bucket as the fleet serves it).
    pub uri: String,
}

impl NamespaceConfig {
    /// (bucket, prefix without slashes at the ends).
    pub fn bucket_prefix(&self) -> Result<(String, String), ConfigError> {
        let rest = self.uri.strip_prefix("s3://").ok_or_else(|| {
            ConfigError::Invalid(format!("namespaces: uri {:?} must look like s3://bucket/prefix", self.uri))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ConfigError::Invalid(format!("namespaces: uri {:?} has no bucket", self.uri)));
        }
        Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterAccess {
    /// The router's S3 endpoint, e.g. "http://127.0.0.1:9000".
    pub url: String,
    /// Bearer token of the router's admin API (pins and prewarm through the router).
    #[serde(default)]
    pub admin_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Lance index cache (decoded index partitions), shared by every table.
    pub index_cache: ByteSize,
    /// Lance metadata cache (manifests, file metadata), shared by every table.
    pub metadata_cache: ByteSize,
    /// The search node's own memory cache of table bytes read from the fleet (Lance's
    /// write-once files only, kept by ETag); 0 turns it off and every read goes to the fleet.
    pub page_cache: ByteSize,
    /// Unit of that cache: reads are rounded out to whole blocks.
    pub page_cache_block: ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            index_cache: ByteSize::gib(1),
            metadata_cache: ByteSize::mib(256),
            page_cache: ByteSize::gib(1),
            page_cache_block: ByteSize::kib(64),
        }
    }
}

/// What one request may make the node hold: the answer it builds and the memory its SQL
/// may use. A request past a limit is refused with a 400 naming the key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most rows one answer may hold (plain scans and SQL; a vector or full-text search is
    /// also bounded by its k).
    pub max_result_rows: u64,
    /// Largest answer, as sent (Arrow IPC or JSON).
    pub max_result_bytes: ByteSize,
    /// Memory DataFusion may hold for SQL (joins, sorts, aggregations), shared by every SQL
    /// request at once; a query that needs more is refused (nothing spills to disk).
    pub sql_memory: ByteSize,
    /// Largest an Arrow IPC request body (create, insert, merge_insert) may be once its
    /// buffers are decompressed; checked on the lengths the body claims, before decoding.
    pub max_decoded_body: ByteSize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_result_rows: 1_000_000,
            max_result_bytes: ByteSize::mib(256),
            sql_memory: ByteSize::mib(512),
            max_decoded_body: ByteSize::gib(1),
        }
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            namespaces: Vec::new(),
            region: "us-east-1".into(),
            fleet: FleetConfig::default(),
            nodes: Vec::new(),
            router: None,
            cache: CacheConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl Validate for SearchConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        self.server.conn_limits().validate().map_err(ConfigError::Invalid)?;
        if self.namespaces.is_empty() {
            return bad("at least one [[namespaces]] entry is needed".into());
        }
        let mut names = std::collections::HashSet::new();
        for ns in &self.namespaces {
            ns.bucket_prefix()?;
            if !names.insert(ns.name.as_str()) {
                return bad(format!("namespaces: {:?} is listed twice", ns.name));
            }
            if ns.name.contains(['$', '/']) {
                return bad(format!("namespaces: name {:?} may not contain '$' or '/'", ns.name));
            }
        }
        match (&self.router, self.nodes.is_empty()) {
            (None, true) => {
                return bad("list the cache nodes ([[nodes]]) or the router ([router] url)".into());
            }
            (Some(r), _) if !(r.url.starts_with("http://") || r.url.starts_with("https://")) => {
                return bad(format!("router.url {:?}: expected http(s)://host:port", r.url));
            }
            (Some(_), true) if self.fleet.secret.len() < lakecache_common::wire::FLEET_SECRET_MIN_LEN => {
                return bad(format!(
                    "fleet.secret must be set to the fleet's [fleet] secret (at least {} characters): \
                     the search node learns the fleet's key rules from the router with it",
                    lakecache_common::wire::FLEET_SECRET_MIN_LEN
                ));
            }
            _ => {}
        }
        for n in &self.nodes {
            if !n.url.starts_with("http://") {
                return bad(format!(
                    "nodes: {} has url {:?}; expected http://host:port (fleet members speak plain HTTP/1.1 to the nodes)",
                    n.id, n.url
                ));
            }
        }
        let ps = self.fleet.page_size.as_u64();
        if ps == 0 || !ps.is_multiple_of(4096) {
            return bad("fleet.page_size must be a multiple of 4 KiB".into());
        }
        if self.auth.api_keys.is_empty() && !self.auth.anonymous {
            return bad("auth: no api_keys and anonymous access off".into());
        }
        let block = self.cache.page_cache_block.as_u64();
        if !(4096..=16 << 20).contains(&block) || !block.is_power_of_two() {
            return bad("cache.page_cache_block must be a power of two between 4 KiB and 16 MiB".into());
        }
        if self.server.request_timeout.is_zero() {
            return bad("server.request_timeout must be positive".into());
        }
        if self.limits.max_result_rows == 0 || self.limits.max_result_rows > i64::MAX as u64 / 2 {
            return bad(format!("limits.max_result_rows must be between 1 and {}", i64::MAX as u64 / 2));
        }
        if self.limits.max_result_bytes.as_u64() < 4096 {
            return bad("limits.max_result_bytes must be at least 4 KiB".into());
        }
        if self.limits.sql_memory.as_u64() < (1 << 20) {
            return bad("limits.sql_memory must be at least 1 MiB".into());
        }
        Ok(())
    }
}
