//! The consistent-hash ring shared by router, cache node, search node and bench: which
//! cache nodes own a page. Weighted rendezvous hashing (highest random weight): every
//! (node, key) pair gets a score from a fixed-seed hash, and a key's owners are the nodes
//! with the highest scores, in order. So every process agrees without coordination, a
//! node's share follows its weight, and a membership change moves only the keys won or
//! lost by the node that changed — nothing moves between the others.
//!
//! Owns the placement rule only; health, ejection and routing policy are the router's.

use std::sync::Arc;

/// Fixed seed: changing it reshuffles every fleet, so it never changes.
const SEED: u64 = 0x6c61_6b65_6361_6368; // "lakecach"

/// A member of the ring.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Stable identity (e.g. "cache-1" or its address); placement depends on it alone.
    pub id: String,
    /// Relative capacity: a node with twice the weight owns twice the keys. Must be > 0.
    pub weight: f64,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RingError {
    #[error("node {0:?} appears twice")]
    Duplicate(String),
    #[error("node {0:?} has weight {1}; weights must be finite and > 0")]
    BadWeight(String, f64),
    #[error("node id must not be empty")]
    EmptyId,
}

#[derive(Debug, Clone)]
struct Member {
    node: Node,
    seed: u64,
}

/// An immutable ring; build a new one on membership change and swap it in.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    members: Arc<[Member]>,
    /// All weights equal: the score is monotonic in the hash, so comparing hashes picks
    /// the same owners without a logarithm per node.
    uniform: bool,
}

/// Pages of a Lance index file (`_indices/`) are placed in groups of this many bytes rather
/// than one by one: a search reads many scattered pieces of an index at once (an IVF index's
/// probed partitions), and when one node holds them all it can fetch a small index file in
/// a few large GETs instead of one GET per page (the cache node's whole-object fetch).
pub const INDEX_GROUP_BYTES: u64 = 64 << 20;

/// Whether `key` is a file of a Lance index.
pub fn is_index_file(key: &str) -> bool {
    key.starts_with("_indices/") || key.contains("/_indices/")
}

/// The page whose hash places page `page` of `key`: the page itself, or for an index file
/// the first page of its group of [`INDEX_GROUP_BYTES`].
pub fn placement_page(key: &str, page: u64, page_size: u64) -> u64 {
    if !is_index_file(key) {
        return page;
    }
    let group = (INDEX_GROUP_BYTES / page_size.max(1)).max(1);
    page - page % group
}

/// The key of one page: (bucket, key, page index).
pub fn page_key_hash(bucket: &str, key: &str, page_index: u64) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(SEED);
    h.update(bucket.as_bytes());
    h.update(&[0]);
    h.update(key.as_bytes());
    h.update(&[0]);
    h.update(&page_index.to_le_bytes());
    h.digest()
}

/// A strong 64-bit mixer (the SplitMix64 finaliser) over key and node hashes.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Ring {
    pub fn new(nodes: Vec<Node>) -> Result<Ring, RingError> {
        let mut members: Vec<Member> = Vec::with_capacity(nodes.len());
        for n in nodes {
            if n.id.is_empty() {
                return Err(RingError::EmptyId);
            }
            if !(n.weight.is_finite() && n.weight > 0.0) {
                return Err(RingError::BadWeight(n.id, n.weight));
            }
            if members.iter().any(|m| m.node.id == n.id) {
                return Err(RingError::Duplicate(n.id));
            }
            let seed = xxhash_rust::xxh3::xxh3_64_with_seed(n.id.as_bytes(), SEED);
            members.push(Member { node: n, seed });
        }
        let uniform = members.windows(2).all(|w| w[0].node.weight == w[1].node.weight);
        Ok(Ring { members: members.into(), uniform })
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.members.iter().map(|m| &m.node)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Score of a node for a key: weight / -ln(u), u uniform in (0, 1) from the hash.
    /// The node with the highest score wins; P(win) is proportional to weight.
    fn score(&self, m: &Member, key_hash: u64) -> f64 {
        let h = mix(key_hash ^ m.seed);
        // 53 random bits → u in (0, 1), never 0 or 1.
        let bits = (h >> 11) as f64;
        if self.uniform {
            // Same order as the weighted score when every weight is equal.
            return bits;
        }
        let u = (bits + 0.5) / (1u64 << 53) as f64;
        m.node.weight / -u.ln()
    }

    /// The owner of a key (None on an empty ring).
    pub fn owner(&self, key_hash: u64) -> Option<&Node> {
        self.members
            .iter()
            .map(|m| (self.score(m, key_hash), m))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, m)| &m.node)
    }

    /// The first `n` distinct owners of a key, best first: the owner, then where the key
    /// goes if the owner is gone, and so on.
    pub fn owners(&self, key_hash: u64, n: usize) -> Vec<&Node> {
        let mut scored: Vec<(f64, &Member)> =
            self.members.iter().map(|m| (self.score(m, key_hash), m)).collect();
        let n = n.min(scored.len());
        if n == 0 {
            return Vec::new();
        }
        scored.select_nth_unstable_by(n - 1, |a, b| b.0.total_cmp(&a.0));
        scored.truncate(n);
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().map(|(_, m)| &m.node).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(n: usize) -> Vec<Node> {
        (0..n).map(|i| Node { id: format!("cache-{i}"), weight: 1.0 }).collect()
    }

    fn owner_id(r: &Ring, k: u64) -> String {
        r.owner(k).map(|n| n.id.clone()).unwrap_or_default()
    }

    #[test]
    fn rejects_bad_membership() {
        assert_eq!(Ring::new(vec![Node { id: "".into(), weight: 1.0 }]).unwrap_err(), RingError::EmptyId);
        assert!(matches!(
            Ring::new(vec![Node { id: "a".into(), weight: 0.0 }]),
            Err(RingError::BadWeight(..))
        ));
        assert!(matches!(
            Ring::new(vec![Node { id: "a".into(), weight: f64::NAN }]),
            Err(RingError::BadWeight(..))
        ));
        let dup = vec![Node { id: "a".into(), weight: 1.0 }, Node { id: "a".into(), weight: 2.0 }];
        assert_eq!(Ring::new(dup).unwrap_err(), RingError::Duplicate("a".into()));
        assert!(Ring::new(vec![]).unwrap().owner(1).is_none());
    }

    #[test]
    fn index_files_are_placed_in_groups_and_data_files_page_by_page() {
        let ps = 1 << 20;
        let g = INDEX_GROUP_BYTES / ps;
        for key in ["t.lance/_indices/3f2a/auxiliary.idx", "_indices/x/index.idx"] {
            assert!(is_index_file(key));
            assert_eq!(placement_page(key, 0, ps), 0);
            assert_eq!(placement_page(key, g - 1, ps), 0);
            assert_eq!(placement_page(key, g, ps), g);
            assert_eq!(placement_page(key, 2 * g + 5, ps), 2 * g);
        }
        for key in ["t.lance/data/a.lance", "t.lance/_versions/1.manifest", "t.lance/my_indices/a"] {
            assert!(!is_index_file(key));
            assert_eq!(placement_page(key, 77, ps), 77);
        }
        // A page larger than a group: every page is its own group.
        assert_eq!(placement_page("_indices/a", 9, INDEX_GROUP_BYTES * 2), 9);
    }

    #[test]
    fn placement_is_fixed_across_processes() {
        // Pinned values: if these change, every deployed fleet would reshuffle.
        let r = Ring::new(nodes(10)).unwrap();
        let k = page_key_hash("bucket", "t.lance/data/a.lance", 3);
        assert_eq!(k, 0x7cdc_8559_306d_970d);
        let expected = [
            ["cache-3", "cache-6", "cache-7"],
            ["cache-2", "cache-1", "cache-8"],
            ["cache-4", "cache-7", "cache-1"],
            ["cache-7", "cache-9", "cache-8"],
        ];
        for (i, want) in expected.iter().enumerate() {
            let got: Vec<_> =
                r.owners(page_key_hash("bucket", "key", i as u64), 3).iter().map(|n| n.id.clone()).collect();
            assert_eq!(got, want);
        }
        assert_ne!(k, page_key_hash("bucket", "t.lance/data/a.lance", 4));
        assert_ne!(page_key_hash("ab", "c", 0), page_key_hash("a", "bc", 0));
        // The same keys keep the same owners whether weights are all equal (hash
        // comparison) or scaled together (the weighted formula).
        let scaled = Ring::new(nodes(10).into_iter().map(|n| Node { weight: 3.0, ..n }).collect()).unwrap();
        let mut mixed = nodes(10);
        mixed[0].weight = 1.0 + 1e-12; // forces the weighted path, same order in practice
        let weighted = Ring::new(mixed).unwrap();
        for i in 0..10_000 {
            let k = page_key_hash("b", "k", i);
            assert_eq!(owner_id(&r, k), owner_id(&scaled, k));
            assert_eq!(owner_id(&r, k), owner_id(&weighted, k));
        }
        let again = Ring::new(nodes(10).into_iter().rev().collect()).unwrap();
        for i in 0..1000 {
            let k = page_key_hash("b", "k", i);
            assert_eq!(owner_id(&r, k), owner_id(&again, k), "member order must not matter");
        }
    }

    /// 100 equal nodes, 10 M keys: the most loaded node carries at most 5% over the mean.
    #[test]
    fn balance_100_nodes_10m_keys() {
        let r = Ring::new(nodes(100)).unwrap();
        let mut counts = vec![0u32; 100];
        let idx: std::collections::HashMap<&str, usize> =
            r.nodes().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
        for k in 0..10_000_000u64 {
            let o = r.owner(mix(k)).unwrap();
            counts[idx[o.id.as_str()]] += 1;
        }
        let max = *counts.iter().max().unwrap() as f64;
        let avg = 10_000_000.0 / 100.0;
        assert!(max / avg <= 1.05, "max/avg = {}", max / avg);
    }

    #[test]
    fn weights_are_honoured() {
        let mut ns = nodes(4);
        ns[0].weight = 2.0;
        let r = Ring::new(ns).unwrap();
        let mut heavy = 0;
        let n = 500_000u64;
        for k in 0..n {
            if r.owner(mix(k)).unwrap().id == "cache-0" {
                heavy += 1;
            }
        }
        let share = heavy as f64 / n as f64; // expected 2/5
        assert!((share - 0.4).abs() < 0.01, "share {share}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Adding a node moves keys only to it, and about 1/N of them.
        #[test]
        fn adding_a_node_moves_only_to_it(n in 2usize..40, seed in any::<u64>()) {
            let before = Ring::new(nodes(n)).unwrap();
            let after = Ring::new(nodes(n + 1)).unwrap();
            let new_id = format!("cache-{n}");
            let keys = 40_000u64;
            let mut moved = 0u64;
            for k in 0..keys {
                let h = mix(k ^ seed);
                let (a, b) = (owner_id(&before, h), owner_id(&after, h));
                if a != b {
                    prop_assert_eq!(&b, &new_id);
                    moved += 1;
                }
            }
            let frac = moved as f64 / keys as f64;
            prop_assert!(frac <= 1.0 / (n + 1) as f64 + 0.01, "moved {frac} with {} nodes", n + 1);
        }

        /// Removing a node moves only its keys, each to its next owner.
        #[test]
        fn removing_a_node_moves_only_its_keys(n in 3usize..40, gone in 0usize..40, seed in any::<u64>()) {
            let gone = gone % n;
            let all = nodes(n);
            let before = Ring::new(all.clone()).unwrap();
            let after = Ring::new(all.iter().filter(|x| x.id != format!("cache-{gone}")).cloned().collect()).unwrap();
            let gone_id = format!("cache-{gone}");
            for k in 0..20_000u64 {
                let h = mix(k ^ seed);
                let owners = before.owners(h, 2);
                let now = owner_id(&after, h);
                if owners[0].id == gone_id {
                    prop_assert_eq!(&now, &owners[1].id, "the key goes to its second owner");
                } else {
                    prop_assert_eq!(&now, &owners[0].id, "a key of another node must not move");
                }
            }
        }

        /// `owners` lists distinct nodes, the owner first.
        #[test]
        fn owners_are_distinct_and_start_with_the_owner(n in 1usize..30, r in 1usize..8, k in any::<u64>()) {
            let ring = Ring::new(nodes(n)).unwrap();
            let o = ring.owners(k, r);
            prop_assert_eq!(o.len(), r.min(n));
            prop_assert_eq!(&o[0].id, &owner_id(&ring, k));
            let mut ids: Vec<_> = o.iter().map(|x| x.id.clone()).collect();
            ids.sort();
            ids.dedup();
            prop_assert_eq!(ids.len(), r.min(n));
        }
    }
}
