//! Every metric the cache node emits, by name, and the Prometheus recorder that renders them
//! (shared by the router and the search node, which link this crate). `ops/METRICS.md`
//! documents the whole fleet's set.
//!
//! Names follow `<component>_<subsystem>_<name>_<unit>`; labels have few values (tier, op,
//! outcome, engine) — never a bucket or key. Histograms carry their unit in the name and get
//! their buckets from it: microseconds for the page store, milliseconds for everything else.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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

// S3 surface (label `op`, `status`).
pub const S3_REQUESTS: &str = "cachenode_s3_requests_total";
pub const S3_LATENCY: &str = "cachenode_s3_request_duration_milliseconds";

// The file systems under the node's state (label `role` = pagestore | multipart).
pub const FS_AVAIL_BYTES: &str = "cachenode_filesystem_avail_bytes";
pub const FS_SIZE_BYTES: &str = "cachenode_filesystem_size_bytes";

// Pinning.
pub const PIN_RULES: &str = "cachenode_pins_rules";
pub const PINNED_BUDGET_BYTES: &str = "cachenode_pins_budget_bytes";

/// Page-store I/O: tens of µs on NVMe up to a virtio disk's worst case.
pub const MICROSECOND_BUCKETS: &[f64] = &[
    10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1_600.0, 3_200.0, 6_400.0, 12_800.0, 25_600.0, 51_200.0,
    102_400.0,
];
/// Origin requests, router upstreams, S3 and search requests: from a cache hit's tens of µs
/// (to response headers) up to a slow origin.
pub const MILLISECOND_BUCKETS: &[f64] = &[
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0,
    5_000.0, 10_000.0, 30_000.0,
];
/// Result sizes.
pub const ROW_BUCKETS: &[f64] = &[0.0, 1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0];

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
    for c in [CACHE_SINGLEFLIGHT_JOINS, MEMORY_EVICTIONS, ORIGIN_BYTES] {
        metrics::counter!(c).absolute(0);
    }
}

/// Milliseconds since `t`, for the `_milliseconds` histograms.
pub fn ms_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder once per process (later calls reuse it, so
/// several nodes in one test process share one registry).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_microseconds".into()), MICROSECOND_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_milliseconds".into()), MILLISECOND_BUCKETS)
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), ROW_BUCKETS))
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program); then our
            // handle renders nothing, which the /metrics test would catch.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
