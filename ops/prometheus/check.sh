#!/usr/bin/env bash
# Checks everything in ops/prometheus/ with promtool, from any directory:
#   promtool check config   prometheus-local.yml, prometheus-k8s.yml (each also checks alerts.yml)
#   promtool check rules    alerts.yml
#   promtool test rules     alerts_test.yml
# Runs every check, then exits 1 if any failed (2 if promtool is missing).
#
# Debian's prometheus package is built without Kubernetes service discovery, so its promtool
# refuses `kubernetes_sd_configs`. Then prometheus-k8s.yml is checked as a copy whose discovery
# blocks are replaced by empty static_configs (scrape settings, relabelling, rule files still
# checked by promtool), and the discovery blocks themselves by the few lines of Python below.
# The note printed says so; an upstream promtool checks the file as it is.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
PYTHON="${PYTHON:-python3}"

if ! command -v promtool >/dev/null; then
  echo "promtool not found: run scripts/setup.sh (it installs Debian's prometheus package)" >&2
  exit 2
fi

failed=()
check() {
  echo "==> $*"
  "$@" || failed+=("$*")
}

check promtool check config prometheus-local.yml

check_k8s_config() {
  local out rc tmp
  out="$(promtool check config prometheus-k8s.yml 2>&1)"; rc=$?
  echo "$out"
  [ "$rc" -eq 0 ] && return 0
  grep -q 'field kubernetes_sd_configs not found' <<<"$out" || return "$rc"

  echo "NOTE: this promtool has no Kubernetes service discovery; checking prometheus-k8s.yml" \
       "with kubernetes_sd_configs replaced by static_configs, and the discovery blocks in Python"
  tmp="$(mktemp -d)"
  cp alerts.yml "$tmp/"
  "$PYTHON" - prometheus-k8s.yml "$tmp/prometheus-k8s.yml" <<'EOF' || { rm -rf "$tmp"; return 1; }
import sys
import yaml

src, dst = sys.argv[1], sys.argv[2]
with open(src) as f:
    cfg = yaml.safe_load(f)
errors = []
for sc in cfg.get("scrape_configs", []):
    job = sc["job_name"]
    app = job.removeprefix("lakecache-")
    sds = sc.pop("kubernetes_sd_configs", None)
    want = {"role": "pod", "namespaces": {"names": ["lakecache"]},
            "selectors": [{"role": "pod", "label": f"app.kubernetes.io/name={app}"}]}
    if sds != [want]:
        errors.append(f"{job}: kubernetes_sd_configs is {sds!r}, expected [{want!r}]")
    sc["static_configs"] = [{"targets": []}]
for e in errors:
    print(f"  FAILED: {e}")
if errors:
    sys.exit(1)
print(f"  SUCCESS: {len(cfg['scrape_configs'])} kubernetes_sd_configs blocks: role pod, namespace lakecache, "
      "one app.kubernetes.io/name selector each")
with open(dst, "w") as f:
    yaml.safe_dump(cfg, f, sort_keys=False)
EOF
  promtool check config "$tmp/prometheus-k8s.yml"; rc=$?
  rm -rf "$tmp"
  return "$rc"
}
check check_k8s_config

check promtool check rules alerts.yml
check promtool test rules alerts_test.yml

if [ ${#failed[@]} -gt 0 ]; then
  echo >&2
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "ops/prometheus: all checks passed"
