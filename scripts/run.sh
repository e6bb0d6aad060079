#!/usr/bin/env bash
# Start NOA on http://127.0.0.1:8000 with the embedded default (local Ray, bundled SmolLM2).
# Arguments go to `noa serve` (--config FILE, --host, --port). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/noa serve "$@"
