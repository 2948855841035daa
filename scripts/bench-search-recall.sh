#!/usr/bin/env bash
# High-recall operating points of the search tier (see /work/shared/BENCHMARKING.md): lance's
# vector indices (lance's defaults beside tuned IVF_PQ + refine, IVF_HNSW_SQ, IVF_RQ) served by
# a search node over two cache nodes, against FAISS in memory (HNSWFlat, IVFPQ + refine) and
# pylance reading the delayed origin directly, on the same core. Writes
# bench/results/search-recall.md, bench/results/search-recall-points.png and the raw JSON
# under bench/results/raw/search-recall-<stamp>.json.
#
# Usage: scripts/bench-search-recall.sh [--preset 128|384] [recall.py flags]
#   The base table is made by bench/search/dataset.py (as scripts/bench-search.sh makes it,
#   and shared with it); each index is built by pylance on its own copy of the table's data
#   files, once, and reused while its parameters do not change.
#   recall.py flags (python3 bench/search/recall.py --help), e.g.
#     --indexes ivf_pq,ivf_hnsw_sq --queries 300 --seconds 20 --targets 0.95,0.98
#
# Knobs (environment, defaults in brackets):
#   DATA_DIR [~/.cache/lakecache/bench-search]   as scripts/bench-search.sh
#   BENCH_TIMEOUT_S [7200]                       hard limit on everything after the build
#   SKIP_INSTALL [0] SKIP_BUILD [0]
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
COMMAND_LINE="DATA_DIR=$DATA_DIR scripts/bench-search-recall.sh${*:+ $*}"

BENCH_NAME=bench-search-recall
source "$(dirname "$0")/bench-lib.sh"

PRESET=128
RUN_ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --preset) PRESET=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) RUN_ARGS+=("$1"); shift ;;
    esac
done
case $PRESET in
    128) ROWS=1000000; DIM=128; SUFFIX=recall ;;
    384) ROWS=200000; DIM=384; SUFFIX=recall-384 ;;
    *) die "--preset must be 128 or 384" ;;
esac
TABLE=v${DIM}x${ROWS}

missing=()
"$PYTHON" -c "import lance; assert lance.__version__.startswith('14.')" 2>/dev/null || missing+=("pylance==14.0.2")
"$PYTHON" -c "import faiss" 2>/dev/null || missing+=(faiss-cpu)
"$PYTHON" -c "import matplotlib" 2>/dev/null || missing+=(matplotlib)
"$PYTHON" -c "import hdrh" 2>/dev/null || missing+=(hdrhistogram)
if [[ ${#missing[@]} -gt 0 ]]; then
    [[ $SKIP_INSTALL == 1 ]] && die "missing Python packages (${missing[*]}) and SKIP_INSTALL=1"
    log "pip install ${missing[*]}"
    "$PYTHON" -m pip install --quiet "${missing[@]}"
fi
dir=$CARGO_TARGET_DIR/release
if [[ $SKIP_BUILD != 1 ]]; then
    log "building release binaries"
    (cd "$REPO" && cargo build --release --locked -p lakecache-bench -p lakecache-cache-node -p lakecache-search-node --bins)
fi
for bin in cache-node search-node lakecache-bench; do [[ -x $dir/$bin ]] || die "$dir/$bin is not built"; done

(
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    sleep "$BENCH_TIMEOUT_S" &
    sleeper=$!
    wait "$sleeper"
    echo "[$BENCH_NAME] BENCH_TIMEOUT_S=$BENCH_TIMEOUT_S reached; stopping" >&2
    kill -TERM $$
) &
WATCHDOG=$!

log "dataset $TABLE in $DATA_DIR (made once, then reused)"
"$PYTHON" "$REPO/bench/search/dataset.py" --out "$DATA_DIR/origin/$BUCKET" --rows "$ROWS" --dim "$DIM" \
    --table "$TABLE" --truth "$DATA_DIR/truth/$TABLE" &
DATASET_PID=$!
PIDS+=("$DATASET_PID")
wait "$DATASET_PID" || die "dataset.py failed"

WORK=$(mktemp -d /tmp/lakecache-bench-recall.XXXXXX)
chmod 755 "$WORK"
"$PYTHON" "$REPO/bench/search/recall.py" --origin-root "$DATA_DIR/origin" --bucket "$BUCKET" --table "$TABLE" \
    --truth "$DATA_DIR/truth/$TABLE" --work "$WORK" --command "$COMMAND_LINE" --target-dir "$CARGO_TARGET_DIR" \
    --out-md "$REPO/bench/results/search-$SUFFIX.md" --out-png "$REPO/bench/results/search-$SUFFIX-points.png" \
    "${RUN_ARGS[@]}" &
RUN_PID=$!
PIDS+=("$RUN_PID")
wait "$RUN_PID" || die "recall.py failed"
OK=1
log "done"
