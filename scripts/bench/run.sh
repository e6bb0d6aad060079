#!/usr/bin/env bash
# The benchmark, one command: NOA vs LiteLLM vs the upstream itself (see scripts/bench/bench.py).
#   ./scripts/bench/run.sh [--seconds 8] [--json bench-results.json] [--skip-litellm]
set -euo pipefail
cd "$(dirname "$0")/../.."
./scripts/setup.sh --dev  # the benchmark drives NOA with the test tools (httpx, uvicorn)
if ! command -v wrk >/dev/null 2>&1; then
  echo "bench: installing wrk"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >/dev/null
fi
exec .venv/bin/python scripts/bench/bench.py "$@"
