#!/usr/bin/env python3
"""Where the search tier's CPU goes, from a `perf record` that run.py took with --perf-seconds.

Reads PERF.data and the PERF.json beside it (the setting, the queries answered while perf
ran, which process each pid is), and prints Markdown: CPU time per query by process, by
component (lance, DataFusion, Arrow, our code, tokio, HTTP, allocator, copies, kernel, ...)
within each process, and the hottest symbols. Components and symbols count the sampled leaf
frame only, so "our code" there is the time spent in our own functions, not in what they
call; when the recording has call chains, a second table gives inclusive shares of the
query's stages.

Usage: perf_summary.py PERF.data [--top N] [--title TEXT]
"""

import argparse
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

# Checked in order: the first that matches a symbol (or its DSO) names its component.
COMPONENTS = [
    ("kernel", lambda sym, dso: dso.startswith("[kernel") or dso == "[vdso]"),
    ("allocator", lambda sym, dso: sym.startswith(("mi_", "_mi_", "malloc", "free", "realloc", "calloc",
                                                   "cfree", "__libc_malloc", "__libc_free", "_int_"))
     or "mimalloc" in sym),
    ("memcpy/memset", lambda sym, dso: sym.startswith(("__memmove", "__memcpy", "memcpy", "memmove",
                                                       "__memset", "memset", "__memcmp", "memcmp", "bcmp"))),
    ("lakecache", lambda sym, dso: "lakecache" in sym),
    ("lance", lambda sym, dso: "lance" in sym),
    ("datafusion", lambda sym, dso: "datafusion" in sym or "sqlparser" in sym),
    ("arrow", lambda sym, dso: "arrow" in sym or "parquet" in sym),
    ("object_store/reqwest", lambda sym, dso: "object_store" in sym or "reqwest" in sym),
    ("tokio", lambda sym, dso: "tokio" in sym or "mio::" in sym),
    ("HTTP (hyper, h2, http)", lambda sym, dso: any(t in sym for t in ("hyper", "h2::", "http::", "httparse"))),
    ("hashing/crc", lambda sym, dso: any(t in sym for t in ("hash", "Hash", "crc32", "sha2", "siphash"))),
    ("moka/futures/std", lambda sym, dso: any(t in sym for t in ("moka", "futures", "core::", "alloc::", "std::"))),
    ("libc/other shared", lambda sym, dso: dso.endswith(".so") or ".so." in dso),
]


def component(sym: str, dso: str) -> str:
    for name, test in COMPONENTS:
        if test(sym, dso):
            return name
    return "other"


def samples(data: Path):
    """(pid, leaf symbol, leaf dso, every frame's symbol) of each sample; the frames are
    empty when the data has no call chains."""
    out = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "pid,ip,sym,dso", "--no-inline"],
        check=True, capture_output=True, text=True, errors="replace").stdout
    pid, frames = None, []

    def done():
        leaf_sym, leaf_dso = frames[0]
        return pid, leaf_sym, leaf_dso, [f for f, _ in frames] if len(frames) > 1 else []

    # A sample is a header line ("<pid> ...") and, with call chains, one indented line per
    # frame and a blank line; without them, the leaf frame is on the header line.
    for line in out.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        head, _, rest = stripped.partition(" ")
        if not line.startswith(("\t", " " * 8)) and head.isdigit():
            if pid is not None and frames:
                yield done()
            pid, frames = int(head), []
            if rest.strip():
                frames.append(frame(rest))
        elif pid is not None:
            frames.append(frame(stripped))
    if pid is not None and frames:
        yield done()


def frame(text: str) -> tuple[str, str]:
    """(symbol, dso) of "<addr> <sym>+0x.. (<dso>)"."""
    text = text.strip()
    dso = ""
    if text.endswith(")") and "(" in text:
        text, _, dso = text.rpartition("(")
        dso = dso[:-1]
    parts = text.split(None, 1)
    if parts and all(c in "0123456789abcdef" for c in parts[0]):
        parts = parts[1:]
    sym = parts[0] if parts else "[unknown]"
    sym = sym.rsplit("+0x", 1)[0].strip()
    return sym, Path(dso).name if dso.startswith("/") else dso


# Inclusive shares (a sample counts for a row when any frame of its stack matches), with
# call chains only: where a query's time goes, stage by stage.
STAGES = [
    ("the HTTP API handler (run_query: plan, execute, encode)", "lakecache_search_node::api::run_query"),
    ("lance: planning the query (Scanner::create_plan_impl)", "Scanner::create_plan_impl"),
    ("  of it: DataFusion's physical optimizer rules", "PhysicalOptimizerRule"),
    ("lance: ANN partition search (IVF + PQ distances)", "accumulate_prepared_partition_search"),
    ("lance: reading rows (filtered_read: ids, refine vectors)", "FilteredReadStream::read_fragment"),
    ("lance: I/O tasks (IoTask::run: every byte range read)", "lance_io::scheduler::IoTask::run"),
    ("  of it: object_store layers above ours (get_range → get_opts)", "CloudObjectReader as lance_io::traits::Reader>::get_range"),
    ("  of it: collecting a range's bytes (GetResult::bytes)", "object_store::GetResult::bytes"),
    ("the fleet client: FleetStore::get_opts", "lakecache_fleet::client::FleetStore as object_store::ObjectStore>::get_opts"),
    ("the fleet client: any lakecache_fleet frame", "lakecache_fleet::"),
    ("allocator (any frame)", ("mi_", "_mi_")),
]


def matches(frame_sym: str, pattern) -> bool:
    """A pattern is a substring, or a tuple of prefixes."""
    if isinstance(pattern, tuple):
        return frame_sym.startswith(pattern)
    return pattern in frame_sym


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--title", default=None)
    a = ap.parse_args()
    meta = json.loads(a.data.with_suffix(".json").read_text())
    names = meta["pids"]
    queries = meta["queries"]
    hz = 999
    by_proc: Counter = Counter()
    by_comp: dict[str, Counter] = defaultdict(Counter)
    by_sym: Counter = Counter()
    stages: dict[str, Counter] = defaultdict(Counter)
    with_stacks = 0
    total = 0
    for pid, sym, dso, stack in samples(a.data):
        proc = names.get(str(pid), "other processes" if pid else "idle")
        total += 1
        by_proc[proc] += 1
        comp = component(sym, dso)
        by_comp[proc][comp] += 1
        by_sym[(proc, comp, sym[:110])] += 1
        if stack:
            with_stacks += 1
            for label, pattern in STAGES:
                if any(matches(f, pattern) for f in stack):
                    stages[proc][label] += 1
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    us = lambda n: n / hz * 1e6 / max(queries, 1)  # noqa: E731
    print(f"### {a.title or 'perf: ' + a.data.name}\n")
    print(f"{total} samples at {hz} Hz on CPU(s) {meta['cpus']} over {meta['wall_s']:.1f} s, "
          f"{queries} queries answered meanwhile ({queries / meta['wall_s']:.1f} QPS under perf). "
          f"CPU µs per query = samples / {hz} Hz / queries.\n")
    print("| process | share of samples | CPU µs per query |")
    print("|---|---|---|")
    for proc, n in by_proc.most_common():
        print(f"| {proc} | {100 * n / total:.1f}% | {us(n):.0f} |")
    print("\n| process | component | share of samples | CPU µs per query |")
    print("|---|---|---|---|")
    for proc, _ in by_proc.most_common():
        for comp, n in by_comp[proc].most_common():
            if 100 * n / total >= 0.5:
                print(f"| {proc} | {comp} | {100 * n / total:.1f}% | {us(n):.0f} |")
    if with_stacks:
        print("\nInclusive, from the call chains (a sample counts for a row when any frame of its stack "
              "matches; stacks perf could not unwind count for none):\n")
        print("| process | stage | share of the process's samples | CPU µs per query |")
        print("|---|---|---|---|")
        for proc, _ in by_proc.most_common():
            for label, _ in STAGES:
                n = stages[proc][label]
                if n:
                    print(f"| {proc} | {label} | {100 * n / by_proc[proc]:.1f}% | {us(n):.0f} |")
    print(f"\nHottest {a.top} symbols (leaf frames):\n")
    print("| process | component | symbol | share |")
    print("|---|---|---|---|")
    for (proc, comp, sym), n in by_sym.most_common(a.top):
        print(f"| {proc} | {comp} | `{sym.replace('|', '/')}` | {100 * n / total:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
