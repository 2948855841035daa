//! The ring's placement figures: balance over 10 M page keys, keys moved by adding or
//! removing a node (and whether any moved between other nodes), weighted shares, and
//! lookup cost in ns — next to a Maglev lookup table (the anchor DESIGN.md cites) built
//! over the same nodes and keys in the same run. Prints a Markdown report.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use lakecache_common::ring::{Node, Ring, page_key_hash};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Page keys placed for the balance and movement figures.
    #[arg(long, default_value_t = 10_000_000)]
    pub keys: u64,
    /// Nodes in the fleet.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Lookups per timing run.
    #[arg(long, default_value_t = 1_000_000)]
    pub lookups: u64,
    /// Timing runs (median reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

fn fleet(n: usize) -> Vec<Node> {
    (0..n).map(|i| Node { id: format!("cache-{i}"), weight: 1.0 }).collect()
}

/// Page keys as the cache sees them: 64 pages per object.
fn key(i: u64) -> u64 {
    page_key_hash("bench", &format!("t.lance/data/{:08}.lance", i / 64), i % 64)
}

/// Maglev hashing (Eisenbud et al., NSDI 2016): a prime-sized lookup table filled by each
/// node's permutation in turn; lookup is one table index.
struct Maglev {
    table: Vec<u16>,
}

impl Maglev {
    const M: usize = 65_537;

    fn new(ids: &[String]) -> Maglev {
        let n = ids.len();
        let m = Self::M as u64;
        let perm: Vec<(u64, u64)> = ids
            .iter()
            .map(|id| {
                let offset = xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), 1) % m;
                let skip = xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), 2) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; n];
        let mut table = vec![u16::MAX; Self::M];
        let mut filled = 0;
        'fill: loop {
            for i in 0..n {
                let (offset, skip) = perm[i];
                let mut c = (offset + next[i] * skip) % m;
                while table[c as usize] != u16::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                table[c as usize] = i as u16;
                next[i] += 1;
                filled += 1;
                if filled == Self::M {
                    break 'fill;
                }
            }
        }
        Maglev { table }
    }

    fn owner(&self, key_hash: u64) -> u16 {
        self.table[(key_hash % Self::M as u64) as usize]
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Placement {
    max_over_avg: f64,
    min_over_avg: f64,
}

fn balance(counts: &[u64], keys: u64) -> Placement {
    let avg = keys as f64 / counts.len() as f64;
    Placement {
        max_over_avg: *counts.iter().max().unwrap_or(&0) as f64 / avg,
        min_over_avg: *counts.iter().min().unwrap_or(&0) as f64 / avg,
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.nodes >= 2 && a.nodes < u16::MAX as usize, "--nodes must be 2..65535");
    let ids: Vec<String> = fleet(a.nodes).into_iter().map(|n| n.id).collect();
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let ring = Ring::new(fleet(a.nodes))?;
    let ring_add = Ring::new(fleet(a.nodes + 1))?;
    let removed = a.nodes / 2;
    let ring_rm = Ring::new(fleet(a.nodes).into_iter().filter(|n| n.id != ids[removed]).collect())?;
    let ids_add: Vec<String> = fleet(a.nodes + 1).into_iter().map(|n| n.id).collect();
    let ids_rm: Vec<String> = ids.iter().filter(|s| **s != ids[removed]).cloned().collect();
    let mg = Maglev::new(&ids);
    let mg_add = Maglev::new(&ids_add);
    let mg_rm = Maglev::new(&ids_rm);

    let mut ring_counts = vec![0u64; a.nodes];
    let mut mg_counts = vec![0u64; a.nodes];
    let (mut ring_moved_add, mut ring_wrong_add, mut ring_moved_rm, mut ring_wrong_rm) =
        (0u64, 0u64, 0u64, 0u64);
    let (mut mg_moved_add, mut mg_wrong_add, mut mg_moved_rm, mut mg_wrong_rm) = (0u64, 0u64, 0u64, 0u64);
    let t0 = Instant::now();
    for i in 0..a.keys {
        let k = key(i);
        let o = ring.owner(k).map(|n| n.id.as_str()).unwrap_or("");
        ring_counts[index[o]] += 1;
        let oa = ring_add.owner(k).map(|n| n.id.as_str()).unwrap_or("");
        if oa != o {
            ring_moved_add += 1;
            ring_wrong_add += u64::from(oa != ids_add[a.nodes]);
        }
        let or = ring_rm.owner(k).map(|n| n.id.as_str()).unwrap_or("");
        if or != o {
            ring_moved_rm += 1;
            ring_wrong_rm += u64::from(o != ids[removed]);
        }
        let m = ids[mg.owner(k) as usize].as_str();
        mg_counts[index[m]] += 1;
        let ma = ids_add[mg_add.owner(k) as usize].as_str();
        if ma != m {
            mg_moved_add += 1;
            mg_wrong_add += u64::from(ma != ids_add[a.nodes]);
        }
        let mr = ids_rm[mg_rm.owner(k) as usize].as_str();
        if mr != m {
            mg_moved_rm += 1;
            mg_wrong_rm += u64::from(m != ids[removed]);
        }
    }
    let placement_s = t0.elapsed().as_secs_f64();
    let rb = balance(&ring_counts, a.keys);
    let mb = balance(&mg_counts, a.keys);

    // Weighted: one node of ten at weight 2 should own 2/11.
    let mut wf = fleet(10);
    wf[0].weight = 2.0;
    let wring = Ring::new(wf)?;
    let wkeys = a.keys.min(2_000_000);
    let heavy = (0..wkeys).filter(|&i| wring.owner(key(i)).is_some_and(|n| n.id == "cache-0")).count();
    let heavy_share = heavy as f64 / wkeys as f64;

    // Lookup cost; keys precomputed so only placement is timed.
    let ks: Vec<u64> = (0..a.lookups).map(key).collect();
    let mut timing = Vec::new();
    for n in [3usize, 10, 100] {
        let r = Ring::new(fleet(n))?;
        let m = Maglev::new(&fleet(n).into_iter().map(|x| x.id).collect::<Vec<_>>());
        let (mut ro, mut r3, mut mo) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..a.runs {
            let t = Instant::now();
            for &k in &ks {
                black_box(r.owner(black_box(k)));
            }
            ro.push(t.elapsed().as_nanos() as f64 / ks.len() as f64);
            let t = Instant::now();
            for &k in &ks {
                black_box(r.owners(black_box(k), 3));
            }
            r3.push(t.elapsed().as_nanos() as f64 / ks.len() as f64);
            let t = Instant::now();
            for &k in &ks {
                black_box(m.owner(black_box(k)));
            }
            mo.push(t.elapsed().as_nanos() as f64 / ks.len() as f64);
        }
        timing.push((n, median(ro), median(r3), median(mo)));
    }

    let pct = |x: u64| 100.0 * x as f64 / a.keys as f64;
    println!("### Placement: {} page keys over {} equal nodes", a.keys, a.nodes);
    println!();
    println!("| | lakecache ring (weighted rendezvous) | Maglev table (M = 65537) |");
    println!("|---|---|---|");
    println!("| max / avg load | **{:.4}** | {:.4} |", rb.max_over_avg, mb.max_over_avg);
    println!("| min / avg load | {:.4} | {:.4} |", rb.min_over_avg, mb.min_over_avg);
    let ideal_add = 100.0 / (a.nodes + 1) as f64;
    let ideal_rm = 100.0 / a.nodes as f64;
    println!(
        "| keys moved, add node {} (ideal {:.2}%) | **{:.3}%** | {:.3}% |",
        a.nodes + 1,
        ideal_add,
        pct(ring_moved_add),
        pct(mg_moved_add)
    );
    println!("| … of which not to the new node | **{}** | {} |", ring_wrong_add, mg_wrong_add);
    println!(
        "| keys moved, remove one node (ideal {:.2}%) | **{:.3}%** | {:.3}% |",
        ideal_rm,
        pct(ring_moved_rm),
        pct(mg_moved_rm)
    );
    println!("| … of which not from the removed node | **{}** | {} |", ring_wrong_rm, mg_wrong_rm);
    println!();
    println!(
        "Weighted: one node of ten at weight 2 owns {:.2}% of {} keys (ideal {:.2}%). Placement pass: {:.1} s.",
        100.0 * heavy_share,
        wkeys,
        100.0 * 2.0 / 11.0,
        placement_s
    );
    println!();
    println!("### Lookup cost (ns per lookup, median of {} runs of {} lookups)", a.runs, a.lookups);
    println!();
    println!("| nodes | ring `owner` | ring `owners(3)` | Maglev lookup | ring owner / Maglev |");
    println!("|---:|---:|---:|---:|---:|");
    for (n, ro, r3, mo) in timing {
        println!("| {n} | {ro:.1} | {r3:.1} | {mo:.1} | {:.1} |", ro / mo);
    }
    Ok(())
}
