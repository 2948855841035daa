//! Pin rules for the whole fleet: every node gets the rule (each pins the pages it owns),
//! and a prewarm reads the matching objects through the ring so every page lands, pinned,
//! on its owner. Used by the router's admin API and by search nodes.

use std::sync::Arc;

use http::{Method, StatusCode};

use crate::membership::Fleet;

impl Fleet {
    /// Sends a pin request (`POST` adds a rule, `DELETE` removes it, `GET` lists) to every
    /// node; `"prewarm": true` on a `POST` then reads the matching objects. Returns the
    /// worst node status and the per-node answers.
    pub async fn pins(
        self: &Arc<Self>,
        method: Method,
        v: &serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let prewarm = v.get("prewarm").and_then(|p| p.as_bool()).unwrap_or(false);
        let mut forwarded = v.clone();
        if let Some(o) = forwarded.as_object_mut() {
            o.remove("prewarm");
        }
        let mut per_node = Vec::new();
        let mut worst = StatusCode::OK;
        for m in self.members().iter() {
            let r = self.admin_call(m, method.clone(), "pins", &forwarded).await;
            let (status, answer) = match r {
                Ok((s, a)) => (s, a),
                Err(e) => (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"error": e.to_string()})),
            };
            if !status.is_success() && worst.is_success() {
                worst = status;
            }
            per_node.push(serde_json::json!({"node": m.cfg.id, "status": status.as_u16(), "answer": answer}));
        }
        let mut prewarmed = serde_json::Value::Null;
        if prewarm && method == Method::POST && worst.is_success() {
            match self.prewarm(v).await {
                Ok((objects, bytes)) => prewarmed = serde_json::json!({"objects": objects, "bytes": bytes}),
                Err(e) => {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({"error": e, "nodes": per_node}),
                    );
                }
            }
        }
        (worst, serde_json::json!({"nodes": per_node, "prewarmed": prewarmed}))
    }

    /// Reads every object matching a pin rule through the ring.
    async fn prewarm(self: &Arc<Self>, rule: &serde_json::Value) -> Result<(usize, u64), String> {
        let bucket = rule.get("bucket").and_then(|b| b.as_str()).ok_or("bucket missing")?;
        let key = rule.get("key").and_then(|k| k.as_str()).ok_or("key missing")?;
        let glob = lakecache_common::keys::compile_glob(key)?;
        let literal = &key[..key.find(['*', '?', '[', '{']).unwrap_or(key.len())];
        self.prewarm_matching(bucket, literal, |k| glob.is_match(k)).await
    }

    /// Reads every object whose key starts with `prefix` through the ring.
    pub async fn prewarm_prefix(
        self: &Arc<Self>,
        bucket: &str,
        prefix: &str,
    ) -> Result<(usize, u64), String> {
        self.prewarm_matching(bucket, prefix, |k| k.starts_with(prefix)).await
    }

    /// Lists the directory holding `literal` (a key prefix) and reads every object `keep`
    /// takes, through the ring. Returns (objects, bytes).
    async fn prewarm_matching(
        self: &Arc<Self>,
        bucket: &str,
        literal: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Result<(usize, u64), String> {
        use futures::{StreamExt, TryStreamExt};
        use object_store::ObjectStore;
        let dir = literal.rfind('/').map_or("", |i| &literal[..i]);
        let store = crate::client::FleetStore::new(self.clone(), bucket).map_err(|e| e.to_string())?;
        let prefix = (!dir.is_empty()).then(|| object_store::path::Path::from(dir));
        let metas: Vec<object_store::ObjectMeta> =
            store.list(prefix.as_ref()).try_collect().await.map_err(|e| e.to_string())?;
        let (mut objects, mut bytes) = (0, 0u64);
        for m in metas.into_iter().filter(|m| keep(m.location.as_ref())) {
            let mut s = store
                .get_opts(&m.location, Default::default())
                .await
                .map_err(|e| e.to_string())?
                .into_stream();
            while let Some(c) = s.next().await {
                bytes += c.map_err(|e| e.to_string())?.len() as u64;
            }
            objects += 1;
        }
        Ok((objects, bytes))
    }

    /// Every node's `stats` answer and their sums over the nodes that answered.
    pub async fn stats(&self) -> serde_json::Value {
        let members = self.members();
        let calls = members.iter().map(|m| async move {
            (m, self.admin_call(m, Method::GET, "stats", &serde_json::Value::Null).await)
        });
        let mut nodes = Vec::new();
        let (mut answered, mut memory, mut cap, mut used, mut pinned, mut pages) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        let num = |v: &serde_json::Value, path: &[&str]| {
            path.iter().try_fold(v, |v, k| v.get(*k)).and_then(|v| v.as_u64()).unwrap_or(0)
        };
        for (m, r) in futures::future::join_all(calls).await {
            let entry = match r {
                Ok((status, answer)) if status.is_success() => {
                    answered += 1;
                    memory += num(&answer, &["memory", "used_bytes"]);
                    cap += num(&answer, &["disk", "capacity_bytes"]);
                    used += num(&answer, &["disk", "used_bytes"]);
                    pinned += num(&answer, &["disk", "pinned_bytes"]);
                    pages += num(&answer, &["disk", "pages"]);
                    serde_json::json!({"node": m.cfg.id, "healthy": m.healthy(), "stats": answer})
                }
                Ok((status, answer)) => serde_json::json!({
                    "node": m.cfg.id, "healthy": m.healthy(), "status": status.as_u16(), "error": answer
                }),
                Err(e) => {
                    serde_json::json!({"node": m.cfg.id, "healthy": m.healthy(), "error": e.to_string()})
                }
            };
            nodes.push(entry);
        }
        serde_json::json!({
            "nodes": nodes,
            "total": {
                "nodes": members.len(),
                "nodes_healthy": members.iter().filter(|m| m.healthy()).count(),
                "nodes_answered": answered,
                "memory_used_bytes": memory,
                "disk_capacity_bytes": cap,
                "disk_used_bytes": used,
                "disk_pinned_bytes": pinned,
                "disk_pages": pages,
            },
        })
    }
}
