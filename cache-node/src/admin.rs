//! The admin API (JSON over HTTP, bearer token from `[admin] token`), under
//! `/_lakecache/admin/`:
//!
//! - `GET    pins`     rules in force, pinned bytes and the budget
//! - `POST   pins`     `{"bucket","key","prewarm"?}` add a rule (409 if it would exceed the budget)
//! - `DELETE pins`     `{"bucket","key"}` remove a rule added here
//! - `POST   prewarm`  `{"bucket","prefix"}` read everything under a prefix into the cache
//! - `GET    stats`    tier usage and the I/O engine
//! - `POST   invalidate` `{"bucket","key"}` forget an object (a router calls this on every
//!   node after a write went through another node)
//!
//! Owns request parsing and the budget check; pin state is `policy::PinRules`, pinned
//! pages are the disk tier's.

use lakecache_common::auth::constant_time_eq;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;

use crate::cache::Cache;
use crate::config::PinRule;
use crate::policy::{PinError, PinRules, compile_glob};

const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct Admin {
    cache: Arc<Cache>,
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinRequest {
    bucket: String,
    key: String,
    #[serde(default)]
    prewarm: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrewarmRequest {
    bucket: String,
    #[serde(default)]
    prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateRequest {
    bucket: String,
    key: String,
}

type Reply = Response<s3s::Body>;

fn reply(status: StatusCode, v: serde_json::Value) -> Reply {
    let mut r = Response::new(s3s::Body::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Reply {
    reply(status, json!({ "error": message.to_string() }))
}

/// Characters that make a glob more than a literal.
fn is_literal(s: &str) -> bool {
    !s.contains(['*', '?', '[', ']', '{', '}'])
}

/// The part of a key glob before its first wildcard: every match starts with it.
fn literal_prefix(glob: &str) -> &str {
    let end = glob.find(['*', '?', '[', '{']).unwrap_or(glob.len());
    &glob[..end]
}

impl Admin {
    pub fn new(cache: Arc<Cache>, token: Option<String>) -> Self {
        Self { cache, token }
    }

    pub async fn handle<B>(&self, req: Request<B>) -> Reply
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(token) = &self.token else {
            return error(StatusCode::FORBIDDEN, "the admin API is disabled: set [admin] token");
        };
        let presented = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let ok = presented
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
        if !ok {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
        let method = req.method().clone();
        let path = req.uri().path().trim_end_matches('/').to_string();
        // Read at most MAX_BODY_BYTES (+1 to tell "too large" apart), never the whole of
        // whatever a client sends.
        let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
            }
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}")),
        };
        match (method, path.as_str()) {
            (Method::GET, "/_lakecache/admin/pins") => self.list_pins(),
            (Method::POST, "/_lakecache/admin/pins") => match serde_json::from_slice::<PinRequest>(&body) {
                Ok(p) => self.add_pin(p).await,
                Err(e) => error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
            },
            (Method::DELETE, "/_lakecache/admin/pins") => match serde_json::from_slice::<PinRequest>(&body) {
                Ok(p) => self.remove_pin(p).await,
                Err(e) => error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
            },
            (Method::POST, "/_lakecache/admin/prewarm") => {
                match serde_json::from_slice::<PrewarmRequest>(&body) {
                    Ok(p) => match prewarm(&self.cache, &p.bucket, &p.prefix, |_| true).await {
                        Ok((objects, bytes)) => {
                            reply(StatusCode::OK, json!({ "objects": objects, "bytes": bytes }))
                        }
                        Err(e) => e,
                    },
                    Err(e) => error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
                }
            }
            (Method::GET, "/_lakecache/admin/stats") => self.stats(),
            (Method::POST, "/_lakecache/admin/invalidate") => {
                match serde_json::from_slice::<InvalidateRequest>(&body) {
                    Ok(p) => {
                        self.cache.invalidate(&p.bucket, &p.key);
                        reply(StatusCode::OK, json!({ "invalidated": true }))
                    }
                    Err(e) => error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
        }
    }

    fn list_pins(&self) -> Reply {
        let rules: Vec<_> = self
            .cache
            .pins
            .list()
            .into_iter()
            .map(|(r, from_config)| json!({ "bucket": r.bucket, "key": r.key, "source": if from_config { "config" } else { "admin" } }))
            .collect();
        reply(
            StatusCode::OK,
            json!({ "rules": rules, "pinned_bytes": self.cache.pinned_bytes(), "budget_bytes": self.cache.pin_budget_bytes() }),
        )
    }

    async fn add_pin(&self, p: PinRequest) -> Reply {
        let rule = PinRule { bucket: p.bucket.clone(), key: p.key.clone() };
        if let Err(e) = PinRules::check(&rule) {
            return error(StatusCode::BAD_REQUEST, e);
        }
        if !is_literal(&p.bucket) {
            return error(
                StatusCode::BAD_REQUEST,
                "pin rules added through the admin API name one bucket (no wildcards)",
            );
        }
        if self.cache.disk.is_none() {
            return error(StatusCode::CONFLICT, "pinning needs the disk tier, which is disabled");
        }
        let Ok(key_glob) = compile_glob(&p.key) else {
            return error(StatusCode::BAD_REQUEST, "invalid key glob");
        };
        // What the rule would add: matching objects not already pinned by another rule.
        let objects =
            match list_matching(&self.cache, &p.bucket, literal_prefix(&p.key), |k| key_glob.is_match(k))
                .await
            {
                Ok(o) => o,
                Err(e) => return e,
            };
        let new_bytes: u64 =
            objects.iter().filter(|(k, _)| !self.cache.pins.is_pinned(&p.bucket, k)).map(|(_, s)| *s).sum();
        let pinned = self.cache.pinned_bytes();
        let budget = self.cache.pin_budget_bytes();
        if pinned + new_bytes > budget {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "pin would exceed the pinned-bytes budget: it matches {new_bytes} new bytes, {pinned} bytes are pinned already, budget is {budget} bytes"
                ),
            );
        }
        let added = match self.cache.pins.add(rule) {
            Ok(a) => a,
            Err(e @ PinError::Persist { .. }) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        let mut marked = 0;
        if let Some(d) = &self.cache.disk {
            let bucket = p.bucket.clone();
            match d.set_pinned_where(|id| id.bucket == bucket && key_glob.is_match(&id.key), true).await {
                Ok(b) => marked = b,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("disk tier: {e}")),
            }
        }
        let mut prewarmed = json!(null);
        if p.prewarm {
            let glob = key_glob.clone();
            match prewarm(&self.cache, &p.bucket, literal_prefix(&p.key), move |k| glob.is_match(k)).await {
                Ok((o, b)) => prewarmed = json!({ "objects": o, "bytes": b }),
                Err(e) => return e,
            }
        }
        reply(
            StatusCode::OK,
            json!({
                "added": added,
                "matched_objects": objects.len(),
                "matched_bytes": objects.iter().map(|(_, s)| s).sum::<u64>(),
                "already_cached_bytes_pinned": marked,
                "prewarmed": prewarmed,
                "pinned_bytes": self.cache.pinned_bytes(),
                "budget_bytes": budget,
            }),
        )
    }

    async fn remove_pin(&self, p: PinRequest) -> Reply {
        let rule = PinRule { bucket: p.bucket.clone(), key: p.key.clone() };
        match self.cache.pins.remove(&rule) {
            Ok(()) => {}
            Err(PinError::NotFound) => return error(StatusCode::NOT_FOUND, "no such pin rule"),
            Err(PinError::FromConfig) => return error(StatusCode::CONFLICT, PinError::FromConfig),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
        let mut unpinned = 0;
        if let Some(d) = &self.cache.disk {
            let pins = self.cache.pins.clone();
            let (Ok(bg), Ok(kg)) = (compile_glob(&p.bucket), compile_glob(&p.key)) else {
                return error(StatusCode::BAD_REQUEST, "invalid glob");
            };
            match d
                .set_pinned_where(
                    |id| {
                        bg.is_match(&id.bucket)
                            && kg.is_match(&id.key)
                            && !pins.is_pinned(&id.bucket, &id.key)
                    },
                    false,
                )
                .await
            {
                Ok(b) => unpinned = b,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("disk tier: {e}")),
            }
        }
        reply(
            StatusCode::OK,
            json!({ "removed": true, "unpinned_bytes": unpinned, "pinned_bytes": self.cache.pinned_bytes() }),
        )
    }

    fn stats(&self) -> Reply {
        let disk = self.cache.disk.as_ref().map(|d| {
            json!({
                "engine": d.engine_name(),
                "capacity_bytes": d.capacity_bytes(),
                "used_bytes": d.used_bytes(),
                "pinned_bytes": d.pinned_bytes(),
                "pages": d.page_count(),
            })
        });
        reply(
            StatusCode::OK,
            json!({
                "page_size_bytes": self.cache.geometry().page_size_bytes(),
                "memory": { "used_bytes": self.cache.memory.used_bytes() },
                "disk": disk,
            }),
        )
    }
}

/// (key, size) of every object under `prefix` whose key passes `keep`.
async fn list_matching(
    cache: &Cache,
    bucket: &str,
    prefix: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<(String, u64)>, Reply> {
    let store = cache
        .origins
        .store(bucket)
        .map_err(|e| error(StatusCode::NOT_FOUND, format!("bucket {bucket}: {e}")))?;
    let dir = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
    let dir_path = if dir.is_empty() {
        None
    } else {
        Some(object_store::path::Path::parse(dir).map_err(|e| error(StatusCode::BAD_REQUEST, e))?)
    };
    let mut out = Vec::new();
    let mut s = store.list(dir_path.as_ref());
    while let Some(m) = s.next().await {
        let m = m.map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, format!("origin list failed: {e}")))?;
        let k = m.location.to_string();
        if k.starts_with(prefix) && keep(&k) {
            out.push((k, m.size));
        }
    }
    Ok(out)
}

/// Reads every matching object under `prefix` through the cache, so its pages land in the
/// tiers (pinned if a rule pins them). Returns (objects, bytes).
pub async fn prewarm(
    cache: &Arc<Cache>,
    bucket: &str,
    prefix: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<(usize, u64), Reply> {
    let objects = list_matching(cache, bucket, prefix, keep).await?;
    let count = objects.len();
    let mut bytes = 0u64;
    let jobs: Vec<_> = objects
        .into_iter()
        .map(|(k, _)| {
            let cache = cache.clone();
            let bucket = bucket.to_string();
            async move { prewarm_one(cache, bucket, k).await }
        })
        .collect();
    let results: Vec<Result<u64, String>> = futures::stream::iter(jobs).buffer_unordered(4).collect().await;
    for r in results {
        bytes += r.map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e))?;
    }
    Ok((count, bytes))
}

async fn prewarm_one(cache: Arc<Cache>, bucket: String, key: String) -> Result<u64, String> {
    let obj = cache.object(&bucket, &key).await.map_err(|e| format!("{key}: {e}"))?;
    let size = obj.meta.size;
    let mut s = cache.read(obj, lakecache_common::page::ByteRange { start: 0, end: size });
    let mut n = 0u64;
    while let Some(c) = s.next().await {
        n += c.map_err(|e| format!("{key}: {e}"))?.len() as u64;
    }
    Ok(n)
}
