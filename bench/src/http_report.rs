//! `http-report`: turns the JSON lines of interleaved `http-range` runs into Markdown tables
//! (or, with `--half-max-rate`, into the offered load for the latency runs).
//!
//! Runs are matched by their `label` (server), `phase` and `round`: throughput comes from
//! `phase = "pair"` runs, latency from `phase = "latency"` runs. Each server's figure is the
//! median over its runs with min–max beside it; the comparison is the median of the ratios
//! of runs with the same round, so drift between rounds cancels.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::http_range::RunReport;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON lines written by `http-range`.
    #[arg(long)]
    input: PathBuf,
    /// Label of our server (numerator of the ratios).
    #[arg(long, default_value = "lakecache")]
    ours: String,
    /// Label of the peer (denominator of the ratios).
    #[arg(long, default_value = "nginx")]
    peer: String,
    /// Print half the lower of the two servers' median closed-loop req/s for this read
    /// size (the offered load of the latency runs) instead of the tables.
    #[arg(long)]
    half_max_rate: Option<u64>,
}

const PHASE_PAIR: &str = "pair";
const PHASE_LATENCY: &str = "latency";
/// Client CPU (cores) from which a closed-loop run counts as limited by the load generator.
const CLIENT_BOUND_CPU: f64 = 0.9;

pub fn run(args: Args) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let runs = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(n, line)| serde_json::from_str::<RunReport>(line).with_context(|| format!("line {}", n + 1)))
        .collect::<anyhow::Result<Vec<_>>>()?;

    if let Some(read_size) = args.half_max_rate {
        let ours = median(&req_per_s(&runs, &args.ours, PHASE_PAIR, read_size));
        let peer = median(&req_per_s(&runs, &args.peer, PHASE_PAIR, read_size));
        let (Some(ours), Some(peer)) = (ours, peer) else {
            bail!("no {PHASE_PAIR} runs of both {} and {} at read size {read_size}", args.ours, args.peer);
        };
        println!("{:.0}", ours.min(peer) / 2.0);
        return Ok(());
    }
    print!("{}", tables(&runs, &args.ours, &args.peer));
    Ok(())
}

fn tables(runs: &[RunReport], ours: &str, peer: &str) -> String {
    let read_sizes: BTreeSet<u64> = runs.iter().map(|r| r.read_size).collect();
    let mut out = String::new();

    let _ = writeln!(out, "### Throughput at saturation (closed loop)\n");
    let _ = writeln!(
        out,
        "| read size | server | runs | median req/s | min–max req/s | median MiB/s | server CPU | client CPU | {ours}/{peer} (median of pairwise ratios, min–max) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for &read_size in &read_sizes {
        let ratios = pairwise_ratios(runs, ours, peer, read_size);
        for (n, label) in [ours, peer].into_iter().enumerate() {
            let selected = select(runs, label, PHASE_PAIR, read_size);
            if selected.is_empty() {
                continue;
            }
            let rps: Vec<f64> = selected.iter().map(|r| r.req_per_s).collect();
            let mib: Vec<f64> = selected.iter().map(|r| r.mib_per_s).collect();
            let server_cpu: Vec<f64> = selected.iter().filter_map(|r| r.server_cpu).collect();
            let client_cpu: Vec<f64> = selected.iter().filter_map(|r| r.client_cpu).collect();
            let client_cpu_median = median(&client_cpu);
            // A load generator near a full core measures itself, not the server.
            let client_bound = client_cpu_median.is_some_and(|c| c >= CLIENT_BOUND_CPU);
            let ratio_cell = if n == 0 && !ratios.is_empty() {
                format!(
                    "**{}** ({}–{}, {} pairs)",
                    f2(median(&ratios)),
                    f2(min(&ratios)),
                    f2(max(&ratios)),
                    ratios.len()
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {label} | {} | {} | {}–{} | {} | {} | {}{} | {ratio_cell} |",
                size_name(read_size),
                selected.len(),
                f0(median(&rps)),
                f0(min(&rps)),
                f0(max(&rps)),
                f0(median(&mib)),
                pct(median(&server_cpu)),
                pct(client_cpu_median),
                if client_bound { " ⚠" } else { "" },
            );
        }
    }
    let _ = writeln!(
        out,
        "\nServer and client CPU: CPU seconds per second of the run (100% = one core). ⚠: the load generator \
         used at least {:.0}% of its core, so that server's figure is a lower bound and a ratio with it is \
         not the servers' alone.",
        CLIENT_BOUND_CPU * 100.0
    );

    let _ = writeln!(out, "\n### Latency at a fixed offered load\n");
    let _ = writeln!(
        out,
        "| read size | server | runs | offered req/s | achieved req/s | p50 µs | p99 µs | p999 µs | max µs | server CPU |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for &read_size in &read_sizes {
        for label in [ours, peer] {
            let selected = select(runs, label, PHASE_LATENCY, read_size);
            if selected.is_empty() {
                continue;
            }
            let col = |f: fn(&RunReport) -> f64| -> Vec<f64> { selected.iter().map(|r| f(r)).collect() };
            let offered: Vec<f64> = selected.iter().filter_map(|r| r.offered_rate).collect();
            let server_cpu: Vec<f64> = selected.iter().filter_map(|r| r.server_cpu).collect();
            let _ = writeln!(
                out,
                "| {} | {label} | {} | {} | {} | {} | {} | {} | {} | {} |",
                size_name(read_size),
                selected.len(),
                f0(median(&offered)),
                f0(median(&col(|r| r.req_per_s))),
                spread(&col(|r| r.latency_us.p50)),
                spread(&col(|r| r.latency_us.p99)),
                spread(&col(|r| r.latency_us.p999)),
                f0(max(&col(|r| r.latency_us.max))),
                pct(median(&server_cpu)),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nLatency cells: median over the runs (min–max); latency counts from when each request was due, so queueing is included. `max µs` is the largest over all runs."
    );
    out
}

fn select<'a>(runs: &'a [RunReport], label: &str, phase: &str, read_size: u64) -> Vec<&'a RunReport> {
    runs.iter()
        .filter(|r| {
            r.label.as_deref() == Some(label) && r.phase.as_deref() == Some(phase) && r.read_size == read_size
        })
        .collect()
}

fn req_per_s(runs: &[RunReport], label: &str, phase: &str, read_size: u64) -> Vec<f64> {
    select(runs, label, phase, read_size).iter().map(|r| r.req_per_s).collect()
}

/// `ours / peer` for every round both ran.
fn pairwise_ratios(runs: &[RunReport], ours: &str, peer: &str, read_size: u64) -> Vec<f64> {
    let peer_runs = select(runs, peer, PHASE_PAIR, read_size);
    select(runs, ours, PHASE_PAIR, read_size)
        .iter()
        .filter_map(|a| {
            let b = peer_runs.iter().find(|b| b.round.is_some() && b.round == a.round)?;
            (b.req_per_s > 0.0).then(|| a.req_per_s / b.req_per_s)
        })
        .collect()
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] })
}

fn min(values: &[f64]) -> Option<f64> {
    values.iter().copied().filter(|x| x.is_finite()).min_by(f64::total_cmp)
}

fn max(values: &[f64]) -> Option<f64> {
    values.iter().copied().filter(|x| x.is_finite()).max_by(f64::total_cmp)
}

fn f0(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"))
}

fn f2(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{:.0}%", v * 100.0))
}

fn spread(values: &[f64]) -> String {
    format!("{} ({}–{})", f0(median(values)), f0(min(values)), f0(max(values)))
}

fn size_name(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn sizes_are_named_in_binary_units() {
        assert_eq!(size_name(4096), "4 KiB");
        assert_eq!(size_name(65536), "64 KiB");
        assert_eq!(size_name(1 << 20), "1 MiB");
        assert_eq!(size_name(1000), "1000 B");
    }
}
