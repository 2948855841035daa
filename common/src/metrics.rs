//! The process's Prometheus recorder, shared by every binary, and the bucket rules its
//! histograms follow: a histogram carries its unit in its name (`_microseconds`,
//! `_milliseconds`, `_rows`) and gets that unit's buckets. Metric names themselves live
//! with the crate that emits them (`<component>_<subsystem>_<name>_<unit>`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
