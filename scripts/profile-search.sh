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
#   PAGE_CACHE ["0 B"]: the search node's cache.page_cache (e.g. "1 GiB": warm queries as
#     users run them)
#   TABLE [the dataset's]: another index copy of the dataset that bench/search/recall.py
#     built, e.g. v128x1000000_ivf_rq (its ground truth is the dataset's)
# The high-recall point (recall@10 >= 0.95, page cache on):
#   TABLE=v128x1000000_ivf_rq NPROBES=100 REFINE=10 PAGE_CACHE="1 GiB" \
#     OUT=bench/results/profile-search-recall.md scripts/profile-search.sh
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakecache/target}
NPROBES=${NPROBES:-20}
REFINE=${REFINE:-none,5}
QUERIES=${QUERIES:-1000}
CALL_GRAPH=${CALL_GRAPH:-dwarf,32768}
DATA_DIR=${DATA_DIR:-$HOME/.cache/lakecache/bench-search}
OUT=${OUT:-$REPO/bench/results/profile-search.md}
PAGE_CACHE=${PAGE_CACHE:-0 B}
TABLE=${TABLE:-}
PYTHON=${PYTHON:-python3}

command -v perf >/dev/null || {
    [[ $(id -u) == 0 ]] || { echo "perf is missing; run as root to install it" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf
}

TMP=$(mktemp -d /tmp/lakecache-profile-search.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
# The bench's own report and raw data of these short rounds are not results: they stay in TMP.
TABLE_ARGS=()
if [[ -n $TABLE ]]; then
    # The dataset's own table name is v<dim>x<rows>: its prefix up to the index suffix.
    TABLE_ARGS=(--table "$TABLE" --truth "$DATA_DIR/truth/${TABLE%%_*}")
fi
DATA_DIR=$DATA_DIR bash "$REPO/scripts/bench-search.sh" --search-page-cache "$PAGE_CACHE" --systems ours \
    "${TABLE_ARGS[@]}" \
    --nprobes "$NPROBES" --refine "$REFINE" --queries "$QUERIES" --rounds 1 --warm-seconds 120 \
    --seconds 60 --cold-trials 0 --open-fraction 0 --perf-seconds 60 --perf-call-graph "$CALL_GRAPH" \
    --perf-dir "$TMP/perf" --out-md "$TMP/search.md" --out-png "$TMP/search.png" --raw-dir "$TMP/raw" \
    | tee "$TMP/run.log"

OUT_REL=${OUT#"$REPO/"}
TABLE_NAME=${TABLE:-"the dataset's IVF_PQ table"}
if [[ $PAGE_CACHE == "0 B" ]]; then
    TITLE="page cache off, all table bytes from the fleet"
    SETUP="as \`bench/results/search-no-page-cache.md\` (dataset, 2 cache nodes, search node with \`cache.page_cache = 0 B\`, all three on CPU 1, the client on CPU 0)"
else
    TITLE="page cache $PAGE_CACHE, warm"
    SETUP="the dataset and fleet of \`bench/results/search.md\` (2 cache nodes and the search node, with \`cache.page_cache = $PAGE_CACHE\`, all three on CPU 1, the client on CPU 0)"
fi
{
    echo "# Search: where a query's CPU goes ($TABLE_NAME, $TITLE)"
    echo
    echo "Written by \`scripts/profile-search.sh\`; rerun it rather than editing this file."
    echo
    echo "- command: \`DATA_DIR=$DATA_DIR${TABLE:+ TABLE=$TABLE} NPROBES=$NPROBES REFINE=$REFINE PAGE_CACHE=\"$PAGE_CACHE\" QUERIES=$QUERIES CALL_GRAPH=$CALL_GRAPH OUT=$OUT_REL scripts/profile-search.sh\`"
    echo "- commit: \`$(git -C "$REPO" rev-parse --short HEAD)\`$(git -C "$REPO" diff --quiet HEAD -- . ':!bench/results' || echo ' (with uncommitted changes)')"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: \`nproc\` = $(nproc), $(uname -r)"
    echo "- setup: $SETUP; ours only; after one measured round per setting, $QUERIES more queries at saturation (8 client threads) under \`perf record -e cpu-clock -F 999 -C 1 --call-graph $CALL_GRAPH\`"
    echo "- release binaries from \`$CARGO_TARGET_DIR/release\`; perf samples CPU time (no hardware counters here). Inclusive rows need an unwound stack: samples whose stack DWARF unwinding lost count for no stage, so those rows are lower bounds."
    echo
    for data in "$TMP"/perf/perf-*.data; do
        label=$(basename "$data" .data)
        "$PYTHON" "$REPO/bench/search/perf_summary.py" "$data" --top 30 --title "${label#perf-}"
        echo
    done
} > "$OUT"
echo "[profile-search] wrote $OUT"
