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
        use futures::{StreamExt, TryStreamExt};
        use object_store::ObjectStore;
        let bucket = rule.get("bucket").and_then(|b| b.as_str()).ok_or("bucket missing")?;
        let key = rule.get("key").and_then(|k| k.as_str()).ok_or("key missing")?;
        let glob = lakecache_cache_node::policy::compile_glob(key)?;
        let literal = &key[..key.find(['*', '?', '[', '{']).unwrap_or(key.len())];
        let dir = literal.rfind('/').map_or("", |i| &literal[..i]);
        let store = crate::client::FleetStore::new(self.clone(), bucket).map_err(|e| e.to_string())?;
        let prefix = (!dir.is_empty()).then(|| object_store::path::Path::from(dir));
        let metas: Vec<object_store::ObjectMeta> =
            store.list(prefix.as_ref()).try_collect().await.map_err(|e| e.to_string())?;
        let (mut objects, mut bytes) = (0, 0u64);
        for m in metas.into_iter().filter(|m| glob.is_match(m.location.as_ref())) {
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
}
