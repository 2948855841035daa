//! Fleet membership: the configured cache nodes, which of them are healthy, and the ring
//! of healthy nodes that placement uses. Active health checks (`/readyz`) and failed
//! requests eject a node after `fail_threshold` failures; `rise_threshold` good checks
//! bring it back. Rendezvous hashing means an ejection moves only that node's pages.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use object_store::ObjectStore;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use parking_lot::RwLock;

use crate::config::{FleetConfig, NodeConfig};
use crate::metrics::*;
use crate::sign::Signer;
use crate::upstream::{NodeClient, ObjectInfo};

/// One cache node as the router sees it.
pub struct Member {
    pub cfg: NodeConfig,
    healthy: AtomicBool,
    fails: AtomicU32,
    rises: AtomicU32,
    /// object_store clients for this node, one per bucket (S3 clients are per bucket).
    stores: RwLock<HashMap<String, Arc<AmazonS3>>>,
    /// Connections of the internal page protocol (made by the node client on first use).
    pub(crate) conns: std::sync::OnceLock<Arc<crate::conn::Pool>>,
    /// Batching of small reads to the node (made by the node client on first use).
    pub(crate) batcher: std::sync::OnceLock<Arc<crate::batch::Batcher>>,
    pub stats: MemberStats,
}

/// This node's series of the `router_*` metrics, registered when it joins (a lookup by
/// label on every request and every body chunk cost more than the routing itself).
pub struct MemberStats {
    pub get: metrics::Counter,
    pub head: metrics::Counter,
    pub hedge: metrics::Counter,
    pub delete: metrics::Counter,
    pub upstream_bytes: metrics::Counter,
    pub upstream_latency: metrics::Histogram,
}

impl MemberStats {
    fn new(id: &str) -> Self {
        use crate::metrics::{ROUTER_REQUESTS, ROUTER_UPSTREAM_BYTES, ROUTER_UPSTREAM_LATENCY};
        let op = |op: &'static str| metrics::counter!(ROUTER_REQUESTS, "node" => id.to_string(), "op" => op);
        Self {
            get: op("get"),
            head: op("head"),
            hedge: op("hedge"),
            delete: op("delete"),
            upstream_bytes: metrics::counter!(ROUTER_UPSTREAM_BYTES, "node" => id.to_string()),
            upstream_latency: metrics::histogram!(ROUTER_UPSTREAM_LATENCY, "node" => id.to_string()),
        }
    }
}

impl Member {
    fn new(cfg: NodeConfig) -> Arc<Member> {
        Arc::new(Member {
            healthy: AtomicBool::new(true),
            fails: AtomicU32::new(0),
            rises: AtomicU32::new(0),
            stores: RwLock::new(HashMap::new()),
            conns: std::sync::OnceLock::new(),
            batcher: std::sync::OnceLock::new(),
            stats: MemberStats::new(&cfg.id),
            cfg,
        })
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
}

/// Retries as a share of requests: every request deposits `percent` hundredths of a
/// retry, every retry withdraws one, with a floor of `min` retries in the bucket so a quiet
/// fleet can still fail over. A failing fleet then degrades to errors instead of
/// multiplying its own load with retries.
pub struct RetryBudget {
    /// Hundredths of a retry.
    balance: std::sync::atomic::AtomicI64,
    percent: i64,
    min: i64,
    cap: i64,
}

impl RetryBudget {
    pub fn new(percent: u32, min_retries: u32) -> Self {
        let min = i64::from(min_retries) * 100;
        Self {
            balance: std::sync::atomic::AtomicI64::new(min),
            percent: i64::from(percent),
            min,
            cap: (min * 10).max(100_000),
        }
    }

    pub fn deposit(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some((b + self.percent).min(self.cap)));
    }

    /// Takes one retry if the budget has it.
    pub fn withdraw(&self) -> bool {
        let ok = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| (b >= 100).then_some(b - 100))
            .is_ok();
        if !ok {
            metrics::counter!(ROUTER_RETRIES_REFUSED).increment(1);
        }
        ok
    }

    /// Refills to the floor (called by the health checker once a second or so).
    fn refill_floor(&self) {
        let _ = self.balance.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.max(self.min)));
    }
}

/// Object metadata the router may reuse: Lance's immutable files until a write through
/// this router, other keys for `metadata_ttl`, version pointers never (the same rules as
/// a cache node's).
pub struct MetaCache {
    rules: RwLock<Arc<lakecache_common::keys::KeyRules>>,
    ttl: std::time::Duration,
    /// By `bucket/key`: when it was learned, how the key is treated (classified once, when
    /// stored), what it is.
    map: moka::sync::Cache<String, (std::time::Instant, lakecache_common::keys::KeyClass, Arc<ObjectInfo>)>,
}

impl MetaCache {
    fn new(ttl: std::time::Duration) -> anyhow::Result<Self> {
        let rules = RwLock::new(Arc::new(lakecache_common::keys::KeyRules::lance_defaults()));
        Ok(Self { rules, ttl, map: moka::sync::Cache::builder().max_capacity(1_000_000).build() })
    }

    fn map_key(bucket: &str, key: &str) -> String {
        let mut k = String::with_capacity(bucket.len() + 1 + key.len());
        k.push_str(bucket);
        k.push('/');
        k.push_str(key);
        k
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Arc<ObjectInfo>> {
        use lakecache_common::keys::KeyClass;
        let (at, class, m) = self.map.get(&Self::map_key(bucket, key))?;
        match class {
            KeyClass::Immutable => Some(m),
            KeyClass::Revalidated if at.elapsed() < self.ttl => Some(m),
            _ => None,
        }
    }

    pub fn put(&self, bucket: &str, key: &str, m: Arc<ObjectInfo>) {
        let class = self.rules.read().classify(key);
        if class != lakecache_common::keys::KeyClass::NeverCache {
            self.map.insert(Self::map_key(bucket, key), (std::time::Instant::now(), class, m));
        }
    }

    pub fn forget(&self, bucket: &str, key: &str) {
        self.map.invalidate(&Self::map_key(bucket, key));
    }

    /// Applies `rules` from now on; what was stored under other rules is dropped.
    fn set_rules(&self, rules: lakecache_common::keys::KeyRules) {
        *self.rules.write() = Arc::new(rules);
        self.map.invalidate_all();
    }

    /// The key rules in force (the fleet's, once learned from the nodes).
    pub fn rules(&self) -> Arc<lakecache_common::keys::KeyRules> {
        self.rules.read().clone()
    }
}

pub struct Fleet {
    pub cfg: FleetConfig,
    /// Page and metadata reads from cache nodes.
    pub nodes: NodeClient,
    pub meta: MetaCache,
    pub retry_budget: RetryBudget,
    replicate: globset::GlobSet,
    /// Reads of replicated objects so far, by hash of bucket and key (bounded; a key
    /// forgotten starts again at the first owner, which holds it).
    reads: quick_cache::sync::Cache<u64, Arc<std::sync::atomic::AtomicU32>>,
    region: String,
    members: RwLock<Arc<Vec<Arc<Member>>>>,
    live: RwLock<lakecache_common::ring::Ring>,
    http: reqwest::Client,
}

impl Fleet {
    pub fn new(nodes: Vec<NodeConfig>, cfg: FleetConfig, region: String) -> anyhow::Result<Arc<Fleet>> {
        let members: Vec<Arc<Member>> = nodes.into_iter().map(Member::new).collect();
        let http = reqwest::Client::builder()
            .timeout(cfg.health_timeout.max(cfg.request_timeout))
            .no_proxy()
            .build()?;
        let replicate = lakecache_common::keys::glob_set(&cfg.replicate).map_err(anyhow::Error::msg)?;
        let retry_budget = RetryBudget::new(cfg.retry_budget_percent, cfg.retry_budget_min);
        let meta = MetaCache::new(cfg.metadata_ttl)?;
        let mut nodes = NodeClient::new(
            Signer::new(&cfg.node_key.access_key, &cfg.node_key.secret_key, &region),
            cfg.secret.clone(),
            cfg.health_timeout,
            cfg.request_timeout,
            cfg.max_node_connections,
            cfg.batch_in_flight,
        )?;
        nodes.page_size = cfg.page_size.as_u64();
        let fleet = Arc::new(Fleet {
            nodes,
            meta,
            retry_budget,
            cfg,
            replicate,
            reads: quick_cache::sync::Cache::new(100_000),
            region,
            members: RwLock::new(Arc::new(members)),
            live: RwLock::new(Default::default()),
            http,
        });
        fleet.rebuild()?;
        fleet.register_metrics();
        Ok(fleet)
    }

    /// Creates the fleet's counters at zero (see ops/METRICS.md).
    fn register_metrics(&self) {
        for c in [ROUTER_RETRIES_REFUSED, ROUTER_FAILOVERS, ROUTER_HEDGES] {
            metrics::counter!(c).absolute(0);
        }
        for m in self.members().iter() {
            metrics::counter!(ROUTER_EJECTIONS, "node" => m.cfg.id.clone()).absolute(0);
            metrics::counter!(ROUTER_UPSTREAM_BYTES, "node" => m.cfg.id.clone()).absolute(0);
            for op in ["get", "head"] {
                metrics::counter!(ROUTER_REQUESTS, "node" => m.cfg.id.clone(), "op" => op).absolute(0);
            }
        }
    }

    fn rebuild(&self) -> anyhow::Result<()> {
        let members = self.members();
        let nodes: Vec<_> = members
            .iter()
            .filter(|m| m.healthy())
            .map(|m| lakecache_common::ring::Node { id: m.cfg.id.clone(), weight: m.cfg.weight })
            .collect();
        metrics::gauge!(ROUTER_RING_NODES).set(nodes.len() as f64);
        for m in members.iter() {
            metrics::gauge!(ROUTER_NODE_UP, "node" => m.cfg.id.clone()).set(if m.healthy() {
                1.0
            } else {
                0.0
            });
        }
        *self.live.write() = lakecache_common::ring::Ring::new(nodes)?;
        Ok(())
    }

    /// Learns the fleet's key rules from the cache nodes and applies them: every node that
    /// answers within `startup_wait` must apply the same rules and page size, equal to this
    /// member's `page_size` and — where this member states rules — to those. Otherwise an
    /// error saying who differs and how: a member never runs with other rules than the
    /// nodes'.
    pub async fn adopt_node_rules(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + self.cfg.startup_wait;
        let answers = loop {
            let members = self.members();
            let asked = futures::future::join_all(
                members.iter().map(|m| async move { (m.cfg.id.clone(), self.nodes.rules(m).await) }),
            )
            .await;
            let mut got = Vec::new();
            let mut last_err = None;
            for (id, r) in asked {
                match r {
                    Ok(r) => got.push((id, r)),
                    // A node that refuses the fleet secret is misconfigured, not slow.
                    Err(e @ crate::upstream::UpstreamError::Answer { .. }) => {
                        anyhow::bail!("cache node {id} refused to tell its key rules: {e}")
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            if !got.is_empty() {
                break got;
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "no cache node told its key rules within {:?} (fleet.startup_wait): {}",
                    self.cfg.startup_wait,
                    last_err.map(|e| e.to_string()).unwrap_or_default()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        };
        let rules = agreed_rules(&self.cfg, &answers)?;
        tracing::info!(nodes = answers.len(), rules = ?rules.spec(), "adopted the fleet's key rules");
        self.meta.set_rules(rules);
        Ok(())
    }

    /// Checks the nodes a membership change would add against the key rules and page size
    /// this member applies: one that answers with others (or refuses the fleet secret) is
    /// an error naming it, so a running fleet never takes in a node with other rules.
    /// Returns the new nodes that did not answer (not checked: they are let in, and the
    /// health checks keep them out while they are down).
    pub async fn check_new_nodes(&self, nodes: &[NodeConfig]) -> anyhow::Result<Vec<String>> {
        let current = self.members();
        let new: Vec<Arc<Member>> = nodes
            .iter()
            .filter(|n| !current.iter().any(|m| m.cfg.id == n.id && m.cfg.url == n.url))
            .map(|n| Member::new(n.clone()))
            .collect();
        let mine = self.meta.rules().spec().clone();
        let answers = futures::future::join_all(new.iter().map(|m| self.nodes.rules(m))).await;
        let mut unchecked = Vec::new();
        for (m, r) in new.iter().zip(answers) {
            let id = &m.cfg.id;
            match r {
                Ok(r) if !r.rules.same_as(&mine) => anyhow::bail!(
                    "cache node {id} applies other key rules ({:?}) than the fleet ({mine:?}); \
                     configure the same [cache] immutable/never_cache on it",
                    r.rules
                ),
                Ok(r) if r.page_size != self.cfg.page_size.as_u64() => anyhow::bail!(
                    "cache node {id} has cache.page_size {} but fleet.page_size is {}; they must be equal",
                    r.page_size,
                    self.cfg.page_size.as_u64()
                ),
                Ok(_) => {}
                Err(e @ crate::upstream::UpstreamError::Answer { .. }) => {
                    anyhow::bail!("cache node {id} refused to tell its key rules: {e}")
                }
                Err(e) => {
                    tracing::warn!(node = %id, error = %e, "new cache node not reachable: its key rules are unchecked");
                    unchecked.push(id.clone());
                }
            }
        }
        Ok(unchecked)
    }

    pub fn member(&self, id: &str) -> Option<Arc<Member>> {
        self.members().iter().find(|m| m.cfg.id == id).cloned()
    }

    /// The members now; a request keeps the snapshot it started with.
    pub fn members(&self) -> Arc<Vec<Arc<Member>>> {
        self.members.read().clone()
    }

    /// Replaces the membership (SIGHUP reload or the admin API). Members that stay (same id
    /// and URL) keep their health state and connections; in-flight requests finish on the
    /// members they hold. Only the pages of added or removed nodes move.
    pub fn set_nodes(&self, nodes: Vec<NodeConfig>) -> anyhow::Result<()> {
        let ring: Vec<_> = nodes
            .iter()
            .map(|n| lakecache_common::ring::Node { id: n.id.clone(), weight: n.weight })
            .collect();
        lakecache_common::ring::Ring::new(ring)?;
        anyhow::ensure!(!nodes.is_empty(), "a fleet needs at least one node");
        let old = self.members();
        let next: Vec<Arc<Member>> = nodes
            .into_iter()
            .map(|n| match old.iter().find(|m| m.cfg.id == n.id && m.cfg.url == n.url) {
                Some(m) if m.cfg.weight == n.weight => m.clone(),
                _ => Member::new(n),
            })
            .collect();
        tracing::info!(nodes = next.len(), "fleet membership replaced");
        *self.members.write() = Arc::new(next);
        self.rebuild()
    }

    /// The healthy nodes that should hold a page, best first (at most `n`). The pages of an
    /// index file are placed in groups (`ring::placement_page`).
    pub fn owners(&self, bucket: &str, key: &str, page: u64, n: usize) -> Vec<Arc<Member>> {
        let placed = lakecache_common::ring::placement_page(key, page, self.cfg.page_size.as_u64());
        let h = lakecache_common::ring::page_key_hash(bucket, key, placed);
        let ring = self.live.read().clone();
        let mut out: Vec<Arc<Member>> =
            ring.owners(h, n).into_iter().filter_map(|node| self.member(&node.id)).collect();
        if out.is_empty() {
            // Everything ejected: try the configured nodes anyway rather than refuse.
            let all = lakecache_common::ring::Ring::new(
                self.members()
                    .iter()
                    .map(|m| lakecache_common::ring::Node { id: m.cfg.id.clone(), weight: m.cfg.weight })
                    .collect(),
            )
            .unwrap_or_default();
            out = all.owners(h, n).into_iter().filter_map(|node| self.member(&node.id)).collect();
        }
        out
    }

    /// How many owners share the reads of a key's pages.
    pub fn replicas_for(&self, key: &str) -> usize {
        if self.cfg.replicas > 1 && self.replicate.is_match(key) { self.cfg.replicas } else { 1 }
    }

    /// Counts a read of a replicated key and says whether it may go to any of the key's
    /// replicas: only once this member has read the object `replicate_after_reads` times.
    /// Before that every read goes to the first owner, so a cold object costs the origin
    /// one fetch, not one per replica (a copy is made where a key proves hot).
    pub fn spread_reads(&self, bucket: &str, key: &str) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let after = self.cfg.replicate_after_reads;
        if after == 0 {
            return true;
        }
        let h = lakecache_common::ring::page_key_hash(bucket, key, u64::MAX);
        let n = match self.reads.get(&h) {
            Some(n) => n,
            None => {
                let n = Arc::new(std::sync::atomic::AtomicU32::new(0));
                self.reads.insert(h, n.clone());
                n
            }
        };
        n.load(Relaxed) >= after || n.fetch_add(1, Relaxed) >= after
    }

    /// The S3 client for `bucket` on `member`.
    pub fn store(&self, member: &Member, bucket: &str) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
        Ok(self.s3_client(member, bucket)? as Arc<dyn ObjectStore>)
    }

    /// The same client with its S3-specific API (multipart uploads).
    pub fn s3_client(&self, member: &Member, bucket: &str) -> Result<Arc<AmazonS3>, object_store::Error> {
        if let Some(s) = member.stores.read().get(bucket) {
            return Ok(s.clone());
        }
        let s = Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(member.cfg.url.clone())
                .with_bucket_name(bucket)
                .with_region(self.region.clone())
                .with_allow_http(true)
                .with_access_key_id(self.cfg.node_key.access_key.clone())
                .with_secret_access_key(self.cfg.node_key.secret_key.clone())
                // Failover to the next owner is the router's job; a dead node must not
                // hold a read for the client's retry budget.
                .with_retry(object_store::RetryConfig { max_retries: 0, ..Default::default() })
                .with_client_options(
                    object_store::ClientOptions::new()
                        .with_allow_http(true)
                        .with_timeout(self.cfg.request_timeout)
                        .with_connect_timeout(self.cfg.health_timeout),
                )
                .build()?,
        );
        member.stores.write().insert(bucket.to_string(), s.clone());
        Ok(s)
    }

    /// Records a failed request or check; ejects the node at the threshold.
    pub fn report_failure(&self, member: &Member) {
        member.rises.store(0, Ordering::SeqCst);
        let f = member.fails.fetch_add(1, Ordering::SeqCst) + 1;
        if f >= self.cfg.fail_threshold && member.healthy.swap(false, Ordering::SeqCst) {
            tracing::warn!(node = %member.cfg.id, failures = f, "ejecting cache node");
            metrics::counter!(ROUTER_EJECTIONS, "node" => member.cfg.id.clone()).increment(1);
            let _ = self.rebuild();
        }
    }

    fn report_success(&self, member: &Member) {
        member.fails.store(0, Ordering::SeqCst);
        if !member.healthy() {
            let r = member.rises.fetch_add(1, Ordering::SeqCst) + 1;
            if r >= self.cfg.rise_threshold {
                member.healthy.store(true, Ordering::SeqCst);
                tracing::info!(node = %member.cfg.id, "cache node rejoins");
                let _ = self.rebuild();
            }
        }
    }

    /// One round of active checks.
    pub async fn check_all(&self) {
        self.retry_budget.refill_floor();
        let members = self.members();
        let checks = members.iter().map(|m| async move {
            let ok = matches!(
                tokio::time::timeout(self.cfg.health_timeout, self.http.get(format!("{}/readyz", m.cfg.url)).send()).await,
                Ok(Ok(r)) if r.status().is_success()
            );
            (m, ok)
        });
        for (m, ok) in futures::future::join_all(checks).await {
            if ok {
                self.report_success(m);
            } else {
                self.report_failure(m);
            }
        }
    }

    /// Runs health checks until the fleet is dropped.
    pub fn spawn_health_checks(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = self.cfg.health_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(f) = weak.upgrade() else { break };
                f.check_all().await;
            }
        });
    }

    /// Tells every node to forget an object (after a write through one of them).
    pub async fn invalidate_everywhere(&self, bucket: &str, key: &str) {
        self.meta.forget(bucket, key);
        let body = serde_json::json!({ "bucket": bucket, "key": key });
        let members = self.members();
        let calls = members.iter().map(|m| {
            let req = self
                .http
                .post(format!("{}/_lakecache/admin/invalidate", m.cfg.url))
                .bearer_auth(&self.cfg.node_admin_token)
                .json(&body);
            async move { (m, req.send().await) }
        });
        for (m, r) in futures::future::join_all(calls).await {
            match r {
                Ok(r) if r.status().is_success() => {}
                // A node that misses this still cannot serve old bytes through the router:
                // every read carries If-Match with the version the router resolved.
                Ok(r) => tracing::warn!(node = %m.cfg.id, status = %r.status(), "invalidation refused"),
                Err(e) => tracing::warn!(node = %m.cfg.id, error = %e, "invalidation failed"),
            }
        }
    }

    /// Calls a cache node's admin API (`/_lakecache/admin/<path>`) with the node token.
    pub async fn admin_call(
        &self,
        member: &Member,
        method: http::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(http::StatusCode, serde_json::Value), reqwest::Error> {
        let mut req = self
            .http
            .request(method, format!("{}/_lakecache/admin/{path}", member.cfg.url))
            .bearer_auth(&self.cfg.node_admin_token);
        if !body.is_null() {
            req = req.json(body);
        }
        let r = req.send().await?;
        let status = http::StatusCode::from_u16(r.status().as_u16()).unwrap_or(http::StatusCode::BAD_GATEWAY);
        Ok((status, r.json().await.unwrap_or(serde_json::Value::Null)))
    }

    pub async fn invalidate_on(&self, member: &Member, bucket: &str, key: &str) {
        let _ = self
            .http
            .post(format!("{}/_lakecache/admin/invalidate", member.cfg.url))
            .bearer_auth(&self.cfg.node_admin_token)
            .json(&serde_json::json!({ "bucket": bucket, "key": key }))
            .send()
            .await;
    }
}

/// The key rules a member applies, from what fleet members told it (`answers`: who, and
/// their rules and page size): every answer must agree with the first and with `cfg`'s
/// page size and — where `cfg` states rules — with those. Otherwise an error saying who
/// differs and how: a member never runs with other rules than the nodes'.
pub fn agreed_rules(
    cfg: &FleetConfig,
    answers: &[(String, crate::upstream::NodeRules)],
) -> anyhow::Result<lakecache_common::keys::KeyRules> {
    use lakecache_common::keys::{KeyRuleSpec, KeyRules};
    let Some((first_id, first)) = answers.first() else {
        anyhow::bail!("no fleet member told its key rules");
    };
    for (id, r) in answers {
        if !r.rules.same_as(&first.rules) {
            anyhow::bail!(
                "cache nodes {first_id} and {id} apply different key rules ({:?} vs {:?}); \
                 configure the same [cache] immutable/never_cache on every node",
                first.rules,
                r.rules
            );
        }
        if r.page_size != cfg.page_size.as_u64() {
            anyhow::bail!(
                "cache node {id} has cache.page_size {} but fleet.page_size is {}; they must be equal",
                r.page_size,
                cfg.page_size.as_u64()
            );
        }
    }
    if let (Some(imm), Some(never)) = (&cfg.immutable, &cfg.never_cache) {
        let mine = KeyRuleSpec { immutable: imm.clone(), never_cache: never.clone() };
        if !mine.same_as(&first.rules) {
            anyhow::bail!(
                "fleet.immutable/never_cache ({mine:?}) differ from the key rules cache node {first_id} \
                 applies ({:?}); state the nodes' rules or leave both keys unset to adopt them",
                first.rules
            );
        }
    }
    KeyRules::from_spec(&first.rules).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::RetryBudget;

    #[test]
    fn retries_are_a_share_of_requests_with_a_floor() {
        let b = RetryBudget::new(20, 2);
        assert!(b.withdraw() && b.withdraw(), "the floor allows two retries");
        assert!(!b.withdraw());
        for _ in 0..10 {
            b.deposit(); // 10 requests at 20 % = 2 retries
        }
        assert!(b.withdraw() && b.withdraw());
        assert!(!b.withdraw());
        b.refill_floor();
        assert!(b.withdraw());
    }
}
