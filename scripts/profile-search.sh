#!/usr/bin/env bash
# Where a search query's CPU goes, natively: the search-no-page-cache setup of
# bench-search.sh (two cache nodes and the search node on CPU 1, its own page cache off, so
# every table byte a query needs is read from the fleet), ours only, then ours at saturation
# once more per setting under `perf record` on CPU 1 (the search node and the cache nodes,
# nothing else of the run). bench/search/perf_summary.py turns each recording into CPU µs
# per query by process and component, inclusive shares of the query's stages (from DWARF
# call chains) and the hottest functions; all of it goes to $OUT.
#
# Usage: scripts/profile-search.sh        (about 3 minutes after the release build and the
#                                          dataset, which bench-search.sh makes and keeps)
# Knobs (environment, defaults in brackets):
#   NPROBES [20] REFINE [none,5] QUERIES [1000] CALL_GRAPH [dwarf,32768] DATA_DIR
#   [~/.cache/lakecache/bench-search] SKIP_BUILD [0] OUT [bench/results/profile-search.md]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakecache/target}
NPROBES=${NPROBES:-20}
REFINE=${REFINE:-none,5}
QUERIES=${QUERIES:-1000}
CALL_GRAPH=${CALL_GRAPH:-dwarf,32768}
DATA_DIR=${DATA_DIR:-$HOME/.cache/lakecache/bench-search}
OUT=${OUT:-$REPO/bench/results/profile-search.md}
PYTHON=${PYTHON:-python3}

command -v perf >/dev/null || {
    [[ $(id -u) == 0 ]] || { echo "perf is missing; run as root to install it" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf
}

TMP=$(mktemp -d /tmp/lakecache-profile-search.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
# The bench's own report and raw data of these short rounds are not results: they stay in TMP.
DATA_DIR=$DATA_DIR bash "$REPO/scripts/bench-search.sh" --search-page-cache "0 B" --systems ours \
    --nprobes "$NPROBES" --refine "$REFINE" --queries "$QUERIES" --rounds 1 --warm-seconds 120 \
    --seconds 60 --cold-trials 0 --open-fraction 0 --perf-seconds 60 --perf-call-graph "$CALL_GRAPH" \
    --perf-dir "$TMP/perf" --out-md "$TMP/search.md" --out-png "$TMP/search.png" --raw-dir "$TMP/raw" \
    | tee "$TMP/run.log"

{
    echo "# Search: where a query's CPU goes (page cache off, all table bytes from the fleet)"
    echo
    echo "Written by \`scripts/profile-search.sh\`; rerun it rather than editing this file."
    echo
    echo "- command: \`DATA_DIR=$DATA_DIR NPROBES=$NPROBES REFINE=$REFINE QUERIES=$QUERIES CALL_GRAPH=$CALL_GRAPH scripts/profile-search.sh\`"
    echo "- commit: \`$(git -C "$REPO" rev-parse --short HEAD)\`$(git -C "$REPO" diff --quiet HEAD -- . ':!bench/results' || echo ' (with uncommitted changes)')"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: \`nproc\` = $(nproc), $(uname -r)"
    echo "- setup: as \`bench/results/search-no-page-cache.md\` (dataset, 2 cache nodes, search node with \`cache.page_cache = 0 B\`, all three on CPU 1, the client on CPU 0); ours only; after one measured round per setting, $QUERIES more queries at saturation (8 client threads) under \`perf record -e cpu-clock -F 999 -C 1 --call-graph $CALL_GRAPH\`"
    echo "- release binaries from \`$CARGO_TARGET_DIR/release\`; perf samples CPU time (no hardware counters here). Inclusive rows need an unwound stack: samples whose stack DWARF unwinding lost count for no stage, so those rows are lower bounds."
    echo
    for data in "$TMP"/perf/perf-*.data; do
        label=$(basename "$data" .data)
        "$PYTHON" "$REPO/bench/search/perf_summary.py" "$data" --top 30 --title "${label#perf-}"
        echo
    done
} > "$OUT"
echo "[profile-search] wrote $OUT"
