#!/usr/bin/env python3
"""A picture of one run of the fleet, for people who would rather look than read.

Starts the bench origin (with a per-request delay standing in for S3), two cache nodes and
the router (release binaries), and a real Prometheus scraping them every second with the
rules of ops/prometheus/alerts.yml; drives `lakecache-bench http-range` through the router:
a closed-loop phase from a cold cache (the hit ratio climbs, and QPS with it), then a phase
at a fixed offered load (half the warm closed-loop rate). Then it reads the run back from
Prometheus and renders:

  <prefix>-qps.png         client requests/s and origin GETs/s over time
  <prefix>-hit-ratio.png   fleet and per-tier hit ratio over time
  <prefix>-latency.png     latency CDFs during the fixed-load phase: the client's view
                           (router), the cache nodes' S3 answers, the page store (µs)
                           and the origin
  <prefix>.md              the setup, the figures and the load generator's percentiles

This is a picture of one run, not a comparison: performance claims live in the side-by-side
benchmarks (scripts/bench-router.sh, bench-http.sh, bench-search.sh).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ADMIN = "fleet-report-admin"
NODE_KEY = ("fleet-report", "fleet-report-secret")
FLEET_SECRET = "fleet-report-fleet-secret"


def log(msg: str):
    print(f"[fleet-report {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited during start-up (rc {proc.returncode})")
        time.sleep(0.1)
    raise SystemExit(f"{what} did not answer {url} within {timeout:.0f} s")


class Procs:
    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, args, log_path: Path, cwd: Path | None = None, stdout=None) -> subprocess.Popen:
        f = open(log_path, "wb")
        p = subprocess.Popen([str(a) for a in args], stdout=stdout or f, stderr=f, cwd=cwd)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def prom(url: str, path: str, **params) -> dict:
    q = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}{path}?{q}", timeout=30) as r:
        out = json.loads(r.read())
    if out.get("status") != "success":
        raise SystemExit(f"Prometheus: {out}")
    return out["data"]


def series(url: str, expr: str, start: float, end: float) -> tuple[list[float], list[float]]:
    """One series over [start, end] at 1 s steps (the first result; empty if none)."""
    res = prom(url, "/api/v1/query_range", query=expr, start=start, end=end, step=1)["result"]
    if not res:
        return [], []
    pts = [(float(t), float(v)) for t, v in res[0]["values"] if v not in ("NaN", "+Inf", "-Inf")]
    return [t - start for t, _ in pts], [v for _, v in pts]


def cdf(url: str, metric: str, at: float, window_s: int) -> list[tuple[float, float]]:
    """(bucket bound, fraction at or below) from a histogram's bucket increase over the
    window ending at `at`, summed over every series."""
    res = prom(url, "/api/v1/query", query=f"sum by (le) (increase({metric}_bucket[{window_s}s]))", time=at)["result"]
    pts = sorted((float(r["metric"]["le"]), float(r["value"][1])) for r in res)
    if not pts or pts[-1][1] <= 0:
        return []
    total = pts[-1][1]
    return [(le, c / total) for le, c in pts if le != float("inf")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-dir", type=Path, default=Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/lakecache/target")))
    ap.add_argument("--objects", type=int, default=256)
    ap.add_argument("--object-size", type=int, default=8 << 20)
    ap.add_argument("--read-size", type=int, default=256 << 10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--delay-ms", type=int, default=30, help="origin delay per request (default 30)")
    ap.add_argument("--memory", default="64 MiB", help="per cache node (default 64 MiB: the hot set spills to the page store)")
    ap.add_argument("--disk", default="2 GiB", help="page store per cache node (default 2 GiB)")
    ap.add_argument("--page-size", default="1 MiB")
    ap.add_argument("--warm-seconds", type=float, default=60, help="closed-loop phase from a cold cache (default 60)")
    ap.add_argument("--fixed-seconds", type=float, default=30, help="fixed-load phase (default 30)")
    ap.add_argument("--out-dir", type=Path, default=REPO / "bench/results")
    ap.add_argument("--prefix", default="fleet")
    ap.add_argument("--keep-work", action="store_true")
    a = ap.parse_args()

    rel = a.target_dir / "release"
    bins = {n: rel / n for n in ("cache-node", "router", "lakecache-bench")}
    for n, p in bins.items():
        if not p.exists():
            raise SystemExit(f"missing {p}: scripts/bench-fleet.sh builds it")
    prometheus = shutil.which("prometheus")
    if not prometheus:
        raise SystemExit("prometheus is not installed: run scripts/setup.sh")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    work = Path(tempfile.mkdtemp(prefix="lakecache-fleet-report."))
    procs = Procs()
    ok = False
    try:
        log(f"work dir {work}; generating {a.objects} objects of {a.object_size} bytes")
        subprocess.run([bins["lakecache-bench"], "gen-objects", "--root", work / "origin", "--bucket", "bench",
                        "--count", str(a.objects), "--size", str(a.object_size), "--seed", "42"], check=True)
        origin_out = work / "origin.out"
        with open(origin_out, "wb") as out:
            op = procs.start([bins["lakecache-bench"], "origin", "--root", work / "origin", "--listen", "127.0.0.1:0",
                              "--delay-ms", str(a.delay_ms)], work / "origin.log", stdout=out)
        port = None
        for _ in range(100):
            text = origin_out.read_text()
            if "listening on http://127.0.0.1:" in text:
                port = int(text.split("listening on http://127.0.0.1:")[1].split()[0])
                break
            time.sleep(0.1)
        if port is None:
            raise SystemExit("the bench origin did not report its port")
        origin = f"http://127.0.0.1:{port}"
        wait_http(f"{origin}/bench/obj-00000", op, "origin")

        nodes = []
        for i in (1, 2):
            d = work / f"cache-{i}"
            d.mkdir()
            p = free_port()
            cfg = d / "cache-node.toml"
            cfg.write_text(f"""[server]
listen = "127.0.0.1:{p}"
[[auth.keys]]
access_key = "{NODE_KEY[0]}"
secret_key = "{NODE_KEY[1]}"
[admin]
token = "{ADMIN}"
[fleet]
secret = "{FLEET_SECRET}"
[cache]
page_size = "{a.page_size}"
memory_capacity = "{a.memory}"
multipart_dir = "{d}/multipart"
[disk]
path = "{d}/pages.bin"
capacity = "{a.disk}"
[pins]
state_file = "{d}/pins.json"
[[origins]]
bucket = "*"
kind = "s3"
endpoint = "{origin}"
region = "us-east-1"
allow_http = true
anonymous = true
""")
            proc = procs.start([bins["cache-node"], "--config", cfg], d / "cache-node.log", cwd=d)
            wait_http(f"http://127.0.0.1:{p}/healthz", proc, f"cache-{i}")
            nodes.append((f"cache-{i}", p))
        rport = free_port()
        rcfg = work / "router.toml"
        rcfg.write_text(f"""[server]
listen = "127.0.0.1:{rport}"
[auth]
anonymous = true
[fleet]
page_size = "{a.page_size}"
secret = "{FLEET_SECRET}"
node_admin_token = "{ADMIN}"
[fleet.node_key]
access_key = "{NODE_KEY[0]}"
secret_key = "{NODE_KEY[1]}"
""" + "".join(f'[[nodes]]\nid = "{n}"\nurl = "http://127.0.0.1:{p}"\n' for n, p in nodes))
        router = f"http://127.0.0.1:{rport}"
        rp = procs.start([bins["router"], "--config", rcfg], work / "router.log")
        wait_http(f"{router}/healthz", rp, "router")

        # Prometheus: ops/prometheus/prometheus-local.yml with these ports, scraping every second.
        pcfg = yaml.safe_load((REPO / "ops/prometheus/prometheus-local.yml").read_text())
        pcfg["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
        pcfg["rule_files"] = [str(REPO / "ops/prometheus/alerts.yml")]
        jobs = {j["job_name"]: j for j in pcfg["scrape_configs"]}
        jobs["lakecache-router"]["static_configs"] = [{"targets": [f"127.0.0.1:{rport}"]}]
        jobs["lakecache-cache-node"]["static_configs"] = [
            {"targets": [f"127.0.0.1:{p}"], "labels": {"node": n}} for n, p in nodes]
        pcfg["scrape_configs"] = [jobs["lakecache-router"], jobs["lakecache-cache-node"]]
        (work / "prometheus.yml").write_text(yaml.safe_dump(pcfg))
        pport = free_port()
        purl = f"http://127.0.0.1:{pport}"
        pp = procs.start([prometheus, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
                          f"--web.listen-address=127.0.0.1:{pport}"], work / "prometheus.log")
        wait_http(f"{purl}/-/ready", pp, "prometheus")
        time.sleep(3)

        def load(phase: str, seconds: float, rate: float | None = None) -> dict:
            args = [bins["lakecache-bench"], "http-range", "--target", router, "--bucket", "bench",
                    "--objects", str(a.objects), "--object-size", str(a.object_size), "--seed", "42",
                    "--read-size", str(a.read_size), "--concurrency", str(a.concurrency), "--seconds", str(seconds),
                    "--label", "router", "--phase", phase]
            if rate:
                args += ["--rate", f"{rate:.1f}"]
            out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
            return json.loads(out.strip().splitlines()[-1])

        t0 = time.time()
        log(f"phase 1: closed loop from a cold cache, {a.warm_seconds:.0f} s")
        warm = load("warm", a.warm_seconds)
        t1 = time.time()
        # The rate of the last stretch of the warm phase (warm caches), from Prometheus.
        last = prom(purl, "/api/v1/query", query='sum(rate(router_s3_requests_total{method="GET"}[10s]))', time=t1)["result"]
        warm_rate = float(last[0]["value"][1]) if last else warm["req_per_s"]
        rate = max(1.0, warm_rate / 2)
        log(f"phase 2: fixed load {rate:.0f} req/s (half the warm rate {warm_rate:.0f}), {a.fixed_seconds:.0f} s")
        fixed = load("fixed", a.fixed_seconds, rate)
        t2 = time.time()
        time.sleep(3)
        if warm["errors"] and sum(warm["errors"].values()) or fixed["errors"] and sum(fixed["errors"].values()):
            raise SystemExit(f"the load generator saw errors: warm {warm['errors']}, fixed {fixed['errors']}")

        # --- read the run back -----------------------------------------------------------
        W = "3s"
        qps = series(purl, f'sum(rate(router_s3_requests_total{{method="GET"}}[{W}]))', t0, t2)
        ogets = series(purl, f'sum(rate(cachenode_origin_requests_total{{op="get"}}[{W}]))', t0, t2)
        oheads = series(purl, f'sum(rate(cachenode_origin_requests_total{{op="head"}}[{W}]))', t0, t2)
        hit = series(purl, f'sum(rate(cachenode_cache_hits_total[{W}])) / (sum(rate(cachenode_cache_hits_total{{tier="memory"}}[{W}])) + sum(rate(cachenode_cache_misses_total{{tier="memory"}}[{W}])))', t0, t2)
        tiers = {t: series(purl, f'sum(rate(cachenode_cache_hits_total{{tier="{t}"}}[{W}])) / (sum(rate(cachenode_cache_hits_total{{tier="{t}"}}[{W}])) + sum(rate(cachenode_cache_misses_total{{tier="{t}"}}[{W}])))', t0, t2) for t in ("memory", "disk")}
        win = max(5, int(t2 - t1))
        cdfs = {
            "router, to response headers": cdf(purl, "router_s3_request_duration_milliseconds", t2, win),
            "cache node, to response headers": cdf(purl, "cachenode_s3_request_duration_milliseconds", t2, win),
            "origin request (cache node to origin)": cdf(purl, "cachenode_origin_request_duration_milliseconds", t2, win),
        }
        ps_cdf = cdf(purl, "cachenode_pagestore_read_duration_microseconds", t2, win)

        a.out_dir.mkdir(parents=True, exist_ok=True)
        png = {k: a.out_dir / f"{a.prefix}-{k}.png" for k in ("qps", "hit-ratio", "latency")}
        split = t1 - t0

        fig, ax = plt.subplots(figsize=(9, 4.5))
        ax.plot(*qps, label="client GETs/s through the router")
        ax.plot(*ogets, label="origin GETs/s (cache nodes)")
        ax.plot(*oheads, label="origin HEADs/s (metadata revalidation)")
        ax.axvline(split, color="grey", ls="--", lw=1)
        ax.text(split, ax.get_ylim()[1] * 0.95, " fixed load", color="grey", va="top")
        ax.set_xlabel("seconds since the start (cold cache)")
        ax.set_ylabel("requests / s")
        ax.set_title(f"QPS over time: {a.read_size >> 10} KiB ranges, {a.concurrency} connections, origin +{a.delay_ms} ms")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(png["qps"], dpi=110)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(9, 4.5))
        ax.plot(*hit, label="fleet (pages not read from the origin)", lw=2)
        for t, s in tiers.items():
            ax.plot(*s, label=f"{t} tier", lw=1)
        ax.axvline(split, color="grey", ls="--", lw=1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("seconds since the start (cold cache)")
        ax.set_ylabel("hit ratio (3 s window)")
        ax.set_title(f"Hit ratio over time: hot set {a.objects * a.object_size >> 20} MiB, memory {a.memory} x 2, page store {a.disk} x 2")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(png["hit-ratio"], dpi=110)
        plt.close(fig)

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for name, pts in cdfs.items():
            if pts:
                ax1.step([p[0] for p in pts], [p[1] for p in pts], where="post", label=name)
        # The load generator's own percentiles: request sent to last byte checked.
        lg = fixed["latency_us"]
        ax1.plot([lg[k] / 1e3 for k in ("p50", "p90", "p99", "p999")], [0.5, 0.9, 0.99, 0.999], "ko",
                 label="client, whole response (load generator p50/p90/p99/p99.9)")
        ax1.set_xscale("log")
        ax1.set_xlabel("ms (histogram bucket bound)")
        ax1.set_ylabel("fraction of requests at or below")
        ax1.set_title(f"Latency CDF at {rate:.0f} req/s (fixed load)")
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3)
        if ps_cdf:
            ax2.step([p[0] for p in ps_cdf], [p[1] for p in ps_cdf], where="post", color="C3")
        ax2.set_xscale("log")
        ax2.set_xlabel("µs (histogram bucket bound)")
        ax2.set_title("Page-store reads (io_uring / pread)")
        ax2.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(png["latency"], dpi=110)
        plt.close(fig)

        def pct_row(name, r):
            l = r["latency_us"]
            return (f"| {name} | {r['offered_rate'] or 'closed loop'} | {r['req_per_s']:,.1f} | {r['mib_per_s']:,.1f} | "
                    f"{l['p50'] / 1e3:,.2f} | {l['p90'] / 1e3:,.2f} | {l['p99'] / 1e3:,.2f} | {l['p999'] / 1e3:,.2f} | {r['ok']} |")

        def first_last(s):
            return (f"{s[1][0]:.2f}", f"{s[1][-1]:.2f}") if s[1] else ("—", "—")

        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        mem = subprocess.run("free -h | awk '/^Mem:/ {print $2}'", shell=True, capture_output=True, text=True).stdout.strip()
        h0, h1 = first_last(hit)
        md = [
            "# A run of the fleet, in pictures",
            "",
            "Written by `bench/fleet/report.py` (through `scripts/bench-fleet.sh`); rerun it rather than editing this file. "
            "One run, no peer: a picture of how the fleet behaves, not a performance claim (those are the side-by-side benchmarks).",
            "",
            "## Setup",
            "",
            f"- command: `scripts/bench-fleet.sh {' '.join(sys.argv[1:])}`".rstrip(),
            f"- commit `{commit}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; `nproc` = {os.cpu_count()}, memory {mem}; release binaries",
            f"- origin: `lakecache-bench origin` with **{a.delay_ms} ms** added to every request; {a.objects} objects x {a.object_size >> 20} MiB (hot set {a.objects * a.object_size >> 20} MiB)",
            f"- fleet: 2 cache nodes (page {a.page_size}, memory {a.memory}, page store {a.disk}), the router in front; Prometheus scraping all three every second with `ops/prometheus/alerts.yml` loaded",
            f"- load: `lakecache-bench http-range` through the router, random {a.read_size >> 10} KiB ranges, {a.concurrency} connections, every byte checked; "
            f"phase 1 closed loop from a cold cache for {a.warm_seconds:.0f} s, phase 2 at a fixed {rate:.0f} req/s (half the warm rate at the end of phase 1) for {a.fixed_seconds:.0f} s",
            "",
            "## The load generator's view",
            "",
            "| phase | offered req/s | req/s | MiB/s | p50 ms | p90 ms | p99 ms | p99.9 ms | requests |",
            "|---|---|---|---|---|---|---|---|---|",
            pct_row("1: from cold", warm),
            pct_row("2: fixed load", fixed),
            "",
            f"Fleet hit ratio (3 s window) went from {h0} at the start to {h1} at the end.",
            "",
            "The objects are not Lance files with write-once names, so a cache node revalidates each one's "
            "metadata with a HEAD at the origin within its `cache.metadata_ttl` (2 s by default; origin HEADs/s "
            "in the QPS plot). From half the TTL on that HEAD runs in the background, so a read waits for one only "
            "when the object was not read for a whole TTL. Lance's data and index files are never revalidated "
            "(`cache.immutable`).",
            "",
            "## Plots",
            "",
            f"![QPS over time]({png['qps'].name})",
            "",
            f"![Hit ratio over time]({png['hit-ratio'].name})",
            "",
            f"![Latency CDFs]({png['latency'].name})",
            "",
            "The CDFs are read from Prometheus histograms (`router_s3_request_duration_milliseconds`, "
            "`cachenode_s3_request_duration_milliseconds`, `cachenode_origin_request_duration_milliseconds`, "
            "`cachenode_pagestore_read_duration_microseconds`), so their resolution is the bucket bounds of ops/METRICS.md.",
            "",
        ]
        (a.out_dir / f"{a.prefix}.md").write_text("\n".join(md))
        log(f"wrote {a.out_dir / (a.prefix + '.md')} and {', '.join(str(p) for p in png.values())}")
        ok = True
        return 0
    finally:
        procs.stop_all()
        if ok and not a.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work dir kept: {work}")


if __name__ == "__main__":
    sys.exit(main())
