//! The cache tiers below the read path: memory (byte-bounded, admission-controlled) and the
//! disk page store. Each tier stores whole pages keyed by [`PageKey`]; neither knows about S3.

pub mod disk;
pub mod memory;

pub use disk::{DiskTier, PageKey};
