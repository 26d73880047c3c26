#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then run lint, types and all tests.
# Used by the README quick start and by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages for the real-server tests: Prometheus, wrk, headless Chromium.
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v wrk >/dev/null || need+=(wrk)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# torch is pinned to the CPU build these machines carry (any other spelling pulls CUDA).
python -m pip install -q --disable-pip-version-check "torch==2.13.0"
python -m pip install -q --disable-pip-version-check -e ".[train,dev]"

python -m ruff check .
python -m ruff format --check .
python -m mypy service training evaluation tests benchmarks
python -m pytest "$@"
