#!/usr/bin/env bash
# The whole suite, as CI runs it: set up .venv, start private Redis / PostgreSQL / RabbitMQ /
# Kafka / SQS instances on free loopback ports, run unit -> integration -> e2e tests (one shared
# Ray cluster for e2e), lint, and stop everything that was started.
# Extra arguments go to pytest (for example: ./scripts/test.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh --dev

STATE="$(mktemp -d /tmp/noa-services.XXXXXX)"
cleanup() {
  python3 scripts/services.py stop "$STATE" || true
  rm -rf "$STATE"
}
trap cleanup EXIT INT TERM
python3 scripts/services.py start "$STATE"
set -a
# shellcheck disable=SC1091
. "$STATE/env"
set +a

echo "== lint"
.venv/bin/ruff check noa deployments tests scripts
.venv/bin/mypy noa deployments

echo "== tests"
if [ "$#" -gt 0 ]; then
  .venv/bin/python -m pytest "$@"
else
  .venv/bin/python -m pytest -q tests/unit tests/integration tests/e2e
fi
