#!/usr/bin/env bash
# Starts lakecache on the embedded default: a cache node whose origin is a local directory
# holding a generated sample Lance table. Installs what is missing, builds (release),
# prints every endpoint and runs a ranged `aws s3api get-object` against it. Ctrl-C stops.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$LAKECACHE_ROOT"

"$LAKECACHE_ROOT/scripts/setup.sh"

echo "==> building cache-node (release)"
cargo build --release --locked -p lakecache-cache-node --bins
BIN="$CARGO_TARGET_DIR/release/cache-node"

STATE=.lakecache
TABLE="$STATE/origin/lakecache-sample/images.lance"
if [ ! -d "$TABLE/_versions" ]; then
  echo "==> generating the sample table"
  mkdir -p "$STATE/origin/lakecache-sample"
  "$PYTHON" scripts/gen_sample.py "$TABLE"
fi

CONFIG="${LAKECACHE_CONFIG:-config/cache-node.toml}"
LISTEN="${LAKECACHE_LISTEN:-127.0.0.1:9000}"
export LAKECACHE_LISTEN="$LISTEN"
"$BIN" --config "$CONFIG" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT INT TERM

URL="http://$LISTEN"
for _ in $(seq 1 100); do
  curl -fsS "$URL/healthz" >/dev/null 2>&1 && break
  kill -0 $PID 2>/dev/null || { echo "cache-node exited; see the log above" >&2; exit 1; }
  sleep 0.1
done

DATAFILE=$(cd "$TABLE" && ls data | head -n 1)
KEY="images.lance/data/$DATAFILE"
export AWS_ACCESS_KEY_ID=lakecache AWS_SECRET_ACCESS_KEY=lakecache-secret AWS_DEFAULT_REGION=us-east-1
EXAMPLE="aws --endpoint-url $URL s3api get-object --bucket lakecache-sample --key $KEY --range bytes=0-1023 /tmp/lakecache-part.bin"

cat <<MSG

lakecache is running (config: $CONFIG, state in $STATE/)

  S3 endpoint   $URL                 access key: lakecache  secret: lakecache-secret
  health        $URL/healthz   $URL/readyz
  metrics       $URL/metrics         (Prometheus text)
  admin API     $URL/_lakecache/admin/stats   (header: Authorization: Bearer change-me-admin-token)
  origin        local directory $STATE/origin  (bucket = subdirectory)
  sample table  s3://lakecache-sample/images.lance  ($(ls "$TABLE/data" | wc -l) data files, IVF_PQ index)

Try it (credentials as above in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY):
  $EXAMPLE
  aws --endpoint-url $URL s3 ls s3://lakecache-sample/images.lance/ --recursive

MSG
echo "==> running the example once:"
$EXAMPLE
echo
echo "Ctrl-C to stop."
wait $PID
