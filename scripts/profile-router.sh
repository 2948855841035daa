#!/usr/bin/env bash
# Instruction profile of the fleet's hot read path (see /work/shared/BENCHMARKING.md: on this
# noisy machine instruction counts are what repeats). One cache node and one router, both
# under `valgrind --tool=callgrind`, over an s3s-fs origin with a hot set in the node's memory:
#   phase "router": REQUESTS ranged GETs through the router (router + the node's internal
#                   page endpoint are counted);
#   phase "direct": the same GETs straight to the node's S3 port (the node alone).
# Writes instructions per request and the top functions (inclusive and exclusive) of each
# process and phase to $OUT (bench/results/profile-router.md by default) and keeps the raw
# callgrind files in $WORK.
#
# Usage: scripts/profile-router.sh          (about 3 minutes after the release build)
# Knobs: REQUESTS [2000] READ_SIZE [4096] CONCURRENCY [4] TOP [25] SKIP_BUILD [0] KEEP_WORK [0]
#        OUT [bench/results/profile-router.md]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/lakecache/target}
REQUESTS=${REQUESTS:-2000}
READ_SIZE=${READ_SIZE:-4096}
CONCURRENCY=${CONCURRENCY:-4}
TOP=${TOP:-25}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_WORK=${KEEP_WORK:-0}
OUT=${OUT:-$REPO/bench/results/profile-router.md}
OBJECTS=8
OBJECT_SIZE=4194304
SEED=42
BUCKET=bench
FLEET_SECRET=profile-router-fleet-secret
BENCH_BIN=$CARGO_TARGET_DIR/release/lakecache-bench
CACHE_NODE_BIN=$CARGO_TARGET_DIR/release/cache-node
ROUTER_BIN=$CARGO_TARGET_DIR/release/router
BENCH_NAME=profile-router
source "$(dirname "$0")/bench-lib.sh"

command -v valgrind >/dev/null || {
    [[ $(id -u) == 0 ]] || die "valgrind is missing; run as root to install it"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind
}
if [[ $SKIP_BUILD != 1 ]]; then
    (cd "$REPO" && cargo build --release --locked -p lakecache-bench -p lakecache-cache-node -p lakecache-router)
fi

WORK=$(mktemp -d /tmp/lakecache-profile-router.XXXXXX)
log "work dir $WORK"
"$BENCH_BIN" gen-objects --root "$WORK/origin" --bucket "$BUCKET" --count "$OBJECTS" --size "$OBJECT_SIZE" --seed "$SEED"
start_origin

NODE_PORT=$(free_port)
ROUTER_PORT=$(free_port)
while [[ $ROUTER_PORT == "$NODE_PORT" ]]; do ROUTER_PORT=$(free_port); done
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

# start_servers WRAPPER...: the node and the router, each run under WRAPPER (none: natively).
start_servers() {
    mkdir -p "$WORK/node"
    local tag=${1:-native}
    (cd "$WORK/node" && exec "${WRAP[@]}" "$CACHE_NODE_BIN" --config "$WORK/node.toml") >"$WORK/node-$tag.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    wait_ready node "$NODE_PID" "$NODE_URL/$BUCKET/obj-00000"
    "${WRAP_ROUTER[@]}" "$ROUTER_BIN" --config "$WORK/router.toml" >"$WORK/router-$tag.log" 2>&1 &
    ROUTER_PID=$!
    PIDS+=("$ROUTER_PID")
    wait_ready router "$ROUTER_PID" "$ROUTER_URL/$BUCKET/obj-00000"
}
stop_servers() {
    kill -TERM "$NODE_PID" "$ROUTER_PID" 2>/dev/null || true
    wait "$NODE_PID" "$ROUTER_PID" 2>/dev/null || true
}
NODE_URL=http://127.0.0.1:$NODE_PORT
ROUTER_URL=http://127.0.0.1:$ROUTER_PORT

run() { # TARGET N LABEL
    "$BENCH_BIN" http-range --target "$1" --bucket "$BUCKET" --objects "$OBJECTS" --object-size "$OBJECT_SIZE" \
        --seed "$SEED" --read-size "$READ_SIZE" --concurrency "$CONCURRENCY" --seconds 600 \
        --max-requests "$2" --label "$3" --phase profile --round 0 >>"$WORK/runs.jsonl" 2>>"$WORK/http-range.log" \
        || die "$3 run failed: $(tail -n 3 "$WORK/http-range.log")"
    grep -q "\"ok\":$2," <(tail -n 1 "$WORK/runs.jsonl") || die "$3 run had errors: $(tail -n 1 "$WORK/runs.jsonl")"
}
warm() {
    log "warming: every object through the router and straight to the node"
    "$BENCH_BIN" http-range --target "$ROUTER_URL" --bucket "$BUCKET" --objects "$OBJECTS" --object-size "$OBJECT_SIZE" \
        --seed "$SEED" --read-size 1048576 --pattern sweep --concurrency 2 --seconds 600 --label warm --phase warm \
        --round 0 >>"$WORK/runs.jsonl" 2>>"$WORK/http-range.log"
    run "$ROUTER_URL" 500 router-warm
    run "$NODE_URL" 500 direct-warm
}

# --- instructions (callgrind) ---------------------------------------------------------------
WRAP=(valgrind --tool=callgrind "--callgrind-out-file=$WORK/node.callgrind")
WRAP_ROUTER=(valgrind --tool=callgrind "--callgrind-out-file=$WORK/router.callgrind")
start_servers callgrind
warm
# Counters from here on belong to the measured phase; `-d` writes them and starts afresh.
callgrind_control -z "$NODE_PID" "$ROUTER_PID" >/dev/null
log "phase router: $REQUESTS GETs of $READ_SIZE bytes through the router"
run "$ROUTER_URL" "$REQUESTS" router
callgrind_control -d router-phase "$NODE_PID" "$ROUTER_PID" >/dev/null
log "phase direct: $REQUESTS GETs of $READ_SIZE bytes straight to the node"
run "$NODE_URL" "$REQUESTS" direct
callgrind_control -d direct-phase "$NODE_PID" >/dev/null
sleep 1
stop_servers

# --- system calls (strace -c), natively -----------------------------------------------------
command -v strace >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace
}
WRAP=(env)
WRAP_ROUTER=(env)
start_servers native
warm
# strace_phase NAME TARGET PID...: syscalls of each PID (all its threads) over one phase.
strace_phase() {
    local name=$1 target=$2 tracers=() pid
    shift 2
    for pid in "$@"; do
        strace -c -f -q -o "$WORK/strace-$name-$pid.txt" -p "$pid" &
        tracers+=($!)
    done
    sleep 1
    run "$target" "$REQUESTS" "strace-$name"
    kill -INT "${tracers[@]}" 2>/dev/null || true
    wait "${tracers[@]}" 2>/dev/null || true
}
log "system calls: phase router, then direct"
strace_phase router "$ROUTER_URL" "$ROUTER_PID" "$NODE_PID"
strace_phase direct "$NODE_URL" "$NODE_PID"
stop_servers
# syscalls FILE: "calls per request  name" for the busiest calls of one strace -c table.
syscalls() {
    awk -v n="$REQUESTS" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
        printf "%7.2f  %s\n", $4 / n, $NF }' "$1" | sort -rn | head -n 8
}

# file_of BASE PHASE: the dump callgrind_control -d wrote for that phase.
file_of() { grep -l "^desc: Trigger: dump $2\$" "$WORK"/"$1".callgrind.* 2>/dev/null | head -n 1; }
# annotate FILE INCLUSIVE: "instructions per request  function" lines, largest first, with
# registry and toolchain paths cut and the same function (inlined in several places) summed.
annotate() {
    callgrind_annotate --inclusive="$2" --auto=no --threshold=100 "$1" 2>/dev/null \
        | awk -v n="$REQUESTS" -v inclusive="$2" '
            /^ *[0-9,]+ \( *[0-9.]+%\)  / {
                ir = $1; gsub(",", "", ir); ir += 0
                pct = $0; sub(/^ *[0-9,]+ \( */, "", pct); sub(/%.*/, "", pct)
                # Frames live when the counters were zeroed carry the whole phase.
                if (inclusive == "no" && pct + 0 > 50) next
                line = $0; sub(/^ *[0-9,]+ \( *[0-9.]+%\) +/, "", line)
                sub(/ \[[^]]*\]$/, "", line)
                fn = line; sub(/^[^:]*:/, "", fn)
                if (fn == "" || fn == "PROGRAM TOTALS") next
                if (!(fn in sum) || inclusive == "no") sum[fn] += ir; else if (ir > sum[fn]) sum[fn] = ir
            }
            END { for (f in sum) printf "%9.0f  %s\n", sum[f] / n, f }' \
        | sort -rn | cut -c1-180
}
total_ir() { awk '/^summary:/ {print $2; exit}' "$1"; }

{
    echo "# Instruction profile of the fleet read path"
    echo
    echo "\`$0\` on $(date -u +%Y-%m-%d), commit $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet || echo '+changes'):"
    echo "$REQUESTS ranged GETs of $READ_SIZE bytes at any offset over $OBJECTS hot objects (memory tier,"
    echo "1 MiB pages), $CONCURRENCY connections, one cache node and one router, each under callgrind."
    echo "Instructions are per request (the process's total over the phase / $REQUESTS), release build."
    echo "Valgrind hides the CPU's SHA extensions, so \`sha2::sha256::compress256\` below is the portable code"
    echo "(about 2.6K instructions a block); natively the same HMACs use SHA-NI where the CPU has it"
    echo "($(grep -q sha_ni /proc/cpuinfo && echo "this one does" || echo "this one does not")), so the fleet signature weighs less than it shows here."
    echo
    echo "| phase | process | instructions per request |"
    echo "|---|---|---:|"
    for spec in "router router" "router node" "direct node"; do
        set -- $spec
        f=$(file_of "$2" "$1-phase")
        [[ -n $f ]] || die "no callgrind dump for $2 in phase $1 (see $WORK)"
        echo "| $1 | $2 | $(( $(total_ir "$f") / REQUESTS )) |"
    done
    echo
    echo "System calls per request (\`strace -c -f\` attached for the same $REQUESTS GETs, servers run"
    echo "natively; strace slows them, so only the counts mean anything):"
    echo
    echo "| phase | process | calls per request | busiest |"
    echo "|---|---|---:|---|"
    for spec in "router router $ROUTER_PID" "router node $NODE_PID" "direct node $NODE_PID"; do
        set -- $spec
        f=$WORK/strace-$1-$3.txt
        [[ -s $f ]] || die "no strace table for $2 in phase $1 (see $WORK)"
        total=$(awk '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {s += $4} END {print s + 0}' "$f")
        busiest=$(syscalls "$f" | head -n 4 | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1}')
        echo "| $1 | $2 | $(awk -v t="$total" -v n="$REQUESTS" 'BEGIN {printf "%.1f", t / n}') | $busiest |"
    done
    for spec in "router router" "router node" "direct node"; do
        set -- $spec
        f=$(file_of "$2" "$1-phase")
        echo
        echo "## $2, phase $1"
        echo
        echo "Inclusive, our functions only (each with what it calls), top $TOP:"
        echo
        echo '```'
        annotate "$f" yes | awk '/lakecache_/' | head -n "$TOP" || true
        echo '```'
        echo
        echo "Exclusive (the instructions in the function itself), top $TOP:"
        echo
        echo '```'
        annotate "$f" no | head -n "$TOP" || true
        echo '```'
    done
} >"$OUT"
OK=1
log "wrote $OUT"
