#!/usr/bin/env bash
# Starts lakecache on the embedded default: a router in front of two cache nodes whose
# origin is a local directory holding a generated sample Lance table, and a search node
# reading that table through the cache nodes, and Prometheus (Debian's) scraping all four
# with the alert rules loaded. Installs what is missing, builds, prints every endpoint,
# runs a ranged `aws s3api get-object` through the router and a vector search with curl.
# Ctrl-C stops.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$LAKECACHE_ROOT"

"$LAKECACHE_ROOT/scripts/setup.sh"

echo "==> building cache-node and router (release)"
cargo build --release --locked -p lakecache-cache-node -p lakecache-router --bins
NODE_BIN="$CARGO_TARGET_DIR/release/cache-node"
ROUTER_BIN="$CARGO_TARGET_DIR/release/router"
# The search node uses the test build (dependencies optimised at level 1): a release build
# of lance + DataFusion takes most of an hour on a small machine; the test build is shared
# with scripts/test.sh.
echo "==> building search-node (dev profile: the build scripts/test.sh makes)"
cargo build --locked --workspace --tests
SEARCH_BIN="$CARGO_TARGET_DIR/debug/search-node"

STATE=.lakecache
TABLE="$STATE/origin/lakecache-sample/images.lance"
if [ ! -f "$STATE/sample-v2" ]; then
  echo "==> generating the sample table"
  mkdir -p "$STATE/origin/lakecache-sample"
  "$PYTHON" scripts/gen_sample.py "$TABLE"
  touch "$STATE/sample-v2"
fi

# A local fleet: two cache nodes (config/cache-node.toml, each with its own state
# directory, both over the local origin) and the router in front (config/router.toml).
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null; wait "${PIDS[@]}" 2>/dev/null; }
trap cleanup EXIT INT TERM
for i in 1 2; do
  "$NODE_BIN" --config config/cache-node.toml --listen "127.0.0.1:900$i" \
    --state-dir "$STATE/node-$i" --disk-capacity "2 GiB" &
  PIDS+=($!)
done
"$ROUTER_BIN" --config config/router.toml &
PIDS+=($!)
"$SEARCH_BIN" --config config/search-node.toml &
PIDS+=($!)
# Prometheus scraping the four (ops/prometheus/prometheus-local.yml: the ports above, the
# cache nodes labelled with their router ids), the alert rules of ops/prometheus/alerts.yml.
PROM=http://127.0.0.1:9090
prometheus --config.file=ops/prometheus/prometheus-local.yml --storage.tsdb.path="$STATE/prometheus" \
  --web.listen-address=127.0.0.1:9090 >"$STATE/prometheus.log" 2>&1 &
PIDS+=($!)

wait_up() {
  for _ in $(seq 1 100); do
    curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || { echo "a process exited; see the log above" >&2; exit 1; }; done
    sleep 0.1
  done
  echo "$1 did not come up" >&2
  exit 1
}
URL="http://127.0.0.1:9000"
wait_up http://127.0.0.1:9001
wait_up http://127.0.0.1:9002
wait_up "$URL"
SEARCH=http://127.0.0.1:9100
wait_up "$SEARCH"
for _ in $(seq 1 100); do
  curl -fsS "$PROM/-/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$PROM/-/ready" >/dev/null || { echo "Prometheus did not start; see $STATE/prometheus.log" >&2; exit 1; }

DATAFILE=$(cd "$TABLE" && ls data | head -n 1)
KEY="images.lance/data/$DATAFILE"
export AWS_ACCESS_KEY_ID=lakecache AWS_SECRET_ACCESS_KEY=lakecache-secret AWS_DEFAULT_REGION=us-east-1
EXAMPLE="aws --endpoint-url $URL s3api get-object --bucket lakecache-sample --key $KEY --range bytes=0-1023 /tmp/lakecache-part.bin"

QVEC=$("$PYTHON" -c "import lance; v = lance.dataset('$TABLE').take([7], columns=['vector'])['vector'][0].values.to_numpy(); print('[' + ', '.join(f'{x:.3f}' for x in v) + ']')")
SEARCH_EXAMPLE="curl -sS -X POST $SEARCH/v1/table/images/query/ -H 'x-api-key: change-me-search-key' -H 'content-type: application/json' -H 'accept: application/json' -d '{\"vector\": $QVEC, \"k\": 3, \"filter\": \"clip < 40\", \"columns\": [\"id\", \"caption\"]}'"

cat <<MSG

lakecache is running: a router in front of two cache nodes over a local-directory origin,
a search node over the sample table, and Prometheus scraping them.

  S3 endpoint (router)  $URL          access key: lakecache  secret: lakecache-secret
  cache node 1          http://127.0.0.1:9001   (S3 too; state in $STATE/node-1)
  cache node 2          http://127.0.0.1:9002   (S3 too; state in $STATE/node-2)
  health                /healthz and /readyz on each of the three
  metrics               $URL/metrics  http://127.0.0.1:9001/metrics  http://127.0.0.1:9002/metrics
  admin API (nodes)     http://127.0.0.1:9001/_lakecache/admin/stats   (header: Authorization: Bearer change-me-admin-token)
  origin                local directory $STATE/origin  (bucket = subdirectory)
  sample table          s3://lakecache-sample/images.lance  ($(ls "$TABLE/data" | wc -l) data files, IVF_PQ, FTS and BTREE indexes)
  search API            $SEARCH/v1/table/...   (LanceDB remote protocol; header x-api-key: change-me-search-key)
                        lancedb.connect("db://lakecache", api_key="change-me-search-key", host_override="$SEARCH")
  SQL                   POST $SEARCH/v1/sql  {"sql": "SELECT clip, count(*) FROM images GROUP BY clip LIMIT 5"}
  Flight SQL (gRPC)     grpc://127.0.0.1:9101   (db.execute_query(...) in lancedb; ADBC: adbc_driver_flightsql,
                        header x-api-key: change-me-search-key)
  search metrics        $SEARCH/metrics
  Prometheus            $PROM   (targets: $PROM/targets, alerts: $PROM/alerts; data in $STATE/prometheus)
  Grafana dashboards    ops/grafana/dashboards/*.json: in Grafana, Dashboards > New > Import, upload each
                        file and pick a Prometheus datasource at $PROM (or provision them: ops/grafana/README.md)
  metric reference      ops/METRICS.md

Try it (credentials as above in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY):
  $EXAMPLE
  $SEARCH_EXAMPLE
  curl -sS -X POST $SEARCH/v1/table/images/query/ -H 'x-api-key: change-me-search-key' -H 'accept: application/json' \\
       -d '{"vector": [], "k": 3, "full_text_query": {"columns": ["caption"], "query": "beach"}, "columns": ["id", "caption"]}'
  aws --endpoint-url $URL s3 ls s3://lakecache-sample/images.lance/ --recursive

MSG
echo "==> running the examples once:"
$EXAMPLE
echo
echo "$SEARCH_EXAMPLE"
eval "$SEARCH_EXAMPLE"
echo
echo "Ctrl-C to stop."
wait
