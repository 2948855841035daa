#!/usr/bin/env bash
# Where a page-store read spends its time next to fio's, per I/O: CPU, system calls, calls
# interrupted (EINTR), how io_uring delivered the completion (task work by notification, or
# deferred local work run inside the wait), context switches, and a cpu-clock profile split by
# user/kernel with the hottest symbols. Complements scripts/bench-pagestore.sh (throughput);
# writes bench/results/profile-pagestore-wake.md, raw files in bench/results/raw/profile-pagestore-*.
#
# Needs perf with tracepoints (raw_syscalls, io_uring, sched); no hardware counters.
# Knobs (environment): FILE SIZE PAGE DEPTHS PAIRS RUN_SECONDS CPU BENCH_BIN.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FILE=${FILE:-/var/tmp/lakecache-bench/pages.bin}
SIZE=${SIZE:-2GiB}
PAGE=${PAGE:-1MiB}
DEPTHS=${DEPTHS:-"1 32"}
PAIRS=${PAIRS:-3}
RUN_SECONDS=${RUN_SECONDS:-3}
CPU=${CPU:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/lakecache/target}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW_REL=bench/results/raw/profile-pagestore-$STAMP
RAW=$ROOT/$RAW_REL
OUT=$ROOT/bench/results/profile-pagestore-wake.md
mkdir -p "$RAW" "$(dirname "$FILE")"
log() { echo "[profile-pagestore] $*" >&2; }

for tool in perf fio taskset python3; do
    command -v "$tool" >/dev/null || { log "$tool is required (scripts/setup.sh installs fio)"; exit 1; }
done
if [[ -n "${BENCH_BIN:-}" ]]; then
    BIN=$BENCH_BIN
else
    log "building release"
    (cd "$ROOT" && cargo build --release --locked -p lakecache-bench)
    BIN=$CARGO_TARGET_DIR/release/lakecache-bench
fi

EVENTS=(-e task-clock -e raw_syscalls:sys_enter -e io_uring:io_uring_task_work_run
    -e io_uring:io_uring_local_work_run -e sched:sched_switch -e raw_syscalls:sys_exit --filter 'ret == -4')
ours() { # depth seconds
    taskset -c "$CPU" "$BIN" pagestore --file "$FILE" --size "$SIZE" --page-size "$PAGE" \
        --engine uring --depths "$1" --seconds "$2" --warmup-seconds 0 --read-size 4096 --pairs 1
}
fio_run() { # depth seconds
    taskset -c "$CPU" fio --name=randread --ioengine=io_uring --direct=1 --rw=randread --bs=4k \
        --iodepth="$1" --filename="$FILE" --runtime="$2" --time_based --norandommap \
        --randrepeat=0 --output-format=json
}

"$BIN" pagestore --file "$FILE" --size "$SIZE" --page-size "$PAGE" --engine uring --fill-only \
    >"$RAW/fill.json" 2>>"$RAW/ours.stderr"
for d in $DEPTHS; do
    for p in $(seq 1 "$PAIRS"); do
        log "qd=$d pair $p/$PAIRS (perf stat)"
        perf stat -x, "${EVENTS[@]}" -o "$RAW/stat-ours-qd$d-p$p.csv" -- \
            bash -c "$(declare -f ours); BIN='$BIN' FILE='$FILE' SIZE='$SIZE' PAGE='$PAGE' CPU='$CPU' ours $d $RUN_SECONDS" \
            >"$RAW/ours-qd$d-p$p.json" 2>>"$RAW/ours.stderr"
        perf stat -x, "${EVENTS[@]}" -o "$RAW/stat-fio-qd$d-p$p.csv" -- \
            bash -c "$(declare -f fio_run); FILE='$FILE' CPU='$CPU' fio_run $d $RUN_SECONDS" \
            >"$RAW/fio-qd$d-p$p.json" 2>>"$RAW/fio.stderr"
    done
    log "qd=$d cpu-clock profile"
    ( BIN=$BIN ours "$d" $((RUN_SECONDS + 2)) >"$RAW/rec-ours-qd$d.json" 2>>"$RAW/ours.stderr" & )
    sleep 1
    perf record -q -e cpu-clock -F 4999 -C "$CPU" -o "$RAW/perf-ours-qd$d.data" -- sleep "$RUN_SECONDS" 2>/dev/null
    sleep 2
    ( fio_run "$d" $((RUN_SECONDS + 2)) >"$RAW/rec-fio-qd$d.json" 2>>"$RAW/fio.stderr" & )
    sleep 1
    perf record -q -e cpu-clock -F 4999 -C "$CPU" -o "$RAW/perf-fio-qd$d.data" -- sleep "$RUN_SECONDS" 2>/dev/null
    sleep 2
    for who in ours fio; do
        perf report -i "$RAW/perf-$who-qd$d.data" --no-inline --no-children --sort dso \
            --stdio 2>/dev/null | grep -v '^#' | grep . >"$RAW/dso-$who-qd$d.txt" || true
        perf report -i "$RAW/perf-$who-qd$d.data" --no-inline --no-children --sort sym \
            --stdio 2>/dev/null | grep -v '^#' | grep . | head -15 >"$RAW/sym-$who-qd$d.txt" || true
        rm -f "$RAW/perf-$who-qd$d.data"
    done
done

CMD="scripts/profile-pagestore.sh  # FILE=$FILE SIZE=$SIZE PAGE=$PAGE DEPTHS=\"$DEPTHS\" PAIRS=$PAIRS RUN_SECONDS=$RUN_SECONDS CPU=$CPU"
{
    echo "commit: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "kernel: $(uname -r)"
    echo "nproc: $(nproc)"
    echo "fio: $(fio --version)"
    echo "perf: $(perf --version)"
} >"$RAW/env.txt"

python3 - "$RAW" "$RAW_REL" "$OUT" "$CMD" "$DEPTHS" "$PAIRS" <<'PY'
import json, pathlib, statistics, sys

raw, raw_rel, out, cmd, depths, pairs = sys.argv[1:7]
raw = pathlib.Path(raw)
depths = [int(d) for d in depths.split()]
pairs = int(pairs)

def stat(path):
    """perf stat -x, output: value,unit,event,..."""
    vals = {}
    for line in path.read_text().splitlines():
        parts = line.split(",")
        if len(parts) < 3 or not parts[0].replace(".", "", 1).isdigit():
            continue
        vals[parts[2]] = float(parts[0])
    return vals

def ios_ours(path):
    runs = [json.loads(l) for l in path.read_text().splitlines() if l.strip().startswith("{")]
    r = [x for x in runs if x.get("phase") == "run"][-1]
    assert r["errors"] == 0 and r["misses"] == 0, f"{path}: failed reads"
    return r["reads"], r["iops"]

def ios_fio(path):
    j = json.loads(path.read_text())["jobs"][0]["read"]
    return j["total_ios"], j["iops"]

def user_share(path):
    user = kernel = 0.0
    for line in path.read_text().splitlines():
        pct, _, dso = line.strip().partition("%")
        try:
            v = float(pct)
        except ValueError:
            continue
        if "kernel" in dso:
            kernel += v
        else:
            user += v
    return user, kernel

rows = [
    ("IOPS", None),
    ("CPU µs per I/O (task-clock)", "task-clock"),
    ("system calls per I/O", "raw_syscalls:sys_enter"),
    ("calls ending EINTR per I/O", "raw_syscalls:sys_exit"),
    ("task work run by notification per I/O", "io_uring:io_uring_task_work_run"),
    ("deferred local work run per I/O", "io_uring:io_uring_local_work_run"),
    ("context switches per I/O", "sched:sched_switch"),
]
lines = []
w = lines.append
w("# Page store vs fio: where one read's time goes")
w("")
w("What `perf` shows per I/O for the page store (`lakecache-bench pagestore`, random 4 KiB")
w("`DiskTier::read`) and for `fio --ioengine=io_uring` on the same page file and CPU: software")
w("counters and tracepoints under `perf stat` (medians of the pairs, ours and fio alternating),")
w("and one `perf record -e cpu-clock` of each on that CPU split into user and kernel samples.")
w("Throughput itself is `bench/results/pagestore.md`; these runs carry tracing overhead.")
w("")
w("```")
w(f"command: {cmd}")
w((raw / "env.txt").read_text().strip())
w("```")
w("")
for d in depths:
    w(f"## Queue depth {d}")
    w("")
    w("| per I/O | ours | fio | ours − fio |")
    w("|---|---:|---:|---:|")
    per = {"ours": {}, "fio": {}}
    for who, ios in (("ours", ios_ours), ("fio", ios_fio)):
        for label, ev in rows:
            vals = []
            for p in range(1, pairs + 1):
                n, iops = ios(raw / f"{who}-qd{d}-p{p}.json")
                if ev is None:
                    vals.append(iops)
                    continue
                s = stat(raw / f"stat-{who}-qd{d}-p{p}.csv")
                v = s.get(ev, 0.0)
                if ev == "task-clock":
                    v *= 1000.0  # msec → µs
                vals.append(v / max(n, 1))
            per[who][label] = statistics.median(vals)
    for label, ev in rows:
        a, b = per["ours"][label], per["fio"][label]
        fmt = "{:,.0f}" if ev is None else "{:.2f}"
        w(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {fmt.format(a - b)} |")
    w("")
    for who in ("ours", "fio"):
        u, k = user_share(raw / f"dso-{who}-qd{d}.txt")
        w(f"{who}: {u:.1f}% of on-CPU samples in user space, {k:.1f}% in the kernel. Hottest symbols:")
        w("")
        w("```")
        w((raw / f"sym-{who}-qd{d}.txt").read_text().rstrip())
        w("```")
        w("")
w(f"Raw files: `{raw_rel}/`.")
pathlib.Path(out).write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "wrote $OUT"
