//! `pagestore`: the disk tier alone — random small reads at fixed queue depths — so it can be
//! set side by side with `fio` on the same file (`scripts/bench-pagestore.sh`).
//!
//! The store is opened (created and filled on first use, recovered afterwards), every slot
//! holds one full page, then for each depth QD, QD tasks read `--read-size` bytes at random
//! aligned offsets of random pages in a closed loop for `--seconds`. Latency is measured per
//! read around `DiskTier::read` (buffer, submit, completion, crc check, copy out) into an HDR
//! histogram.
//!
//! Output: one JSON line per phase/run on stdout ([`FillReport`], [`RunReport`]); a
//! human-readable line per run on stderr.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use lakecache_pagestore::{DiskTier, DiskTierConfig, IoEngineChoice, ObjectId, PageKey};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Page file (created and filled on first use; kept afterwards so fio can read it too).
    #[arg(long, default_value = "/var/tmp/lakecache-bench/pages.bin")]
    file: PathBuf,
    /// Size of the page file (binary units: 2GiB, 512MiB, 4096).
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    size: u64,
    /// Page size of the store.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    page_size: u64,
    /// I/O engine: auto, uring or pread.
    #[arg(long, default_value = "uring", value_parser = parse_engine)]
    engine: IoEngineChoice,
    /// Queue depths to measure (concurrent reader tasks).
    #[arg(long, value_delimiter = ',', default_value = "1,32,128")]
    depths: Vec<usize>,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Unmeasured seconds before each run.
    #[arg(long, default_value_t = 1.0)]
    warmup_seconds: f64,
    /// Bytes per read (offsets are multiples of 4096 within a page).
    #[arg(long, default_value = "4096", value_parser = parse_size)]
    read_size: u64,
    /// Runs per depth (rounds over all depths).
    #[arg(long, default_value_t = 1)]
    pairs: usize,
    /// io_uring rings; 0 = one per usable core.
    #[arg(long, default_value_t = 0)]
    rings: usize,
    /// In-flight I/Os per ring; default: the largest depth (at least 32).
    #[arg(long)]
    queue_depth: Option<u32>,
    /// Slot-sized registered buffers per ring (used by the fill's writes).
    #[arg(long, default_value_t = 8)]
    registered_buffers: usize,
    /// Concurrent page writes while filling.
    #[arg(long, default_value_t = 8)]
    fill_concurrency: usize,
    /// Fill (or recover) the store and exit.
    #[arg(long)]
    fill_only: bool,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// One JSON line after the fill.
#[derive(Debug, Serialize)]
pub struct FillReport {
    bench: &'static str,
    phase: &'static str,
    engine: &'static str,
    file: String,
    pages: usize,
    written: usize,
    open_seconds: f64,
    fill_seconds: f64,
    fill_mib_per_s: f64,
}

/// One JSON line per measured run.
#[derive(Debug, Serialize)]
pub struct RunReport {
    bench: &'static str,
    phase: &'static str,
    engine: &'static str,
    depth: usize,
    round: usize,
    read_size: u64,
    seconds: f64,
    reads: u64,
    iops: f64,
    mib_per_s: f64,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    misses: u64,
    errors: u64,
}

fn parse_engine(s: &str) -> Result<IoEngineChoice, String> {
    match s.to_ascii_lowercase().as_str() {
        "auto" => Ok(IoEngineChoice::Auto),
        "uring" | "io_uring" => Ok(IoEngineChoice::Uring),
        "pread" => Ok(IoEngineChoice::Pread),
        other => Err(format!("unknown engine {other:?} (auto, uring, pread)")),
    }
}

/// `4096`, `4k`, `4KiB`, `1MiB`, `2GiB`, `2G`: all binary multiples.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("bad size unit in {s:?}")),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("size {s:?} overflows"))
}

fn page_object(i: usize) -> Arc<ObjectId> {
    Arc::new(ObjectId::new("bench", format!("pagestore/{i:08}"), "v1"))
}

/// Deterministic, incompressible page contents (xorshift64*).
fn page_bytes(seed: u64, i: usize, len: usize) -> Bytes {
    let mut x = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

fn engine_label(e: IoEngineChoice) -> &'static str {
    match e {
        IoEngineChoice::Auto => "auto",
        IoEngineChoice::Uring => "uring",
        IoEngineChoice::Pread => "pread",
        IoEngineChoice::Noop => "noop",
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(!args.depths.is_empty() && args.depths.iter().all(|d| *d > 0), "--depths must be positive");
    ensure!(args.read_size > 0 && args.read_size <= args.page_size, "--read-size must be 1..=page size");
    ensure!(args.seconds >= 0.0 && args.warmup_seconds >= 0.0, "durations must be non-negative");
    let max_depth = args.depths.iter().copied().max().unwrap_or(1);
    let queue_depth = args.queue_depth.unwrap_or_else(|| u32::try_from(max_depth.max(32)).unwrap_or(4096));
    let cfg = DiskTierConfig {
        path: args.file.clone(),
        capacity_bytes: args.size,
        page_size_bytes: args.page_size,
        io_engine: args.engine,
        rings: args.rings,
        queue_depth,
        registered_buffers: args.registered_buffers,
    };
    let opened = Instant::now();
    let disk = Arc::new(
        DiskTier::open(cfg).await.with_context(|| format!("opening page store {}", args.file.display()))?,
    );
    let open_seconds = opened.elapsed().as_secs_f64();
    let engine = disk.engine_name();
    if args.engine != IoEngineChoice::Auto && engine != engine_label(args.engine) {
        bail!("asked for engine {} but got {engine}", engine_label(args.engine));
    }
    let pages = usize::try_from(disk.capacity_bytes() / disk.page_size_bytes())?;
    let page_len = usize::try_from(disk.page_size_bytes())?;
    let objects: Vec<Arc<ObjectId>> = (0..pages).map(page_object).collect();
    let keys: Arc<Vec<PageKey>> = Arc::new(objects.iter().map(|o| PageKey::new(o, 0)).collect());

    // Fill every slot with one full page (skipping pages recovered from an earlier run).
    let fill_start = Instant::now();
    let seed = args.seed;
    let missing: Vec<usize> = (0..pages).filter(|&i| !disk.contains(&keys[i])).collect();
    let written = missing.len();
    let mut writes = futures::stream::iter(missing)
        .map(|i| {
            let (disk, id) = (Arc::clone(&disk), Arc::clone(&objects[i]));
            async move {
                let data = page_bytes(seed, i, page_len);
                disk.write(&id, 0, data, false).await.with_context(|| format!("writing page {i}"))
            }
        })
        .buffer_unordered(args.fill_concurrency.max(1));
    while let Some(r) = writes.next().await {
        r?;
    }
    drop(writes);
    let fill_seconds = fill_start.elapsed().as_secs_f64();
    ensure!(disk.page_count() == pages, "store holds {} of {pages} pages after the fill", disk.page_count());
    let fill = FillReport {
        bench: "pagestore",
        phase: "fill",
        engine,
        file: args.file.display().to_string(),
        pages,
        written,
        open_seconds,
        fill_seconds,
        fill_mib_per_s: (written * page_len) as f64 / (1 << 20) as f64 / fill_seconds.max(1e-9),
    };
    println!("{}", serde_json::to_string(&fill)?);
    eprintln!(
        "pagestore: {engine}, {pages} pages of {page_len} B, opened in {open_seconds:.2}s, wrote {written} in {fill_seconds:.2}s"
    );
    // A spot check that the bytes read back are the bytes written.
    for i in [0, pages / 2, pages - 1] {
        let got = disk.read(&keys[i], 0, page_len).await?.context("filled page missing")?;
        ensure!(got == page_bytes(seed, i, page_len), "page {i} reads back wrong bytes");
    }
    if args.fill_only {
        disk.close().await;
        return Ok(());
    }

    let read_size = usize::try_from(args.read_size)?;
    for round in 0..args.pairs.max(1) {
        for &depth in &args.depths {
            if args.warmup_seconds > 0.0 {
                measure(&disk, &keys, depth, read_size, page_len, args.warmup_seconds, seed ^ 0xA5).await?;
            }
            let m =
                measure(&disk, &keys, depth, read_size, page_len, args.seconds, seed + round as u64).await?;
            let q = |p: f64| m.hist.value_at_quantile(p) as f64 / 1000.0;
            let report = RunReport {
                bench: "pagestore",
                phase: "run",
                engine,
                depth,
                round,
                read_size: args.read_size,
                seconds: m.elapsed,
                reads: m.reads,
                iops: m.reads as f64 / m.elapsed.max(1e-9),
                mib_per_s: (m.reads as f64 * read_size as f64) / (1 << 20) as f64 / m.elapsed.max(1e-9),
                mean_us: m.hist.mean() / 1000.0,
                p50_us: q(0.5),
                p99_us: q(0.99),
                p999_us: q(0.999),
                max_us: m.hist.max() as f64 / 1000.0,
                misses: m.misses,
                errors: m.errors,
            };
            println!("{}", serde_json::to_string(&report)?);
            eprintln!(
                "pagestore {engine} qd={depth:<4} round={round} iops={:>10.0} p50={:>8.1}us p99={:>8.1}us misses={} errors={}",
                report.iops, report.p50_us, report.p99_us, report.misses, report.errors
            );
            ensure!(m.errors == 0 && m.misses == 0, "reads failed during the run");
        }
    }
    disk.close().await;
    Ok(())
}

struct Measured {
    hist: Histogram<u64>,
    reads: u64,
    misses: u64,
    errors: u64,
    elapsed: f64,
}

async fn measure(
    disk: &Arc<DiskTier>,
    keys: &Arc<Vec<PageKey>>,
    depth: usize,
    read_size: usize,
    page_len: usize,
    seconds: f64,
    seed: u64,
) -> anyhow::Result<Measured> {
    let duration = Duration::from_secs_f64(seconds);
    let blocks = (page_len - read_size) / 4096 + 1;
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(depth);
    for t in 0..depth {
        let (disk, keys) = (Arc::clone(disk), Arc::clone(keys));
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(t as u64));
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
            let (mut reads, mut misses, mut errors) = (0u64, 0u64, 0u64);
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let key = &keys[rng.random_range(0..keys.len())];
                let offset = rng.random_range(0..blocks) * 4096;
                match disk.read(key, offset, read_size).await {
                    Ok(Some(b)) if b.len() == read_size => {}
                    Ok(_) => misses += 1,
                    Err(_) => errors += 1,
                }
                hist.saturating_record(now.elapsed().as_nanos() as u64);
                reads += 1;
            }
            anyhow::Ok((hist, reads, misses, errors))
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let (mut reads, mut misses, mut errors) = (0, 0, 0);
    for t in tasks {
        let (h, r, m, e) = t.await??;
        total.add(&h)?;
        reads += r;
        misses += m;
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(Measured { hist: total, reads, misses, errors, elapsed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("2XB").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(parse_engine("pread"), Ok(IoEngineChoice::Pread));
        assert!(parse_engine("spdk").is_err());
    }
}
