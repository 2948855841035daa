//! `http-report`: turns the JSON lines of interleaved `http-range` runs into Markdown tables
//! (or, with `--half-max-rate`, into the offered load for the latency runs).
//!
//! Runs are matched by their `label` (server), `phase` and `round`: throughput comes from
//! `phase = "pair"` runs, latency from `phase = "latency"` runs. Each server's figure is the
//! median over its runs with min–max beside it; the comparison is the median of the ratios
//! of runs with the same round, so drift between rounds cancels.
//!
//! Several peers (`--peer a --peer b` or `--peer a,b`) give one row each, with the ratio
//! `ours/peer` on the peer's row. Runs that carry `node_cpu` (backends measured apart with
//! `http-range --node-pid`) add the backends' CPU and the CPU per request of front and
//! backends together.

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
    /// Label(s) of the peer(s) (denominators of the ratios); repeat or separate by commas.
    #[arg(long, value_delimiter = ',', default_values_t = [String::from("nginx")])]
    peer: Vec<String>,
    /// Print half the lowest of the servers' median closed-loop req/s for this read size
    /// (the offered load of the latency runs) instead of the tables.
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
        let mut lowest = f64::INFINITY;
        for label in std::iter::once(&args.ours).chain(&args.peer) {
            let Some(m) = median(&req_per_s(&runs, label, PHASE_PAIR, read_size)) else {
                bail!("no {PHASE_PAIR} runs of {label} at read size {read_size}");
            };
            lowest = lowest.min(m);
        }
        println!("{:.0}", lowest / 2.0);
        return Ok(());
    }
    let peers: Vec<&str> = args.peer.iter().map(String::as_str).collect();
    print!("{}", tables(&runs, &args.ours, &peers));
    Ok(())
}

fn tables(runs: &[RunReport], ours: &str, peers: &[&str]) -> String {
    let read_sizes: BTreeSet<u64> = runs.iter().map(|r| r.read_size).collect();
    // Backends measured apart: two more columns.
    let nodes = runs.iter().any(|r| r.node_cpu.is_some());
    let (node_head, node_rule) = if nodes { (" node CPU | CPU µs/req |", "---|---|") } else { ("", "") };
    let servers: Vec<&str> = std::iter::once(ours).chain(peers.iter().copied()).collect();
    let mut out = String::new();

    let _ = writeln!(out, "### Throughput at saturation (closed loop)\n");
    let ratio_head = match peers {
        [peer] => format!("{ours}/{peer}"),
        _ => format!("{ours}/this server"),
    };
    let _ = writeln!(
        out,
        "| read size | server | runs | median req/s | min–max req/s | median MiB/s | server CPU |{node_head} client CPU | {ratio_head} (median of pairwise ratios, min–max) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|{node_rule}---|---|");
    for &read_size in &read_sizes {
        for (n, &label) in servers.iter().enumerate() {
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
            // One peer: the ratio on our row (as it always was); several: on each peer's row.
            let ratio_of = match (n, peers) {
                (0, [peer]) => Some(*peer),
                (0, _) | (_, [_]) => None,
                _ => Some(label),
            };
            let ratio_cell = ratio_of
                .map(|peer| pairwise_ratios(runs, ours, peer, read_size))
                .filter(|ratios| !ratios.is_empty())
                .map_or_else(String::new, |ratios| {
                    format!(
                        "**{}** ({}–{}, {} pairs)",
                        f2(median(&ratios)),
                        f2(min(&ratios)),
                        f2(max(&ratios)),
                        ratios.len()
                    )
                });
            let node_cells = if nodes {
                let node_cpu: Vec<f64> = selected.iter().filter_map(|r| r.node_cpu).collect();
                let us_per_req: Vec<f64> = selected
                    .iter()
                    .filter(|r| r.req_per_s > 0.0 && (r.server_cpu.is_some() || r.node_cpu.is_some()))
                    .map(|r| (r.server_cpu.unwrap_or(0.0) + r.node_cpu.unwrap_or(0.0)) / r.req_per_s * 1e6)
                    .collect();
                format!(" {} | {} |", pct(median(&node_cpu)), f1(median(&us_per_req)))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {label} | {} | {} | {}–{} | {} | {} |{node_cells} {}{} | {ratio_cell} |",
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
    if nodes {
        let _ = writeln!(
            out,
            "\nNode CPU: the same for the backends behind the server (`http-range --node-pid`). CPU µs/req: \
             server and node CPU seconds per successful request, in microseconds (median over the runs)."
        );
    }

    let _ = writeln!(out, "\n### Latency at a fixed offered load\n");
    let _ = writeln!(
        out,
        "| read size | server | runs | offered req/s | achieved req/s | p50 µs | p99 µs | p999 µs | max µs | server CPU |{}",
        if nodes { " node CPU |" } else { "" }
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|{}", if nodes { "---|" } else { "" });
    for &read_size in &read_sizes {
        for &label in &servers {
            let selected = select(runs, label, PHASE_LATENCY, read_size);
            if selected.is_empty() {
                continue;
            }
            let col = |f: fn(&RunReport) -> f64| -> Vec<f64> { selected.iter().map(|r| f(r)).collect() };
            let offered: Vec<f64> = selected.iter().filter_map(|r| r.offered_rate).collect();
            let server_cpu: Vec<f64> = selected.iter().filter_map(|r| r.server_cpu).collect();
            let node_cell = if nodes {
                let node_cpu: Vec<f64> = selected.iter().filter_map(|r| r.node_cpu).collect();
                format!(" {} |", pct(median(&node_cpu)))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {label} | {} | {} | {} | {} | {} | {} | {} | {} |{node_cell}",
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

fn f1(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
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

    fn run(label: &str, round: u32, req_per_s: f64, node_cpu: Option<f64>) -> RunReport {
        serde_json::from_value(serde_json::json!({
            "label": label, "phase": PHASE_PAIR, "round": round, "target": "http://x",
            "pattern": "random", "read_size": 4096, "align": 1, "objects": 1, "object_size": 4096,
            "seed": 1, "concurrency": 1, "seconds": 1.0, "offered_rate": null,
            "requests": 1, "ok": 1, "errors": {"status": 0, "content": 0, "transport": 0, "timeout": 0},
            "elapsed_s": 1.0, "req_per_s": req_per_s, "mib_per_s": 1.0,
            "latency_us": {"p50": 1.0, "p90": 1.0, "p99": 1.0, "p999": 1.0, "max": 1.0, "mean": 1.0},
            "service_us": {"p50": 1.0, "p90": 1.0, "p99": 1.0, "p999": 1.0, "max": 1.0, "mean": 1.0},
            "connects": 1, "client_cpu": 0.5, "server_cpu": 0.5, "node_cpu": node_cpu,
        }))
        .unwrap_or_else(|e| unreachable!("test report: {e}"))
    }

    #[test]
    fn one_peer_keeps_the_ratio_on_our_row_and_no_node_columns() {
        let runs = [run("lakecache", 1, 100.0, None), run("nginx", 1, 200.0, None)];
        let out = tables(&runs, "lakecache", &["nginx"]);
        assert!(out.contains("| server CPU | client CPU | lakecache/nginx (median"), "{out}");
        assert!(
            out.contains(
                "| 4 KiB | lakecache | 1 | 100 | 100–100 | 1 | 50% | 50% | **0.50** (0.50–0.50, 1 pairs) |"
            ),
            "{out}"
        );
        assert!(out.contains("| 4 KiB | nginx | 1 | 200 | 200–200 | 1 | 50% | 50% |  |"), "{out}");
        assert!(!out.contains("node CPU"), "{out}");
    }

    #[test]
    fn several_peers_get_a_ratio_each_and_node_cpu_columns() {
        let runs = [
            run("router", 1, 100.0, Some(0.5)),
            run("direct", 1, 400.0, Some(1.0)),
            run("haproxy", 1, 50.0, Some(0.25)),
        ];
        let out = tables(&runs, "router", &["direct", "haproxy"]);
        assert!(
            out.contains("| server CPU | node CPU | CPU µs/req | client CPU | router/this server (median"),
            "{out}"
        );
        // (0.5 + 0.5) / 100 req/s = 10000 µs of CPU per request.
        assert!(
            out.contains("| 4 KiB | router | 1 | 100 | 100–100 | 1 | 50% | 50% | 10000.0 | 50% |  |"),
            "{out}"
        );
        assert!(out.contains("| 4 KiB | direct | 1 | 400 | 400–400 | 1 | 50% | 100% | 3750.0 | 50% | **0.25** (0.25–0.25, 1 pairs) |"), "{out}");
        assert!(out.contains("| 4 KiB | haproxy | 1 | 50 | 50–50 | 1 | 50% | 25% | 15000.0 | 50% | **2.00** (2.00–2.00, 1 pairs) |"), "{out}");
    }

    #[test]
    fn sizes_are_named_in_binary_units() {
        assert_eq!(size_name(4096), "4 KiB");
        assert_eq!(size_name(65536), "64 KiB");
        assert_eq!(size_name(1 << 20), "1 MiB");
        assert_eq!(size_name(1000), "1000 B");
    }
}
