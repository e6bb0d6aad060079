#!/usr/bin/env bash
# The job system's benchmark (see scripts/bench/jobs.py): batch lines/s vs synchronous req/s,
# enqueue-to-result latency, the JobRunner's RSS on a 100 MB batch file.
#   ./scripts/bench/jobs.sh [--lines 10000] [--file-mb 100] [--seconds 8] [--json bench-jobs.json]
set -euo pipefail
cd "$(dirname "$0")/../.."
./scripts/setup.sh --dev
if ! command -v wrk >/dev/null 2>&1; then
  echo "bench: installing wrk"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >/dev/null
fi
exec .venv/bin/python scripts/bench/jobs.py "$@"
