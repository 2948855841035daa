//! How lance reaches table bytes: `s3://bucket/...` is served by the cache fleet, either
//! straight from the owning cache nodes (the in-process ring client) or through the
//! router. Registered in the lance session's object-store registry for the `s3` scheme,
//! so every dataset the search node opens or writes goes through the fleet.
//!
//! Below it: the search node's page cache (`blocks`) and Lance's I/O as metrics (`iostats`).

pub mod account;
pub mod blocks;
pub mod iostats;

use std::collections::HashMap;
use std::sync::Arc;

use lakecache_fleet::client::FleetStore;
use lakecache_fleet::membership::Fleet;
use lance_io::object_store::{
    DEFAULT_CLOUD_IO_PARALLELISM, DEFAULT_DOWNLOAD_RETRY_COUNT, ObjectStore as LanceStore, ObjectStoreParams,
    ObjectStoreProvider,
};
use object_store::ObjectStore;
use parking_lot::Mutex;
use url::Url;

use crate::config::SearchConfig;
use crate::store::blocks::{BlockCache, CachedStore};

/// Where the fleet is.
pub enum Backend {
    /// Page reads go to the owning cache node directly.
    Ring(Arc<Fleet>),
    /// Everything goes through the router's S3 endpoint.
    Router {
        url: String,
        access_key: String,
        secret_key: String,
        region: String,
        admin_token: Option<String>,
        /// For learning the fleet's key rules from the router.
        fleet: Box<lakecache_fleet::config::FleetConfig>,
    },
}

pub struct FleetStores {
    pub backend: Backend,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    /// The node's own memory cache in front of the fleet (None when turned off).
    pages: Option<Arc<BlockCache>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for FleetStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Ring(fl) => write!(f, "FleetStores(ring of {} nodes)", fl.members().len()),
            Backend::Router { url, .. } => write!(f, "FleetStores(router {url})"),
        }
    }
}

impl FleetStores {
    pub fn new(cfg: &SearchConfig) -> anyhow::Result<Arc<Self>> {
        let backend = if !cfg.nodes.is_empty() {
            let fleet = Fleet::new(cfg.nodes.clone(), cfg.fleet.clone(), cfg.region.clone())?;
            fleet.spawn_health_checks();
            Backend::Ring(fleet)
        } else {
            let r = cfg
                .router
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("neither nodes nor a router configured"))?;
            Backend::Router {
                url: r.url.trim_end_matches('/').to_string(),
                access_key: cfg.fleet.node_key.access_key.clone(),
                secret_key: cfg.fleet.node_key.secret_key.clone(),
                region: cfg.region.clone(),
                admin_token: r.admin_token.clone(),
                fleet: Box::new(cfg.fleet.clone()),
            }
        };
        let http =
            reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(600)).build()?;
        let pages = BlockCache::new(cfg.cache.page_cache.as_u64(), cfg.cache.page_cache_block.as_u64())?;
        Ok(Arc::new(Self { backend, stores: Mutex::new(HashMap::new()), pages, http }))
    }

    /// Learns the fleet's key rules — from the cache nodes when reading straight from them,
    /// else from the router (the rules it adopted from the nodes) — and applies them to the
    /// page cache; refuses a mismatch with this node's `[fleet]` rules or page size.
    pub async fn join_fleet(&self) -> anyhow::Result<()> {
        let rules = match &self.backend {
            Backend::Ring(fleet) => {
                fleet.adopt_node_rules().await?;
                fleet.meta.rules()
            }
            Backend::Router { url, fleet, .. } => Arc::new(router_rules(url, fleet).await?),
        };
        if let Some(p) = &self.pages {
            p.set_rules(rules);
        }
        Ok(())
    }

    /// The object store of one bucket of the fleet.
    pub fn store(&self, bucket: &str) -> object_store::Result<Arc<dyn ObjectStore>> {
        if let Some(s) = self.stores.lock().get(bucket) {
            return Ok(s.clone());
        }
        let s: Arc<dyn ObjectStore> = match &self.backend {
            Backend::Ring(fleet) => Arc::new(FleetStore::new(fleet.clone(), bucket)?),
            Backend::Router { url, access_key, secret_key, region, .. } => Arc::new(
                object_store::aws::AmazonS3Builder::new()
                    .with_endpoint(url)
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_allow_http(true)
                    .with_access_key_id(access_key)
                    .with_secret_access_key(secret_key)
                    .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
                    .build()?,
            ),
        };
        let s = match &self.pages {
            Some(pages) => Arc::new(CachedStore::new(s, pages.clone(), bucket)) as Arc<dyn ObjectStore>,
            None => s,
        };
        let s: Arc<dyn ObjectStore> = Arc::new(crate::store::iostats::Counted(s));
        self.stores.lock().insert(bucket.to_string(), s.clone());
        Ok(s)
    }

    /// Pins `key_glob` of `bucket` on the fleet and reads it so every page lands, pinned,
    /// on its owner. Returns (objects, bytes) prewarmed.
    pub async fn pin_and_prewarm(&self, bucket: &str, key_glob: &str) -> Result<(u64, u64), String> {
        let rule = serde_json::json!({ "bucket": bucket, "key": key_glob, "prewarm": true });
        let (status, answer) = match &self.backend {
            Backend::Ring(fleet) => fleet.pins(http::Method::POST, &rule).await,
            Backend::Router { url, admin_token, .. } => {
                let token = admin_token.as_deref().ok_or("router.admin_token is not configured")?;
                let r = self
                    .http
                    .post(format!("{url}/_lakecache/admin/pins"))
                    .bearer_auth(token)
                    .json(&rule)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status =
                    http::StatusCode::from_u16(r.status().as_u16()).unwrap_or(http::StatusCode::BAD_GATEWAY);
                (status, r.json().await.unwrap_or(serde_json::Value::Null))
            }
        };
        if !status.is_success() {
            return Err(format!("the fleet refused the pin ({status}): {answer}"));
        }
        let p = &answer["prewarmed"];
        Ok((p["objects"].as_u64().unwrap_or(0), p["bytes"].as_u64().unwrap_or(0)))
    }
}

/// The `s3` scheme for lance: one store per bucket, from the fleet.
#[derive(Debug)]
pub struct FleetProvider(pub Arc<FleetStores>);

#[async_trait::async_trait]
impl ObjectStoreProvider for FleetProvider {
    async fn new_store(&self, base: Url, params: &ObjectStoreParams) -> lance::Result<LanceStore> {
        let bucket = base
            .host_str()
            .ok_or_else(|| lance::Error::invalid_input(format!("no bucket in {base}")))?
            .to_string();
        let raw = self.0.store(&bucket).map_err(|e| lance::Error::invalid_input(e.to_string()))?;
        let mut s = LanceStore::new(
            raw.clone(),
            base,
            params.block_size,
            None,
            params.use_constant_size_upload_parts,
            // Cache nodes list in key order, as S3 does.
            true,
            DEFAULT_CLOUD_IO_PARALLELISM,
            DEFAULT_DOWNLOAD_RETRY_COUNT,
            params.storage_options(),
        );
        // The registry wraps the store with lance's I/O accounting again: keep one layer.
        s.inner = raw;
        Ok(s)
    }
}

/// The key rules the router at `url` applies, asked (with the fleet secret) until it
/// answers or `fleet.startup_wait` has passed, and checked against `fleet`.
async fn router_rules(
    url: &str,
    fleet: &lakecache_fleet::config::FleetConfig,
) -> anyhow::Result<lakecache_common::keys::KeyRules> {
    use lakecache_fleet::upstream::{UpstreamError, fetch_rules};
    let deadline = tokio::time::Instant::now() + fleet.startup_wait;
    let answer = loop {
        match fetch_rules(url, &fleet.secret, fleet.request_timeout.min(std::time::Duration::from_secs(5)))
            .await
        {
            Ok(r) => break r,
            // A router that refuses the fleet secret is misconfigured, not slow.
            Err(e @ UpstreamError::Answer { .. }) => {
                anyhow::bail!("the router {url} refused to tell the fleet's key rules: {e}")
            }
            Err(e) if tokio::time::Instant::now() >= deadline => anyhow::bail!(
                "the router {url} did not tell the fleet's key rules within {:?} (fleet.startup_wait): {e}",
                fleet.startup_wait
            ),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    };
    let rules =
        lakecache_fleet::membership::agreed_rules(fleet, &[(format!("behind the router {url}"), answer)])?;
    tracing::info!(router = %url, rules = ?rules.spec(), "adopted the fleet's key rules from the router");
    Ok(rules)
}
