#!/usr/bin/env bash
# Is a GPU kept fed at Cornell lengths (issue #25, part 4)?  bench/bench_cornell_feed.py on a GPU machine:
# recordings of the Cornell set's durations (log-normal, mean 57 s) written, decoded into the cache by one
# process per core, then recordings per second delivered by the training pipeline (1-16 threads, crops
# read from the memory-mapped cache) against those consumed by InceptionV3's training steps (float32,
# mixed_float16) and those model.fit gets with 2, 8 and 16 worker threads.  About 6-8 minutes on an H100
# or H200 (compiling: ~35 s for float32, ~75 s for float16, once more for fit).
#
# The GPU machine has JAX but no TensorFlow, Keras or soundfile.  Here, once (wheels for its Python 3.12):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl keras namex optree soundfile soxr
# (ignore it locally: echo /.whl/ >> .git/info/exclude, then carry=[".whl"] in the device call).  There:
#   OUT=/some/folder bash bench/gpu_cornell_feed.sh [extra bench_cornell_feed.py options]
# Check it on a CPU first (the small CNN, 12 recordings, one step each; about a minute):
#   PYTHON=.venv/bin/python KERAS_BACKEND=tensorflow OUT=/tmp/feed-dry bash bench/gpu_cornell_feed.sh --dry-run
# Output in $OUT: feed.json (the result, written after each part, so a cut-off run keeps what it measured),
# log.txt, machine.txt.  BUDGET (default 480 s) caps the python part.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
OUT=${OUT:-/tmp/gpu-feed}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=${KERAS_BACKEND:-jax} XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  echo "cores: $(nproc)"; "$PY" --version; } > "$OUT/machine.txt" 2>&1
timeout "${BUDGET:-480}" "$PY" bench/bench_cornell_feed.py --json "$OUT/feed.json" "$@" > "$OUT/log.txt" 2>&1
rc=$?
grep -v "cuda_timer\|^I0000\|^W0000" "$OUT/log.txt" | tail -40
echo "exit $rc; results in $OUT/feed.json"
exit $rc
