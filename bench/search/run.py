#!/usr/bin/env python3
"""Side-by-side benchmark of the search tier (see /work/shared/BENCHMARKING.md).

One process starts and stops everything it measures:

- the bench origin (`lakecache-bench origin`: s3s-fs over the dataset folder, anonymous, with
  a per-request delay standing in for S3's latency),
- two cache nodes reading that origin (kind "s3"), and one search node reading the table
  through them (the in-process ring client),

and measures, for each (nprobes, refine_factor) setting, at a fixed number of client threads:

- **ours**: the search node over the fleet, `POST /v1/table/<t>/query/` with LanceDB's body,
  the Arrow IPC answer decoded with pyarrow; warm (after one pass over the queries);
- **pylance**: the same lance version reading the same table straight from the bench origin
  over S3 (with the delay); warm too, but bounded by time, since every query pays the delay;
- **faiss**: IndexIVFPQ in memory with the same partitions, sub-vectors and bits, trained on
  the same vectors, the same nprobe (IndexRefineFlat for the refine factor), plus the exact
  IndexFlatL2;

interleaved per setting (ours, pylance, faiss, ours, ...), recall@10 against the dataset's
exact neighbours, QPS, p50/p99. Then cold first queries: fresh cache nodes (new state) and a
fresh search node, the first query timed and the origin requests it caused counted from the
cache nodes' `/metrics`; for pylance a fresh dataset object, its origin requests counted in a
separate cold open through a counting proxy (the bench origin has no request counter).

Writes a Markdown report, a recall/QPS plot and the raw JSON. What it does not do: generate
the dataset (dataset.py) or build binaries (scripts/bench-search.sh).
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

# Quiet lance's deprecation warnings (one per query otherwise).
os.environ.setdefault("LANCE_LOG", "error")

REPO = Path(__file__).resolve().parents[2]
NAME = "bench-search"
NODE_ACCESS_KEY = "bench-search"
NODE_SECRET_KEY = "bench-search-secret"
FLEET_SECRET = "bench-search-fleet-secret"
ADMIN_TOKEN = "bench-search-admin-token"
API_KEY = "bench-search-key"
REGION = "us-east-1"
K = 10
# Counter of origin requests in cache-node/src/metrics.rs (labelled by op: get, head, list, ...).
ORIGIN_REQUESTS = "cachenode_origin_requests_total"
# Requests the cache nodes served (here: the search node's reads).
S3_REQUESTS = "cachenode_s3_requests_total"
FLEET_REQUESTS = "cachenode_fleet_requests_total"
SYSTEMS = ("ours", "pylance", "faiss")
# Through the counting proxy: queries run to warm a fresh pylance dataset, then queries counted.
PROXY_WARM_QUERIES = 20
PROXY_COUNTED_QUERIES = 20


def log(msg: str):
    print(f"[{NAME} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    pass


# --- processes we start; stop_all stops exactly these ---------------------------------------

class Procs:
    def __init__(self):
        self.live: list[tuple[str, subprocess.Popen, object]] = []
        self.lock = threading.Lock()

    def start(self, name: str, argv: list[str], log_path: Path, cwd: Path, cpus: str | None,
              stdout_path: Path | None = None) -> subprocess.Popen:
        if cpus is not None:
            argv = ["taskset", "-c", cpus] + argv
        logf = open(log_path, "ab")
        out = open(stdout_path, "wb") if stdout_path else logf
        p = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=logf, stdin=subprocess.DEVNULL)
        if stdout_path:
            out.close()
        with self.lock:
            self.live.append((name, p, logf))
        return p

    def stop(self, p: subprocess.Popen):
        with self.lock:
            entries = [e for e in self.live if e[1] is p]
            self.live = [e for e in self.live if e[1] is not p]
        for _, proc, logf in entries:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            logf.close()

    def stop_all(self, grace_s: float = 4.0):
        """TERM to every one at once, KILL to those still running after `grace_s` (within the
        5 s that scripts/bench-lib.sh gives this process before its own KILL)."""
        with self.lock:
            entries, self.live = self.live, []
        for _, p, _ in entries:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + grace_s
        for name, p, logf in entries:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {p.pid}) ignored SIGTERM; killing it")
                p.kill()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    log(f"{name} (pid {p.pid}) did not exit after SIGKILL")
            logf.close()


PROCS = Procs()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_healthy(name: str, url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failed(f"{name} exited during start-up (rc {proc.returncode}); log {log_path}:\n{tail(log_path)}")
        try:
            if http_get(f"{url}/healthz", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise Failed(f"{name} not healthy at {url} within {timeout_s:.0f} s; log {log_path}:\n{tail(log_path)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


ALL_CPUS = os.sched_getaffinity(0)


def pin_self(cpus: str | None):
    """Every thread of this process (lance's and faiss's included) onto `cpus`."""
    if cpus is not None:
        set_affinity(parse_cpus(cpus))


def unpin():
    set_affinity(ALL_CPUS)


def set_affinity(want: set[int]):
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), want)
        except OSError:
            pass  # a thread that just ended


def parse_cpus(s: str) -> set[int]:
    out: set[int] = set()
    for part in s.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.update(range(int(a), int(b) + 1))
        else:
            out.add(int(part))
    return out


def metric_sums(url: str, name: str, label: str = "op") -> dict[str, float]:
    """A Prometheus counter's series summed by one label's values ("" without it)."""
    status, body = http_get(f"{url}/metrics", timeout=5)
    if status != 200:
        raise Failed(f"{url}/metrics answered {status}")
    out: Counter = Counter()
    for line in body.decode().splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head != name and not head.startswith(name + "{"):
            continue
        op = ""
        if "{" in head:
            for kv in head[head.index("{") + 1:-1].split(","):
                k, _, v = kv.partition("=")
                if k.strip() == label:
                    op = v.strip().strip('"')
        out[op] += float(value)
    return dict(out)


# --- the servers --------------------------------------------------------------------------

class Origin:
    """`lakecache-bench origin` on a free port, anonymous, with the per-request delay."""

    def __init__(self, binary: Path, root: Path, delay_ms: int, work: Path, cpus: str | None):
        out = work / "origin.out"
        log_path = work / "origin.log"
        self.proc = PROCS.start("origin", [str(binary), "origin", "--root", str(root), "--listen", "127.0.0.1:0",
                                           "--delay-ms", str(delay_ms)], log_path, work, cpus, stdout_path=out)
        deadline = time.monotonic() + 30
        self.url = ""
        while time.monotonic() < deadline and not self.url:
            for line in out.read_text().splitlines():
                if line.startswith("listening on http://"):
                    self.url = line.split(" ", 2)[2].strip()
            if self.proc.poll() is not None:
                raise Failed(f"origin exited (rc {self.proc.returncode}): {tail(log_path)}")
            time.sleep(0.05)
        if not self.url:
            raise Failed(f"origin did not print its address within 30 s: {tail(log_path)}")


class Fleet:
    """Two cache nodes over the origin and one search node reading through them, each with
    its own state under `state`."""

    def __init__(self, a, bins: dict, origin_url: str, bucket: str, state: Path, cpus: str | None):
        self.nodes: list[tuple[str, subprocess.Popen]] = []
        self.search_proc = None
        self.state = state
        state.mkdir(parents=True)
        try:
            for i in range(a.cache_nodes):
                self.nodes.append(self._start_node(a, bins, origin_url, state / f"cache-{i}", i, cpus))
            self._start_search(a, bins, bucket, state, cpus)
        except BaseException:
            self.stop()
            raise

    def _start_node(self, a, bins, origin_url, d: Path, i: int, cpus):
        d.mkdir(parents=True)
        for attempt in range(3):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            cfg = d / "cache-node.toml"
            cfg.write_text(f"""[server]
listen = "127.0.0.1:{port}"
region = "{REGION}"

[auth]
anonymous = false

[[auth.keys]]
access_key = "{NODE_ACCESS_KEY}"
secret_key = "{NODE_SECRET_KEY}"

[admin]
token = "{ADMIN_TOKEN}"

[fleet]
secret = "{FLEET_SECRET}"

[cache]
page_size = "{a.page_size}"
memory_capacity = "{a.memory_capacity}"
multipart_dir = "{d}/multipart"

[disk]
enabled = true
path = "{d}/pages.bin"
capacity = "{a.disk_capacity}"
io_engine = "auto"

[pins]
budget = "{a.pin_budget}"
state_file = "{d}/pins.json"

[[origins]]
bucket = "*"
kind = "s3"
endpoint = "{origin_url}"
region = "{REGION}"
allow_http = true
anonymous = true
""")
            log_path = d / "cache-node.log"
            p = PROCS.start(f"cache-{i}", [str(bins["cache-node"]), "--config", str(cfg)], log_path, d, cpus)
            try:
                wait_healthy(f"cache-{i}", url, p, log_path)
                return url, p
            except Failed:
                PROCS.stop(p)
                if attempt == 2 or "address" not in tail(log_path).lower():
                    raise
                log(f"cache-{i}: port {port} was taken; trying another")
        raise Failed("unreachable")

    def _start_search(self, a, bins, bucket: str, d: Path, cpus):
        members = "".join(f'[[nodes]]\nid = "cache-{i}"\nurl = "{url}"\n\n' for i, (url, _) in enumerate(self.nodes))
        for attempt in range(3):
            port = free_port()
            self.search_url = f"http://127.0.0.1:{port}"
            cfg = d / "search-node.toml"
            cfg.write_text(f"""region = "{REGION}"

[server]
listen = "127.0.0.1:{port}"

[auth]
api_keys = ["{API_KEY}"]

[[namespaces]]
name = ""
uri = "s3://{bucket}"

[fleet]
page_size = "{a.page_size}"
secret = "{FLEET_SECRET}"
node_key = {{ access_key = "{NODE_ACCESS_KEY}", secret_key = "{NODE_SECRET_KEY}" }}
node_admin_token = "{ADMIN_TOKEN}"

[cache]
page_cache = "{a.search_page_cache}"

{members}""")
            log_path = d / "search-node.log"
            p = PROCS.start("search-node", [str(bins["search-node"]), "--config", str(cfg)], log_path, d, cpus)
            try:
                wait_healthy("search-node", self.search_url, p, log_path)
                self.search_proc = p
                return
            except Failed:
                PROCS.stop(p)
                if attempt == 2 or "address" not in tail(log_path).lower():
                    raise
                log(f"search-node: port {port} was taken; trying another")

    def node_urls(self) -> list[str]:
        return [u for u, _ in self.nodes]

    def pids(self) -> list[int]:
        return [p.pid for _, p in self.nodes] + ([self.search_proc.pid] if self.search_proc else [])

    def named_pids(self) -> list[tuple[str, int]]:
        named = [(f"cache-node {i}", p.pid) for i, (_, p) in enumerate(self.nodes)]
        return named + ([("search-node", self.search_proc.pid)] if self.search_proc else [])

    def origin_requests(self) -> dict[str, float]:
        total: Counter = Counter()
        for url in self.node_urls():
            total.update(metric_sums(url, ORIGIN_REQUESTS))
        return dict(total)

    def served_requests(self) -> dict[str, float]:
        """What the cache nodes were asked: fleet reads (the search node's, by op) and S3
        requests (by method)."""
        total: Counter = Counter()
        for url in self.node_urls():
            total.update({f"fleet {k}": v for k, v in metric_sums(url, FLEET_REQUESTS).items()})
            total.update({f"S3 {k}": v for k, v in metric_sums(url, S3_REQUESTS, label="method").items()})
        return dict(total)

    def stop(self):
        if self.search_proc is not None:
            PROCS.stop(self.search_proc)
            self.search_proc = None
        for _, p in self.nodes:
            PROCS.stop(p)
        self.nodes = []


# --- the three systems: one query each, by index -------------------------------------------

class Ours:
    """Raw HTTP to the search node, one keep-alive connection per client thread."""

    def __init__(self, url: str, table: str, queries: np.ndarray):
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.path = f"/v1/table/{table}/query/"
        # The vectors as JSON once: float32 -> Python float -> repr round-trips exactly.
        self.vec_json = [json.dumps(q.tolist()) for q in queries]

    def query_fn(self, nprobes: int, refine: int | None, ef: int | None = None):
        import pyarrow as pa

        body_tail = {"k": K, "nprobes": nprobes, "minimum_nprobes": nprobes, "maximum_nprobes": nprobes,
                     "refine_factor": refine, "columns": ["id"], "prefilter": True}
        if ef is not None:
            body_tail["ef"] = ef
        tail_json = json.dumps(body_tail)[1:]
        headers = {"content-type": "application/json", "x-api-key": API_KEY}

        def run(qi: int, state: dict) -> list[int]:
            body = ('{"vector": ' + self.vec_json[qi] + ", " + tail_json).encode()
            for attempt in range(2):
                conn = state.get("conn")
                if conn is None:
                    conn = state["conn"] = http.client.HTTPConnection(self.host, self.port, timeout=60)
                try:
                    conn.request("POST", self.path, body=body, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                    # The answer's own I/O account (what the cold section reports per step).
                    state["io"] = r.getheader("x-lakecache-io")
                    break
                except (http.client.HTTPException, OSError):
                    conn.close()
                    state.pop("conn", None)
                    if attempt == 1:
                        raise
            if r.status != 200:
                raise Failed(f"search node answered {r.status}: {data[:300]!r}")
            table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
            return table.column("id").to_pylist()

        return run


def pylance_options(endpoint: str) -> dict:
    # The bench origin takes anonymous requests only (a signed one is refused with 501).
    return {"aws_endpoint": endpoint, "allow_http": "true", "aws_region": REGION, "aws_skip_signature": "true"}


class Pylance:
    def __init__(self, uri: str, endpoint: str, queries: np.ndarray):
        import lance

        self.uri, self.endpoint, self.queries = uri, endpoint, queries
        self.ds = lance.dataset(uri, storage_options=pylance_options(endpoint))

    @staticmethod
    def nearest(q, nprobes: int, refine: int | None) -> dict:
        return {"column": "vector", "q": q, "k": K, "nprobes": nprobes, "minimum_nprobes": nprobes,
                "maximum_nprobes": nprobes, "refine_factor": refine}

    def query_fn(self, nprobes: int, refine: int | None, ds=None):
        ds = ds or self.ds

        def run(qi: int, state: dict) -> list[int]:
            t = ds.to_table(nearest=self.nearest(self.queries[qi], nprobes, refine), columns=["id"], prefilter=True)
            return t.column("id").to_pylist()

        return run


class Faiss:
    def __init__(self, vectors: np.ndarray, nlist: int, m: int, nbits: int, seed: int):
        import faiss

        self.faiss = faiss
        d = vectors.shape[1]
        # One query per call, one thread per call: the client threads are the concurrency.
        faiss.omp_set_num_threads(1)
        quantizer = faiss.IndexFlatL2(d)
        self.ivfpq = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits)
        self.ivfpq.cp.seed = seed
        self.quantizer = quantizer
        t0 = time.monotonic()
        self.ivfpq.train(vectors)
        self.train_s = time.monotonic() - t0
        # The refine wrapper adds to both: PQ codes to the IVF, full vectors to a flat index,
        # which is also the exact baseline.
        self.refined = faiss.IndexRefineFlat(self.ivfpq)
        self.refined.add(vectors)
        self.flat = faiss.downcast_index(self.refined.refine_index)
        self.add_s = time.monotonic() - t0 - self.train_s

    def query_fn(self, queries: np.ndarray, nprobes: int | None, refine: int | None):
        faiss = self.faiss
        if nprobes is None:
            def run(qi, state):
                return self.flat.search(queries[qi:qi + 1], K)[1][0].tolist()
            return run
        ivf = faiss.SearchParametersIVF(nprobe=nprobes)
        if refine is None:
            def run(qi, state):
                return self.ivfpq.search(queries[qi:qi + 1], K, params=ivf)[1][0].tolist()
            return run
        params = faiss.IndexRefineSearchParameters(k_factor=float(refine), base_index_params=ivf)

        def run(qi, state):
            return self.refined.search(queries[qi:qi + 1], K, params=params)[1][0].tolist()
        return run


# --- closed loop -------------------------------------------------------------------------------

def closed_loop(fn, qids: list[int], concurrency: int, max_seconds: float, max_errors: int = 20) -> dict:
    """Runs `fn(qi, state)` over `qids` from `concurrency` threads until done or `max_seconds`;
    one query at a time per thread. Returns latencies and answers of the queries completed."""
    n = len(qids)
    lat = [None] * n
    got = [None] * n
    errors: list[str] = []
    lock = threading.Lock()
    cursor = [0]
    started = time.monotonic()
    deadline = started + max_seconds

    def worker():
        state: dict = {}
        while True:
            with lock:
                i = cursor[0]
                if i >= n or time.monotonic() >= deadline or len(errors) > max_errors:
                    break
                cursor[0] += 1
            t0 = time.perf_counter()
            try:
                ids = fn(qids[i], state)
            except Exception as e:
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:400])
                continue
            lat[i] = time.perf_counter() - t0
            got[i] = ids
        conn = state.get("conn")
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    # Bounded joins: a stuck query must not hold the run past the time limit by much.
    join_deadline = deadline + 120
    for t in threads:
        t.join(max(0.0, join_deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        raise Failed(f"client threads still busy {join_deadline - started:.0f} s after the start")
    wall = time.monotonic() - started
    done = [i for i in range(n) if lat[i] is not None]
    return {
        "wall_s": wall,
        "qids": [qids[i] for i in done],
        "latency_s": [lat[i] for i in done],
        "ids": [got[i] for i in done],
        "errors": errors,
    }


def open_loop(fn, qids: list[int], rate: float, seconds: float, workers: int, max_errors: int = 20) -> dict:
    """Offers `rate` queries per second, evenly spaced, for `seconds` (cycling through `qids`),
    whatever the answers' speed: latency runs from each query's scheduled start, so a stall
    is charged to every query queued behind it (no coordinated omission). Latencies go to an
    HDR histogram in microseconds (3 significant digits)."""
    import queue

    from hdrh.histogram import HdrHistogram

    n = max(1, int(rate * seconds))
    hist = HdrHistogram(1, 600_000_000, 3)
    jobs: queue.Queue = queue.Queue()
    errors: list[str] = []
    lock = threading.Lock()
    done = [0]
    late = [0.0]
    start = time.perf_counter() + 0.05
    deadline = start + seconds + 60

    def worker():
        state: dict = {}
        while True:
            job = jobs.get()
            if job is None:
                break
            i, at = job
            if time.perf_counter() > deadline or len(errors) > max_errors:
                continue
            try:
                fn(qids[i % len(qids)], state)
            except Exception as e:
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:400])
                continue
            us = max(1, round((time.perf_counter() - at) * 1e6))
            with lock:
                hist.record_value(min(us, 600_000_000))
                done[0] += 1
        conn = state.get("conn")
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for i in range(n):
        at = start + i / rate
        now = time.perf_counter()
        if at > now:
            time.sleep(at - now)
        else:
            late[0] = max(late[0], now - at)
        jobs.put((i, at))
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join(max(0.0, deadline + 120 - time.perf_counter()))
    if any(t.is_alive() for t in threads):
        raise Failed("open-loop workers still busy two minutes past the deadline")
    wall = time.perf_counter() - start
    q = lambda p: hist.get_value_at_percentile(p) / 1e3 if done[0] else float("nan")  # noqa: E731
    return {"offered_qps": rate, "scheduled": n, "completed": done[0], "wall_s": wall,
            "achieved_qps": done[0] / wall if wall > 0 else float("nan"),
            "p50_ms": q(50), "p90_ms": q(90), "p99_ms": q(99), "p999_ms": q(99.9), "max_ms": hist.get_max_value() / 1e3,
            "scheduler_late_ms": late[0] * 1e3, "errors": errors,
            "hdr": hist.encode().decode() if done[0] else None}


def recall_at_k(ids_list, qids, gt: np.ndarray) -> list[float]:
    return [len(set(ids[:K]) & set(gt[qi, :K].tolist())) / K for ids, qi in zip(ids_list, qids)]


# --- counting proxy (pylance's origin requests) ----------------------------------------------

class CountingProxy:
    """A plain HTTP forwarder in front of the bench origin that counts requests by kind; used
    only for one separate cold open of pylance, never on a timed path."""

    def __init__(self, upstream: str):
        host, port = upstream.removeprefix("http://").split(":")
        counts: Counter = Counter()
        lock = threading.Lock()
        hop = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "content-length"}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                path_only, _, query = self.path.partition("?")
                kind = self.command
                if self.command == "GET" and ("list-type=" in query or path_only.strip("/").count("/") == 0):
                    kind = "LIST"
                elif self.command == "GET" and self.headers.get("range"):
                    kind = "GET (range)"
                with lock:
                    counts[kind] += 1
                conn = getattr(self, "upstream", None)
                if conn is None:
                    conn = self.upstream = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                conn.request(self.command, self.path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in hop:
                        self.send_header(k, v)
                if self.command == "HEAD":
                    self.send_header("Content-Length", r.getheader("content-length") or "0")
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        self.counts = counts
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --- report ------------------------------------------------------------------------------------

def pct(xs, p) -> float:
    return float(np.percentile(np.asarray(xs), p)) if xs else float("nan")


def med(xs) -> float:
    return float(np.median(xs)) if xs else float("nan")


def setting_label(s) -> str:
    if s["nprobes"] is None:
        return "exact"
    return f"nprobes {s['nprobes']}, refine {s['refine'] if s['refine'] is not None else 'none'}"


def summarize(runs: list[dict], gt: np.ndarray) -> dict:
    """Pools a system's measured rounds at one setting."""
    lat = [x for r in runs for x in r["latency_s"]]
    qids = [q for r in runs for q in r["qids"]]
    ids = [i for r in runs for i in r["ids"]]
    rec = recall_at_k(ids, qids, gt)
    qps = [len(r["qids"]) / r["wall_s"] for r in runs if r["wall_s"] > 0]
    return {
        "recall": float(np.mean(rec)) if rec else float("nan"),
        "qps_median": med(qps), "qps_min": min(qps) if qps else float("nan"), "qps_max": max(qps) if qps else float("nan"),
        "qps_rounds": qps,
        "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
        "queries": len(lat), "errors": sum(len(r["errors"]) for r in runs),
    }


def fmt(x, digits=1) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    return f"{x:,.{digits}f}"


def ratio_cell(a: list[float], b: list[float]) -> str:
    rs = [x / y for x, y in zip(a, b) if y > 0]
    if not rs:
        return "—"
    return f"{med(rs):.2f} ({min(rs):.2f}–{max(rs):.2f})"


def machine_facts(work: Path) -> dict:
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu": sh("sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1"),
        "kernel": os.uname().release,
        "memory": sh("free -h | awk '/^Mem:/ {print \"total \" $2 \", used \" $3 \", available \" $7}'"),
        "disk": sh(f"df -h {work} | awk 'NR == 2 {{print $1 \", \" $2 \" total, \" $4 \" free\"}}'"),
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }


def git_facts() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD") or "unknown",
            "dirty": len([x for x in git("status", "--porcelain").splitlines() if x.strip()])}


def write_report(path: Path, res: dict):
    meta, ds, cfg = res["meta"], res["dataset"], res["config"]
    lines = []
    w = lines.append
    w("# Search: lakecache search node vs pylance direct from S3 vs FAISS in memory")
    w("")
    w("Written by `bench/search/run.py` (through `scripts/bench-search.sh`); rerun it rather than editing this file.")
    w("")
    w("## Setup")
    w("")
    w(f"- command: `{meta['command']}`")
    w(f"- commit: `{meta['git']['commit']}`" + (f" (working tree had {meta['git']['dirty']} changed or untracked paths)" if meta["git"]["dirty"] else ""))
    w(f"- date: {meta['date']}")
    m = meta["machine"]
    w(f"- machine: `nproc` = {m['nproc']}; kernel {m['kernel']}; CPU {m['cpu']}")
    w(f"- memory (`free -h`): {m['memory']}; disk (work dir): {m['disk']}")
    w(f"- load average (1/5/15 min) before: {' '.join(meta['load_before'])}; after: {' '.join(meta['load_after'])}")
    w(f"- binaries: **{cfg['profile']}** profile — " + ", ".join(f"`{k}` {v['path']} (built {v['mtime']})" for k, v in meta["binaries"].items()))
    w(f"- versions: pylance {meta['versions']['lance']} (the search node links lance {meta['versions']['lance_rust']}), pyarrow {meta['versions']['pyarrow']}, numpy {meta['versions']['numpy']}, faiss-cpu {meta['versions']['faiss']}, Python {meta['versions']['python']}")
    idx = ds.get("index_built", ds["index"])
    w(f"- dataset: table `{ds['table']}`, {ds['rows']:,} rows x {ds['dim']}-d float32 ({ds['clusters']} Gaussian clusters of uneven size, spread {ds['spread']}, latent dim {ds.get('latent_dim', '?')}, seed {ds['seed']}), plus caption, category, category_name, year columns; {ds.get('fragments', '?')} fragment(s), {ds.get('table_bytes', 0) / 2**20:,.0f} MiB on disk; made by `bench/search/dataset.py`")
    w(f"- index: IVF_PQ, L2, {idx['num_partitions']} partitions (asked {ds['index']['num_partitions']}), {idx['num_sub_vectors']} sub-vectors x {idx.get('num_bits', 8)} bits" + (f"; partition sizes min/median/max {idx['partition_rows_min']}/{idx['partition_rows_median']}/{idx['partition_rows_max']} rows" if "partition_rows_min" in idx else ""))
    w(f"- FAISS: IndexIVFPQ(IndexFlatL2, nlist {idx['num_partitions']}, m {idx['num_sub_vectors']}, nbits {idx.get('num_bits', 8)}) trained on the same vectors ({res['faiss']['train_s']:.1f} s train, {res['faiss']['add_s']:.1f} s add), IndexRefineFlat for the refine factor (k_factor = refine_factor), IndexFlatL2 for the exact row; `omp_set_num_threads(1)`, one query per call")
    w(f"- queries: {cfg['queries']} of the dataset's {ds['nq']} seeded query vectors (drawn near cluster centres, not rows of the table), k = {K}; recall@10 against the exact top-10 by L2 (`gt.npy`, numpy, float64 decision)")
    w(f"- origin: `lakecache-bench origin` (s3s-fs, anonymous) with **{cfg['delay_ms']} ms** added before every request (the bench's stand-in for S3 latency, never in the product); every table file has its s3s-fs ETag sidecar (written by dataset.py), so the origin does not hash whole files per request; pylance reads it directly with `aws_skip_signature`, the cache nodes as an `s3` origin with `anonymous = true`")
    w(f"- fleet: {cfg['cache_nodes']} cache nodes (page {cfg['page_size']}, memory {cfg['memory_capacity']}, disk {cfg['disk_capacity']}, io_engine auto, default pin rules) and one search node with `[[nodes]]` (in-process ring client, its own page cache `cache.page_cache = {cfg.get('search_page_cache', '0 B (before it existed)')}`, default index/metadata caches, default read_consistency_interval 5 s, so a version check reaches the origin about every 5 s)")
    w(f"- ours: raw HTTP/1.1 keep-alive `POST /v1/table/{ds['table']}/query/` with `{{vector, k: 10, nprobes = minimum_nprobes = maximum_nprobes = n, refine_factor, columns: [\"id\"], prefilter: true}}`, the Arrow IPC file answer decoded with pyarrow; pylance: one shared `lance.dataset(\"s3://...\")`, `to_table(nearest={{... same nprobes, refine_factor}}, columns=[\"id\"])`")
    pin = cfg["pinning"]
    w(f"- concurrency: {cfg['concurrency']} client threads, closed loop, one query in flight per thread (these latencies are at saturation; see the fixed-load table for latency at a set rate)")
    if pin["server"] is not None:
        w(f"- CPU budget (`taskset`): search node and cache nodes on CPU {pin['server']}; during pylance and FAISS runs this whole Python process (the engine and its client threads) on CPU {pin['server']} too; during ours the client (this process: JSON, HTTP, Arrow decoding) on CPU {pin['client']}, as is the origin throughout. So each engine gets the same core; ours' load generator is extra.")
    else:
        w("- CPU budget: no pinning (`--no-pin` or fewer than 2 CPUs): every process shares every core")
    w(f"- sequence: ours warmed by one pass over the queries at the largest setting; pylance warmed for at most {cfg['pylance_warm_seconds']} s at that setting; then per setting one unmeasured warm-up round each, and {cfg['rounds']} interleaved measured rounds (ours, pylance, faiss, ours, ...); each round runs the {cfg['queries']} queries, ours and FAISS for at most {cfg['seconds']} s, pylance for at most {cfg['pylance_seconds']} s (it pays the origin delay on every query, so it answers fewer)")
    w("")
    w("## Results")
    w("")
    w("Recall and latency pool every measured round; QPS is the median over rounds (min–max). A round that reaches its time limit (pylance) leaves the remaining queries to the next round, so its recall is over the queries it answered; *top-10 = pylance* counts the queries both answered where ours returned exactly pylance's ids in pylance's order (same lance version, same index).")
    w("")
    w("| setting | system | recall@10 | QPS | p50 ms | p99 ms | queries | errors | top-10 = pylance |")
    w("|---|---|---|---|---|---|---|---|---|")
    for pt in res["points"]:
        for sysname in SYSTEMS:
            s = pt["summary"].get(sysname)
            if s is None:
                continue
            agree = pt.get("agree_with_pylance") if sysname == "ours" else None
            agree_cell = f"{agree[0]}/{agree[1]}" if agree else "—"
            w(f"| {setting_label(pt['setting'])} | {sysname} | {fmt(s['recall'], 3)} | {fmt(s['qps_median'])} ({fmt(s['qps_min'])}–{fmt(s['qps_max'])}) | {fmt(s['p50_ms'], 2)} | {fmt(s['p99_ms'], 2)} | {s['queries']} | {s['errors']} | {agree_cell} |")
    w("")
    if res.get("ours_origin_requests_measured") is not None:
        w(f"Origin requests made by the cache nodes during all measured rounds of ours (after warming): {fmt_counts(res['ours_origin_requests_measured'])} — version checks of the table (never cached) and anything not yet cached.")
        w("")
    for wc in res["cold"].get("pylance_warm_per_query") or []:
        per = ", ".join(f"{k} {v:.1f}" for k, v in sorted(wc["per_query"].items())) or "none"
        w(f"Origin requests per warm pylance query at {setting_label(wc['setting'])} (counted through the proxy over {wc['queries']} queries after {PROXY_WARM_QUERIES} warming ones, one at a time): {per}.")
    if res["cold"].get("pylance_warm_per_query"):
        w("")
    w("### Ratios (ours / peer)")
    w("")
    w("QPS: median of the per-round ratios (min–max), above 1 means ours answers more queries per second. p50: ours' p50 over the peer's, below 1 means ours is faster.")
    w("")
    w("| setting | QPS ours/pylance | QPS ours/FAISS | p50 ours/pylance | p50 ours/FAISS | recall ours − FAISS |")
    w("|---|---|---|---|---|---|")
    for pt in res["points"]:
        s = pt["summary"]
        if "ours" not in s:
            continue
        o, p, f = s["ours"], s.get("pylance"), s.get("faiss")
        w(f"| {setting_label(pt['setting'])} | {ratio_cell(o['qps_rounds'], p['qps_rounds']) if p else '—'} | "
          f"{ratio_cell(o['qps_rounds'], f['qps_rounds']) if f else '—'} | "
          f"{fmt(o['p50_ms'] / p['p50_ms'], 3) if p and p['p50_ms'] > 0 else '—'} | "
          f"{fmt(o['p50_ms'] / f['p50_ms'], 2) if f and f['p50_ms'] > 0 else '—'} | "
          f"{fmt(o['recall'] - f['recall'], 3) if f else '—'} |")
    w("")
    if any(pt.get("open") for pt in res["points"]):
        w("## Latency at a fixed offered load")
        w("")
        w(f"Open loop: queries are sent at evenly spaced times whatever the answers' speed, {cfg.get('open_workers', '?')} client threads, {cfg.get('open_seconds', '?')} s per run, right after the setting's measured rounds; latency runs from each query's scheduled start (a stall counts against every query queued behind it), recorded in an HDR histogram (µs, 3 significant digits). *same rate*: every system at {cfg.get('open_fraction', 0.5):.0%} of the slowest system's median QPS at that setting, the same work for all; *own max*: a system at {cfg.get('open_fraction', 0.5):.0%} of its own median QPS. Client and pinning as above.")
        w("")
        w("| setting | system | load | offered QPS | achieved QPS | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | queries | errors |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for pt in res["points"]:
            for r in pt.get("open") or []:
                w(f"| {setting_label(pt['setting'])} | {r['system']} | {r['basis']} | {fmt(r['offered_qps'])} | {fmt(r['achieved_qps'])} | {fmt(r['p50_ms'], 2)} | {fmt(r['p90_ms'], 2)} | {fmt(r['p99_ms'], 2)} | {fmt(r['p999_ms'], 2)} | {fmt(r['max_ms'], 1)} | {r['completed']} | {len(r['errors'])} |")
        w("")
        w("At the same rate, ours over pylance (below 1: ours answers faster):")
        w("")
        w("| setting | rate QPS | p50 ours/pylance | p99 ours/pylance | p99.9 ours/pylance |")
        w("|---|---|---|---|---|")
        for pt in res["points"]:
            same = {r["system"]: r for r in pt.get("open") or [] if r["basis"] == "same rate"}
            o, p = same.get("ours"), same.get("pylance")
            if o and p and p["p50_ms"] > 0:
                w(f"| {setting_label(pt['setting'])} | {fmt(o['offered_qps'])} | {fmt(o['p50_ms'] / p['p50_ms'], 3)} | {fmt(o['p99_ms'] / p['p99_ms'], 3)} | {fmt(o['p999_ms'] / p['p999_ms'], 3)} |")
        w("")
    c = res["cold"]
    w("## Cold first query")
    w("")
    w(f"Setting nprobes {c['nprobes']}, refine none; each trial uses a different query. **ours**: fresh cache nodes (new state folders: empty memory, disk and pin state) and a fresh search node, started and healthy before the clock starts; the first query includes opening the table. Origin requests are the cache nodes' `{ORIGIN_REQUESTS}` (by op) after the query, summed over both nodes (they start at zero); node requests are what the cache nodes were asked: the search node's fleet reads (`{FLEET_REQUESTS}`, by op) and S3 requests (`{S3_REQUESTS}`, by method). **pylance**: a fresh `lance.dataset()` object in this process (its own session caches; the process-wide HTTP client pool may be reused); time = open + first query. Its origin requests are counted in one further cold open through a counting HTTP proxy in front of the origin (the bench origin itself has no request counter); that open is not timed.")
    w("")
    w("| system | trial | first query ms | second query ms | origin requests | node requests |")
    w("|---|---|---|---|---|---|")
    for t in c["ours"]:
        w(f"| ours | {t['trial']} | {fmt(t['first_ms'])} | {fmt(t['second_ms'])} | {fmt_counts(t['origin_requests'])} | {fmt_counts(t['node_requests'])} |")
    for t in c["pylance"]:
        w(f"| pylance | {t['trial']} | {fmt(t['first_ms'])} (open {fmt(t['open_ms'])}) | {fmt(t['second_ms'])} | {fmt_counts(t.get('origin_requests')) if t.get('origin_requests') else 'see below'} | — |")
    if c.get("pylance_counted"):
        pc = c["pylance_counted"]
        w(f"| pylance (counted, through the proxy) | — | {fmt(pc['first_ms'])} (open {fmt(pc['open_ms'])}) | {fmt(pc['second_ms'])} | {fmt_counts(pc['origin_requests'])} | — |")
    w("")
    w(f"Median first query: ours {fmt(med([t['first_ms'] for t in c['ours']]))} ms, pylance {fmt(med([t['first_ms'] for t in c['pylance']]))} ms.")
    w("")
    ios = [t for t in c["ours"] if t.get("io")]
    if ios:
        w("Ours' first query by step, from its own answer's `x-lakecache-io` account (origin requests by what they "
          "read, as the cache nodes counted them; I/O wait is the time the search node's reads spent waiting, "
          "summed over concurrent reads, so it may exceed the query's wall time):")
        w("")
        w("| trial | origin requests | manifest | index | data | other | origin MiB | fleet requests | I/O wait ms | first query ms |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for t in ios:
            io = t["io"]
            k = io.get("origin_requests_by_kind") or {}
            w(f"| {t['trial']} | {io.get('origin_requests', 0)} | {k.get('manifest', 0)} | {k.get('index', 0)} | "
              f"{k.get('data', 0)} | {k.get('other', 0)} | {fmt(io.get('origin_bytes', 0) / 2**20, 2)} | "
              f"{io.get('fleet_requests', 0)} | {fmt(io.get('io_wait_us', 0) / 1e3)} | {fmt(t['first_ms'])} |")
        w("")
    w("## Plot and raw data")
    w("")
    w(f"- recall@10 vs QPS: `{res['files']['png']}`")
    w(f"- raw JSON (every round's latencies and answers' recall, configs): `{res['files']['raw']}`")
    w("")
    path.write_text("\n".join(lines) + "\n")


def fmt_counts(c: dict | None) -> str:
    if not c:
        return "0"
    total = sum(c.values())
    parts = ", ".join(f"{k or 'all'} {v:.0f}" for k, v in sorted(c.items()) if v)
    return f"{total:.0f} ({parts})"


def plot(path: Path, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"ours": "tab:blue", "pylance": "tab:orange", "faiss": "tab:green"}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for sysname in SYSTEMS:
        for refine in sorted({pt["setting"]["refine"] for pt in res["points"] if pt["setting"]["nprobes"] is not None},
                             key=lambda r: -1 if r is None else r):
            xs, ys, ns = [], [], []
            for pt in res["points"]:
                st = pt["setting"]
                s = pt["summary"].get(sysname)
                if s is None or st["nprobes"] is None or st["refine"] != refine or not np.isfinite(s["qps_median"]):
                    continue
                xs.append(s["recall"])
                ys.append(s["qps_median"])
                ns.append(st["nprobes"])
            if not xs:
                continue
            order = np.argsort(ns)
            xs, ys, ns = [xs[i] for i in order], [ys[i] for i in order], [ns[i] for i in order]
            label = f"{sysname} ({'no refine' if refine is None else f'refine {refine}'})"
            ax.plot(xs, ys, marker="o" if refine is None else "s", linestyle="-" if refine is None else "--",
                    color=colours[sysname], label=label)
            for x, y, n in zip(xs, ys, ns):
                ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7, color=colours[sysname])
    for pt in res["points"]:
        if pt["setting"]["nprobes"] is None and "faiss" in pt["summary"]:
            s = pt["summary"]["faiss"]
            ax.plot([s["recall"]], [s["qps_median"]], marker="*", markersize=12, color=colours["faiss"],
                    linestyle="none", label="faiss exact (IndexFlatL2)")
    ds = res["dataset"]
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel(f"queries per second ({res['config']['concurrency']} client threads, log scale)")
    ax.set_title(f"{ds['rows']:,} x {ds['dim']}-d, IVF_PQ; origin delay {res['config']['delay_ms']} ms; "
                 f"{res['config']['profile']} build; labels = nprobes", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- main --------------------------------------------------------------------------------------

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("dataset (made by dataset.py)")
    g.add_argument("--origin-root", required=True, type=Path, help="folder the bench origin serves (one sub-folder per bucket)")
    g.add_argument("--bucket", default="bench")
    g.add_argument("--table", required=True, help="table name: ORIGIN_ROOT/BUCKET/TABLE.lance")
    g.add_argument("--truth", type=Path, help="folder with queries.npy, gt.npy, dataset.json (default ORIGIN_ROOT/../truth/TABLE)")
    g = ap.add_argument_group("binaries")
    g.add_argument("--profile", choices=["release", "debug"], default="release",
                   help="cache-node and search-node from $CARGO_TARGET_DIR/<profile>/ (default release)")
    g.add_argument("--target-dir", type=Path,
                   default=Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/lakecache/target")))
    g = ap.add_argument_group("what is measured")
    g.add_argument("--nprobes", default="1,5,10,20,50", help="comma-separated (default 1,5,10,20,50)")
    g.add_argument("--refine", default="none,5", help="comma-separated refine factors, 'none' for no refine (default none,5)")
    g.add_argument("--no-exact", action="store_true", help="skip the FAISS IndexFlatL2 row")
    g.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    g.add_argument("--queries", type=int, default=500, help="queries per round (default 500)")
    g.add_argument("--rounds", type=int, default=5, help="measured interleaved rounds per setting (default 5)")
    g.add_argument("--seconds", type=float, default=60, help="time limit of one ours/FAISS round (default 60)")
    g.add_argument("--pylance-seconds", type=float, default=10, help="time limit of one pylance round (default 10)")
    g.add_argument("--warm-seconds", type=float, default=600, help="time limit of ours' warming pass (default 600)")
    g.add_argument("--pylance-warm-seconds", type=float, default=60, help="time limit of pylance's warming (default 60)")
    g.add_argument("--systems", default="ours,pylance,faiss", help="subset to run (default all three)")
    g.add_argument("--cold-trials", type=int, default=3, help="cold first-query trials per system (default 3)")
    g.add_argument("--cold-nprobes", type=int, default=20, help="nprobes of the cold queries (default 20)")
    g.add_argument("--open-fraction", type=float, default=0.5,
                   help="fixed offered load as a fraction of the measured maximum QPS (default 0.5; 0 skips it)")
    g.add_argument("--open-seconds", type=float, default=10, help="length of one fixed-load run (default 10)")
    g.add_argument("--open-workers", type=int, default=32, help="client threads of the fixed-load runs (default 32)")
    g = ap.add_argument_group("environment")
    g.add_argument("--delay-ms", type=int, default=30, help="origin delay per request (default 30)")
    g.add_argument("--cache-nodes", type=int, default=2)
    g.add_argument("--page-size", default="1 MiB")
    g.add_argument("--memory-capacity", default="1 GiB", help="per cache node (default 1 GiB)")
    g.add_argument("--disk-capacity", default="4 GiB", help="per cache node (default 4 GiB)")
    g.add_argument("--pin-budget", default="1 GiB", help="per cache node (default 1 GiB)")
    g.add_argument("--search-page-cache", default="1 GiB",
                   help="the search node's own page cache, cache.page_cache (default 1 GiB, the product default; '0 B' turns it off)")
    g.add_argument("--server-cpus", default="1", help="taskset CPUs of the servers and of pylance/FAISS runs (default 1)")
    g.add_argument("--client-cpus", default="0", help="taskset CPUs of ours' client and the origin (default 0)")
    g.add_argument("--no-pin", action="store_true", help="no CPU pinning")
    g.add_argument("--max-seconds", type=float, default=5400, help="hard limit on the whole run (default 5400)")
    g = ap.add_argument_group("output")
    g.add_argument("--work", type=Path, help="work folder for configs, logs, node state (default: a new /tmp/lakecache-bench-search.*)")
    g.add_argument("--keep-work", action="store_true", help="keep the work folder after a successful run")
    g.add_argument("--out-md", type=Path, default=REPO / "bench/results/search.md")
    g.add_argument("--out-png", type=Path, default=REPO / "bench/results/search-recall-qps.png")
    g.add_argument("--raw-dir", type=Path, default=REPO / "bench/results/raw")
    g.add_argument("--perf-seconds", type=float, default=0,
                   help="after each setting's measured rounds, run ours this long more under `perf record` "
                        "on the server CPUs (default 0: no profile)")
    g.add_argument("--perf-call-graph", default="none",
                   help="perf record --call-graph mode (fp, dwarf, lbr) or none (default none: flat samples)")
    g.add_argument("--perf-dir", type=Path, help="where the perf data go, one file per setting (default WORK/perf)")
    g.add_argument("--command", help="command line to name in the report (default: this one)")
    return ap.parse_args()


def binary_facts(p: Path) -> dict:
    st = p.stat()
    return {"path": str(p), "mtime": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(st.st_mtime))}


def lance_rust_version() -> str:
    try:
        text = (REPO / "Cargo.lock").read_text()
        i = text.index('name = "lance"\nversion = "')
        return text[i:].split('"')[3]
    except (OSError, ValueError, IndexError):
        return "unknown"


def main() -> int:
    a = parse_args()
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    for s in systems:
        if s not in SYSTEMS:
            raise SystemExit(f"--systems: unknown {s!r}")
    nprobes_list = [int(x) for x in a.nprobes.split(",")]
    refines = [None if x.strip().lower() in ("none", "0", "") else int(x) for x in a.refine.split(",")]
    truth = a.truth or a.origin_root.parent / "truth" / a.table
    dsinfo = json.loads((truth / "dataset.json").read_text())
    queries_all = np.load(truth / "queries.npy")
    gt = np.load(truth / "gt.npy")
    nq = min(a.queries, len(queries_all))
    qids = list(range(nq))
    table_path = a.origin_root / a.bucket / f"{a.table}.lance"
    if not table_path.is_dir():
        raise SystemExit(f"no table at {table_path}; run dataset.py first")
    # Without its ETag sidecars the bench origin hashes a whole file on every GET (dataset.py).
    from dataset import sidecar_path, table_keys
    bare = [k for k, _ in table_keys(a.origin_root / a.bucket, table_path)
            if not sidecar_path(a.origin_root, a.bucket, k).exists()]
    if bare:
        raise SystemExit(f"{len(bare)} files of the table have no ETag sidecar (e.g. {bare[0]}); rerun dataset.py")

    pin = not a.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    server_cpus = a.server_cpus if pin else None
    client_cpus = a.client_cpus if pin else None

    prof = a.target_dir / a.profile
    bins = {"cache-node": prof / "cache-node", "search-node": prof / "search-node"}
    bench_bin = a.target_dir / "release/lakecache-bench"
    if not bench_bin.exists():
        bench_bin = a.target_dir / "debug/lakecache-bench"
    bins["lakecache-bench"] = bench_bin
    for k, p in bins.items():
        if not p.exists():
            raise SystemExit(f"missing {k} binary {p} (scripts/bench-search.sh builds it)")

    work = a.work or Path(tempfile.mkdtemp(prefix="lakecache-bench-search."))
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    log(f"work dir {work}; profile {a.profile}; table {table_path} ({dsinfo['rows']:,} x {dsinfo['dim']})")

    # Hard limit: stop what we started and leave, whatever the main thread is doing.
    def watchdog():
        time.sleep(a.max_seconds)
        log(f"--max-seconds {a.max_seconds:.0f} reached; stopping")
        PROCS.stop_all()
        os._exit(124)
    threading.Thread(target=watchdog, daemon=True).start()

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    ok = False
    try:
        res = run(a, systems, nprobes_list, refines, dsinfo, queries_all, gt, qids, table_path, bins,
                  server_cpus, client_cpus, work, stamp)
        ok = True
        return 0 if res else 1
    except Failed as e:
        log(f"error: {e}")
        return 1
    finally:
        PROCS.stop_all()
        if ok and not a.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"logs and configs kept in {work}")


def run(a, systems, nprobes_list, refines, dsinfo, queries_all, gt, qids, table_path, bins,
        server_cpus, client_cpus, work, stamp) -> bool:
    import lance
    import pyarrow

    t_start = time.monotonic()
    load_before = open("/proc/loadavg").read().split()[:3]
    queries = np.ascontiguousarray(queries_all, dtype=np.float32)
    idx = dsinfo.get("index_built", dsinfo["index"])

    # FAISS first, on every core (building is not measured).
    fa = None
    if "faiss" in systems:
        log("FAISS: loading the vectors from the local table and training IndexIVFPQ")
        tbl = lance.dataset(str(table_path)).to_table(columns=["id", "vector"])
        ids = tbl.column("id").to_numpy()
        if not np.array_equal(ids, np.arange(len(ids))):
            raise Failed("the table's ids are not 0..N-1 in order; FAISS positions would not be ids")
        vecs = tbl.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False).reshape(len(ids), -1)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        del tbl
        fa = Faiss(vecs, idx["num_partitions"], idx["num_sub_vectors"], idx.get("num_bits", 8), dsinfo["seed"])
        del vecs
        log(f"FAISS: trained in {fa.train_s:.1f} s, added in {fa.add_s:.1f} s")

    origin = Origin(bins["lakecache-bench"], a.origin_root, a.delay_ms, work, client_cpus)
    log(f"origin {origin.url} (delay {a.delay_ms} ms)")
    fleet = None
    ours = pyl = None
    if "ours" in systems:
        fleet = Fleet(a, bins, origin.url, a.bucket, work / "warm", server_cpus)
        log(f"cache nodes {', '.join(fleet.node_urls())}; search node {fleet.search_url}")
        status, body = http_get(f"{fleet.search_url}/v1/table/", headers={"x-api-key": API_KEY}, timeout=60)
        if status != 200 or a.table.encode() not in body:
            raise Failed(f"the search node does not list table {a.table}: {status} {body[:300]!r}")
        ours = Ours(fleet.search_url, a.table, queries)
    uri = f"s3://{a.bucket}/{a.table}.lance"
    if "pylance" in systems:
        pyl = Pylance(uri, origin.url, queries)

    # A round stopped by its time limit leaves the rest of the queries to the next round of
    # that system and setting, so that a slow system's recall covers more than the first few.
    offsets: dict = {}

    def query_fn(sysname: str, st: dict):
        """The system's query function at a setting, with this process pinned for it."""
        if sysname == "ours":
            pin_self(client_cpus)
            return ours.query_fn(st["nprobes"], st["refine"])
        pin_self(server_cpus)
        if sysname == "pylance":
            return pyl.query_fn(st["nprobes"], st["refine"])
        return fa.query_fn(queries, st["nprobes"], st["refine"])

    def measure(sysname: str, st: dict, max_seconds: float) -> dict:
        key = (sysname, setting_label(st))
        off = offsets.get(key, 0) % len(qids)
        qs = qids[off:] + qids[:off]
        r = closed_loop(query_fn(sysname, st), qs, a.concurrency, max_seconds)
        if r["errors"]:
            log(f"  {sysname}: {len(r['errors'])} errors, first: {r['errors'][0]}")
        if not r["qids"]:
            raise Failed(f"{sysname} answered no query at {setting_label(st)}: {r['errors'][:3]}")
        offsets[key] = off + len(r["qids"]) + len(r["errors"])
        return r

    def fixed_load(st: dict, here: list[str], summary: dict) -> list[dict]:
        """Latency at a fixed offered load: every system at the same rate (a fraction of the
        slowest one's measured maximum: the same work for all), then each at that fraction
        of its own maximum."""
        out = []
        common = a.open_fraction * min(summary[s]["qps_median"] for s in here)
        plan = [(s, "same rate", common) for s in here]
        for s in here:
            own = a.open_fraction * summary[s]["qps_median"]
            if own > common * 1.05:
                plan.append((s, "own max", own))
        for sysname, basis, rate in plan:
            r = open_loop(query_fn(sysname, st), qids, rate, a.open_seconds, a.open_workers)
            r.update(system=sysname, basis=basis)
            if r["errors"]:
                log(f"  open {sysname}: {len(r['errors'])} errors, first: {r['errors'][0]}")
            log(f"  fixed load {sysname} ({basis}) {rate:.1f}/s: achieved {r['achieved_qps']:.1f}/s, "
                f"p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} p99.9 {r['p999_ms']:.1f} ms")
            out.append(r)
        return out

    def profile_ours(st: dict) -> dict:
        """Ours at saturation for --perf-seconds more, with `perf record` sampling the server
        CPUs (where the search node and the cache nodes run, and nothing else of this run)."""
        out_dir = a.perf_dir or (work / "perf")
        out_dir.mkdir(parents=True, exist_ok=True)
        label = setting_label(st).replace(" ", "").replace(",", "-")
        data = out_dir / f"perf-{label}.data"
        cpus = a.server_cpus if not a.no_pin else None
        argv = ["perf", "record", "-e", "cpu-clock", "-F", "999", "-o", str(data)]
        if a.perf_call_graph != "none":
            argv += ["--call-graph", a.perf_call_graph]
        argv += ["-C", cpus] if cpus else ["-a"]
        rec = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        r = measure("ours", st, a.perf_seconds)
        rec.send_signal(signal.SIGINT)
        _, err = rec.communicate(timeout=120)
        if rec.returncode not in (0, -signal.SIGINT):
            raise Failed(f"perf record failed ({rec.returncode}): {err.decode(errors='replace')[-500:]}")
        n = len(r["qids"])
        log(f"  perf ({setting_label(st)}): {n} queries in {r['wall_s']:.1f} s under perf, data {data}")
        names = {str(pid): name for name, pid in fleet.named_pids()}
        (out_dir / f"perf-{label}.json").write_text(json.dumps(
            {"setting": st, "queries": n, "wall_s": r["wall_s"], "cpus": cpus or "all", "pids": names}) + "\n")
        return {"data": str(data), "queries": n, "wall_s": r["wall_s"], "cpus": cpus or "all", "pids": names}

    def brief(r: dict) -> str:
        n = len(r["qids"])
        rec = np.mean(recall_at_k(r["ids"], r["qids"], gt))
        return f"{n} q, {n / r['wall_s']:.1f} q/s, p50 {pct(r['latency_s'], 50) * 1e3:.1f} ms, recall {rec:.3f}"

    # Warm ours and pylance at the largest setting: every page the others touch is read.
    big = {"nprobes": max(nprobes_list), "refine": max((r for r in refines if r is not None), default=None)}
    if ours:
        r = measure("ours", big, a.warm_seconds)
        log(f"ours warm pass ({setting_label(big)}): {brief(r)}")
    if pyl:
        r = measure("pylance", big, a.pylance_warm_seconds)
        log(f"pylance warm ({setting_label(big)}): {brief(r)}")

    settings = [{"nprobes": n, "refine": r} for r in refines for n in nprobes_list]
    if fa and not a.no_exact:
        settings.append({"nprobes": None, "refine": None})
    raw_rounds = []
    points = []
    origin_before = fleet.origin_requests() if fleet else {}
    limit = {"ours": a.seconds, "pylance": a.pylance_seconds, "faiss": a.seconds}
    for st in settings:
        here = [s for s in systems if st["nprobes"] is not None or s == "faiss"]
        log(f"setting {setting_label(st)}")
        for s in here:  # unmeasured warm-up round
            measure(s, st, limit[s] / 2)
        runs = {s: [] for s in here}
        for rnd in range(1, a.rounds + 1):
            for s in here:
                r = measure(s, st, limit[s])
                runs[s].append(r)
                log(f"  r{rnd} {s}: {brief(r)}")
                raw_rounds.append({"setting": st, "system": s, "round": rnd, "wall_s": r["wall_s"], "qids": r["qids"],
                                   "latency_us": [round(x * 1e6) for x in r["latency_s"]],
                                   "recall": recall_at_k(r["ids"], r["qids"], gt), "errors": r["errors"]})
        pt = {"setting": st, "summary": {s: summarize(runs[s], gt) for s in here}}
        if "ours" in runs and "pylance" in runs:
            first_py = {}
            for r in runs["pylance"]:
                for q, ids in zip(r["qids"], r["ids"]):
                    first_py.setdefault(q, ids)
            same = total = 0
            for q, ids in zip(runs["ours"][0]["qids"], runs["ours"][0]["ids"]):
                if q in first_py:
                    total += 1
                    same += ids == first_py[q]
            pt["agree_with_pylance"] = [same, total]
        if a.open_fraction > 0:
            pt["open"] = fixed_load(st, here, pt["summary"])
        if a.perf_seconds > 0 and "ours" in here:
            pt["perf"] = profile_ours(st)
        points.append(pt)
    unpin()
    load_after = open("/proc/loadavg").read().split()[:3]
    origin_measured = None
    if fleet:
        after = fleet.origin_requests()
        origin_measured = {k: v - origin_before.get(k, 0) for k, v in after.items()}
        log(f"ours: origin requests during the measured rounds: {fmt_counts(origin_measured)}")

    # --- cold ----------------------------------------------------------------------------
    cold = {"nprobes": a.cold_nprobes, "ours": [], "pylance": [], "pylance_counted": None}
    if fleet:
        fleet.stop()
        shutil.rmtree(fleet.state, ignore_errors=True)
        fleet = None
    for trial in range(1, a.cold_trials + 1):
        # Each trial its own pair of queries, from the end of the set.
        q1, q2 = len(queries) - 2 * trial, len(queries) - 2 * trial + 1
        if "ours" in systems:
            f = Fleet(a, bins, origin.url, a.bucket, work / f"cold-{trial}", server_cpus)
            try:
                before = f.origin_requests()
                fn = Ours(f.search_url, a.table, queries).query_fn(a.cold_nprobes, None)
                state: dict = {}
                t0 = time.perf_counter()
                fn(q1, state)
                first = time.perf_counter() - t0
                io = json.loads(state["io"]) if state.get("io") else None
                after = f.origin_requests()
                served = f.served_requests()
                t0 = time.perf_counter()
                fn(q2, state)
                second = time.perf_counter() - t0
                if state.get("conn"):
                    state["conn"].close()
                diff = {k: v - before.get(k, 0) for k, v in after.items()}
                cold["ours"].append({"trial": trial, "first_ms": first * 1e3, "second_ms": second * 1e3,
                                     "origin_requests": diff, "node_requests": served, "io": io})
                log(f"cold ours #{trial}: first {first * 1e3:.0f} ms, second {second * 1e3:.0f} ms, origin requests {fmt_counts(diff)}")
            finally:
                f.stop()
                shutil.rmtree(f.state, ignore_errors=True)
        if "pylance" in systems:
            pin_self(server_cpus)
            t0 = time.perf_counter()
            p = Pylance(uri, origin.url, queries)
            t_open = time.perf_counter() - t0
            fn = p.query_fn(a.cold_nprobes, None)
            fn(q1, {})
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            fn(q2, {})
            second = time.perf_counter() - t0
            cold["pylance"].append({"trial": trial, "open_ms": t_open * 1e3, "first_ms": first * 1e3, "second_ms": second * 1e3})
            log(f"cold pylance #{trial}: open+first {first * 1e3:.0f} ms (open {t_open * 1e3:.0f}), second {second * 1e3:.0f} ms")
    if "pylance" in systems:
        proxy = CountingProxy(origin.url)
        try:
            q1, q2 = len(queries) - 2, len(queries) - 1
            t0 = time.perf_counter()
            p = Pylance(uri, proxy.url, queries)
            t_open = time.perf_counter() - t0
            fn = p.query_fn(a.cold_nprobes, None)
            fn(q1, {})
            first = time.perf_counter() - t0
            counts = dict(proxy.counts)
            t0 = time.perf_counter()
            fn(q2, {})
            second = time.perf_counter() - t0
            cold["pylance_counted"] = {"open_ms": t_open * 1e3, "first_ms": first * 1e3, "second_ms": second * 1e3,
                                       "origin_requests": counts}
            log(f"cold pylance (counted): origin requests {fmt_counts(counts)}")
            # Then warm: what a warm pylance query still asks the origin for, per setting kind.
            warm_counts = []
            for refine in refines:
                st = {"nprobes": big["nprobes"], "refine": refine}
                fn = p.query_fn(st["nprobes"], refine)
                for qi in qids[:PROXY_WARM_QUERIES]:
                    fn(qi, {})
                before = dict(proxy.counts)
                for qi in qids[:PROXY_COUNTED_QUERIES]:
                    fn(qi, {})
                n = min(len(qids), PROXY_COUNTED_QUERIES)
                per_query = {k: (v - before.get(k, 0)) / n for k, v in proxy.counts.items() if v - before.get(k, 0)}
                warm_counts.append({"setting": st, "queries": n, "per_query": per_query})
                log(f"warm pylance ({setting_label(st)}): origin requests per query {per_query}")
            cold["pylance_warm_per_query"] = warm_counts
        finally:
            proxy.stop()
    unpin()

    try:
        import faiss
        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = "not installed"
    import matplotlib
    command = a.command or " ".join([sys.executable.rsplit("/", 1)[-1]] + [str(x) for x in sys.argv])
    a.raw_dir.mkdir(parents=True, exist_ok=True)
    raw_path = a.raw_dir / f"search-{stamp}.json"
    res = {
        "meta": {
            "command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "git": git_facts(),
            "machine": machine_facts(work), "load_before": load_before, "load_after": load_after,
            "binaries": {k: binary_facts(p) for k, p in bins.items()},
            "versions": {"lance": lance.__version__, "lance_rust": lance_rust_version(), "pyarrow": pyarrow.__version__,
                         "numpy": np.__version__, "faiss": faiss_version, "matplotlib": matplotlib.__version__,
                         "python": sys.version.split()[0]},
            "elapsed_s": round(time.monotonic() - t_start, 1),
        },
        "dataset": dsinfo,
        "config": {"profile": a.profile, "delay_ms": a.delay_ms, "concurrency": a.concurrency, "queries": len(qids),
                   "rounds": a.rounds, "seconds": a.seconds, "pylance_seconds": a.pylance_seconds,
                   "pylance_warm_seconds": a.pylance_warm_seconds, "cache_nodes": a.cache_nodes,
                   "page_size": a.page_size, "memory_capacity": a.memory_capacity, "disk_capacity": a.disk_capacity,
                   "pinning": {"server": server_cpus, "client": client_cpus}, "systems": systems,
                   "search_page_cache": a.search_page_cache, "open_fraction": a.open_fraction,
                   "open_seconds": a.open_seconds, "open_workers": a.open_workers},
        "faiss": {"train_s": fa.train_s if fa else float("nan"), "add_s": fa.add_s if fa else float("nan")},
        "points": points,
        "ours_origin_requests_measured": origin_measured,
        "cold": cold,
        "files": {"png": rel(a.out_png), "raw": rel(raw_path)},
    }
    raw_path.write_text(json.dumps({**res, "rounds": raw_rounds}, default=str) + "\n")
    a.out_md.parent.mkdir(parents=True, exist_ok=True)
    a.out_png.parent.mkdir(parents=True, exist_ok=True)
    plot(a.out_png, res)
    write_report(a.out_md, res)
    log(f"wrote {a.out_md}, {a.out_png}, {raw_path} ({time.monotonic() - t_start:.0f} s)")
    print(a.out_md.read_text())
    return True


def rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(REPO))
    except ValueError:
        return str(p)


if __name__ == "__main__":
    sys.exit(main())
