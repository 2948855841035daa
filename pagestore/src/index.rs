//! What goes where, in memory: the sharded `PageKey -> slot` index and the slot table
//! (per-slot state, CLOCK reference bits, free list, eviction).
//!
//! Owns: every in-memory invariant of the page store. Does not own: I/O or the on-disk
//! format.
//!
//! Invariants:
//! - An index entry `Live { slot, meta }` exists only while slot `slot` is `Live` with the
//!   same `meta` (same generation). Readers may still race with a slot being reused; the
//!   per-block crcs and the generation check in the store catch that.
//! - A slot is in exactly one of: the free list (`Free`), reserved by one task (`Reserved`:
//!   being written, evicted, or tombstoned), or `Live`.
//! - Lock order: a shard lock may be held while taking a slot lock; never the reverse.
//!   The allocator lock is taken alone, with `try_lock` on slots inside it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use super::{ObjectId, PageKey};

const SHARDS: usize = 64;

/// Everything needed to serve a page without reading its header: identity, length and one
/// crc per 4 KiB block.
#[derive(Debug)]
pub(crate) struct PageMeta {
    pub id: Arc<ObjectId>,
    pub index: u64,
    pub len: u32,
    pub crcs: Box<[u32]>,
    /// Unique per write; identifies this incarnation of the slot.
    pub generation: u64,
}

impl PageMeta {
    pub fn key(&self) -> PageKey {
        PageKey { object: self.id.hash(), index: self.index }
    }
}

enum Entry {
    Live {
        slot: u32,
        meta: Arc<PageMeta>,
    },
    /// A write of this key is in flight; `token` is its generation.
    Writing {
        token: u64,
    },
}

pub(crate) enum SlotState {
    Free,
    Reserved,
    Live {
        meta: Arc<PageMeta>,
        pinned: bool,
        /// Header rewrites in flight; a busy slot is never evicted or recycled.
        busy: u32,
        /// Dropped from the index while busy: recycle once `busy` reaches zero.
        detached: bool,
    },
}

pub(crate) struct Slot {
    pub state: Mutex<SlotState>,
    referenced: AtomicBool,
}

/// Result of looking a key up.
pub(crate) enum Lookup {
    Absent,
    Writing,
    Live { slot: u32, meta: Arc<PageMeta> },
}

/// What became of a slot asked to leave the index.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Detach {
    /// The caller now holds the slot (`Reserved`) and must recycle it.
    Reserved { len: u32, pinned: bool },
    /// It is busy; it will be handed back when the busy operation ends. Counters have to be
    /// adjusted by the caller.
    Deferred { len: u32, pinned: bool },
    /// The slot no longer holds that generation.
    Gone,
}

/// Pages of one object by page index. Sharding by object keeps all pages of an object in
/// one shard, so `remove_object` touches one lock and no scan.
type ObjectPages = HashMap<u64, Entry, Hasher>;

/// Keys are object hashes and page numbers: a fast hasher (seeded per process, so a client
/// choosing object names still cannot aim at one bucket) instead of SipHash, which was a
/// tenth of a disk read's user-space instructions.
type Hasher = foldhash::fast::RandomState;

pub(crate) struct Index {
    shards: Box<[RwLock<HashMap<u128, ObjectPages, Hasher>>]>,
}

fn shard_of(object: u128) -> usize {
    // The object hash is already uniformly distributed (xxh3).
    (object as usize) % SHARDS
}

impl Index {
    pub fn new() -> Index {
        Index { shards: (0..SHARDS).map(|_| RwLock::new(HashMap::default())).collect() }
    }

    pub fn lookup(&self, key: &PageKey) -> Lookup {
        let shard = self.shards[shard_of(key.object)].read();
        match shard.get(&key.object).and_then(|pages| pages.get(&key.index)) {
            None => Lookup::Absent,
            Some(Entry::Writing { .. }) => Lookup::Writing,
            Some(Entry::Live { slot, meta }) => Lookup::Live { slot: *slot, meta: Arc::clone(meta) },
        }
    }

    pub fn contains(&self, key: &PageKey) -> bool {
        matches!(self.lookup(key), Lookup::Live { .. })
    }

    /// Claims `key` for a write; false if it is already present or being written.
    pub fn begin_write(&self, key: PageKey, token: u64) -> bool {
        let mut shard = self.shards[shard_of(key.object)].write();
        let pages = shard.entry(key.object).or_default();
        if pages.contains_key(&key.index) {
            return false;
        }
        pages.insert(key.index, Entry::Writing { token });
        true
    }

    /// Drops the write claim `token` on `key`, if it is still there.
    pub fn abort_write(&self, key: PageKey, token: u64) {
        let mut shard = self.shards[shard_of(key.object)].write();
        if let Some(pages) = shard.get_mut(&key.object) {
            if matches!(pages.get(&key.index), Some(Entry::Writing { token: t }) if *t == token) {
                pages.remove(&key.index);
            }
            if pages.is_empty() {
                shard.remove(&key.object);
            }
        }
    }

    /// Publishes a completed write: the claim becomes a live entry and the slot goes live,
    /// atomically with respect to lookups and eviction. False (nothing changed) if the claim
    /// was removed meanwhile (`remove_object`).
    pub fn finish_write(&self, slots: &SlotTable, slot: u32, meta: Arc<PageMeta>, pinned: bool) -> bool {
        let key = meta.key();
        let mut shard = self.shards[shard_of(key.object)].write();
        let Some(pages) = shard.get_mut(&key.object) else { return false };
        let ours =
            matches!(pages.get(&key.index), Some(Entry::Writing { token }) if *token == meta.generation);
        if !ours {
            return false;
        }
        let Some(s) = slots.get(slot) else { return false };
        *s.state.lock() = SlotState::Live { meta: Arc::clone(&meta), pinned, busy: 0, detached: false };
        s.referenced.store(false, Ordering::Relaxed);
        pages.insert(key.index, Entry::Live { slot, meta });
        true
    }

    /// Inserts a recovered page (at open, before any concurrent use).
    pub fn insert_recovered(&self, slot: u32, meta: Arc<PageMeta>) {
        let key = meta.key();
        let mut shard = self.shards[shard_of(key.object)].write();
        shard.entry(key.object).or_default().insert(key.index, Entry::Live { slot, meta });
    }

    /// Removes the live entry for `key` if it still points at `slot` with `generation`.
    pub fn remove_if(&self, key: &PageKey, slot: u32, generation: u64) -> bool {
        let mut shard = self.shards[shard_of(key.object)].write();
        let Some(pages) = shard.get_mut(&key.object) else { return false };
        let matches = matches!(
            pages.get(&key.index),
            Some(Entry::Live { slot: s, meta }) if *s == slot && meta.generation == generation
        );
        if matches {
            pages.remove(&key.index);
            if pages.is_empty() {
                shard.remove(&key.object);
            }
        }
        matches
    }

    /// Whether any page of `object` is live.
    pub fn holds_object(&self, object: u128) -> bool {
        let shard = self.shards[shard_of(object)].read();
        shard.get(&object).is_some_and(|pages| pages.values().any(|e| matches!(e, Entry::Live { .. })))
    }

    /// Removes every entry (live or being written) of `object`; returns the live ones.
    pub fn remove_object(&self, object: u128) -> Vec<(u32, Arc<PageMeta>)> {
        let mut shard = self.shards[shard_of(object)].write();
        let Some(pages) = shard.remove(&object) else { return Vec::new() };
        pages
            .into_values()
            .filter_map(|e| match e {
                Entry::Live { slot, meta } => Some((slot, meta)),
                Entry::Writing { .. } => None,
            })
            .collect()
    }
}

struct Alloc {
    free: Vec<u32>,
    hand: usize,
}

/// Outcome of [`SlotTable::allocate`].
pub(crate) enum Allocated {
    /// A slot, now `Reserved` for the caller; `evicted` is the page it held (already out of
    /// its slot, still to be removed from the index by the caller).
    Slot { slot: u32, evicted: Option<(Arc<PageMeta>, bool)> },
    /// Every slot is pinned, busy or reserved.
    Full,
}

pub(crate) struct SlotTable {
    slots: Box<[Slot]>,
    alloc: Mutex<Alloc>,
}

impl SlotTable {
    pub fn new(count: u32) -> SlotTable {
        let slots = (0..count)
            .map(|_| Slot { state: Mutex::new(SlotState::Free), referenced: AtomicBool::new(false) })
            .collect();
        SlotTable { slots, alloc: Mutex::new(Alloc { free: Vec::new(), hand: 0 }) }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn get(&self, slot: u32) -> Option<&Slot> {
        self.slots.get(slot as usize)
    }

    /// At open: marks a recovered slot live.
    pub fn set_recovered(&self, slot: u32, meta: Arc<PageMeta>, pinned: bool) {
        if let Some(s) = self.get(slot) {
            *s.state.lock() = SlotState::Live { meta, pinned, busy: 0, detached: false };
        }
    }

    /// At open: every slot still `Free` goes on the free list (low slots used first).
    pub fn rebuild_free_list(&self) {
        let mut free: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| matches!(*self.slots[i as usize].state.lock(), SlotState::Free))
            .collect();
        free.reverse();
        self.alloc.lock().free = free;
    }

    /// CLOCK: a hit gives the page a second chance.
    pub fn touch(&self, slot: u32) {
        if let Some(s) = self.get(slot)
            && !s.referenced.load(Ordering::Relaxed)
        {
            s.referenced.store(true, Ordering::Relaxed);
        }
    }

    /// A free slot, or one taken from an unpinned, idle page by CLOCK. At most two sweeps
    /// (the first may only clear reference bits).
    pub fn allocate(&self) -> Allocated {
        let mut alloc = self.alloc.lock();
        while let Some(slot) = alloc.free.pop() {
            if let Some(s) = self.get(slot) {
                let mut st = s.state.lock();
                if matches!(*st, SlotState::Free) {
                    *st = SlotState::Reserved;
                    return Allocated::Slot { slot, evicted: None };
                }
            }
        }
        let n = self.slots.len();
        for _ in 0..2 * n {
            let i = alloc.hand;
            alloc.hand = (alloc.hand + 1) % n.max(1);
            let s = &self.slots[i];
            let Some(mut st) = s.state.try_lock() else { continue };
            let SlotState::Live { pinned: false, busy: 0, detached: false, .. } = &*st else { continue };
            if s.referenced.swap(false, Ordering::Relaxed) {
                continue;
            }
            if let SlotState::Live { meta, pinned, .. } = std::mem::replace(&mut *st, SlotState::Reserved) {
                return Allocated::Slot { slot: i as u32, evicted: Some((meta, pinned)) };
            }
        }
        Allocated::Full
    }

    /// Returns a `Reserved` slot to the free list.
    pub fn release(&self, slot: u32) {
        let Some(s) = self.get(slot) else { return };
        *s.state.lock() = SlotState::Free;
        s.referenced.store(false, Ordering::Relaxed);
        self.alloc.lock().free.push(slot);
    }

    /// Takes a live slot out of service if it still holds `generation`.
    pub fn detach(&self, slot: u32, generation: u64) -> Detach {
        let Some(s) = self.get(slot) else { return Detach::Gone };
        let mut st = s.state.lock();
        match &mut *st {
            SlotState::Live { meta, pinned, busy, detached }
                if meta.generation == generation && !*detached =>
            {
                let (len, was_pinned) = (meta.len, *pinned);
                if *busy > 0 {
                    *detached = true;
                    Detach::Deferred { len, pinned: was_pinned }
                } else {
                    *st = SlotState::Reserved;
                    Detach::Reserved { len, pinned: was_pinned }
                }
            }
            _ => Detach::Gone,
        }
    }

    /// Ends one busy operation on a live slot. True if the slot was detached meanwhile and is
    /// now `Reserved` for the caller to recycle.
    pub fn unbusy(&self, slot: u32, generation: u64) -> bool {
        let Some(s) = self.get(slot) else { return false };
        let mut st = s.state.lock();
        if let SlotState::Live { meta, busy, detached, .. } = &mut *st
            && meta.generation == generation
        {
            *busy = busy.saturating_sub(1);
            if *busy == 0 && *detached {
                *st = SlotState::Reserved;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn meta(index: u64, generation: u64) -> Arc<PageMeta> {
        Arc::new(PageMeta {
            id: Arc::new(ObjectId::new("b", "k", "v")),
            index,
            len: 10,
            crcs: vec![0].into(),
            generation,
        })
    }

    #[test]
    fn clock_skips_pinned_and_referenced_and_reports_full() {
        let index = Index::new();
        let slots = SlotTable::new(3);
        slots.rebuild_free_list();
        for i in 0..3u64 {
            let Allocated::Slot { slot, evicted: None } = slots.allocate() else {
                panic!("expected a free slot")
            };
            let m = meta(i, i + 1);
            assert!(index.begin_write(m.key(), m.generation));
            assert!(index.finish_write(&slots, slot, m, i == 0));
        }
        // Slot 0 pinned, slot 1 referenced: slot 2 goes first... after slot 1 loses its bit.
        slots.touch(1);
        let Allocated::Slot { slot, evicted: Some((m, false)) } = slots.allocate() else {
            panic!("expected eviction")
        };
        assert_eq!(slot, 2);
        assert_eq!(m.index, 2);
        assert!(index.remove_if(&m.key(), slot, m.generation));
        let Allocated::Slot { slot, evicted: Some(_) } = slots.allocate() else {
            panic!("expected eviction")
        };
        assert_eq!(slot, 1);
        // Slot 0 pinned, 1 and 2 reserved: full.
        assert!(matches!(slots.allocate(), Allocated::Full));
        slots.release(2);
        assert!(matches!(slots.allocate(), Allocated::Slot { slot: 2, evicted: None }));
    }

    #[test]
    fn writes_claim_keys_and_remove_object_cancels_them() {
        let index = Index::new();
        let slots = SlotTable::new(2);
        let m = meta(0, 7);
        assert!(index.begin_write(m.key(), 7));
        assert!(!index.begin_write(m.key(), 8));
        assert!(matches!(index.lookup(&m.key()), Lookup::Writing));
        assert!(index.remove_object(m.key().object).is_empty());
        assert!(!index.finish_write(&slots, 0, m.clone(), false));
        assert!(matches!(index.lookup(&m.key()), Lookup::Absent));
    }

    #[test]
    fn busy_slots_detach_later() {
        let index = Index::new();
        let slots = SlotTable::new(1);
        let m = meta(0, 5);
        index.begin_write(m.key(), 5);
        index.finish_write(&slots, 0, m, false);
        if let SlotState::Live { busy, .. } = &mut *slots.get(0).unwrap().state.lock() {
            *busy = 1;
        }
        assert!(matches!(slots.allocate(), Allocated::Full));
        assert_eq!(slots.detach(0, 5), Detach::Deferred { len: 10, pinned: false });
        assert_eq!(slots.detach(0, 5), Detach::Gone);
        assert!(slots.unbusy(0, 5));
        assert!(matches!(*slots.get(0).unwrap().state.lock(), SlotState::Reserved));
    }
}
