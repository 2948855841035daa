//! The NVMe page store ("disk tier"): whole pages in fixed slots of one preallocated file,
//! read back a few sectors at a time, verified by per-block crc32c, surviving restart.
//!
//! Owns: the public API of the tier ([`DiskTier`], its config, keys and errors). It is built
//! from three seams, each in its own module:
//! - where bytes live — `device` (the file, O_DIRECT, preallocation, superblock) and
//!   `layout` (the on-disk format of slots and headers);
//! - how I/O is submitted — `engine` (the [`IoEngineChoice`] probe and trait) with its
//!   engines `engine::uring` (io_uring, ring per core, registered buffers), `engine::pread`
//!   (blocking pool) and `engine::noop` (no device, for tests), and `buffer` (aligned and
//!   registered buffers);
//! - what goes where — `index` (sharded index, slot table, CLOCK) and `store` (read, write,
//!   recovery, pinning).
//!
//! Does not own: admission (which pages are worth writing), pin rules, the memory tier or
//! anything about S3. A page that fails its checksum is a miss, never wrong bytes.

mod buffer;
mod device;
mod engine;
mod index;
mod layout;
pub mod metrics;
mod store;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use store::DiskTier;

/// Identity of one version of one object. Pages are keyed by its [`hash`](ObjectId::hash),
/// so a changed object (new ETag, or new size/mtime) never matches old pages.
///
/// The fields are public for reading; the hash is computed once in [`ObjectId::new`], so
/// build a new `ObjectId` rather than mutating one.
#[derive(Clone, Debug)]
pub struct ObjectId {
    pub bucket: String,
    pub key: String,
    /// ETag, or `"<size>-<mtime>"` where the origin gives no ETag.
    pub version: String,
    hash: u128,
}

impl ObjectId {
    pub fn new(bucket: impl Into<String>, key: impl Into<String>, version: impl Into<String>) -> ObjectId {
        let (bucket, key, version) = (bucket.into(), key.into(), version.into());
        let hash = Self::hash_of(&bucket, &key, &version);
        ObjectId { bucket, key, version, hash }
    }

    /// The hash an `ObjectId` of these parts has, without building one (no allocation for
    /// names up to a few hundred bytes).
    pub fn hash_of(bucket: &str, key: &str, version: &str) -> u128 {
        let n = bucket.len() + key.len() + version.len() + 2;
        let mut stack = [0u8; 512];
        let mut heap = Vec::new();
        let buf: &mut [u8] = if n <= stack.len() {
            &mut stack[..n]
        } else {
            heap.resize(n, 0);
            &mut heap
        };
        let (b, rest) = buf.split_at_mut(bucket.len());
        b.copy_from_slice(bucket.as_bytes());
        rest[0] = 0;
        let (k, rest) = rest[1..].split_at_mut(key.len());
        k.copy_from_slice(key.as_bytes());
        rest[0] = 0;
        rest[1..].copy_from_slice(version.as_bytes());
        xxhash_rust::xxh3::xxh3_128(buf)
    }

    /// xxh3-128 of `bucket \0 key \0 version`.
    pub fn hash(&self) -> u128 {
        self.hash
    }
}

impl PartialEq for ObjectId {
    fn eq(&self, other: &ObjectId) -> bool {
        self.hash == other.hash
            && self.bucket == other.bucket
            && self.key == other.key
            && self.version == other.version
    }
}

impl Eq for ObjectId {}

impl std::hash::Hash for ObjectId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.hash);
    }
}

/// One page of one object version: `index` counts pages of `page_size_bytes` from the
/// object's start.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PageKey {
    pub object: u128,
    pub index: u64,
}

impl PageKey {
    pub fn new(object: &ObjectId, index: u64) -> PageKey {
        PageKey { object: object.hash(), index }
    }
}

/// Which I/O engine to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoEngineChoice {
    /// io_uring if the probe at open succeeds, else pread (with one warning).
    #[default]
    Auto,
    /// io_uring or fail to open.
    Uring,
    /// Positional reads/writes on the blocking pool.
    Pread,
    /// No device I/O at all: writes are dropped, reads leave their buffer as it was, so the
    /// store keeps nothing and answers misses. For tests; a config file cannot name it.
    #[serde(skip)]
    Noop,
}

/// Configuration of the page store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskTierConfig {
    /// The page file (created if missing) or a block device.
    pub path: PathBuf,
    /// Size of the file; the slots that fit are `(capacity - 4 KiB) / (4 KiB + page size)`.
    pub capacity_bytes: u64,
    /// Multiple of 4096, at most 2 MiB.
    pub page_size_bytes: u64,
    pub io_engine: IoEngineChoice,
    /// io_uring rings (each with its own thread); 0 = one per core.
    pub rings: usize,
    /// In-flight I/Os per ring; also the number of small (32 KiB) registered buffers per ring.
    pub queue_depth: u32,
    /// Slot-sized registered buffers per ring (for writes and large reads). Pinned memory
    /// per ring is about `queue_depth * 32 KiB + registered_buffers * (page size + 4 KiB)`,
    /// which RLIMIT_MEMLOCK must allow unless the process has CAP_IPC_LOCK.
    pub registered_buffers: usize,
}

impl Default for DiskTierConfig {
    fn default() -> DiskTierConfig {
        DiskTierConfig {
            path: PathBuf::from("/var/lib/lakecache/pages.bin"),
            capacity_bytes: 16 << 30,
            page_size_bytes: 1 << 20,
            io_engine: IoEngineChoice::Auto,
            rings: 0,
            queue_depth: 128,
            registered_buffers: 16,
        }
    }
}

impl DiskTierConfig {
    pub fn validate(&self) -> Result<(), DiskError> {
        let p = self.page_size_bytes;
        if p == 0 || !p.is_multiple_of(layout::SECTOR_BYTES as u64) || p > layout::MAX_PAGE_BYTES {
            return Err(DiskError::Config(format!(
                "page_size_bytes = {p}: must be a non-zero multiple of 4096 and at most {}",
                layout::MAX_PAGE_BYTES
            )));
        }
        let l = layout::Layout::for_capacity(self.capacity_bytes, p);
        if l.slot_count == 0 {
            return Err(DiskError::Config(format!(
                "capacity_bytes = {} holds no slot of {} bytes (plus a 4 KiB superblock)",
                self.capacity_bytes,
                l.slot_bytes()
            )));
        }
        if l.slot_count > u64::from(u32::MAX) {
            return Err(DiskError::Config(format!(
                "capacity_bytes = {}: too many slots",
                self.capacity_bytes
            )));
        }
        if self.queue_depth == 0 || self.queue_depth > 4096 {
            return Err(DiskError::Config(format!("queue_depth = {}: must be 1..=4096", self.queue_depth)));
        }
        if self.registered_buffers == 0 || self.registered_buffers > 4096 {
            return Err(DiskError::Config(format!(
                "registered_buffers = {}: must be 1..=4096",
                self.registered_buffers
            )));
        }
        if self.rings > 1024 {
            return Err(DiskError::Config(format!("rings = {}: at most 1024", self.rings)));
        }
        if self.path.as_os_str().is_empty() {
            return Err(DiskError::Config("path is empty".into()));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk tier I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("disk tier config: {0}")]
    Config(String),
    #[error("disk tier full: every slot is pinned or busy")]
    Full,
    #[error("too large for the disk tier: {0}")]
    TooLarge(String),
    #[error("range {offset}+{len} is outside the cached page of {page_len} bytes")]
    OutOfRange { offset: usize, len: usize, page_len: usize },
    #[error("io_uring unavailable: {0}")]
    EngineUnavailable(String),
}

/// At most one event per second, for logs on hot paths.
pub(crate) struct RateLimit {
    last_sec: AtomicU64,
}

impl RateLimit {
    pub fn new() -> RateLimit {
        RateLimit { last_sec: AtomicU64::new(u64::MAX) }
    }

    pub fn ready(&self) -> bool {
        static START: OnceLock<Instant> = OnceLock::new();
        let now = START.get_or_init(Instant::now).elapsed().as_secs();
        let prev = self.last_sec.load(Ordering::Relaxed);
        if prev != u64::MAX && now <= prev {
            return false;
        }
        self.last_sec.compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn object_id_hash_is_stable_and_separated() {
        let a = ObjectId::new("b", "k", "v");
        assert_eq!(a.hash(), ObjectId::new("b", "k", "v").hash());
        assert_eq!(a.hash(), xxhash_rust::xxh3::xxh3_128(b"b\0k\0v"));
        // The separators keep field boundaries apart.
        assert_ne!(ObjectId::new("ab", "c", "v").hash(), ObjectId::new("a", "bc", "v").hash());
        assert_eq!(a, ObjectId::new("b", "k", "v"));
        assert_ne!(a, ObjectId::new("b", "k", "w"));
        assert_eq!(PageKey::new(&a, 3), PageKey { object: a.hash(), index: 3 });
        // Long names (past the stack buffer) hash the same way.
        let long = "k".repeat(600);
        let mut joined = b"b\0".to_vec();
        joined.extend_from_slice(long.as_bytes());
        joined.extend_from_slice(b"\0v");
        assert_eq!(ObjectId::hash_of("b", &long, "v"), xxhash_rust::xxh3::xxh3_128(&joined));
    }

    #[test]
    fn config_defaults_validate_and_serde() {
        DiskTierConfig::default().validate().unwrap();
        let bad = |f: &dyn Fn(&mut DiskTierConfig)| {
            let mut c = DiskTierConfig::default();
            f(&mut c);
            assert!(matches!(c.validate(), Err(DiskError::Config(_))), "{c:?}");
        };
        bad(&|c| c.page_size_bytes = 1000);
        bad(&|c| c.page_size_bytes = 4 << 20);
        bad(&|c| c.capacity_bytes = 1 << 20);
        bad(&|c| c.queue_depth = 0);
        bad(&|c| c.registered_buffers = 0);
        let c: DiskTierConfig =
            serde_json::from_str(r#"{"path":"/x","io_engine":"pread","page_size_bytes":65536}"#).unwrap();
        assert_eq!(c.io_engine, IoEngineChoice::Pread);
        assert_eq!(c.page_size_bytes, 65536);
        assert_eq!(c.queue_depth, 128);
        assert!(serde_json::from_str::<DiskTierConfig>(r#"{"nope":1}"#).is_err());
        for (s, e) in [("\"auto\"", IoEngineChoice::Auto), ("\"uring\"", IoEngineChoice::Uring)] {
            assert_eq!(serde_json::from_str::<IoEngineChoice>(s).unwrap(), e);
        }
    }

    #[test]
    fn rate_limit_allows_one_per_second() {
        let r = RateLimit::new();
        assert!(r.ready());
        assert!(!r.ready());
    }
}
