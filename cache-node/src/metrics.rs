//! Every metric the cache node emits, by name (the page store's live in `pagestore`; the
//! recorder that renders them all is `lakecache_common::metrics`). `ops/METRICS.md`
//! documents the whole fleet's set.
//!
//! Names follow `<component>_<subsystem>_<name>_<unit>`; labels have few values (tier, op,
//! outcome, engine) — never a bucket or key. Histograms carry their unit in the name and get
//! their buckets from it: microseconds for the page store, milliseconds for everything else.

// Read path, per tier (label `tier` = memory | disk | origin).
pub const CACHE_HITS: &str = "cachenode_cache_hits_total";
pub const CACHE_MISSES: &str = "cachenode_cache_misses_total";
pub const CACHE_SERVED_BYTES: &str = "cachenode_cache_served_bytes_total";
pub const CACHE_INFLIGHT_REQUESTS: &str = "cachenode_cache_inflight_requests";
pub const CACHE_SINGLEFLIGHT_JOINS: &str = "cachenode_cache_singleflight_joins_total";

// Memory tier.
pub const MEMORY_USED_BYTES: &str = "cachenode_memory_used_bytes";
pub const MEMORY_CAPACITY_BYTES: &str = "cachenode_memory_capacity_bytes";
pub const MEMORY_EVICTIONS: &str = "cachenode_memory_evictions_total";

// Disk tier (page store): its names live with it.
pub use lakecache_pagestore::metrics::{
    DISK_CAPACITY_BYTES, DISK_CHECKSUM_FAILURES, DISK_ERRORS, DISK_EVICTIONS, DISK_IO_ENGINE,
    DISK_PINNED_BYTES, DISK_READ_BYTES, DISK_READ_LATENCY, DISK_READS, DISK_RECOVERED_PAGES, DISK_USED_BYTES,
    DISK_WRITE_BYTES, DISK_WRITE_LATENCY, DISK_WRITES, DISK_WRITES_DROPPED,
};

// Origin (label `op` = get | head | put | list | delete | copy).
pub const ORIGIN_REQUESTS: &str = "cachenode_origin_requests_total";
pub const ORIGIN_ERRORS: &str = "cachenode_origin_errors_total";
pub const ORIGIN_BYTES: &str = "cachenode_origin_received_bytes_total";
pub const ORIGIN_LATENCY: &str = "cachenode_origin_request_duration_milliseconds";
/// Reads answered without any origin request (label `surface` = fleet | s3): each one a GET
/// the origin did not serve. With the prices below, what the cache saved.
pub const ORIGIN_AVOIDED: &str = "cachenode_origin_requests_avoided_total";
/// `[pricing]`: dollars per 1000 origin GETs, and per GiB read from the origin.
pub const PRICE_GETS: &str = "cachenode_pricing_dollars_per_1000_gets";
pub const PRICE_TRANSFER: &str = "cachenode_pricing_dollars_per_gib";

// S3 surface (label `op`, `status`).
pub const S3_REQUESTS: &str = "cachenode_s3_requests_total";
pub const S3_LATENCY: &str = "cachenode_s3_request_duration_milliseconds";

// Internal page protocol (label `op` = get | head | batch, `status`; refusals by `reason` =
// missing | wrong | expired | off; items of batches by `outcome` = served | deferred | error).
pub const FLEET_REQUESTS: &str = "cachenode_fleet_requests_total";
pub const FLEET_BATCH_ITEMS: &str = "cachenode_fleet_batch_items_total";
pub const FLEET_LATENCY: &str = "cachenode_fleet_request_duration_milliseconds";
pub const FLEET_AUTH_REFUSED: &str = "cachenode_fleet_auth_refused_total";

// The file systems under the node's state (label `role` = pagestore | multipart).
pub const FS_AVAIL_BYTES: &str = "cachenode_filesystem_avail_bytes";
pub const FS_SIZE_BYTES: &str = "cachenode_filesystem_size_bytes";

// Pinning.
pub const PIN_RULES: &str = "cachenode_pins_rules";
pub const PINNED_BUDGET_BYTES: &str = "cachenode_pins_budget_bytes";

/// Origin operations, the values of label `op`.
pub const ORIGIN_OPS: [&str; 6] = ["get", "head", "put", "list", "delete", "copy"];

/// Creates every counter of the cache node at zero, so a rate or an alert on it has a
/// series to read before the first event (a node that never saw a checksum failure still
/// reports `0`, not nothing).
pub fn register_cache_node() {
    lakecache_pagestore::metrics::register();
    for tier in ["memory", "disk"] {
        metrics::counter!(CACHE_HITS, "tier" => tier).absolute(0);
        metrics::counter!(CACHE_MISSES, "tier" => tier).absolute(0);
    }
    for tier in ["memory", "disk", "origin"] {
        metrics::counter!(CACHE_SERVED_BYTES, "tier" => tier).absolute(0);
    }
    for op in ORIGIN_OPS {
        metrics::counter!(ORIGIN_REQUESTS, "op" => op).absolute(0);
        metrics::counter!(ORIGIN_ERRORS, "op" => op).absolute(0);
    }
    for reason in ["missing", "wrong", "expired", "off"] {
        metrics::counter!(FLEET_AUTH_REFUSED, "reason" => reason).absolute(0);
    }
    for outcome in ["served", "deferred", "error"] {
        metrics::counter!(FLEET_BATCH_ITEMS, "outcome" => outcome).absolute(0);
    }
    for surface in ["fleet", "s3"] {
        metrics::counter!(ORIGIN_AVOIDED, "surface" => surface).absolute(0);
    }
    for c in [CACHE_SINGLEFLIGHT_JOINS, MEMORY_EVICTIONS, ORIGIN_BYTES] {
        metrics::counter!(c).absolute(0);
    }
}

pub use lakecache_common::metrics::{install, ms_since};
