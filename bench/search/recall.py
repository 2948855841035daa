#!/usr/bin/env python3
"""High-recall operating points: lance's vector indices served by lakecache, against FAISS in
memory and pylance reading the origin directly, on the same core.

For each index (lance's defaults beside tuned parameters: IVF_PQ with refine, IVF_HNSW_SQ,
IVF_RQ), built by pylance on its own copy of the table that `dataset.py` made (the data files
are copied, the index is built on the copy), and each search setting of that index (nprobes,
refine_factor, ef), this measures at a fixed number of client threads:

- **ours**: the table through a lakecache search node over two cache nodes over the bench
  origin (30 ms per request), warmed by one pass; raw HTTP, Arrow answers.
- **faiss**: IndexHNSWFlat and IndexIVFPQ + IndexRefineFlat in memory, over the same vectors,
  swept over efSearch / nprobe and k_factor (one thread per query, as ours).
- **pylance**: pylance reading the origin directly, at the settings where ours first reaches
  the recall targets (it pays the origin's delay on every read, so it runs for a short time).

Recall@10 is against the exact top-10 of `dataset.py`. The report (bench/results/) has every
point, the best QPS of each system at recall >= each target, their ratios, latency at half
of ours' own maximum at the chosen points, ours at 1 and 2 server cores, and a recall/QPS
plot. Run it through scripts/bench-search-recall.sh (release binaries, pinning, packages).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset as D  # noqa: E402
import run as R  # noqa: E402

K = R.K

# Index specs: tag -> (lance index type, create_index kwargs, the settings to sweep).
# Settings: (nprobes, refine_factor or None, ef or None).
# (The last run showed recall bounded by the partitions probed, not by refine beyond 10,
# nor by ef beyond 100: the sweep goes wider in nprobes instead.)
PQ_SETTINGS = [(n, r, None) for n in (20, 50, 100, 200) for r in (None, 10, 30)]
HNSW_SETTINGS = [(n, None, ef) for n in (5, 10, 20, 40, 80) for ef in (50, 100)]
RQ_SETTINGS = [(n, r, None) for n in (20, 50, 100, 200) for r in (None, 10)]
# "_default": what the search node's create_index gives a LanceDB client that names no
# parameters (rows / 4096 partitions, dim / 16 sub-vectors, lance's HNSW defaults), which
# pylance will not choose on its own.
INDEXES = {
    "ivf_pq_default": ("IVF_PQ", {"num_partitions": 244, "num_sub_vectors": 8}, PQ_SETTINGS),
    "ivf_pq": ("IVF_PQ", {"num_partitions": 1000, "num_sub_vectors": 32, "num_bits": 8}, PQ_SETTINGS),
    "ivf_hnsw_sq_default": ("IVF_HNSW_SQ", {"num_partitions": 244}, HNSW_SETTINGS),
    "ivf_hnsw_sq": ("IVF_HNSW_SQ", {"num_partitions": 100, "m": 20, "ef_construction": 200}, HNSW_SETTINGS),
    "ivf_rq": ("IVF_RQ", {"num_partitions": 1000}, RQ_SETTINGS),
}
FAISS_HNSW_EF = (16, 32, 64, 128, 256)
FAISS_IVF_SETTINGS = [(n, r) for n in (10, 20, 50) for r in (None, 5, 10)]


def log(msg: str):
    R.log(msg)


def index_table(a, base: Path, tag: str, itype: str, kwargs: dict) -> tuple[str, dict]:
    """The table `<base>_<tag>`: the base table's files copied, and the index built on it."""
    import lance

    name = f"{a.table}_{tag}"
    path = a.origin_root / a.bucket / f"{name}.lance"
    marker = path / "_lakecache_bench_index.json"
    want = {"type": itype, "params": kwargs, "base": str(base)}
    if marker.exists() and json.loads(marker.read_text()).get("want") == want:
        facts = json.loads(marker.read_text())
        log(f"{name}: {itype} {kwargs or '(lance defaults)'} already built ({facts['build_s']:.0f} s)")
        return name, facts
    if path.exists():
        shutil.rmtree(path)
    D.remove_etag_sidecars(a.origin_root / a.bucket, name)
    shutil.copytree(base, path, ignore=shutil.ignore_patterns("_indices", "_lakecache_bench_index.json"))
    ds = lance.dataset(str(path))
    log(f"{name}: building {itype} {kwargs or '(lance defaults)'}")
    t0 = time.monotonic()
    ds.create_index("vector", index_type=itype, metric="L2", replace=True, **kwargs)
    build_s = time.monotonic() - t0
    ds = lance.dataset(str(path))
    stats = ds.stats.index_stats(ds.describe_indices()[0].name)
    first = (stats.get("indices") or [{}])[0]
    sub = first.get("sub_index") or {}
    facts = {"want": want, "build_s": build_s, "index_type": stats.get("index_type"),
             "num_partitions": first.get("num_partitions"),
             "sub_index": {k: v for k, v in {**sub, **(sub.get("params") or {})}.items()
                           if k in ("index_type", "m", "ef_construction", "num_sub_vectors", "num_bits", "max_level")},
             "index_bytes": sum(p.stat().st_size for p in (path / "_indices").rglob("*") if p.is_file())}
    # Old versions (their manifest still names the copied index) are not read by anyone.
    D.write_etag_sidecars(a.origin_root / a.bucket, path)
    marker.write_text(json.dumps(facts, indent=2, default=str) + "\n")
    log(f"{name}: built in {build_s:.0f} s ({facts['num_partitions']} partitions)")
    return name, facts


def ours_fn(url: str, table: str, queries: np.ndarray, st: dict):
    """Ours' query at a setting: run.py's raw-HTTP client, with HNSW's ef when the setting has one."""
    return R.Ours(url, table, queries).query_fn(st["nprobes"], st["refine"], st.get("ef"))


def pylance_fn(ds, queries: np.ndarray, st: dict):
    def run(qi: int, state: dict) -> list[int]:
        nearest = {"column": "vector", "q": queries[qi], "k": K, "nprobes": st["nprobes"],
                   "minimum_nprobes": st["nprobes"], "maximum_nprobes": st["nprobes"],
                   "refine_factor": st["refine"]}
        if st.get("ef") is not None:
            nearest["ef"] = st["ef"]
        return ds.to_table(nearest=nearest, columns=["id"], prefilter=True).column("id").to_pylist()

    return run


class FaissPeers:
    """FAISS's in-memory indices over the same vectors, built once."""

    def __init__(self, vecs: np.ndarray, a):
        import faiss

        self.faiss = faiss
        d = vecs.shape[1]
        faiss.omp_set_num_threads(max(1, a.build_threads))
        self.build = {}
        t0 = time.monotonic()
        self.hnsw = faiss.IndexHNSWFlat(d, a.faiss_m)
        self.hnsw.hnsw.efConstruction = a.faiss_ef_construction
        self.hnsw.add(vecs)
        self.build["hnsw"] = time.monotonic() - t0
        t0 = time.monotonic()
        quant = faiss.IndexFlatL2(d)
        self.ivfpq = faiss.IndexIVFPQ(quant, d, a.faiss_nlist, a.faiss_pq_m, 8)
        self.ivfpq.cp.seed = 42
        self.ivfpq.train(vecs)
        self.refined = faiss.IndexRefineFlat(self.ivfpq)
        self.refined.add(vecs)
        self._quant = quant
        self.build["ivfpq"] = time.monotonic() - t0
        faiss.omp_set_num_threads(1)

    def fn(self, queries: np.ndarray, st: dict):
        faiss = self.faiss
        if st["index"] == "faiss_hnsw":
            params = faiss.SearchParametersHNSW(efSearch=st["ef"])

            def run(qi, state):
                return self.hnsw.search(queries[qi:qi + 1], K, params=params)[1][0].tolist()
            return run
        ivf = faiss.SearchParametersIVF(nprobe=st["nprobes"])
        if st["refine"] is None:
            def run(qi, state):
                return self.ivfpq.search(queries[qi:qi + 1], K, params=ivf)[1][0].tolist()
            return run
        params = faiss.IndexRefineSearchParameters(k_factor=float(st["refine"]), base_index_params=ivf)

        def run(qi, state):
            return self.refined.search(queries[qi:qi + 1], K, params=params)[1][0].tolist()
        return run


def label(st: dict) -> str:
    parts = [st["index"]]
    if st.get("nprobes") is not None:
        parts.append(f"nprobes {st['nprobes']}")
    if st.get("refine") is not None:
        parts.append(f"refine {st['refine']}")
    if st.get("ef") is not None:
        parts.append(f"ef {st['ef']}")
    return ", ".join(parts)


def summary(r: dict, gt: np.ndarray) -> dict:
    rec = R.recall_at_k(r["ids"], r["qids"], gt)
    lat = sorted(r["latency_s"])
    return {"recall": float(np.mean(rec)) if rec else float("nan"), "qps": len(lat) / r["wall_s"] if r["wall_s"] else 0,
            "p50_ms": R.pct(lat, 50) * 1e3, "p99_ms": R.pct(lat, 99) * 1e3, "queries": len(lat),
            "errors": len(r["errors"])}


def best_at(points: list[dict], system: str, target: float) -> dict | None:
    ok = [p for p in points if p["system"] == system and p["recall"] >= target]
    return max(ok, key=lambda p: p["qps"]) if ok else None


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--origin-root", required=True, type=Path)
    ap.add_argument("--bucket", default="bench")
    ap.add_argument("--table", required=True, help="the base table made by dataset.py")
    ap.add_argument("--truth", type=Path)
    ap.add_argument("--indexes", default="ivf_pq_default,ivf_pq,ivf_hnsw_sq,ivf_rq",
                    help=f"comma-separated, of {', '.join(INDEXES)}")
    ap.add_argument("--profile", choices=["release", "debug"], default="release")
    ap.add_argument("--target-dir", type=Path)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=20, help="time limit of one ours/FAISS point")
    ap.add_argument("--repeat", type=int, default=20,
                    help="passes over the queries one ours/FAISS point may make within --seconds (default 20)")
    ap.add_argument("--pylance-seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--targets", default="0.95,0.98")
    ap.add_argument("--open-seconds", type=float, default=10)
    ap.add_argument("--build-threads", type=int, default=2, help="FAISS build threads (not measured)")
    ap.add_argument("--faiss-m", type=int, default=32)
    ap.add_argument("--faiss-ef-construction", type=int, default=80)
    ap.add_argument("--faiss-nlist", type=int, default=1000)
    ap.add_argument("--faiss-pq-m", type=int, default=32)
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--delay-ms", type=int, default=30)
    ap.add_argument("--cache-nodes", type=int, default=2)
    ap.add_argument("--page-size", default="1 MiB")
    ap.add_argument("--memory-capacity", default="2 GiB")
    ap.add_argument("--disk-capacity", default="8 GiB")
    ap.add_argument("--pin-budget", default="2 GiB")
    ap.add_argument("--search-page-cache", default="2 GiB")
    ap.add_argument("--server-cpus", default="1")
    ap.add_argument("--client-cpus", default="0")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out-md", type=Path, default=R.REPO / "bench/results/search-recall.md")
    ap.add_argument("--out-png", type=Path, default=R.REPO / "bench/results/search-recall-points.png")
    ap.add_argument("--raw-dir", type=Path, default=R.REPO / "bench/results/raw")
    ap.add_argument("--command", help="command line to name in the report")
    ap.add_argument("--build-only", action="store_true", help="build (or check) the indices, then stop")
    return ap.parse_args()


def main() -> int:
    a = parse_args()
    targets = [float(t) for t in a.targets.split(",")]
    tags = [t.strip() for t in a.indexes.split(",") if t.strip()]
    for t in tags:
        if t not in INDEXES:
            raise SystemExit(f"unknown index {t!r}; known: {', '.join(INDEXES)}")
    truth = a.truth or (a.origin_root.parent / "truth" / a.table)
    dsinfo = json.loads((truth / "dataset.json").read_text())
    queries_all = np.ascontiguousarray(np.load(truth / "queries.npy"), dtype=np.float32)
    gt = np.load(truth / "gt.npy")
    qids = list(range(min(a.queries, len(queries_all))))
    # A measured point cycles through the queries until --seconds (a single pass of a fast
    # index would last a few milliseconds).
    timed = qids * max(1, a.repeat)
    base = a.origin_root / a.bucket / f"{a.table}.lance"
    target_dir = a.target_dir or Path.home() / ".cache/lakecache/target"
    bins = {n: target_dir / a.profile / n for n in ("cache-node", "search-node", "lakecache-bench")}
    for n, p in bins.items():
        if not p.exists() and not a.build_only:
            raise SystemExit(f"{n} is not built: {p}")
    work = a.work or Path(tempfile_dir())
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    t_all = time.monotonic()
    load_before = open("/proc/loadavg").read().split()[:3]

    tables = {}
    for tag in tags:
        itype, kwargs, _ = INDEXES[tag]
        tables[tag] = index_table(a, base, tag, itype, kwargs)
    if a.build_only:
        return 0

    import lance

    points: list[dict] = []
    fa = None
    if not a.no_faiss:
        tbl = lance.dataset(str(base)).to_table(columns=["id", "vector"])
        ids = tbl.column("id").to_numpy()
        if not np.array_equal(ids, np.arange(len(ids))):
            raise R.Failed("the table's ids are not 0..N-1 in order")
        vecs = np.ascontiguousarray(
            tbl.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False).reshape(len(ids), -1),
            dtype=np.float32)
        del tbl
        log(f"FAISS: building HNSWFlat (M {a.faiss_m}, efConstruction {a.faiss_ef_construction}) and "
            f"IVFPQ (nlist {a.faiss_nlist}, m {a.faiss_pq_m}) + refine on {a.build_threads} threads")
        fa = FaissPeers(vecs, a)
        del vecs
        log(f"FAISS: built in {fa.build}")

    origin = R.Origin(bins["lakecache-bench"], a.origin_root, a.delay_ms, work, a.client_cpus)
    fleet = R.Fleet(a, bins, origin.url, a.bucket, work / f"fleet-{stamp}", a.server_cpus)
    res = {"args": {k: str(v) for k, v in vars(a).items()}, "dataset": dsinfo, "tables": {}, "points": points,
           "faiss_build_s": fa.build if fa else None, "machine": R.machine_facts(work), "git": R.git_facts(),
           "stamp": stamp, "load_before": load_before}
    try:
        # FAISS on the server core, one query per call.
        if fa is not None:
            R.pin_self(a.server_cpus)
            faiss_settings = [{"index": "faiss_hnsw", "ef": ef, "nprobes": None, "refine": None} for ef in FAISS_HNSW_EF]
            faiss_settings += [{"index": "faiss_ivfpq", "nprobes": n, "refine": r, "ef": None}
                               for n, r in FAISS_IVF_SETTINGS]
            for st in faiss_settings:
                r = R.closed_loop(fa.fn(queries_all, st), timed, a.concurrency, a.seconds)
                p = {"system": "faiss", "setting": st, "label": label(st), **summary(r, gt)}
                points.append(p)
                log(f"  faiss {p['label']}: recall {p['recall']:.3f} QPS {p['qps']:.0f}")
            R.unpin()

        for tag in tags:
            name, facts = tables[tag]
            res["tables"][tag] = {"name": name, **facts}
            settings = [{"index": tag, "nprobes": n, "refine": rf, "ef": ef} for n, rf, ef in INDEXES[tag][2]]
            # Warm: one pass at the heaviest setting.
            heavy = max(settings, key=lambda s: (s["nprobes"], s["refine"] or 0, s["ef"] or 0))
            R.pin_self(a.client_cpus)
            w = R.closed_loop(ours_fn(fleet.search_url, name, queries_all, heavy), qids, a.concurrency, 600)
            if w["errors"]:
                raise R.Failed(f"warming {name}: {w['errors'][:2]}")
            for st in settings:
                R.pin_self(a.client_cpus)
                r = R.closed_loop(ours_fn(fleet.search_url, name, queries_all, st), timed, a.concurrency, a.seconds)
                p = {"system": "ours", "setting": st, "label": label(st), **summary(r, gt)}
                points.append(p)
                log(f"  ours {p['label']}: recall {p['recall']:.3f} QPS {p['qps']:.0f} p99 {p['p99_ms']:.1f} ms")
            R.unpin()

        # pylance direct and the fixed-load latency at ours' chosen points.
        chosen = {}
        for t in targets:
            b = best_at(points, "ours", t)
            if b is not None:
                chosen[t] = b
        uri_of = {tag: f"s3://{a.bucket}/{tables[tag][0]}.lance" for tag in tags}
        res["chosen"] = {}
        for t, b in chosen.items():
            st = b["setting"]
            ds = lance.dataset(uri_of[st["index"]], storage_options=R.pylance_options(origin.url))
            R.pin_self(a.server_cpus)
            fn = pylance_fn(ds, queries_all, st)
            R.closed_loop(fn, qids[:8], a.concurrency, a.pylance_seconds)  # warm its caches
            r = R.closed_loop(fn, timed, a.concurrency, a.pylance_seconds)
            R.unpin()
            pl = {"system": "pylance", "setting": st, "label": label(st), **summary(r, gt)}
            points.append(pl)
            log(f"  pylance {pl['label']}: recall {pl['recall']:.3f} QPS {pl['qps']:.1f}")
            R.pin_self(a.client_cpus)
            name = tables[st["index"]][0]
            half = R.open_loop(ours_fn(fleet.search_url, name, queries_all, st), qids, max(1.0, b["qps"] / 2),
                               a.open_seconds, 32)
            R.unpin()
            res["chosen"][str(t)] = {"ours": b, "pylance": pl, "faiss": best_at(points, "faiss", t),
                                     "half_load": {k: v for k, v in half.items() if k != "hdr"}}
            log(f"  ours at half load ({half['offered_qps']:.0f} QPS): p99 {half['p99_ms']:.1f} ms")

        # Ours at the first target's point with both cores for the servers.
        if chosen:
            b = chosen[min(chosen)]
            st = b["setting"]
            name = tables[st["index"]][0]
            for cpus in (a.server_cpus, "0,1"):
                set_pids(fleet.pids(), cpus)
                R.unpin()
                r = R.closed_loop(ours_fn(fleet.search_url, name, queries_all, st), timed, a.concurrency, a.seconds)
                res.setdefault("cores", []).append({"server_cpus": cpus, "setting": st, **summary(r, gt)})
                log(f"  ours with servers on CPUs {cpus}: QPS {res['cores'][-1]['qps']:.0f}")
            set_pids(fleet.pids(), a.server_cpus)
    finally:
        fleet.stop()
        R.PROCS.stop_all()
    res["wall_s"] = time.monotonic() - t_all
    res["load_after"] = open("/proc/loadavg").read().split()[:3]
    a.raw_dir.mkdir(parents=True, exist_ok=True)
    (a.raw_dir / f"search-recall-{stamp}.json").write_text(json.dumps(res, indent=1, default=str))
    write_report(a, res, targets)
    plot(a.out_png, res)
    log(f"wrote {a.out_md} and {a.out_png} in {res['wall_s']:.0f} s")
    return 0


def tempfile_dir() -> str:
    import tempfile
    return tempfile.mkdtemp(prefix="lakecache-bench-recall.")


def set_pids(pids: list[int], cpus: str):
    import os
    want = R.parse_cpus(cpus)
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(tid), want)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass


def f(x, d=1):
    return R.fmt(x, d)


def write_report(a, res: dict, targets: list[float]):
    out = []
    w = out.append
    ds = res["dataset"]
    m = res["machine"]
    w("# Search at high recall: lance's indices through lakecache vs FAISS in memory vs pylance direct\n")
    w("Written by `bench/search/recall.py` (through `scripts/bench-search-recall.sh`); rerun it rather than editing this file.\n")
    w("## Setup\n")
    w(f"- command: `{a.command or ' '.join(sys.argv)}`")
    g = res["git"]
    w(f"- commit: `{g.get('commit', '?')}`{' (working tree had changes)' if g.get('dirty') else ''}; date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    w(f"- machine: `nproc` = {m['nproc']}; CPU {m['cpu']}; kernel {m['kernel']}; memory {m['memory']}")
    w(f"- load average before: {' '.join(res['load_before'])}; after: {' '.join(res['load_after'])}")
    w(f"- dataset: `{ds['table']}`, {ds['rows']:,} x {ds['dim']}-d float32 ({ds['clusters']} clusters, seed {ds['seed']}); "
      f"{a.queries} of its query vectors, k = {K}, recall@10 against the exact top-10")
    w(f"- ours: search node + {a.cache_nodes} cache nodes (page {a.page_size}, memory {a.memory_capacity}, disk "
      f"{a.disk_capacity}), search page cache {a.search_page_cache}, over the bench origin with {a.delay_ms} ms per "
      f"request; servers on CPU {a.server_cpus}, the client (this process) on CPU {a.client_cpus}; warmed by one "
      f"pass over the queries at the index's heaviest setting; {a.concurrency} client threads, closed loop, cycling "
      f"through the queries for at most {a.seconds:.0f} s (and {a.repeat} passes) per point")
    w(f"- FAISS: IndexHNSWFlat (M {a.faiss_m}, efConstruction {a.faiss_ef_construction}) and IndexIVFPQ (nlist "
      f"{a.faiss_nlist}, m {a.faiss_pq_m}, 8 bits) + IndexRefineFlat, over the same vectors; built on "
      f"{a.build_threads} threads ({', '.join(f'{k} {v:.0f} s' for k, v in (res['faiss_build_s'] or {}).items())}); "
      f"searched with one thread per query on CPU {a.server_cpus}, {a.concurrency} client threads")
    w(f"- pylance: `lance.dataset(\"s3://...\")` straight from the delayed origin, on CPU {a.server_cpus}, at the "
      f"settings where ours first reaches each target, for at most {a.pylance_seconds:.0f} s\n")
    w("### Indices (built by pylance on a copy of the table's data files)\n")
    w("| index | lance type | parameters | partitions | sub-index | index MiB | build s |")
    w("|---|---|---|---|---|---|---|")
    for tag, t in res["tables"].items():
        want = t["want"]
        params = ", ".join(f"{k} {v}" for k, v in want["params"].items()) or "lance's defaults"
        sub = t.get("sub_index") or {}
        sub_s = ", ".join(f"{k} {v}" for k, v in sub.items() if k in ("index_type", "m", "ef_construction", "num_sub_vectors", "num_bits")) or "—"
        w(f"| {tag} | {want['type']} | {params} | {t.get('num_partitions')} | {sub_s} | {t['index_bytes'] / 2**20:.0f} | {t['build_s']:.0f} |")
    w("\n## Operating points\n")
    w("The best QPS each system reaches at recall@10 of at least the target (ours and FAISS over every point "
      "measured; pylance at ours' point). Ratios: ours over the peer, above 1 means ours answers more per second.\n")
    w("| recall ≥ | ours: setting | ours recall | ours QPS | FAISS: setting | FAISS recall | FAISS QPS | pylance QPS | ours/FAISS | ours/pylance | ours p99 at half load |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in targets:
        c = res.get("chosen", {}).get(str(t))
        if not c:
            fb = best_at(res["points"], "faiss", t)
            w(f"| {t} | not reached | — | — | {fb['label'] if fb else 'not reached'} | {f(fb['recall'], 3) if fb else '—'} | {f(fb['qps']) if fb else '—'} | — | — | — | — |")
            continue
        o, pl, fb, h = c["ours"], c["pylance"], c["faiss"], c["half_load"]
        w(f"| {t} | {o['label']} | {o['recall']:.3f} | {f(o['qps'])} | {fb['label'] if fb else 'not reached'} | "
          f"{f(fb['recall'], 3) if fb else '—'} | {f(fb['qps']) if fb else '—'} | {f(pl['qps'])} (recall {pl['recall']:.3f}) | "
          f"{f(o['qps'] / fb['qps'], 2) if fb else '—'} | {f(o['qps'] / pl['qps'], 2) if pl['qps'] else '—'} | "
          f"{f(h['p99_ms'], 2)} ms at {f(h['offered_qps'])} QPS |")
    if res.get("cores"):
        w("\n### Ours at the first operating point with 1 and 2 server cores\n")
        w("With both cores the servers share them with the client (this process), so the second row is a bound, not a clean 2×.\n")
        w("| server CPUs | setting | recall | QPS | p50 ms | p99 ms |")
        w("|---|---|---|---|---|---|")
        for c in res["cores"]:
            w(f"| {c['server_cpus']} | {label(c['setting'])} | {c['recall']:.3f} | {f(c['qps'])} | {f(c['p50_ms'], 2)} | {f(c['p99_ms'], 2)} |")
    w("\n## Every point\n")
    w("| system | index, setting | recall@10 | QPS | p50 ms | p99 ms | queries | errors |")
    w("|---|---|---|---|---|---|---|---|")
    for p in sorted(res["points"], key=lambda p: (p["system"], p["label"])):
        w(f"| {p['system']} | {p['label']} | {p['recall']:.3f} | {f(p['qps'])} | {f(p['p50_ms'], 2)} | {f(p['p99_ms'], 2)} | {p['queries']} | {p['errors']} |")
    w(f"\nThe plot: `{a.out_png.name}`; raw numbers: `bench/results/raw/search-recall-{res['stamp']}.json`. Whole run {res['wall_s'] / 60:.0f} min.")
    a.out_md.parent.mkdir(parents=True, exist_ok=True)
    a.out_md.write_text("\n".join(out) + "\n")


def plot(path: Path, res: dict):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    groups: dict = {}
    for p in res["points"]:
        if p["system"] == "pylance":
            continue
        groups.setdefault((p["system"], p["setting"]["index"]), []).append(p)
    for (system, index), ps in sorted(groups.items()):
        ps = sorted(ps, key=lambda p: p["recall"])
        # The upper frontier: the best QPS at each recall or higher.
        front, best = [], -1.0
        for p in sorted(ps, key=lambda p: -p["recall"]):
            if p["qps"] > best:
                front.append(p)
                best = p["qps"]
        front = sorted(front, key=lambda p: p["recall"])
        ax.plot([p["recall"] for p in front], [p["qps"] for p in front], marker="o" if system == "ours" else "^",
                linestyle="-" if system == "ours" else "--", label=f"{system}: {index}")
    pl = [p for p in res["points"] if p["system"] == "pylance"]
    if pl:
        ax.scatter([p["recall"] for p in pl], [p["qps"] for p in pl], marker="x", s=80, color="black", label="pylance direct")
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("QPS (one server core, log scale)")
    ax.axvline(0.95, color="grey", linewidth=0.8, linestyle=":")
    ax.axvline(0.98, color="grey", linewidth=0.8, linestyle=":")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{res['dataset']['table']}: best QPS at each recall")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
