#!/usr/bin/env bash
# Installs what the stack and its tests need, only what is missing:
#   Rust: cargo-nextest (tests). Python (pip): boto3, awscli, pylance, pyarrow, numpy, pytest.
# Debian packages for benchmarks (fio, nginx, haproxy) are installed by the bench scripts.
set -euo pipefail
source "$(dirname "$0")/env.sh"

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs); this machine has none" >&2
  exit 1
fi
if ! command -v curl >/dev/null; then
  echo "==> apt-get install curl (start.sh checks health with it)"
  apt-get update -qq && apt-get install -y -qq curl
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

need_pip=()
"$PYTHON" -c "import boto3" 2>/dev/null || need_pip+=(boto3)
command -v aws >/dev/null || need_pip+=(awscli)
"$PYTHON" -c "import lance; assert lance.__version__.startswith('14.')" 2>/dev/null || need_pip+=("pylance==14.0.2")
"$PYTHON" -c "import pyarrow" 2>/dev/null || need_pip+=("pyarrow>=16")
"$PYTHON" -c "import numpy" 2>/dev/null || need_pip+=(numpy)
"$PYTHON" -c "import pytest" 2>/dev/null || need_pip+=(pytest)
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "==> pip install ${need_pip[*]}"
  "$PYTHON" -m pip install --quiet "${need_pip[@]}"
fi
