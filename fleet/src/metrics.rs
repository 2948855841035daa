//! The metric names of fleet reads (`router_*`: a search node reading through its own ring
//! client emits them too, under its own job). Listed in ops/METRICS.md.

pub const ROUTER_EJECTIONS: &str = "router_ring_ejections_total";
pub const ROUTER_RING_NODES: &str = "router_ring_live_nodes";
pub const ROUTER_NODE_UP: &str = "router_ring_node_up";
pub const ROUTER_RETRIES_REFUSED: &str = "router_upstream_retries_refused_total";
pub const ROUTER_UPSTREAM_BYTES: &str = "router_upstream_bytes_total";
pub const ROUTER_UPSTREAM_LATENCY: &str = "router_upstream_first_byte_milliseconds";
pub const ROUTER_HEDGES: &str = "router_upstream_hedges_total";
pub const ROUTER_REQUESTS: &str = "router_upstream_requests_total";
pub const ROUTER_FAILOVERS: &str = "router_upstream_failovers_total";
