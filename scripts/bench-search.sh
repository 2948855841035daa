#!/usr/bin/env bash
# Side-by-side benchmark of the search tier (see /work/shared/BENCHMARKING.md): the search
# node reading a Lance table through two cache nodes, against pylance reading the same table
# straight from the (delayed) bench origin over S3, and against FAISS in memory with the same
# IVF_PQ parameters; recall@10 against exact neighbours, QPS, p50/p99 per (nprobes, refine)
# setting, interleaved, plus cold first-query latency and origin requests. Writes
# bench/results/search.md, bench/results/search-recall-qps.png and the raw JSON under
# bench/results/raw/search-<stamp>.json.
#
# Usage: scripts/bench-search.sh [dataset flags] [run.py flags]
#   Dataset flags (this script passes them to bench/search/dataset.py; the dataset is kept in
#   DATA_DIR and reused while its parameters do not change):
#     --preset 128|384     1,000,000 x 128 (default) or 200,000 x 384
#     --rows N --dim D     override the preset's size
#     --nq N               query vectors with exact neighbours (default 1000)
#     --seed S             (default 42)
#     --clusters C         (default 1000)
#   --profile release|debug  binaries from $CARGO_TARGET_DIR/<profile>/ (default release)
#   Every other flag goes to bench/search/run.py (python3 bench/search/run.py --help), e.g.
#     --nprobes 1,5,10,20,50 --refine none,5 --concurrency 8 --queries 500 --rounds 5
#     --delay-ms 30 --pylance-seconds 10 --cold-trials 3 --out-md FILE --out-png FILE
#
# The full run (about 10 minutes for the dataset the first time, then about 30 minutes):
#   scripts/bench-search.sh
# Knobs (environment, defaults in brackets):
#   DATA_DIR [~/.cache/lakecache/bench-search]   origin folder (DATA_DIR/origin/bench/<table>.lance)
#                                                and ground truth (DATA_DIR/truth/<table>/)
#   BENCH_TIMEOUT_S [7200]                       hard limit on everything after the build
#   SKIP_INSTALL [0] SKIP_BUILD [0] KEEP_WORK [0]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakecache/target}
PYTHON=${PYTHON:-python3}
DATA_DIR=${DATA_DIR:-$HOME/.cache/lakecache/bench-search}
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-7200}
SKIP_INSTALL=${SKIP_INSTALL:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_WORK=${KEEP_WORK:-0}
BUCKET=bench
COMMAND_LINE="DATA_DIR=$DATA_DIR scripts/bench-search.sh${*:+ $*}"

BENCH_NAME=bench-search
source "$(dirname "$0")/bench-lib.sh"

# --- flags: the dataset's here, the rest to run.py ------------------------------------------
PRESET=128
ROWS=""
DIM=""
NQ=1000
SEED=42
CLUSTERS=1000
PROFILE=release
RUN_ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --preset) PRESET=$2; shift 2 ;;
        --rows) ROWS=$2; shift 2 ;;
        --dim) DIM=$2; shift 2 ;;
        --nq) NQ=$2; shift 2 ;;
        --seed) SEED=$2; shift 2 ;;
        --clusters) CLUSTERS=$2; shift 2 ;;
        --profile) PROFILE=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) RUN_ARGS+=("$1"); shift ;;
    esac
done
case $PRESET in
    128) ROWS=${ROWS:-1000000}; DIM=${DIM:-128} ;;
    384) ROWS=${ROWS:-200000}; DIM=${DIM:-384} ;;
    *) die "--preset must be 128 or 384" ;;
esac
[[ $PROFILE == release || $PROFILE == debug ]] || die "--profile must be release or debug"
TABLE=v${DIM}x${ROWS}

# --- prerequisites -------------------------------------------------------------------------
install_prerequisites() {
    local missing=()
    "$PYTHON" -c "import lance; assert lance.__version__.startswith('14.')" 2>/dev/null || missing+=("pylance==14.0.2")
    "$PYTHON" -c "import pyarrow" 2>/dev/null || missing+=("pyarrow>=16")
    "$PYTHON" -c "import numpy" 2>/dev/null || missing+=(numpy)
    "$PYTHON" -c "import faiss" 2>/dev/null || missing+=(faiss-cpu)
    "$PYTHON" -c "import matplotlib" 2>/dev/null || missing+=(matplotlib)
    "$PYTHON" -c "import hdrh" 2>/dev/null || missing+=(hdrhistogram)
    command -v taskset >/dev/null || log "taskset missing: the run will not pin CPUs (install util-linux)"
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $SKIP_INSTALL == 1 ]] && die "missing Python packages (${missing[*]}) and SKIP_INSTALL=1"
    log "pip install ${missing[*]}"
    "$PYTHON" -m pip install --quiet "${missing[@]}"
}

# The binaries run.py starts, brought up to date with the checkout (a no-op when they are;
# SKIP_BUILD=1 runs whatever is there, as long as it is there).
build_if_missing() {
    local dir=$CARGO_TARGET_DIR/$PROFILE missing=0 bin
    for bin in cache-node search-node; do [[ -x $dir/$bin ]] || missing=1; done
    [[ -x $CARGO_TARGET_DIR/release/lakecache-bench || -x $CARGO_TARGET_DIR/debug/lakecache-bench ]] || missing=1
    if [[ $SKIP_BUILD == 1 ]]; then
        [[ $missing == 0 ]] || die "binaries missing in $dir and SKIP_BUILD=1"
        return 0
    fi
    local flags=(--locked -p lakecache-bench -p lakecache-cache-node -p lakecache-search-node --bins)
    [[ $PROFILE == release ]] && flags=(--release "${flags[@]}")
    log "building $PROFILE binaries (cargo build ${flags[*]})"
    (cd "$REPO" && cargo build "${flags[@]}")
}

# --- start ---------------------------------------------------------------------------------
install_prerequisites
build_if_missing
[[ $PROFILE == release ]] || log "profile $PROFILE: numbers are for checking the harness, not for bench/results"

# Bound everything after the build.
(
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    sleep "$BENCH_TIMEOUT_S" &
    sleeper=$!
    wait "$sleeper"
    echo "[bench-search] BENCH_TIMEOUT_S=$BENCH_TIMEOUT_S reached; stopping" >&2
    kill -TERM $$
) &
WATCHDOG=$!

log "dataset $TABLE in $DATA_DIR (made once, then reused)"
"$PYTHON" "$REPO/bench/search/dataset.py" --out "$DATA_DIR/origin/$BUCKET" --rows "$ROWS" --dim "$DIM" \
    --nq "$NQ" --seed "$SEED" --clusters "$CLUSTERS" --table "$TABLE" --truth "$DATA_DIR/truth/$TABLE" &
DATASET_PID=$!
PIDS+=("$DATASET_PID")
wait "$DATASET_PID" || die "dataset.py failed"

WORK=$(mktemp -d /tmp/lakecache-bench-search.XXXXXX)
chmod 755 "$WORK"
log "work dir $WORK"
# run.py stops what it starts on SIGTERM; cleanup sends it that on any exit of ours.
"$PYTHON" "$REPO/bench/search/run.py" --origin-root "$DATA_DIR/origin" --bucket "$BUCKET" --table "$TABLE" \
    --truth "$DATA_DIR/truth/$TABLE" --profile "$PROFILE" --work "$WORK" --keep-work \
    --max-seconds "$BENCH_TIMEOUT_S" --command "$COMMAND_LINE" "${RUN_ARGS[@]}" &
RUN_PID=$!
PIDS+=("$RUN_PID")
wait "$RUN_PID" || die "run.py failed"
OK=1
log "done"
