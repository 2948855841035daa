//! The tables a search node serves: namespaces of `s3://bucket/prefix`, each table a
//! `<name>.lance` directory under it, opened once through the fleet and kept. A table is
//! checked for a newer version at most once per read-consistency interval (or when a
//! request asks for a version newer than the one held); writes through this node swap in
//! the new version at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lance::dataset::builder::DatasetBuilder;
use lance::dataset::{Dataset, WriteParams};
use lance::session::Session;
use lance_io::object_store::ObjectStoreRegistry;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parking_lot::RwLock;

use crate::config::{NamespaceConfig, SearchConfig};
use crate::error::{ApiError, ApiResult, from_lance};
use crate::store::{FleetProvider, FleetStores};

pub const TABLES_OPEN: &str = "searchnode_catalog_open_tables";
pub const TABLE_REFRESHES: &str = "searchnode_catalog_refreshes_total";
pub const TABLE_VERSION: &str = "searchnode_catalog_table_version";

/// A table's counters at zero when it is first opened (see ops/METRICS.md).
fn register_table(id: &str) {
    metrics::counter!(TABLE_REFRESHES, "table" => id.to_string()).absolute(0);
    crate::api::io::register_table(id);
    for kind in crate::engine::query::KINDS {
        for outcome in ["ok", "error"] {
            metrics::counter!(crate::engine::query::SEARCH_QUERIES, "table" => id.to_string(), "kind" => kind, "outcome" => outcome)
                .absolute(0);
        }
    }
}

/// A table name as the API addresses it: `[namespace$]name`.
#[derive(Debug, Clone)]
pub struct TableRef {
    pub id: String,
    pub bucket: String,
    /// `prefix/name.lance` inside the bucket.
    pub key: String,
    pub uri: String,
    pub namespace: String,
    pub name: String,
}

struct Held {
    ds: Arc<Dataset>,
    checked: Instant,
    /// `checked` on the wall clock, for clients that name a moment (`x-lancedb-min-timestamp`).
    checked_at: SystemTime,
}

/// How fresh a request needs its table: at least `min_version`, and checked against the
/// origin no earlier than `checked_since` (LanceDB's `x-lancedb-min-timestamp`, which its
/// client sends as now minus its read-consistency interval). Both unset: the node's own
/// consistency interval decides.
#[derive(Debug, Default, Clone, Copy)]
pub struct Freshness {
    pub min_version: Option<u64>,
    pub checked_since: Option<SystemTime>,
}

pub struct Tables {
    namespaces: Vec<(NamespaceConfig, String, String)>,
    pub session: Arc<Session>,
    pub stores: Arc<FleetStores>,
    interval: Duration,
    held: RwLock<HashMap<String, Held>>,
    /// Serialises writes per table (lance retries commit conflicts, but one node need not race itself).
    write_locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises opening and version checks per table.
    refresh_locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && n != "."
        && n != ".."
}

impl Tables {
    pub fn new(cfg: &SearchConfig) -> anyhow::Result<Arc<Self>> {
        let stores = FleetStores::new(cfg)?;
        let registry = Arc::new(ObjectStoreRegistry::default());
        registry.insert("s3", Arc::new(FleetProvider(stores.clone())));
        let session = Arc::new(Session::new(
            cfg.cache.index_cache.as_u64() as usize,
            cfg.cache.metadata_cache.as_u64() as usize,
            registry,
        ));
        let mut namespaces = Vec::new();
        for ns in &cfg.namespaces {
            let (bucket, prefix) = ns.bucket_prefix()?;
            namespaces.push((ns.clone(), bucket, prefix));
        }
        Ok(Arc::new(Self {
            namespaces,
            session,
            stores,
            interval: cfg.server.read_consistency_interval,
            held: RwLock::new(HashMap::new()),
            write_locks: parking_lot::Mutex::new(HashMap::new()),
            refresh_locks: parking_lot::Mutex::new(HashMap::new()),
        }))
    }

    fn namespace(&self, name: &str) -> ApiResult<&(NamespaceConfig, String, String)> {
        self.namespaces
            .iter()
            .find(|(n, _, _)| n.name == name)
            .ok_or_else(|| ApiError::not_found(format!("Namespace '{name}' was not found")))
    }

    pub fn has_namespace(&self, name: &str) -> bool {
        self.namespace(name).is_ok()
    }

    /// Resolves `[namespace$]name` (the parts already percent-decoded by the caller).
    pub fn resolve(&self, id: &str) -> ApiResult<TableRef> {
        let (namespace, name) = match id.rsplit_once('$') {
            Some((ns, n)) => (ns.to_string(), n.to_string()),
            None => (String::new(), id.to_string()),
        };
        if !valid_name(&name) {
            return Err(ApiError::bad_request(format!(
                "Invalid table name {name:?}: use letters, digits, '_', '-' and '.'"
            )));
        }
        let (_, bucket, prefix) = self.namespace(&namespace)?;
        let key = if prefix.is_empty() { format!("{name}.lance") } else { format!("{prefix}/{name}.lance") };
        Ok(TableRef {
            id: id.to_string(),
            uri: format!("s3://{bucket}/{key}"),
            bucket: bucket.clone(),
            key,
            namespace,
            name,
        })
    }

    /// Table names of a namespace, sorted.
    pub async fn list(&self, namespace: &str) -> ApiResult<Vec<String>> {
        let (_, bucket, prefix) = self.namespace(namespace)?;
        let store = self.stores.store(bucket).map_err(|e| ApiError::internal(e.to_string()))?;
        let p = (!prefix.is_empty()).then(|| Path::from(prefix.as_str()));
        let res =
            store.list_with_delimiter(p.as_ref()).await.map_err(|e| ApiError::internal(e.to_string()))?;
        let mut names: Vec<String> = res
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.strip_suffix(".lance").map(str::to_owned))
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The table at its latest version as far as the consistency interval requires, or at
    /// least at `min_version`, or exactly at `version`.
    ///
    /// The version check runs ahead of need: a request that finds the check older than half
    /// the interval starts one in the background and goes on with the version it has, so under
    /// steady traffic no query waits for the check (a round trip to the origin); only a table
    /// idle for a whole interval makes its next request wait.
    pub async fn get(
        self: &Arc<Self>,
        t: &TableRef,
        version: Option<u64>,
        fresh: Freshness,
    ) -> ApiResult<Arc<Dataset>> {
        let min_version = fresh.min_version;
        // A moment in the future (a client's clock ahead of ours) means now.
        let since = fresh.checked_since.map(|t| t.min(SystemTime::now()));
        let current = || self.held.read().get(&t.uri).map(|h| (h.ds.clone(), h.checked, h.checked_at));
        let stale = |ds: &Dataset, checked: Instant, at: SystemTime| {
            checked.elapsed() >= self.interval
                || min_version.is_some_and(|m| ds.version_id() < m)
                || since.is_some_and(|s| at < s)
        };
        let ds = match current() {
            Some((ds, checked, at)) if !stale(&ds, checked, at) => {
                if checked.elapsed() >= self.interval / 2 {
                    self.refresh_ahead(t);
                }
                ds
            }
            _ => {
                // One open or version check per table at a time; the requests queued behind
                // it use its answer. (Its own lock: a writer holding the write lock reads too.)
                let lock = self.refresh_locks.lock().entry(t.uri.clone()).or_default().clone();
                let _g = lock.lock().await;
                match current() {
                    Some((ds, checked, at)) if !stale(&ds, checked, at) => ds,
                    // Due only by the node's own interval, for a request whose origin budget
                    // is spent: it is served the version held (the check would be refused).
                    Some((ds, _, _))
                        if min_version.is_none()
                            && since.is_none()
                            && lakecache_fleet::account::current().is_some_and(|a| !a.affordable()) =>
                    {
                        ds
                    }
                    Some((ds, _, _)) => self.refresh(t, ds).await?,
                    None => self.open(t).await?,
                }
            }
        };
        match version {
            Some(v) if v != ds.version_id() => {
                let pinned = ds.checkout_version(v).await.map_err(|e| match e {
                    lance::Error::DatasetNotFound { .. } | lance::Error::NotFound { .. } => {
                        ApiError::not_found(format!("Table '{}' has no version {v}", t.id))
                    }
                    other => from_lance(other, &t.id),
                })?;
                Ok(Arc::new(pinned))
            }
            _ => {
                if let Some(m) = min_version
                    && ds.version_id() < m
                {
                    return Err(ApiError::bad_request(format!(
                        "Table '{}' is at version {}; version {m} does not exist yet",
                        t.id,
                        ds.version_id()
                    )));
                }
                Ok(ds)
            }
        }
    }

    /// Starts a version check of `t` in the background unless one is running.
    fn refresh_ahead(self: &Arc<Self>, t: &TableRef) {
        let lock = self.refresh_locks.lock().entry(t.uri.clone()).or_default().clone();
        let Ok(guard) = lock.try_lock_owned() else { return };
        let (this, t) = (self.clone(), t.clone());
        tokio::spawn(async move {
            let _g = guard;
            let held = this.held.read().get(&t.uri).map(|h| (h.ds.clone(), h.checked));
            // Checked by someone else meanwhile, or gone: nothing to do.
            let Some((ds, checked)) = held else { return };
            if checked.elapsed() < this.interval / 2 {
                return;
            }
            if let Err(e) = this.refresh(&t, ds).await {
                tracing::debug!(table = %t.id, error = %e.message, "background version check failed");
            }
        });
    }

    async fn open(&self, t: &TableRef) -> ApiResult<Arc<Dataset>> {
        let ds = DatasetBuilder::from_uri(&t.uri)
            .with_session(self.session.clone())
            .load()
            .await
            .map_err(|e| from_lance(e, &t.id))?;
        let ds = Arc::new(ds);
        self.put(t, ds.clone());
        Ok(ds)
    }

    async fn refresh(&self, t: &TableRef, ds: Arc<Dataset>) -> ApiResult<Arc<Dataset>> {
        metrics::counter!(TABLE_REFRESHES, "table" => t.id.clone()).increment(1);
        let latest = match ds.latest_version_id().await {
            Ok(v) => v,
            Err(e) => {
                // The table is gone (dropped behind us) or the fleet is failing.
                let err = from_lance(e, &t.id);
                if err.status == axum::http::StatusCode::NOT_FOUND {
                    self.forget(t);
                }
                return Err(err);
            }
        };
        let ds = if latest != ds.version_id() {
            let mut next = (*ds).clone();
            next.checkout_latest().await.map_err(|e| from_lance(e, &t.id))?;
            Arc::new(next)
        } else {
            ds
        };
        self.put(t, ds.clone());
        Ok(ds)
    }

    /// Holds `ds` as the table's current version (after a write through this node).
    pub fn put(&self, t: &TableRef, ds: Arc<Dataset>) {
        let mut held = self.held.write();
        // Never step back: a concurrent refresh may have seen a newer version already.
        if let Some(h) = held.get(&t.uri)
            && h.ds.version_id() > ds.version_id()
        {
            return;
        }
        if !held.contains_key(&t.uri) {
            register_table(&t.id);
        }
        metrics::gauge!(TABLE_VERSION, "table" => t.id.clone()).set(ds.version_id() as f64);
        held.insert(t.uri.clone(), Held { ds, checked: Instant::now(), checked_at: SystemTime::now() });
        metrics::gauge!(TABLES_OPEN).set(held.len() as f64);
    }

    pub fn forget(&self, t: &TableRef) {
        let mut held = self.held.write();
        held.remove(&t.uri);
        metrics::gauge!(TABLES_OPEN).set(held.len() as f64);
    }

    pub fn write_lock(&self, t: &TableRef) -> Arc<tokio::sync::Mutex<()>> {
        self.write_locks.lock().entry(t.uri.clone()).or_default().clone()
    }

    /// Write parameters that route the write through the fleet.
    pub fn write_params(&self, mode: lance::dataset::WriteMode) -> WriteParams {
        WriteParams { mode, session: Some(self.session.clone()), ..Default::default() }
    }

    /// Every table of a namespace at its current version (for SQL).
    pub async fn all(self: &Arc<Self>, namespace: &str) -> ApiResult<Vec<(String, Arc<Dataset>)>> {
        let mut out = Vec::new();
        for name in self.list(namespace).await? {
            let id = if namespace.is_empty() { name.clone() } else { format!("{namespace}${name}") };
            let t = self.resolve(&id)?;
            out.push((name, self.get(&t, None, Freshness::default()).await?));
        }
        Ok(out)
    }

    /// Deletes every object of a table.
    pub async fn drop_table(&self, t: &TableRef) -> ApiResult<bool> {
        use futures::TryStreamExt;
        let store = self.stores.store(&t.bucket).map_err(|e| ApiError::internal(e.to_string()))?;
        let prefix = Path::from(t.key.as_str());
        let objects: Vec<_> =
            store.list(Some(&prefix)).try_collect().await.map_err(|e| ApiError::internal(e.to_string()))?;
        self.forget(t);
        let found = !objects.is_empty();
        for o in objects {
            match store.delete(&o.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(ApiError::internal(e.to_string())),
            }
        }
        Ok(found)
    }
}
