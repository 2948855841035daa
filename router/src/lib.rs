//! The lakecache router: the S3 surface in front of a fleet of cache nodes. Reads are
//! placed page by page on the ring and streamed back in order (`proxy`, over
//! `lakecache_fleet`'s routing and node client); the calls it does not model are passed to
//! a node as they came (`forward`); `server` wires S3, health, metrics and the admin API
//! (membership, pins, fleet-wide stats and prewarm).

pub mod config;
pub mod forward;
pub mod proxy;
pub mod server;
