#!/usr/bin/env bash
# The page store (lakecache-bench pagestore) against fio on the same file, same CPU, same run.
#
# Random 4 KiB reads at each queue depth; ours and fio alternate (A B A B ...) after one
# warm-up pair per depth, both pinned to one CPU with taskset. Raw JSON goes to
# bench/results/raw/pagestore-<stamp>/, the summary to bench/results/pagestore.md.
#
# Knobs (environment): FILE SIZE PAGE ENGINE DEPTHS PAIRS RUN_SECONDS WARMUP_SECONDS CPU
# BENCH_BIN (skip the cargo build and use this binary). Defaults keep the whole run under
# ~5 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FILE=${FILE:-/var/tmp/lakecache-bench/pages.bin}
SIZE=${SIZE:-2GiB}
PAGE=${PAGE:-1MiB}
ENGINE=${ENGINE:-uring}
DEPTHS=${DEPTHS:-"1 32 128"}
PAIRS=${PAIRS:-5}
RUN_SECONDS=${RUN_SECONDS:-5}
WARMUP_SECONDS=${WARMUP_SECONDS:-2}
CPU=${CPU:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/lakecache/target}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW_REL=bench/results/raw/pagestore-$STAMP
RAW=$ROOT/$RAW_REL
OUT=$ROOT/bench/results/pagestore.md
mkdir -p "$RAW" "$(dirname "$FILE")"

log() { echo "[bench-pagestore] $*" >&2; }

if ! command -v fio >/dev/null 2>&1; then
    log "installing fio"
    apt-get update -qq && apt-get install -y -qq fio >/dev/null
fi
command -v python3 >/dev/null || { log "python3 is required for the report"; exit 1; }
command -v taskset >/dev/null || { log "taskset (util-linux) is required"; exit 1; }

if [[ -n "${BENCH_BIN:-}" ]]; then
    BIN=$BENCH_BIN
    log "using prebuilt $BIN"
else
    log "building release"
    (cd "$ROOT" && cargo build --release -p lakecache-bench)
    BIN=$CARGO_TARGET_DIR/release/lakecache-bench
fi

ours() { # depth seconds outfile
    taskset -c "$CPU" "$BIN" pagestore --file "$FILE" --size "$SIZE" --page-size "$PAGE" \
        --engine "$ENGINE" --depths "$1" --seconds "$2" --warmup-seconds 0 --read-size 4096 \
        --pairs 1 >"$3" 2>>"$RAW/ours.stderr"
}
fio_run() { # depth seconds outfile
    taskset -c "$CPU" fio --name=randread --ioengine=io_uring --direct=1 --rw=randread --bs=4k \
        --iodepth="$1" --filename="$FILE" --runtime="$2" --time_based --norandommap \
        --randrepeat=0 --lat_percentiles=1 --output-format=json >"$3" 2>>"$RAW/fio.stderr"
}

START=$(date +%s)
log "filling $FILE ($SIZE, pages of $PAGE) with engine $ENGINE"
"$BIN" pagestore --file "$FILE" --size "$SIZE" --page-size "$PAGE" --engine "$ENGINE" \
    --fill-only >"$RAW/fill.json" 2>>"$RAW/ours.stderr"

for d in $DEPTHS; do
    log "qd=$d warm-up"
    ours "$d" "$WARMUP_SECONDS" "$RAW/warmup-ours-qd$d.json"
    fio_run "$d" "$WARMUP_SECONDS" "$RAW/warmup-fio-qd$d.json"
    for p in $(seq 1 "$PAIRS"); do
        log "qd=$d pair $p/$PAIRS"
        ours "$d" "$RUN_SECONDS" "$RAW/ours-qd$d-p$p.json"
        fio_run "$d" "$RUN_SECONDS" "$RAW/fio-qd$d-p$p.json"
    done
done
ELAPSED=$(( $(date +%s) - START ))

{
    echo "commit: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo none)$(cd "$ROOT" && git diff --quiet HEAD -- pagestore bench/src/pagestore.rs 2>/dev/null || echo ' (with uncommitted changes to the page store)')"
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "kernel: $(uname -r)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "nproc: $(nproc)"
    echo "fio: $(fio --version)"
    echo "elapsed_s: $ELAPSED"
} >"$RAW/env.txt"
free -h >"$RAW/free.txt"
df -h "$(dirname "$FILE")" >"$RAW/df.txt"

CMD="scripts/bench-pagestore.sh  # FILE=$FILE SIZE=$SIZE PAGE=$PAGE ENGINE=$ENGINE DEPTHS=\"$DEPTHS\" PAIRS=$PAIRS RUN_SECONDS=$RUN_SECONDS WARMUP_SECONDS=$WARMUP_SECONDS CPU=$CPU"
python3 - "$RAW" "$RAW_REL" "$OUT" "$CMD" "$CPU" "$DEPTHS" "$PAIRS" <<'PY'
import json, statistics, sys, pathlib

raw, raw_rel, out, cmd, cpu, depths, pairs = sys.argv[1:8]
raw = pathlib.Path(raw)
depths = [int(d) for d in depths.split()]
pairs = int(pairs)

def ours(path):
    runs = [json.loads(l) for l in path.read_text().splitlines() if l.strip().startswith("{")]
    r = [x for x in runs if x.get("phase") == "run"][-1]
    assert r["errors"] == 0 and r["misses"] == 0, f"{path}: failed reads"
    return {"iops": r["iops"], "p50": r["p50_us"], "p99": r["p99_us"], "engine": r["engine"]}

def fio(path):
    j = json.loads(path.read_text())["jobs"][0]["read"]
    pct = j["lat_ns"]["percentile"]
    assert j.get("total_ios", 1) > 0
    return {"iops": j["iops"], "p50": pct["50.000000"] / 1000, "p99": pct["99.000000"] / 1000}

env = (raw / "env.txt").read_text()
fill = json.loads((raw / "fill.json").read_text().splitlines()[0])
lines = []
w = lines.append
w("# Page store vs fio: random 4 KiB reads")
w("")
w("The disk tier alone (`lakecache-bench pagestore`: `DiskTier::read` of 4 KiB at a random")
w("4 KiB-aligned offset of a random page, end to end: buffer, io_uring submit from the reading")
w("task, completion through the ring's reaper task, crc32c check, copy out) against `fio --ioengine=io_uring --direct=1")
w("--rw=randread --bs=4k` on the same page file, both pinned to CPU " + cpu + ", alternating")
w(f"(ours, fio, ours, fio, …) for {pairs} pairs per depth after one warm-up pair.")
w("Latency: ours per `read` call; fio's total latency (`lat_ns`: submit to completion).")
w("Medians over the pairs; the ratio column is the median of the per-pair ratios ours/fio.")
w("")
w("```")
w(f"command: {cmd}")
w(env.strip())
w(f"engine: {fill['engine']}, page file {fill['file']}, {fill['pages']} pages")
w("free -h:")
w((raw / "free.txt").read_text().rstrip())
w("df -h (page file's directory):")
w((raw / "df.txt").read_text().rstrip())
w("```")
w("")
w("| QD | metric | ours median | ours min–max | fio median | fio min–max | ours/fio (median of pairs) |")
w("|---:|---|---:|---:|---:|---:|---:|")
detail = []
for d in depths:
    a = [ours(raw / f"ours-qd{d}-p{p}.json") for p in range(1, pairs + 1)]
    b = [fio(raw / f"fio-qd{d}-p{p}.json") for p in range(1, pairs + 1)]
    for key, label, fmt in [("iops", "IOPS", "{:,.0f}"), ("p50", "p50 µs", "{:,.1f}"), ("p99", "p99 µs", "{:,.1f}")]:
        xa = [r[key] for r in a]
        xb = [r[key] for r in b]
        ratio = statistics.median([x / y for x, y in zip(xa, xb) if y > 0])
        w(f"| {d} | {label} | {fmt.format(statistics.median(xa))} | {fmt.format(min(xa))}–{fmt.format(max(xa))} "
          f"| {fmt.format(statistics.median(xb))} | {fmt.format(min(xb))}–{fmt.format(max(xb))} | {ratio:.2f} |")
    detail.append((d, a, b))
w("")
w("Per pair (IOPS, ours / fio):")
w("")
for d, a, b in detail:
    w(f"- QD {d}: " + ", ".join(f"{x['iops']:,.0f} / {y['iops']:,.0f}" for x, y in zip(a, b)))
w("")
w(f"Raw JSON (ours: one line per run; fio: `--output-format=json`): `{raw_rel}/`.")
pathlib.Path(out).write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "wrote $OUT (raw in $RAW_REL) in ${ELAPSED}s"
