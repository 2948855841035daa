//! The lakecache router: the cache node's S3 surface in front of a fleet of cache nodes,
//! placing every page on its owner by the shared ring (`lakecache_common::ring`).
//!
//! Built so far: GET/HEAD with per-page placement, in-order streaming across nodes and
//! failover; DELETE and DeleteObjects to the key's owner, and PUT, CopyObject, multipart,
//! ListObjects v1, ListBuckets and bucket calls passed through to a node as they came
//! (`forward`), with invalidation on every node after writes; ListObjectsV2; active health checks,
//! ejection and rejoin; membership replaced through the admin API or SIGHUP; the
//! in-process ObjectStore client (`client::FleetStore`); /healthz, /readyz, /metrics.
//! Replicas for hot keys (reads spread over the first R owners) and hedged reads.
//! Pin rules and prewarm fanned out to the owners (`/_lakecache/admin/pins`).
//! Failover retries draw on a retry budget (a share of requests plus a floor).
//! Metadata reads are hedged and budgeted like page reads.

pub mod client;
pub mod config;
pub mod forward;
pub mod membership;
pub mod pins;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod sign;
pub mod upstream;
