//! The lakecache cache node: an S3-compatible endpoint over a read-through page cache
//! (memory tier → disk tier → origin). `main.rs` only parses flags; everything else is
//! here so tests and benches run the real server in-process.

pub mod admin;
pub mod cache;
pub mod config;
pub mod listener;
pub mod metrics;
pub mod origin;
pub mod policy;
pub mod s3;
pub mod server;
pub mod tier;

pub use config::Config;
pub use server::{Node, serve};
