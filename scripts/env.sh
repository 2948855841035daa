# Sourced by the other scripts: where builds go and which tools they use.
# A persistent target dir outside the clone keeps CI and repeated runs incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakecache/target}"
export LAKECACHE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
PYTHON="${PYTHON:-python3}"
