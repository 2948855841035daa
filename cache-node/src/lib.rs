//! The lakecache cache node: an S3-compatible endpoint over a read-through page cache
//! (memory tier → disk tier → origin). `main.rs` only parses flags; everything else is
//! here so tests and benches run the real server in-process.

pub mod admin;
pub mod cache;
pub mod config;
pub mod fleet_api;
pub mod metrics;
pub mod node;
pub mod origin;
pub mod policy;
pub mod s3;
pub mod tier;

pub use config::Config;
/// The accept loop and its limits live in the shared S3 crate.
pub use lakecache_s3::listener;
pub use node::{Node, serve, serve_fleet};
