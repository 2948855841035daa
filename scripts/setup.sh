#!/usr/bin/env bash
# Installs what the stack and its tests need, only what is missing:
#   Debian: curl, protobuf-compiler (lance's build needs protoc), prometheus (promtool checks
#   ops/prometheus/; the binary scrapes a local fleet with ops/prometheus/prometheus-local.yml).
#   The package's own prometheus service is neither started nor enabled.
#   Rust: cargo-nextest (tests). Python (pip): boto3, awscli, pylance, lancedb, pyarrow, numpy, pytest, pyyaml,
#   adbc-driver-flightsql (Flight SQL tests).
# Debian packages for benchmarks (fio, nginx, haproxy) are installed by the bench scripts.
set -euo pipefail
source "$(dirname "$0")/env.sh"

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs); this machine has none" >&2
  exit 1
fi
need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
need_prometheus=""
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || need_prometheus=1
if [ ${#need_apt[@]} -gt 0 ] || [ -n "$need_prometheus" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "==> apt-get install ${need_apt[*]}"
    $SUDO apt-get install -y -qq "${need_apt[@]}"
  fi
  if [ -n "$need_prometheus" ]; then
    echo "==> apt-get install prometheus"
    # Without recommends: they pull in prometheus-node-exporter, whose service listens on
    # :9100, the search node's port. A policy-rc.d that refuses (exit 101) keeps the package
    # from starting its own daemon on :9090; one already present (containers) is left alone.
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
      $SUDO chmod 755 /usr/sbin/policy-rc.d
      own_policy=1
    fi
    rc=0
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus || rc=$?
    if [ -n "$own_policy" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
    [ "$rc" -eq 0 ] || exit "$rc"
    # Nor started at boot, where systemd runs.
    if [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
  fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

need_pip=()
"$PYTHON" -c "import boto3" 2>/dev/null || need_pip+=(boto3)
command -v aws >/dev/null || need_pip+=(awscli)
"$PYTHON" -c "import lance; assert lance.__version__.startswith('14.')" 2>/dev/null || need_pip+=("pylance==14.0.2")
"$PYTHON" -c "import lancedb; assert lancedb.__version__ == '0.40.0'" 2>/dev/null || need_pip+=("lancedb==0.40.0")
"$PYTHON" -c "import pyarrow" 2>/dev/null || need_pip+=("pyarrow>=16")
"$PYTHON" -c "import numpy" 2>/dev/null || need_pip+=(numpy)
"$PYTHON" -c "import pytest" 2>/dev/null || need_pip+=(pytest)
"$PYTHON" -c "import yaml" 2>/dev/null || need_pip+=(pyyaml)
"$PYTHON" -c "import adbc_driver_flightsql.dbapi" 2>/dev/null || need_pip+=("adbc-driver-flightsql==1.9.0" "adbc-driver-manager==1.9.0")
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "==> pip install ${need_pip[*]}"
  "$PYTHON" -m pip install --quiet "${need_pip[@]}"
fi
