#!/usr/bin/env bash
# Installs what the stack and its tests need, only what is missing:
#   Debian: curl, protobuf-compiler (lance's build needs protoc).
#   Rust: cargo-nextest (tests). Python (pip): boto3, awscli, pylance, lancedb, pyarrow, numpy, pytest, pyyaml.
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
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}"
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
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "==> pip install ${need_pip[*]}"
  "$PYTHON" -m pip install --quiet "${need_pip[@]}"
fi
