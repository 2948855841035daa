#!/usr/bin/env bash
# Side-by-side HTTP range benchmark (see /work/shared/BENCHMARKING.md): the lakecache cache
# node against nginx (proxy_cache + slice) in front of the same s3s-fs origin, same hot
# set, same ranges, same core, interleaved. Writes bench/results/http-range.md and the raw
# JSON lines and configs under bench/results/raw/.
#
# Usage: scripts/bench-http.sh            (about 4 minutes after the build)
# Knobs (environment, defaults in brackets):
#   OBJECTS [64] OBJECT_SIZE [4194304] SEED [42]   hot set: 64 x 4 MiB = 256 MiB
#   READ_SIZES ["4096 65536"] ALIGN [1]            range sizes; ALIGN=1 means any byte offset
#   CONCURRENCY [16] RUN_SECONDS [5] PAIRS [5]     closed-loop pairs (A B A B ...)
#   WARMUP_SECONDS [2] LATENCY_PAIRS [3]           latency runs at 50% of the lower max
#   SERVER_CPU [1] CLIENT_CPU [0]                  taskset pinning (servers / load + origin)
#   BENCH_TIMEOUT_S [840]                          hard limit on everything after the build
#   IMMUTABLE [1]                                  1: the cache node treats the hot set as
#                                                  immutable, as nginx's proxy_cache_valid 1d
#                                                  does; 0: product default (HEAD revalidation
#                                                  every metadata_ttl)
#   SKIP_INSTALL [0] SKIP_BUILD [0] KEEP_WORK [0]
#   CACHE_NODE_BIN [$CARGO_TARGET_DIR/release/cache-node]
#   RESULTS [bench/results/http-range.md]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/lakecache/target}
OBJECTS=${OBJECTS:-64}
OBJECT_SIZE=${OBJECT_SIZE:-4194304}
SEED=${SEED:-42}
READ_SIZES=${READ_SIZES:-"4096 65536"}
ALIGN=${ALIGN:-1}
CONCURRENCY=${CONCURRENCY:-16}
RUN_SECONDS=${RUN_SECONDS:-5}
PAIRS=${PAIRS:-5}
WARMUP_SECONDS=${WARMUP_SECONDS:-2}
LATENCY_PAIRS=${LATENCY_PAIRS:-3}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-840}
SKIP_INSTALL=${SKIP_INSTALL:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_WORK=${KEEP_WORK:-0}
IMMUTABLE=${IMMUTABLE:-1}
RESULTS=${RESULTS:-$REPO/bench/results/http-range.md}
RAW_DIR=$REPO/bench/results/raw
BUCKET=bench
PAGE_SIZE="1 MiB"
MEMORY_CAPACITY="1 GiB"
DISK_CAPACITY="2 GiB"
NGINX_DISK_CAPACITY=2g
COMMAND_LINE="scripts/bench-http.sh${*:+ $*}"

BENCH_BIN=$CARGO_TARGET_DIR/release/lakecache-bench
CACHE_NODE_BIN=${CACHE_NODE_BIN:-$CARGO_TARGET_DIR/release/cache-node}

BENCH_NAME=bench-http
source "$(dirname "$0")/bench-lib.sh"

# --- prerequisites -------------------------------------------------------------------------
NGINX_PACKAGE=""
has_slice() { command -v nginx >/dev/null && nginx -V 2>&1 | grep -q -- --with-http_slice_module; }

install_prerequisites() {
    local missing=()
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v curl >/dev/null || missing+=(curl)
    if [[ ${#missing[@]} -gt 0 ]] || ! has_slice; then
        [[ $SKIP_INSTALL == 1 ]] && die "missing prerequisites (${missing[*]} nginx with slice) and SKIP_INSTALL=1"
        [[ $(id -u) == 0 ]] || die "run as root to install prerequisites, or install nginx (with the slice module), curl, taskset"
        log "installing prerequisites"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        if [[ ${#missing[@]} -gt 0 ]]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; fi
        # nginx-light is enough where it has the slice module (Debian 12 builds it in);
        # otherwise the fuller packages do.
        local pkg
        for pkg in nginx-light nginx nginx-extras; do
            has_slice && break
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" || true
        done
        # The package may start a system nginx on port 80; the benchmark runs its own.
    fi
    has_slice || die "no nginx with --with-http_slice_module could be installed"
    NGINX_PACKAGE=$(dpkg-query -W -f='${binary:Package} ${Version}\n' 'nginx-light' 'nginx-core' 'nginx-full' 'nginx-extras' 'nginx' 2>/dev/null | awk 'NF == 2' | paste -sd ',' - | sed 's/,/, /g' || true)
}

# --- helpers -------------------------------------------------------------------------------

# Origin requests the cache node has made so far, from its /metrics ("unknown" if absent).
cache_node_origin_requests() {
    curl -s -m 5 "$CACHE_URL/metrics" | awk '/^cachenode_origin_requests_total/ {s += $NF; n++} END {if (n) print s; else print "unknown"}'
}

# load LABEL URL PIDS PHASE ROUND READ_SIZE [http-range args...]: one run, one JSON line.
load() {
    local label=$1 url=$2 pids=$3 phase=$4 round=$5 read_size=$6
    shift 6
    local pid_args=()
    local pid
    for pid in $pids; do pid_args+=(--server-pid "$pid"); done
    taskset -c "$CLIENT_CPU" "$BENCH_BIN" http-range \
        --target "$url" --bucket "$BUCKET" --objects "$OBJECTS" --object-size "$OBJECT_SIZE" \
        --seed "$SEED" --read-size "$read_size" --align "$ALIGN" --concurrency "$CONCURRENCY" \
        --label "$label" --phase "$phase" --round "$round" "${pid_args[@]}" "$@" >>"$RAW_JSONL" \
        || die "$label $phase run (round $round, read size $read_size) failed; see $RAW_JSONL"
    local line
    line=$(tail -n 1 "$RAW_JSONL")
    log "$label $phase r$round rs=$read_size: $(sed -E 's/.*"req_per_s":([0-9]+).*"latency_us":\{[^}]*"p99":([0-9]+).*/\1 req\/s, p99 \2 us/' <<<"$line")"
}

# --- start ---------------------------------------------------------------------------------
[[ $OBJECT_SIZE -ge 1048576 ]] || die "OBJECT_SIZE must be at least one page (1 MiB)"
install_prerequisites
if [[ $SKIP_BUILD != 1 ]]; then
    log "building release binaries"
    (cd "$REPO" && cargo build --release -p lakecache-bench -p lakecache-cache-node)
fi
[[ -x $BENCH_BIN ]] || die "$BENCH_BIN not built"
[[ -x $CACHE_NODE_BIN ]] || die "$CACHE_NODE_BIN not built"

# Bound everything after the build.
(
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    sleep "$BENCH_TIMEOUT_S" &
    sleeper=$!
    wait "$sleeper"
    echo "[bench-http] BENCH_TIMEOUT_S=$BENCH_TIMEOUT_S reached; stopping" >&2
    kill -TERM $$
) &
WATCHDOG=$!

WORK=$(mktemp -d /tmp/lakecache-bench-http.XXXXXX)
chmod 755 "$WORK"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
# Runs are collected in the work folder and copied into bench/results/raw/ only when the
# whole benchmark succeeded; a failed one keeps them, with the logs, in the work folder.
RAW_JSONL=$WORK/runs.jsonl
: >"$RAW_JSONL"
RAW_BASE=$RAW_DIR/http-range-$STAMP
log "work dir $WORK"

log "generating $OBJECTS objects of $OBJECT_SIZE bytes"
"$BENCH_BIN" gen-objects --root "$WORK/origin" --bucket "$BUCKET" --count "$OBJECTS" --size "$OBJECT_SIZE" --seed "$SEED"

# Origin: anonymous, no delay, on the load generator's core (it only works while warming).
start_origin "$CLIENT_CPU"
wait_ready origin "$ORIGIN_PID" "http://127.0.0.1:$ORIGIN_PORT/$BUCKET/obj-00000"
log "origin on port $ORIGIN_PORT"

# Cache node.
CACHE_PORT=$(free_port)
mkdir -p "$WORK/cache-node"
CACHE_CONFIG=$WORK/cache-node.toml
cat >"$CACHE_CONFIG" <<EOF
[server]
listen = "127.0.0.1:$CACHE_PORT"

[auth]
anonymous = true

[cache]
page_size = "$PAGE_SIZE"
memory_capacity = "$MEMORY_CAPACITY"
EOF
if [[ $IMMUTABLE == 1 ]]; then
    cat >>"$CACHE_CONFIG" <<EOF
# Same semantics as nginx's proxy_cache_valid 1d: the hot set does not change during the
# run, so no HEAD revalidation every metadata_ttl.
immutable = ["**"]
EOF
fi
cat >>"$CACHE_CONFIG" <<EOF

[disk]
enabled = true
path = "$WORK/cache-node/pages.bin"
capacity = "$DISK_CAPACITY"
io_engine = "auto"

[[origins]]
bucket = "*"
kind = "s3"
endpoint = "http://127.0.0.1:$ORIGIN_PORT"
region = "us-east-1"
allow_http = true
anonymous = true
EOF
# Run it from its own folder: relative default paths (multipart, pin state) land there.
(cd "$WORK/cache-node" && exec taskset -c "$SERVER_CPU" "$CACHE_NODE_BIN" --config "$CACHE_CONFIG") >"$WORK/cache-node.log" 2>&1 &
CACHE_PID=$!
PIDS+=("$CACHE_PID")
CACHE_URL=http://127.0.0.1:$CACHE_PORT
wait_ready cache-node "$CACHE_PID" "$CACHE_URL/$BUCKET/obj-00000"
log "cache node on port $CACHE_PORT (pid $CACHE_PID)"

# nginx.
NGINX_PORT=$(free_port)
NGINX_WORK=$WORK/nginx
mkdir -p "$NGINX_WORK"
NGINX_CONFIG=$NGINX_WORK/nginx.conf
sed -e "s#@WORK@#$NGINX_WORK#g" -e "s#@PORT@#$NGINX_PORT#g" -e "s#@ORIGIN_PORT@#$ORIGIN_PORT#g" \
    -e "s#@DISK_CAPACITY@#$NGINX_DISK_CAPACITY#g" -e "s#@USER@#$(id -un)#g" -e "s#@GROUP@#$(id -gn)#g" \
    "$REPO/bench/nginx/slice-cache.conf.template" >"$NGINX_CONFIG"
nginx -t -q -e "$NGINX_WORK/error.log" -p "$NGINX_WORK" -c "$NGINX_CONFIG" 2>"$WORK/nginx.log" \
    || die "nginx rejected $NGINX_CONFIG: $(cat "$WORK/nginx.log")"
taskset -c "$SERVER_CPU" nginx -e "$NGINX_WORK/error.log" -p "$NGINX_WORK" -c "$NGINX_CONFIG" >>"$WORK/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
NGINX_URL=http://127.0.0.1:$NGINX_PORT
wait_ready nginx "$NGINX_PID" "$NGINX_URL/$BUCKET/obj-00000"
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | paste -sd ' ' -)
[[ -n $NGINX_WORKERS ]] || die "nginx has no worker process"
# Stop the worker too should the master not (cleanup sends TERM to the master first).
read -r -a worker_pids <<<"$NGINX_WORKERS"
PIDS+=("${worker_pids[@]}")
NGINX_PIDS="$NGINX_PID $NGINX_WORKERS"
log "nginx on port $NGINX_PORT (pids $NGINX_PIDS)"

# --- warm: every object once through each server (bytes checked), then a short random run ---
for server in lakecache nginx; do
    if [[ $server == lakecache ]]; then url=$CACHE_URL pids=$CACHE_PID; else url=$NGINX_URL pids=$NGINX_PIDS; fi
    load "$server" "$url" "$pids" warm 0 1048576 --pattern sweep --seconds 120
done

# nginx wrote its cache through the page cache: flush it now, or the kernel's writeback
# lands in the first measured run (whichever server that is).
sync

# The measured runs must be cache hits: nginx says so per response, the cache node counts
# its origin requests (compared again at the end).
nginx_status=$(curl -s -m 5 -o /dev/null -D - -r 0-0 "$NGINX_URL/$BUCKET/obj-00000" | tr -d '\r' \
    | awk -F': ' 'tolower($1) == "x-cache-status" {print $2}')
[[ $nginx_status == HIT ]] || die "nginx does not answer from its cache after warming (X-Cache-Status: '$nginx_status')"
ORIGIN_REQUESTS_WARM=$(cache_node_origin_requests)
LOAD_BEFORE=$(cut -d ' ' -f 1-3 /proc/loadavg)

for read_size in $READ_SIZES; do
    for server in lakecache nginx; do
        if [[ $server == lakecache ]]; then url=$CACHE_URL pids=$CACHE_PID; else url=$NGINX_URL pids=$NGINX_PIDS; fi
        load "$server" "$url" "$pids" warmup 0 "$read_size" --seconds "$WARMUP_SECONDS"
    done
    # Closed-loop pairs, interleaved A B A B ...
    for round in $(seq 1 "$PAIRS"); do
        load lakecache "$CACHE_URL" "$CACHE_PID" pair "$round" "$read_size" --seconds "$RUN_SECONDS"
        load nginx "$NGINX_URL" "$NGINX_PIDS" pair "$round" "$read_size" --seconds "$RUN_SECONDS"
    done
    # Latency at the same fixed offered load for both: half the lower of the two maxima.
    rate=$("$BENCH_BIN" http-report --input "$RAW_JSONL" --half-max-rate "$read_size")
    log "latency runs at $rate req/s"
    for round in $(seq 1 "$LATENCY_PAIRS"); do
        load lakecache "$CACHE_URL" "$CACHE_PID" latency "$round" "$read_size" --seconds "$RUN_SECONDS" --rate "$rate"
        load nginx "$NGINX_URL" "$NGINX_PIDS" latency "$round" "$read_size" --seconds "$RUN_SECONDS" --rate "$rate"
    done
done

# --- report --------------------------------------------------------------------------------
ORIGIN_REQUESTS_END=$(cache_node_origin_requests)
LOAD_AFTER=$(cut -d ' ' -f 1-3 /proc/loadavg)
TABLES=$("$BENCH_BIN" http-report --input "$RAW_JSONL")
mkdir -p "$RAW_DIR"
cp "$RAW_JSONL" "$RAW_BASE.jsonl"
cp "$CACHE_CONFIG" "$RAW_BASE.cache-node.toml"
cp "$NGINX_CONFIG" "$RAW_BASE.nginx.conf"
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "none (no commit yet)")
DIRTY=$(git -C "$REPO" status --porcelain 2>/dev/null | wc -l)
RAW_REL=${RAW_BASE#"$REPO"/}
{
    echo "# HTTP range reads: lakecache cache node vs nginx (proxy_cache + slice)"
    echo
    echo "Written by \`scripts/bench-http.sh\`; rerun it rather than editing this file."
    echo
    echo "## Setup"
    echo
    echo "- command: \`$COMMAND_LINE\` with OBJECTS=$OBJECTS OBJECT_SIZE=$OBJECT_SIZE SEED=$SEED READ_SIZES=\"$READ_SIZES\" ALIGN=$ALIGN CONCURRENCY=$CONCURRENCY RUN_SECONDS=$RUN_SECONDS PAIRS=$PAIRS WARMUP_SECONDS=$WARMUP_SECONDS LATENCY_PAIRS=$LATENCY_PAIRS IMMUTABLE=$IMMUTABLE SERVER_CPU=$SERVER_CPU CLIENT_CPU=$CLIENT_CPU"
    echo "- commit: \`$COMMIT\`$([[ $DIRTY -gt 0 ]] && echo " (working tree had $DIRTY changed or untracked paths)")"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: \`nproc\` = $(nproc); kernel $(uname -r); CPU $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "- memory (\`free -h\`): $(free -h | awk '/^Mem:/ {print "total " $2 ", used " $3 ", available " $7}')"
    echo "- disk (/tmp, where both caches live): $(df -h /tmp | awk 'NR == 2 {print $1 ", " $2 " total, " $4 " free"}'); $(lsblk -dno NAME,ROTA,SIZE,MODEL "$(df --output=source /tmp | tail -n 1)" 2>/dev/null | awk '{printf "%s rotational=%s size=%s", $1, $2, $3; if (NF > 3) {$1 = $2 = $3 = ""; sub(/^ +/, ""); printf " model=%s", $0}}')"
    echo "- nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //') (package: ${NGINX_PACKAGE:-unknown}), built \`--with-http_slice_module\`"
    echo "- hot set: $OBJECTS objects x $OBJECT_SIZE bytes (seed $SEED), fits both caches in memory; every response's status, Content-Range and bytes checked"
    echo "- reads: uniformly random object and start offset (multiple of $ALIGN byte(s)), \`Range: bytes=a-b\`, anonymous HTTP/1.1 keep-alive, $CONCURRENCY connections"
    echo "- pinning: each server on CPU $SERVER_CPU (\`taskset\`; nginx one worker, the cache node's runtime sees one core); load generator and origin (s3s-fs, no delay) on CPU $CLIENT_CPU"
    echo "- budget: cache node page $PAGE_SIZE, memory $MEMORY_CAPACITY, disk $DISK_CAPACITY (io_engine auto)$([[ $IMMUTABLE == 1 ]] && echo ', hot set marked immutable (`immutable = ["**"]`, as nginx caches it for a day without revalidating)' || echo ', product default revalidation (HEAD to the origin every metadata_ttl)'); nginx \`slice 1m\`, \`proxy_cache\` max_size $NGINX_DISK_CAPACITY on the same disk, memory = OS page cache (nginx cannot bound it)"
    echo "- sequence: one sweep of every object through each server (warm), \`sync\`, ${WARMUP_SECONDS} s random warm-up each, then per read size $PAIRS interleaved closed-loop pairs of ${RUN_SECONDS} s (lakecache, nginx, lakecache, ...), then $LATENCY_PAIRS interleaved pairs of ${RUN_SECONDS} s at a fixed offered load of half the lower of the two median maxima"
    echo "- cache hits only: nginx answered \`X-Cache-Status: HIT\` after warming; the cache node had made $ORIGIN_REQUESTS_WARM origin requests after warming and $ORIGIN_REQUESTS_END at the end"
    echo "- load average (1/5/15 min) before the measured runs: $LOAD_BEFORE; after: $LOAD_AFTER (other work on the machine shows here)"
    echo "- server CPU: CPU seconds per second used by the server processes during the run (1.0 = the whole pinned core); client CPU likewise for the load generator"
    echo
    echo "## Results"
    echo
    echo "$TABLES"
    echo
    echo "## Raw data"
    echo
    echo "- JSON lines, one per run (fields in \`bench/src/http_range.rs\`, \`RunReport\`): \`$RAW_REL.jsonl\`"
    echo "- configs: \`$RAW_REL.cache-node.toml\`, \`$RAW_REL.nginx.conf\`"
} >"$RESULTS"
OK=1
log "wrote $RESULTS"
