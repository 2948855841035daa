#!/usr/bin/env bash
# Where a proxied read's CPU goes, natively (no tracer in the way): one cache node (memory
# hits), the router and HAProxy in front of it, all three on SERVER_CPU; the load generator
# and the origin on CLIENT_CPU. For each target (direct to the node, router, HAProxy) in
# ROUNDS interleaved rounds it prints requests per second, user and system CPU µs per request
# of the proxy and of the node (from /proc/<pid>/stat), and their voluntary and involuntary
# context switches per request (summed over threads from /proc/<pid>/task/*/status).
# Complements bench-router.sh (throughput and latency, two nodes, nginx too) and
# profile-router.sh (instruction counts under callgrind, system calls under strace).
#
# Usage: scripts/profile-cpu.sh        (about 1 minute after the release build)
# Knobs: ROUNDS [2] RUN_SECONDS [4] READ_SIZE [4096] CONCURRENCY [16] SERVER_CPU [1]
#        CLIENT_CPU [0] SKIP_BUILD [0] KEEP_WORK [0] OUT [bench/results/profile-cpu.md]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/lakecache/target}
ROUNDS=${ROUNDS:-2}
RUN_SECONDS=${RUN_SECONDS:-4}
READ_SIZE=${READ_SIZE:-4096}
CONCURRENCY=${CONCURRENCY:-16}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_WORK=${KEEP_WORK:-0}
OUT=${OUT:-$REPO/bench/results/profile-cpu.md}
OBJECTS=8
OBJECT_SIZE=4194304
BUCKET=bench
FLEET_SECRET=profile-cpu-fleet-secret
BENCH_BIN=$CARGO_TARGET_DIR/release/lakecache-bench
CACHE_NODE_BIN=$CARGO_TARGET_DIR/release/cache-node
ROUTER_BIN=$CARGO_TARGET_DIR/release/router
BENCH_NAME=profile-cpu
source "$(dirname "$0")/bench-lib.sh"

command -v haproxy >/dev/null || {
    [[ $(id -u) == 0 ]] || die "haproxy is missing; run as root to install it"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy
}
if [[ $SKIP_BUILD != 1 ]]; then
    (cd "$REPO" && cargo build --release --locked -p lakecache-bench -p lakecache-cache-node -p lakecache-router)
fi

WORK=$(mktemp -d /tmp/lakecache-profile-cpu.XXXXXX)
"$BENCH_BIN" gen-objects --root "$WORK/origin" --bucket "$BUCKET" --count "$OBJECTS" --size "$OBJECT_SIZE" --seed 42 \
    2>>"$WORK/gen.log"
start_origin "$CLIENT_CPU"
NODE_PORT=$(free_port)
ROUTER_PORT=$(free_port)
HAPROXY_PORT=$(free_port)
cat >"$WORK/node.toml" <<EOF
[server]
listen = "127.0.0.1:$NODE_PORT"
[auth]
anonymous = true
[fleet]
secret = "$FLEET_SECRET"
[cache]
page_size = "1 MiB"
memory_capacity = "256 MiB"
immutable = ["**"]
[disk]
enabled = false
[[origins]]
bucket = "*"
kind = "s3"
endpoint = "http://127.0.0.1:$ORIGIN_PORT"
region = "us-east-1"
allow_http = true
anonymous = true
EOF
cat >"$WORK/router.toml" <<EOF
[server]
listen = "127.0.0.1:$ROUTER_PORT"
[auth]
anonymous = true
[fleet]
page_size = "1 MiB"
secret = "$FLEET_SECRET"
[[nodes]]
id = "cache-1"
url = "http://127.0.0.1:$NODE_PORT"
EOF
# HAProxy as bench/haproxy/router-hash.cfg.template runs it, with the one node.
cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 2s
    timeout client 300s
    timeout server 30s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend nodes
backend nodes
    http-reuse always
    server cache-1 127.0.0.1:$NODE_PORT
EOF
mkdir -p "$WORK/node"
(cd "$WORK/node" && exec taskset -c "$SERVER_CPU" "$CACHE_NODE_BIN" --config "$WORK/node.toml") >"$WORK/node.log" 2>&1 &
NODE_PID=$!
PIDS+=("$NODE_PID")
wait_ready node "$NODE_PID" "http://127.0.0.1:$NODE_PORT/$BUCKET/obj-00000"
taskset -c "$SERVER_CPU" "$ROUTER_BIN" --config "$WORK/router.toml" >"$WORK/router.log" 2>&1 &
ROUTER_PID=$!
PIDS+=("$ROUTER_PID")
wait_ready router "$ROUTER_PID" "http://127.0.0.1:$ROUTER_PORT/$BUCKET/obj-00000"
taskset -c "$SERVER_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
wait_ready haproxy "$HAPROXY_PID" "http://127.0.0.1:$HAPROXY_PORT/$BUCKET/obj-00000"

# load PORT SECONDS SIZE [ARGS...]: a closed-loop run; prints its JSON line.
load() {
    local port=$1 secs=$2 size=$3
    shift 3
    taskset -c "$CLIENT_CPU" "$BENCH_BIN" http-range --target "http://127.0.0.1:$port" --bucket "$BUCKET" \
        --objects "$OBJECTS" --object-size "$OBJECT_SIZE" --seed 42 --read-size "$size" \
        --concurrency "$CONCURRENCY" --seconds "$secs" --label profile-cpu --phase p --round 0 "$@" \
        2>>"$WORK/http-range.log" | tail -n 1
}
# The hot set into the node's memory.
load "$ROUTER_PORT" 60 1048576 --pattern sweep >/dev/null
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; }
switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^voluntary_ctxt_switches/ {v += $2} /^nonvoluntary_ctxt_switches/ {n += $2} END {print v + 0, n + 0}'
}
TICK=$(getconf CLK_TCK)
exec 3>"$WORK/table.txt"
printf '%-8s %8s | %-27s | %-27s | %s\n' target "req/s" "proxy user/sys µs, cs vol/inv" \
    "node user/sys µs, cs vol/inv" "total µs/req" | tee /dev/fd/3
for round in $(seq 1 "$ROUNDS"); do
    for target in direct router haproxy; do
        case $target in
            direct) port=$NODE_PORT proxy="" ;;
            router) port=$ROUTER_PORT proxy=$ROUTER_PID ;;
            haproxy) port=$HAPROXY_PORT proxy=$HAPROXY_PID ;;
        esac
        load "$port" 1 "$READ_SIZE" >/dev/null
        read -r nu ns < <(cpu "$NODE_PID"); read -r nv nn < <(switches "$NODE_PID")
        pu=0 ps=0 pv=0 pn=0
        if [[ -n $proxy ]]; then read -r pu ps < <(cpu "$proxy"); read -r pv pn < <(switches "$proxy"); fi
        out=$(load "$port" "$RUN_SECONDS" "$READ_SIZE")
        read -r nu2 ns2 < <(cpu "$NODE_PID"); read -r nv2 nn2 < <(switches "$NODE_PID")
        pu2=0 ps2=0 pv2=0 pn2=0
        if [[ -n $proxy ]]; then read -r pu2 ps2 < <(cpu "$proxy"); read -r pv2 pn2 < <(switches "$proxy"); fi
        ok=$(grep -o '"ok":[0-9]*' <<<"$out" | cut -d: -f2)
        grep -q '"status":0,"content":0,"transport":0,"timeout":0' <<<"$out" || die "$target run had errors: $out"
        awk -v t="$target" -v ok="$ok" -v s="$RUN_SECONDS" -v tick="$TICK" \
            -v pu=$((pu2 - pu)) -v ps=$((ps2 - ps)) -v pv=$((pv2 - pv)) -v pn=$((pn2 - pn)) \
            -v nu=$((nu2 - nu)) -v ns=$((ns2 - ns)) -v nv=$((nv2 - nv)) -v nn=$((nn2 - nn)) 'BEGIN {
            us = 1e6 / tick / ok
            printf "%-8s %8.0f | %5.1f %5.1f   %5.2f %5.2f     | %5.1f %5.1f   %5.2f %5.2f     | %6.1f\n",
                t, ok / s, pu * us, ps * us, pv / ok, pn / ok, nu * us, ns * us, nv / ok, nn / ok,
                (pu + ps + nu + ns) * us }' | tee /dev/fd/3
    done
done
exec 3>&-
{
    echo "# CPU per proxied read: user, system, context switches"
    echo
    echo "Written by \`scripts/profile-cpu.sh\`; rerun it rather than editing this file. One cache node"
    echo "(memory hits, 1 MiB pages), the router and HAProxy in front of it, all on CPU $SERVER_CPU; load"
    echo "(\`lakecache-bench http-range\`, $CONCURRENCY connections, $READ_SIZE-byte ranges at any offset) and"
    echo "origin on CPU $CLIENT_CPU; $ROUNDS interleaved rounds of $RUN_SECONDS s. Per request: user and system CPU µs of"
    echo "the proxy and of the node (/proc/<pid>/stat, $TICK Hz ticks), voluntary/involuntary context"
    echo "switches (cs, all threads). Natively: no tracer perturbs the scheduling."
    echo
    echo "- command: \`scripts/profile-cpu.sh\` with ROUNDS=$ROUNDS RUN_SECONDS=$RUN_SECONDS READ_SIZE=$READ_SIZE CONCURRENCY=$CONCURRENCY"
    echo "- commit: \`$(git -C "$REPO" rev-parse --short HEAD)\`$(git -C "$REPO" diff --quiet HEAD || echo ' (with uncommitted changes)')"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); nproc $(nproc); $(uname -r); $(haproxy -v | head -n 1)"
    echo
    echo '```'
    cat "$WORK/table.txt"
    echo '```'
} >"$OUT"
log "wrote $OUT"
OK=1
