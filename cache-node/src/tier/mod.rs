//! The cache tiers below the read path: memory (byte-bounded, admission-controlled) and the
//! disk page store. Each tier stores whole pages keyed by [`PageKey`]; neither knows about S3.

/// The disk tier is its own crate (`pagestore/`).
pub use lakecache_pagestore as disk;
pub mod memory;

pub use disk::{DiskTier, PageKey};
