//! The lakecache router: the cache node's S3 surface in front of a fleet of cache nodes,
//! placing every page on its owner by the shared ring (`lakecache_common::ring`).
//!
//! Built so far: GET/HEAD with per-page placement, in-order streaming across nodes and
//! failover; PUT (plain and conditional) and DELETE to the key's owner with invalidation
//! on every node; active health checks and ejection; /healthz, /readyz, /metrics.
//! Not built yet: List, multipart, COPY, DeleteObjects through the router; replicas for
//! hot pages; hedged reads; membership reload; pin/prewarm fan-out; the in-process
//! ObjectStore client.

pub mod client;
pub mod config;
pub mod membership;
pub mod proxy;
pub mod routing;
pub mod server;
