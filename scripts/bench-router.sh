#!/usr/bin/env bash
# Side-by-side benchmark of the lakecache router (see /work/shared/BENCHMARKING.md): hot
# 4 KiB / 64 KiB range reads through the router, against the same reads sent (a) straight
# to one cache node, (c) through HAProxy (`balance uri` + `hash-type consistent`) and
# (d) through nginx (`hash $request_uri consistent`), all three proxies fronting the same
# two cache nodes over the same s3s-fs origin. Interleaved rounds (direct, router, haproxy,
# nginx, direct, ...), every byte checked. Writes bench/results/router.md (with the ring's
# placement figures from bench/results/ring.md) and the raw JSON lines and configs under
# bench/results/raw/router-<stamp>*.
#
# Usage: scripts/bench-router.sh            (about 8 minutes after the build)
# Knobs (environment, defaults in brackets):
#   OBJECTS [64] OBJECT_SIZE [4194304] SEED [42]   hot set: 64 x 4 MiB = 256 MiB
#   READ_SIZES ["4096 65536"] ALIGN [1]            range sizes; ALIGN=1 means any byte offset
#   CONCURRENCY [16] RUN_SECONDS [5] ROUNDS [5]    closed-loop rounds (a b c d a b c d ...)
#   WARMUP_SECONDS [2] LATENCY_ROUNDS [3]          latency runs at 50% of the lowest max
#   BATCH_IN_FLIGHT [1]                            router's [fleet] batch_in_flight (0: never batch)
#   SERVER_CPU [1] CLIENT_CPU [0]                  taskset pinning (cache nodes and every
#                                                  proxy / load generator and origin)
#   BENCH_TIMEOUT_S [840]                          hard limit on everything after the build
#   SKIP_INSTALL [0] SKIP_BUILD [0] KEEP_WORK [0]
#   RESULTS [bench/results/router.md] RAW_DIR [bench/results/raw]
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
ROUNDS=${ROUNDS:-5}
WARMUP_SECONDS=${WARMUP_SECONDS:-2}
LATENCY_ROUNDS=${LATENCY_ROUNDS:-3}
BATCH_IN_FLIGHT=${BATCH_IN_FLIGHT:-1}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-840}
SKIP_INSTALL=${SKIP_INSTALL:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_WORK=${KEEP_WORK:-0}
RESULTS=${RESULTS:-$REPO/bench/results/router.md}
RING_RESULTS=$REPO/bench/results/ring.md
RAW_DIR=${RAW_DIR:-$REPO/bench/results/raw}
BUCKET=bench
PAGE_SIZE="1 MiB"
MEMORY_CAPACITY="1 GiB"
DISK_CAPACITY="2 GiB"
# The router signs its requests to the nodes with this key; the nodes also take anonymous
# requests (direct reads, HAProxy, nginx).
NODE_ACCESS_KEY=bench-router
NODE_SECRET_KEY=bench-router-secret
FLEET_SECRET=bench-router-fleet-secret
ADMIN_TOKEN=bench-admin-token
COMMAND_LINE="scripts/bench-router.sh${*:+ $*}"
# The four targets, in the order each round runs them; the router is the numerator.
SERVERS=(direct router haproxy nginx)

BENCH_BIN=$CARGO_TARGET_DIR/release/lakecache-bench
CACHE_NODE_BIN=$CARGO_TARGET_DIR/release/cache-node
ROUTER_BIN=$CARGO_TARGET_DIR/release/router

BENCH_NAME=bench-router
source "$(dirname "$0")/bench-lib.sh"

# --- prerequisites -------------------------------------------------------------------------
install_prerequisites() {
    local missing=()
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v curl >/dev/null || missing+=(curl)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v nginx >/dev/null || missing+=(nginx-light)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $SKIP_INSTALL == 1 ]] && die "missing prerequisites (${missing[*]}) and SKIP_INSTALL=1"
    [[ $(id -u) == 0 ]] || die "run as root to install ${missing[*]}, or install them"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    # The packages may start system daemons on port 80; the benchmark runs its own.
}

package_versions() {
    dpkg-query -W -f='${binary:Package} ${Version}\n' "$@" 2>/dev/null | awk 'NF == 2' | paste -sd ',' - | sed 's/,/, /g' || true
}

# --- helpers -------------------------------------------------------------------------------

# metric_sum URL NAME [LABEL_REGEX]: sum of a Prometheus counter's series ("unknown" if absent).
metric_sum() {
    local url=$1 name=$2 labels=${3:-}
    curl -s -m 5 "$url/metrics" | awk -v name="$name" -v labels="$labels" '
        $1 ~ "^" name "([{]|$)" && (labels == "" || $1 ~ labels) {s += $NF; n++}
        END {if (n) printf "%.0f\n", s; else print "unknown"}'
}

# Per-server target URL, process ids measured as the server (the proxy) and as the nodes.
url_of() {
    case $1 in
        direct) echo "$NODE1_URL" ;;
        router) echo "$ROUTER_URL" ;;
        haproxy) echo "$HAPROXY_URL" ;;
        nginx) echo "$NGINX_URL" ;;
    esac
}
front_pids_of() {
    case $1 in
        direct) echo "" ;;
        router) echo "$ROUTER_PID" ;;
        haproxy) echo "$HAPROXY_PID" ;;
        nginx) echo "$NGINX_PIDS" ;;
    esac
}

# load SERVER PHASE ROUND READ_SIZE [http-range args...]: one run, one JSON line.
load() {
    local server=$1 phase=$2 round=$3 read_size=$4
    shift 4
    local pid_args=() pid
    for pid in $(front_pids_of "$server"); do pid_args+=(--server-pid "$pid"); done
    for pid in $NODE1_PID $NODE2_PID; do pid_args+=(--node-pid "$pid"); done
    taskset -c "$CLIENT_CPU" "$BENCH_BIN" http-range \
        --target "$(url_of "$server")" --bucket "$BUCKET" --objects "$OBJECTS" --object-size "$OBJECT_SIZE" \
        --seed "$SEED" --read-size "$read_size" --align "$ALIGN" --concurrency "$CONCURRENCY" \
        --label "$server" --phase "$phase" --round "$round" "${pid_args[@]}" "$@" >>"$RAW_JSONL" \
        2>>"$WORK/http-range.log" \
        || die "$server $phase run (round $round, read size $read_size) failed: $(tail -n 5 "$WORK/http-range.log" | tr '\n' ' '); last report: $(tail -n 1 "$RAW_JSONL")"
    local line
    line=$(tail -n 1 "$RAW_JSONL")
    log "$server $phase r$round rs=$read_size: $(sed -E 's/.*"req_per_s":([0-9]+).*"latency_us":\{[^}]*"p99":([0-9]+).*/\1 req\/s, p99 \2 us/' <<<"$line")"
}

# write_node_config FILE PORT DIR: a cache node as bench-http.sh runs it, plus the router's key.
write_node_config() {
    local file=$1 port=$2 dir=$3
    cat >"$file" <<EOF
[server]
listen = "127.0.0.1:$port"

# Anonymous reads (direct, HAProxy, nginx) and the router's signed ones.
[auth]
anonymous = true

[[auth.keys]]
access_key = "$NODE_ACCESS_KEY"
secret_key = "$NODE_SECRET_KEY"

[admin]
token = "$ADMIN_TOKEN"

[fleet]
secret = "$FLEET_SECRET"

[cache]
page_size = "$PAGE_SIZE"
memory_capacity = "$MEMORY_CAPACITY"
# The hot set does not change during the run: no HEAD revalidation every metadata_ttl.
immutable = ["**"]

[disk]
enabled = true
path = "$dir/pages.bin"
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
}

# start_node NAME PORT: prints nothing; sets ${NAME}_PID via the caller.
start_node() {
    local name=$1 port=$2
    mkdir -p "$WORK/$name"
    write_node_config "$WORK/$name.toml" "$port" "$WORK/$name"
    # Run it from its own folder: relative default paths (multipart, pin state) land there.
    (cd "$WORK/$name" && exec taskset -c "$SERVER_CPU" "$CACHE_NODE_BIN" --config "$WORK/$name.toml") >"$WORK/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_ready "$name" "$STARTED_PID" "http://127.0.0.1:$port/$BUCKET/obj-00000"
    log "$name on port $port (pid $STARTED_PID)"
}

# Node-side requests per client request through each front, and how the nodes shared them:
# a short counted run per server and read size, after the measurements. node_requests URL
# OP (get|head): the node's S3 requests of that method plus its page-protocol requests of
# that op (the router's reads arrive on the internal endpoint, the other fronts' on S3).
node_requests() {
    local s f
    s=$(metric_sum "$1" cachenode_s3_requests_total "method=\"${2^^}\"")
    [[ $2 == batch ]] && s=0
    f=$(metric_sum "$1" cachenode_fleet_requests_total "op=\"$2\"")
    [[ $s =~ ^[0-9]+$ ]] || s=0
    [[ $f =~ ^[0-9]+$ ]] || f=0
    echo $((s + f))
}
fanout_row() {
    local server=$1 read_size=$2 n=$3
    local before1 before2 head1 head2 after1 after2 ahead1 ahead2
    before1=$(node_requests "$NODE1_URL" get); before2=$(node_requests "$NODE2_URL" get)
    head1=$(node_requests "$NODE1_URL" head); head2=$(node_requests "$NODE2_URL" head)
    batch1=$(node_requests "$NODE1_URL" batch); batch2=$(node_requests "$NODE2_URL" batch)
    load "$server" fanout 0 "$read_size" --seconds 60 --max-requests "$n"
    after1=$(node_requests "$NODE1_URL" get); after2=$(node_requests "$NODE2_URL" get)
    ahead1=$(node_requests "$NODE1_URL" head); ahead2=$(node_requests "$NODE2_URL" head)
    abatch1=$(node_requests "$NODE1_URL" batch); abatch2=$(node_requests "$NODE2_URL" batch)
    awk -v s="$server" -v rs="$read_size" -v n="$n" \
        -v g1=$((after1 - before1)) -v g2=$((after2 - before2)) -v h1=$((ahead1 - head1)) -v h2=$((ahead2 - head2)) \
        -v b1=$((abatch1 - batch1)) -v b2=$((abatch2 - batch2)) 'BEGIN {
        g = g1 + g2; h = h1 + h2; b = b1 + b2; r = g + b
        printf "| %d KiB | %s | %d | %.2f | %.2f | %.2f | %.2f | %.0f%% / %.0f%% |\n", rs / 1024, s, n, r / n, g / n, b / n, h / n,
            (r ? 100 * (g1 + b1) / r : 0), (r ? 100 * (g2 + b2) / r : 0)
    }'
}

# --- start ---------------------------------------------------------------------------------
[[ $OBJECT_SIZE -ge 1048576 ]] || die "OBJECT_SIZE must be at least one page (1 MiB)"
install_prerequisites
if [[ $SKIP_BUILD != 1 ]]; then
    log "building release binaries"
    (cd "$REPO" && cargo build --release --locked -p lakecache-bench -p lakecache-cache-node -p lakecache-router)
fi
for bin in "$BENCH_BIN" "$CACHE_NODE_BIN" "$ROUTER_BIN"; do [[ -x $bin ]] || die "$bin not built"; done
if [[ ! -f $RING_RESULTS ]]; then
    log "no $RING_RESULTS: running scripts/bench-ring.sh first"
    "$REPO/scripts/bench-ring.sh" >/dev/null
fi

# Bound everything after the build.
(
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    sleep "$BENCH_TIMEOUT_S" &
    sleeper=$!
    wait "$sleeper"
    echo "[bench-router] BENCH_TIMEOUT_S=$BENCH_TIMEOUT_S reached; stopping" >&2
    kill -TERM $$
) &
WATCHDOG=$!

WORK=$(mktemp -d /tmp/lakecache-bench-router.XXXXXX)
chmod 755 "$WORK"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
# Runs are collected in the work folder and copied into bench/results/raw/ only when the
# whole benchmark succeeded; a failed one keeps them, with the logs, in the work folder.
RAW_JSONL=$WORK/runs.jsonl
: >"$RAW_JSONL"
RAW_BASE=$RAW_DIR/router-$STAMP
log "work dir $WORK"

log "generating $OBJECTS objects of $OBJECT_SIZE bytes"
"$BENCH_BIN" gen-objects --root "$WORK/origin" --bucket "$BUCKET" --count "$OBJECTS" --size "$OBJECT_SIZE" --seed "$SEED"

# Origin: anonymous, no delay, on the load generator's core (it only works while warming).
start_origin "$CLIENT_CPU"
wait_ready origin "$ORIGIN_PID" "http://127.0.0.1:$ORIGIN_PORT/$BUCKET/obj-00000"
log "origin on port $ORIGIN_PORT"

# Two cache nodes, both on the servers' core.
NODE1_PORT=$(free_port)
start_node cache-1 "$NODE1_PORT"
NODE1_PID=$STARTED_PID
NODE1_URL=http://127.0.0.1:$NODE1_PORT
NODE2_PORT=$(free_port)
while [[ $NODE2_PORT == "$NODE1_PORT" ]]; do NODE2_PORT=$(free_port); done
start_node cache-2 "$NODE2_PORT"
NODE2_PID=$STARTED_PID
NODE2_URL=http://127.0.0.1:$NODE2_PORT

# Router.
ROUTER_PORT=$(free_port)
ROUTER_CONFIG=$WORK/router.toml
cat >"$ROUTER_CONFIG" <<EOF
[server]
listen = "127.0.0.1:$ROUTER_PORT"

# Unsigned client requests, as every other target here gets.
[auth]
anonymous = true

[fleet]
page_size = "$PAGE_SIZE"
secret = "$FLEET_SECRET"
node_admin_token = "$ADMIN_TOKEN"
batch_in_flight = $BATCH_IN_FLIGHT

[fleet.node_key]
access_key = "$NODE_ACCESS_KEY"
secret_key = "$NODE_SECRET_KEY"

[[nodes]]
id = "cache-1"
url = "$NODE1_URL"

[[nodes]]
id = "cache-2"
url = "$NODE2_URL"
EOF
taskset -c "$SERVER_CPU" "$ROUTER_BIN" --config "$ROUTER_CONFIG" >"$WORK/router.log" 2>&1 &
ROUTER_PID=$!
PIDS+=("$ROUTER_PID")
ROUTER_URL=http://127.0.0.1:$ROUTER_PORT
wait_ready router "$ROUTER_PID" "$ROUTER_URL/$BUCKET/obj-00000"
log "router on port $ROUTER_PORT (pid $ROUTER_PID)"

fill_template() {
    sed -e "s#@WORK@#$2#g" -e "s#@PORT@#$3#g" -e "s#@NODE1_PORT@#$NODE1_PORT#g" -e "s#@NODE2_PORT@#$NODE2_PORT#g" \
        -e "s#@USER@#$(id -un)#g" -e "s#@GROUP@#$(id -gn)#g" "$1"
}

# HAProxy: one process, one thread, foreground.
HAPROXY_PORT=$(free_port)
HAPROXY_WORK=$WORK/haproxy
mkdir -p "$HAPROXY_WORK"
HAPROXY_CONFIG=$HAPROXY_WORK/haproxy.cfg
fill_template "$REPO/bench/haproxy/router-hash.cfg.template" "$HAPROXY_WORK" "$HAPROXY_PORT" >"$HAPROXY_CONFIG"
haproxy -c -q -f "$HAPROXY_CONFIG" >"$WORK/haproxy.log" 2>&1 || die "haproxy rejected $HAPROXY_CONFIG: $(cat "$WORK/haproxy.log")"
taskset -c "$SERVER_CPU" haproxy -db -f "$HAPROXY_CONFIG" >>"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
HAPROXY_URL=http://127.0.0.1:$HAPROXY_PORT
wait_ready haproxy "$HAPROXY_PID" "$HAPROXY_URL/$BUCKET/obj-00000"
log "haproxy on port $HAPROXY_PORT (pid $HAPROXY_PID)"

# nginx: one worker.
NGINX_PORT=$(free_port)
NGINX_WORK=$WORK/nginx
mkdir -p "$NGINX_WORK"
NGINX_CONFIG=$NGINX_WORK/nginx.conf
fill_template "$REPO/bench/nginx/router-hash.conf.template" "$NGINX_WORK" "$NGINX_PORT" >"$NGINX_CONFIG"
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

# Every process on the servers' core, as the kernel sees its affinity.
AFFINITY=$(for pid in $NODE1_PID $NODE2_PID $ROUTER_PID $HAPROXY_PID $NGINX_PIDS $ORIGIN_PID; do
    printf '%s(%s):%s ' "$(ps -o comm= -p "$pid")" "$pid" "$(taskset -pc "$pid" | sed 's/.*: //')"
done)
log "affinity: $AFFINITY"

# --- warm: each node reads the whole hot set once from the origin, so every target hits ---
# (the router places by page, HAProxy and nginx by object: each sends a page to a
# different node). Then one sweep through each proxy checks its bytes end to end.
for node in 1 2; do
    if [[ $node == 1 ]]; then url=$NODE1_URL; else url=$NODE2_URL; fi
    taskset -c "$CLIENT_CPU" "$BENCH_BIN" http-range --target "$url" --bucket "$BUCKET" --objects "$OBJECTS" \
        --object-size "$OBJECT_SIZE" --seed "$SEED" --read-size 1048576 --concurrency "$CONCURRENCY" \
        --pattern sweep --seconds 120 --label "cache-$node" --phase warm --round 0 >>"$RAW_JSONL" 2>>"$WORK/http-range.log" \
        || die "warming cache-$node failed (see $WORK/http-range.log)"
    log "cache-$node warm"
done
for server in router haproxy nginx; do
    load "$server" warm 0 1048576 --pattern sweep --seconds 120
done
# The nodes wrote their disk tiers through the page cache: flush now, or the kernel's
# writeback lands in the first measured run.
sync

ORIGIN_WARM1=$(metric_sum "$NODE1_URL" cachenode_origin_requests_total)
ORIGIN_WARM2=$(metric_sum "$NODE2_URL" cachenode_origin_requests_total)
LOAD_BEFORE=$(cut -d ' ' -f 1-3 /proc/loadavg)
STARTED_AT=$(date +%s)

for read_size in $READ_SIZES; do
    for server in "${SERVERS[@]}"; do
        load "$server" warmup 0 "$read_size" --seconds "$WARMUP_SECONDS"
    done
    # Closed-loop rounds, interleaved a b c d a b c d ...
    for round in $(seq 1 "$ROUNDS"); do
        for server in "${SERVERS[@]}"; do
            load "$server" pair "$round" "$read_size" --seconds "$RUN_SECONDS"
        done
    done
    # Latency at the same fixed offered load for all: half the lowest of the medians.
    rate=$("$BENCH_BIN" http-report --input "$RAW_JSONL" --ours router --peer direct,haproxy,nginx --half-max-rate "$read_size")
    log "latency runs at $rate req/s"
    for round in $(seq 1 "$LATENCY_ROUNDS"); do
        for server in "${SERVERS[@]}"; do
            load "$server" latency "$round" "$read_size" --seconds "$RUN_SECONDS" --rate "$rate"
        done
    done
done
LOAD_AFTER=$(cut -d ' ' -f 1-3 /proc/loadavg)
MEASURED_S=$(($(date +%s) - STARTED_AT))

# --- fan-out: node requests per client request, and the split between the nodes ----------
FANOUT_REQUESTS=5000
FANOUT=""
for read_size in $READ_SIZES; do
    for server in "${SERVERS[@]}"; do
        FANOUT+=$(fanout_row "$server" "$read_size" "$FANOUT_REQUESTS")$'\n'
    done
done

# --- report --------------------------------------------------------------------------------
ORIGIN_END1=$(metric_sum "$NODE1_URL" cachenode_origin_requests_total)
ORIGIN_END2=$(metric_sum "$NODE2_URL" cachenode_origin_requests_total)
ROUTER_RING_NODES=$(metric_sum "$ROUTER_URL" router_ring_live_nodes)
# Counters appear on their first increment: absent means none.
ROUTER_EJECTIONS=$(metric_sum "$ROUTER_URL" router_ring_ejections_total | sed 's/^unknown$/0/')
ROUTER_FAILOVERS=$(metric_sum "$ROUTER_URL" router_upstream_failovers_total | sed 's/^unknown$/0/')
RING_COMMIT=$(git -C "$REPO" log -1 --format=%h -- common/src/ring.rs bench/src/ring.rs 2>/dev/null || echo unknown)
ROUTER_WARNINGS=$(grep -c -E 'WARN|ERROR' "$WORK/router.log" || true)
TABLES=$("$BENCH_BIN" http-report --input "$RAW_JSONL" --ours router --peer direct,haproxy,nginx)
mkdir -p "$RAW_DIR"
cp "$RAW_JSONL" "$RAW_BASE.jsonl"
cp "$WORK/cache-1.toml" "$RAW_BASE.cache-1.toml"
cp "$WORK/cache-2.toml" "$RAW_BASE.cache-2.toml"
cp "$ROUTER_CONFIG" "$RAW_BASE.router.toml"
cp "$HAPROXY_CONFIG" "$RAW_BASE.haproxy.cfg"
cp "$NGINX_CONFIG" "$RAW_BASE.nginx.conf"
cp "$WORK/router.log" "$RAW_BASE.router.log"
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "none (no commit yet)")
DIRTY=$(git -C "$REPO" status --porcelain 2>/dev/null | wc -l)
RAW_REL=${RAW_BASE#"$REPO"/}
{
    echo "# Router: hot range reads through the lakecache router vs direct, HAProxy and nginx"
    echo
    echo "Written by \`scripts/bench-router.sh\`; rerun it rather than editing this file."
    echo
    echo "## Setup"
    echo
    echo "- command: \`$COMMAND_LINE\` with OBJECTS=$OBJECTS OBJECT_SIZE=$OBJECT_SIZE SEED=$SEED READ_SIZES=\"$READ_SIZES\" ALIGN=$ALIGN CONCURRENCY=$CONCURRENCY RUN_SECONDS=$RUN_SECONDS ROUNDS=$ROUNDS WARMUP_SECONDS=$WARMUP_SECONDS LATENCY_ROUNDS=$LATENCY_ROUNDS BATCH_IN_FLIGHT=$BATCH_IN_FLIGHT SERVER_CPU=$SERVER_CPU CLIENT_CPU=$CLIENT_CPU"
    echo "- commit: \`$COMMIT\`$([[ $DIRTY -gt 0 ]] && echo " (working tree had $DIRTY changed or untracked paths)")"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: \`nproc\` = $(nproc); kernel $(uname -r); CPU $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "- memory (\`free -h\`): $(free -h | awk '/^Mem:/ {print "total " $2 ", used " $3 ", available " $7}')"
    echo "- disk (/tmp, the nodes' disk tiers): $(df -h /tmp | awk 'NR == 2 {print $1 ", " $2 " total, " $4 " free"}')"
    echo "- load average (1/5/15 min) before the measured runs: $LOAD_BEFORE; after: $LOAD_AFTER (other work on the machine shows here); measured phase ${MEASURED_S} s"
    echo "- HAProxy: $(haproxy -v 2>&1 | head -n 1 | sed 's/ - https.*//') (package: $(package_versions haproxy)); nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //') (package: $(package_versions nginx-light nginx-core nginx))"
    echo "- targets: (a) **direct**: straight to cache-1, which holds the whole hot set; (b) **router**: \`router\` with both nodes, placing each 1 MiB page (bucket, key, page index) on the ring (\`common/src/ring.rs\`), reading pages from the nodes over the internal page protocol (fleet-secret HMAC, no SigV4), small reads batched per node once \`[fleet] batch_in_flight\` = $BATCH_IN_FLIGHT exchanges with it are in flight; (c) **haproxy**: \`balance uri\` + \`hash-type consistent\` over both nodes, \`nbthread 1\`, \`http-reuse always\`; (d) **nginx**: \`hash \$request_uri consistent\` over both nodes, one worker, upstream keep-alive. No proxy caches; all four take anonymous client requests."
    echo "- **placement differs**: HAProxy and nginx hash the URI, so a whole object lives on one node; the router hashes each 1 MiB page, so an object's pages spread over both nodes. With 4 KiB / 64 KiB reads inside 4 MiB objects both schemes spread the load over the two nodes (by object or by page); a read crossing a page boundary (about 0.3% of the 4 KiB reads, 4.7% of the 64 KiB ones) is one node request through HAProxy/nginx and two through the router when the two pages have different owners (table *Node requests per client request* below)."
    echo "- cache nodes: as \`scripts/bench-http.sh\` runs them (page $PAGE_SIZE, memory $MEMORY_CAPACITY, disk $DISK_CAPACITY, io_engine auto, hot set immutable) with \`[auth] anonymous = true\` plus the router's key; each read the whole hot set from the origin once while warming, so every target reads memory hits"
    echo "- hot set: $OBJECTS objects x $OBJECT_SIZE bytes (seed $SEED); every response's status, Content-Range and bytes checked (\`http-range\`); any wrong byte fails the benchmark"
    echo "- reads: uniformly random object and start offset (multiple of $ALIGN byte(s)), \`Range: bytes=a-b\`, HTTP/1.1 keep-alive, $CONCURRENCY connections"
    echo "- pinning (\`taskset\`, checked with \`taskset -p\` after start): both cache nodes, the router, HAProxy and nginx (master and worker) all on CPU $SERVER_CPU; the load generator and the origin (s3s-fs, no delay, idle after warming) on CPU $CLIENT_CPU. Every proxy therefore shares one core with the two nodes behind it, and \`direct\` gives that core to the node alone. Affinity seen: \`$AFFINITY\`"
    echo "- sequence: node warm (sweep of every object on each node), one checked sweep through each proxy, \`sync\`; per read size ${WARMUP_SECONDS} s warm-up each, then $ROUNDS interleaved closed-loop rounds of ${RUN_SECONDS} s (direct, router, haproxy, nginx, direct, ...), then $LATENCY_ROUNDS interleaved rounds of ${RUN_SECONDS} s at a fixed offered load of half the lowest of the four median maxima"
    echo "- cache hits only: origin requests made by cache-1 / cache-2 after warming $ORIGIN_WARM1 / $ORIGIN_WARM2, at the end $ORIGIN_END1 / $ORIGIN_END2"
    echo "- router health at the end: $ROUTER_RING_NODES nodes on the ring, $ROUTER_EJECTIONS ejections, $ROUTER_FAILOVERS failovers, $ROUTER_WARNINGS WARN/ERROR lines in its log"
    echo "- CPU columns: server CPU = the proxy's processes (none for direct), node CPU = both cache nodes, in CPU seconds per second (100% = one core; all of them share CPU $SERVER_CPU); CPU µs/req = (server + node CPU) per request"
    echo
    echo "## Results"
    echo
    echo "$TABLES"
    echo
    echo "### Node requests per client request"
    echo
    echo "$FANOUT_REQUESTS random reads through each target after the measured runs; node-side requests counted from the nodes' \`cachenode_s3_requests_total\` (S3 port) plus \`cachenode_fleet_requests_total\` (internal page endpoint, where the router's reads arrive: single reads \`op=get\` and batches of reads \`op=batch\`, a batch counting as one request; with [fleet] batch_in_flight = $BATCH_IN_FLIGHT the router batches the reads that find that many exchanges with their node in flight)."
    echo
    echo "| read size | target | client requests | node read requests per request | of which single | of which batches | node HEADs per request | read requests on cache-1 / cache-2 |"
    echo "|---|---|---|---|---|---|---|---|"
    printf '%s' "$FANOUT"
    echo
    echo "## Ring placement (from \`bench/results/ring.md\`)"
    echo
    echo "The balance and movement figures of the ring the router places pages with, as \`scripts/bench-ring.sh\` last wrote them (rerun that script to refresh them; the ring's code last changed in \`$RING_COMMIT\`):"
    # One heading level down, so the embedded file nests under this section.
    sed -e '1d' -e 's/^### /#### /' "$RING_RESULTS"
    echo
    echo "## Raw data"
    echo
    echo "- JSON lines, one per run (fields in \`bench/src/http_range.rs\`, \`RunReport\`): \`$RAW_REL.jsonl\`"
    echo "- configs: \`$RAW_REL.cache-1.toml\`, \`$RAW_REL.cache-2.toml\`, \`$RAW_REL.router.toml\`, \`$RAW_REL.haproxy.cfg\`, \`$RAW_REL.nginx.conf\`; router log: \`$RAW_REL.router.log\`"
} >"$RESULTS"
OK=1
log "wrote $RESULTS"
