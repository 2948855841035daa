//! The page store's metric names (`cachenode_pagestore_*`: it runs inside the cache node).
//! Latencies are in microseconds; the embedding program's recorder gives `_microseconds`
//! histograms their buckets.

pub const DISK_READS: &str = "cachenode_pagestore_reads_total";
pub const DISK_READ_BYTES: &str = "cachenode_pagestore_read_bytes_total";
pub const DISK_READ_LATENCY: &str = "cachenode_pagestore_read_duration_microseconds";
pub const DISK_WRITE_LATENCY: &str = "cachenode_pagestore_write_duration_microseconds";
pub const DISK_WRITES: &str = "cachenode_pagestore_writes_total";
pub const DISK_WRITE_BYTES: &str = "cachenode_pagestore_write_bytes_total";
pub const DISK_WRITES_DROPPED: &str = "cachenode_pagestore_writes_dropped_total";
pub const DISK_ERRORS: &str = "cachenode_pagestore_errors_total";
pub const DISK_EVICTIONS: &str = "cachenode_pagestore_evictions_total";
pub const DISK_CHECKSUM_FAILURES: &str = "cachenode_pagestore_checksum_failures_total";
pub const DISK_USED_BYTES: &str = "cachenode_pagestore_used_bytes";
pub const DISK_CAPACITY_BYTES: &str = "cachenode_pagestore_capacity_bytes";
pub const DISK_PINNED_BYTES: &str = "cachenode_pagestore_pinned_bytes";
pub const DISK_RECOVERED_PAGES: &str = "cachenode_pagestore_recovered_pages";
/// Gauge set to 1 with label `engine` = uring | pread.
pub const DISK_IO_ENGINE: &str = "cachenode_pagestore_io_engine";

/// Creates the page store's counters at zero, so rates and alerts read a series from start.
pub fn register() {
    for c in [
        DISK_READS,
        DISK_READ_BYTES,
        DISK_WRITES,
        DISK_WRITE_BYTES,
        DISK_WRITES_DROPPED,
        DISK_ERRORS,
        DISK_EVICTIONS,
        DISK_CHECKSUM_FAILURES,
    ] {
        metrics::counter!(c).absolute(0);
    }
}
