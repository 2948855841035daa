# Shared by the bench-*.sh scripts (sourced, never run): logging, the processes a run
# started and their cleanup on any exit, free loopback ports, waiting for a server.
# The sourcing script sets BENCH_NAME and KEEP_WORK first.

log() { printf '[%s %(%H:%M:%S)T] %s\n' "$BENCH_NAME" -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- processes we start; cleanup stops exactly these ---------------------------------------
PIDS=()
WORK=""
WATCHDOG=""
OK=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $WATCHDOG ]]; then kill -TERM "$WATCHDOG" 2>/dev/null || true; fi
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ $OK == 1 && $KEEP_WORK != 1 ]]; then
            rm -rf "$WORK"
        else
            log "logs and configs kept in $WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 30000))
        # A refused connection means nothing listens there.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "no free loopback port found"
}

# wait_ready NAME PID URL: until a 1-byte range GET answers 206, for at most 60 s.
wait_ready() {
    local name=$1 pid=$2 url=$3 code
    for _ in $(seq 1 600); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up (see $WORK/$name.log)"
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' -r 0-0 "$url" || true)
        [[ $code == 206 ]] && return 0
        sleep 0.1
    done
    die "$name did not answer 206 at $url within 60 s (last status $code; see $WORK/$name.log)"
}

# start_origin [CPU]: the s3s-fs origin over $WORK/origin (anonymous, no delay, from
# $BENCH_BIN), pinned to CPU if one is given; sets ORIGIN_PID and ORIGIN_PORT once it listens.
start_origin() {
    local pin=()
    [[ -n ${1:-} ]] && pin=(taskset -c "$1")
    "${pin[@]}" "$BENCH_BIN" origin --root "$WORK/origin" --listen 127.0.0.1:0 \
        >"$WORK/origin.out" 2>"$WORK/origin.log" &
    ORIGIN_PID=$!
    PIDS+=("$ORIGIN_PID")
    ORIGIN_PORT=""
    for _ in $(seq 1 100); do
        ORIGIN_PORT=$(sed -n 's#^listening on http://127\.0\.0\.1:\([0-9]*\)$#\1#p' "$WORK/origin.out")
        [[ -n $ORIGIN_PORT ]] && return 0
        kill -0 "$ORIGIN_PID" 2>/dev/null || die "origin exited (see $WORK/origin.log)"
        sleep 0.1
    done
    die "origin did not report its port"
}
