//! How a fleet member finds and treats the cache nodes: the ring's unit (page size), the
//! node key and admin token, health checks, failover, hedging, retries, replicas. The same
//! `[fleet]` section and `[[nodes]]` list configure the router and the search node.

use std::time::Duration;

use bytesize::ByteSize;
use lakecache_common::config::{AccessKey, ConfigError};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Must equal the cache nodes' `cache.page_size`: the unit of placement.
    pub page_size: ByteSize,
    /// The fleet secret, the same as the cache nodes' `[fleet] secret`: page reads go to
    /// them over the internal protocol, signed with it. Required.
    pub secret: String,
    /// The access key the router signs the S3 calls it passes to cache nodes with.
    pub node_key: AccessKey,
    /// The cache nodes' admin token (for invalidation after writes).
    pub node_admin_token: String,
    /// Owners tried for one page before a read fails (the owner, then its successors).
    pub failover_attempts: usize,
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub health_timeout: Duration,
    /// Consecutive failed checks (or failed requests) before a node is ejected.
    pub fail_threshold: u32,
    /// Consecutive good checks before an ejected node rejoins.
    pub rise_threshold: u32,
    /// Time limit of one request to a cache node (its head, and each pause in its body);
    /// above the nodes' origin timeout, so a slow origin is not taken for a silent node.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Send the same read to the next owner when the first has not answered after this
    /// long, and take whichever answers first. Unset: no hedging.
    #[serde(default, with = "humantime_serde")]
    pub hedge_after: Option<Duration>,
    /// How long the router reuses metadata of an object that may change (Lance's immutable
    /// files are reused until a write through this router; version pointers never).
    #[serde(with = "humantime_serde")]
    pub metadata_ttl: Duration,
    /// Retries (failovers) allowed as a percentage of requests, so a failing fleet is not
    /// buried under its own retries.
    pub retry_budget_percent: u32,
    /// Retries always allowed per health-check interval, however quiet the fleet.
    pub retry_budget_min: u32,
    /// Copies of hot pages: reads of keys matching `replicate` are spread over the first
    /// `replicas` owners of each page (each caches it on first read).
    pub replicas: usize,
    /// A replicated key's reads go to its first owner alone until this member has read it
    /// this many times, so a cold object is fetched from the origin once, not once per
    /// replica; from then on they spread. 0: spread from the first read.
    pub replicate_after_reads: u32,
    /// Keys (globs, `**` crosses `/`) whose pages are replicated; default: Lance indices
    /// and manifests, which every query reads.
    pub replicate: Vec<String>,
    /// The fleet's key rules, if this member states them (`immutable`, `never_cache`, the
    /// same globs as the cache nodes' `[cache]` lists). Unset: the rules the nodes apply
    /// are adopted at start. Set: they must equal the nodes' or the member refuses to start.
    pub immutable: Option<Vec<String>>,
    pub never_cache: Option<Vec<String>>,
    /// How long a starting member waits for a cache node to tell it the fleet's rules.
    #[serde(with = "humantime_serde")]
    pub startup_wait: Duration,
    /// Page-protocol connections this member keeps open to one cache node at most (in use
    /// and idle). A read that finds them all busy waits up to `request_timeout` for one and
    /// is then answered 503 SlowDown — this member's congestion, never held against the node.
    /// Keep it below the nodes' `server.max_connections` divided by the members reading from
    /// them, or the node refuses connections (which does count as a node fault).
    pub max_node_connections: usize,
    /// Exchanges with one cache node at once before small reads (up to 256 KiB, of objects
    /// already described) queue and go to it in batches: one request for many reads, so a
    /// busy node and this member pay one request's system calls for them all. Batches form
    /// only when this many exchanges are in flight, so a quiet fleet reads singly. 0: never
    /// batch.
    pub batch_in_flight: usize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            page_size: ByteSize::mib(1),
            secret: String::new(),
            node_key: AccessKey { access_key: "lakecache".into(), secret_key: "lakecache-secret".into() },
            node_admin_token: "change-me-admin-token".into(),
            failover_attempts: 3,
            health_interval: Duration::from_secs(1),
            health_timeout: Duration::from_millis(500),
            fail_threshold: 2,
            rise_threshold: 2,
            request_timeout: Duration::from_secs(40),
            hedge_after: None,
            metadata_ttl: Duration::from_secs(2),
            retry_budget_percent: 20,
            retry_budget_min: 10,
            replicas: 2,
            replicate_after_reads: 256,
            replicate: vec!["**/_indices/**".into(), "**/_versions/*.manifest".into()],
            immutable: None,
            never_cache: None,
            startup_wait: Duration::from_secs(30),
            max_node_connections: 1024,
            batch_in_flight: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Stable identity: placement depends on it, not on the address.
    pub id: String,
    /// Base URL of the cache node's S3 endpoint, e.g. "http://10.0.0.5:9000".
    pub url: String,
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

impl FleetConfig {
    /// Checks the section together with the nodes it places pages on.
    pub fn validate_with(&self, nodes: &[NodeConfig]) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if nodes.is_empty() {
            return bad("at least one [[nodes]] entry is needed".into());
        }
        if self.secret.len() < lakecache_common::wire::FLEET_SECRET_MIN_LEN {
            return bad(format!(
                "fleet.secret must be set to the cache nodes' [fleet] secret (at least {} characters)",
                lakecache_common::wire::FLEET_SECRET_MIN_LEN
            ));
        }
        let ps = self.page_size.as_u64();
        if ps == 0 || !ps.is_multiple_of(4096) {
            return bad("fleet.page_size must be a multiple of 4 KiB".into());
        }
        if self.replicas == 0 {
            return bad("fleet.replicas must be at least 1".into());
        }
        if self.max_node_connections == 0 || self.max_node_connections > 1 << 20 {
            return bad("fleet.max_node_connections must be between 1 and 1048576".into());
        }
        if self.batch_in_flight > 4096 {
            return bad("fleet.batch_in_flight must be at most 4096".into());
        }
        if self.immutable.is_some() != self.never_cache.is_some() {
            return bad("fleet.immutable and fleet.never_cache are stated together or not at all".into());
        }
        for g in self.immutable.iter().flatten().chain(self.never_cache.iter().flatten()) {
            lakecache_common::keys::compile_glob(g).map_err(ConfigError::Invalid)?;
        }
        for g in &self.replicate {
            lakecache_common::keys::compile_glob(g).map_err(ConfigError::Invalid)?;
        }
        if self.failover_attempts == 0 || self.fail_threshold == 0 || self.rise_threshold == 0 {
            return bad(
                "fleet.failover_attempts, fail_threshold and rise_threshold must be at least 1".into()
            );
        }

        for n in nodes {
            if !n.url.starts_with("http://") {
                return bad(format!(
                    "nodes: {} has url {:?}; expected http://host:port (fleet members speak plain HTTP/1.1 to the nodes; keep that traffic on the cluster network)",
                    n.id, n.url
                ));
            }
        }
        let ring: Vec<_> = nodes
            .iter()
            .map(|n| lakecache_common::ring::Node { id: n.id.clone(), weight: n.weight })
            .collect();
        lakecache_common::ring::Ring::new(ring).map_err(|e| ConfigError::Invalid(format!("nodes: {e}")))?;
        Ok(())
    }
}
