#!/usr/bin/env bash
# The ring's placement figures next to a Maglev table, into bench/results/ring.md.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$LAKECACHE_ROOT"
cargo build --release --locked -p lakecache-bench
OUT=bench/results/ring.md
ARGS=("$@")
{
  echo "# Ring placement: lakecache ring vs Maglev"
  echo
  echo "- command: \`scripts/bench-ring.sh ${ARGS[*]:-}\` (\`lakecache-bench ring\`, release build, pinned to CPU 1)"
  echo "- commit: \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- common bench || echo ' (with uncommitted changes)')"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: nproc $(nproc), $(free -h | awk '/Mem:/{print $2}') RAM, $(uname -r)"
  echo
  taskset -c 1 "$CARGO_TARGET_DIR/release/lakecache-bench" ring "${ARGS[@]}"
  echo
  echo "The ring scores every node for a key (O(N) per lookup) and never moves a key between"
  echo "two nodes that stayed; Maglev answers in O(1) from a table but moves some keys between"
  echo "unchanged nodes when membership changes. Balance target (issue 3): max/avg ≤ 1.05;"
  echo "movement ≤ 1/N + 1%, only to or from the node that changed."
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
