#!/usr/bin/env bash
# Pictures of one run of the fleet (bench/fleet/report.py): QPS and origin GETs over time, hit
# ratio over time from a cold cache, latency CDFs at a fixed load, read back from a real
# Prometheus that scraped the run. Writes bench/results/fleet.md and fleet-{qps,hit-ratio,
# latency}.png. About two minutes after the build.
#
# Usage: scripts/bench-fleet.sh [report.py flags]   (python3 bench/fleet/report.py --help)
#   e.g. --warm-seconds 60 --fixed-seconds 30 --delay-ms 20 --memory "64 MiB" --concurrency 8
# Knobs (environment): SKIP_BUILD=1 uses the release binaries as they are.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$LAKECACHE_ROOT"
"$LAKECACHE_ROOT/scripts/setup.sh" >/dev/null
"$PYTHON" -c "import matplotlib" 2>/dev/null || "$PYTHON" -m pip install --quiet matplotlib
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release --locked -p lakecache-bench -p lakecache-cache-node -p lakecache-router --bins
fi
exec timeout 1800 "$PYTHON" bench/fleet/report.py "$@"
