//! The memory tier: whole pages in a byte-bounded moka cache (TinyLFU admission, LRU-ish
//! eviction). Owns nothing but the map; hit/miss accounting is the read path's.

use bytes::Bytes;
use moka::notification::RemovalCause;

use super::PageKey;
use crate::metrics as m;

/// Bytes charged per entry on top of the page itself (key, Bytes header, map overhead).
const ENTRY_OVERHEAD_BYTES: u32 = 96;

pub struct MemoryTier {
    cache: moka::sync::Cache<PageKey, Bytes>,
    capacity_bytes: u64,
}

impl MemoryTier {
    pub fn new(capacity_bytes: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|_k: &PageKey, v: &Bytes| {
                u32::try_from(v.len()).unwrap_or(u32::MAX).saturating_add(ENTRY_OVERHEAD_BYTES)
            })
            .eviction_listener(|_k, _v, cause| {
                if matches!(cause, RemovalCause::Size) {
                    metrics::counter!(m::MEMORY_EVICTIONS).increment(1);
                }
            })
            .build();
        Self { cache, capacity_bytes }
    }

    pub fn get(&self, key: &PageKey) -> Option<Bytes> {
        self.cache.get(key)
    }

    pub fn contains(&self, key: &PageKey) -> bool {
        self.cache.contains_key(key)
    }

    pub fn insert(&self, key: PageKey, page: Bytes) {
        self.cache.insert(key, page);
    }

    pub fn remove(&self, key: &PageKey) {
        self.cache.invalidate(key);
    }

    /// Bytes held (approximate: moka applies pending work lazily).
    pub fn used_bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    pub fn publish_metrics(&self) {
        self.cache.run_pending_tasks();
        metrics::gauge!(m::MEMORY_USED_BYTES).set(self.cache.weighted_size() as f64);
        metrics::gauge!(m::MEMORY_CAPACITY_BYTES).set(self.capacity_bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_byte_budget() {
        let t = MemoryTier::new(1024 * 1024);
        for i in 0..64 {
            t.insert(PageKey { object: 1, index: i }, Bytes::from(vec![0u8; 64 * 1024]));
        }
        t.cache.run_pending_tasks();
        assert!(t.used_bytes() <= 1024 * 1024, "used {}", t.used_bytes());
        assert!(t.used_bytes() > 0);
    }
}
