#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (cargo nextest, dev profile), then the
# Python client tests (boto3, aws cli, pylance, lancedb, Prometheus) against running cache nodes, router
# and search node.
# Installs what is missing first (scripts/setup.sh). This is what .ci/run calls.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$LAKECACHE_ROOT"

"$LAKECACHE_ROOT/scripts/setup.sh"

# The test build also builds every binary (integration tests need them), with the same
# feature resolution: the Python tests start those, and lance is compiled once.
echo "==> Rust tests"
cargo nextest run --locked --workspace --no-fail-fast

echo "==> Python client tests"
export LAKECACHE_CACHE_NODE_BIN="$CARGO_TARGET_DIR/debug/cache-node"
export LAKECACHE_ROUTER_BIN="$CARGO_TARGET_DIR/debug/router"
export LAKECACHE_SEARCH_NODE_BIN="$CARGO_TARGET_DIR/debug/search-node"
"$PYTHON" -m pytest -q tests/python
