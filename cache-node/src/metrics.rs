//! Every metric the cache node emits, by name, and the Prometheus recorder that renders them.
//!
//! Names follow `lakecache_<subsystem>_<name>_<unit>`; labels have few values (tier, op,
//! outcome, engine) — never a bucket or key.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

// Read path, per tier (label `tier` = memory | disk | origin).
pub const CACHE_HITS: &str = "lakecache_cache_hits_total";
pub const CACHE_MISSES: &str = "lakecache_cache_misses_total";
pub const CACHE_SERVED_BYTES: &str = "lakecache_cache_served_bytes_total";
pub const CACHE_INFLIGHT_REQUESTS: &str = "lakecache_cache_inflight_requests";
pub const CACHE_SINGLEFLIGHT_JOINS: &str = "lakecache_cache_singleflight_joins_total";

// Memory tier.
pub const MEMORY_USED_BYTES: &str = "lakecache_memory_used_bytes";
pub const MEMORY_EVICTIONS: &str = "lakecache_memory_evictions_total";

// Disk tier (page store).
pub const DISK_READS: &str = "lakecache_disk_reads_total";
pub const DISK_READ_BYTES: &str = "lakecache_disk_read_bytes_total";
pub const DISK_WRITES: &str = "lakecache_disk_writes_total";
pub const DISK_WRITE_BYTES: &str = "lakecache_disk_write_bytes_total";
pub const DISK_WRITES_DROPPED: &str = "lakecache_disk_writes_dropped_total";
pub const DISK_ERRORS: &str = "lakecache_disk_errors_total";
pub const DISK_EVICTIONS: &str = "lakecache_disk_evictions_total";
pub const DISK_CHECKSUM_FAILURES: &str = "lakecache_disk_checksum_failures_total";
pub const DISK_USED_BYTES: &str = "lakecache_disk_used_bytes";
pub const DISK_CAPACITY_BYTES: &str = "lakecache_disk_capacity_bytes";
pub const DISK_PINNED_BYTES: &str = "lakecache_disk_pinned_bytes";
pub const DISK_RECOVERED_PAGES: &str = "lakecache_disk_recovered_pages";
/// Gauge set to 1 with label `engine` = uring | pread.
pub const DISK_IO_ENGINE: &str = "lakecache_disk_io_engine";

// Origin (label `op` = get | head | put | list | delete | copy).
pub const ORIGIN_REQUESTS: &str = "lakecache_origin_requests_total";
pub const ORIGIN_ERRORS: &str = "lakecache_origin_errors_total";
pub const ORIGIN_BYTES: &str = "lakecache_origin_received_bytes_total";
pub const ORIGIN_LATENCY: &str = "lakecache_origin_request_duration_seconds";

// S3 surface (label `op`, `status`).
pub const S3_REQUESTS: &str = "lakecache_s3_requests_total";

// Pinning.
pub const PIN_RULES: &str = "lakecache_pin_rules";
pub const PINNED_BUDGET_BYTES: &str = "lakecache_pinned_budget_bytes";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder once per process (later calls reuse it, so
/// several nodes in one test process share one registry).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_string()),
                    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                )
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
