#!/usr/bin/env bash
# The queue bridges' benchmark (see scripts/bench/bridges.py): messages/s per bridge vs
# synchronous req/s, and a message's end-to-end latency.
#   ./scripts/bench/bridges.sh [--messages 6000] [--sqs-messages 300] [--latency-runs 100] [--json bench-bridges.json]
set -euo pipefail
cd "$(dirname "$0")/../.."
./scripts/setup.sh --dev
if ! command -v wrk >/dev/null 2>&1; then
  echo "bench: installing wrk"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >/dev/null
fi
exec .venv/bin/python scripts/bench/bridges.py "$@"
