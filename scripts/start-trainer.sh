#!/usr/bin/env bash
# Start a training job: what `make demo` and the trainer image's ENTRYPOINT run.
#
# Arguments go to train_job.py (e.g. --data-dir /data, --demo, --resume --name NAME).  The run folder
# is written under $BIRDCLEF_RUNS (default runs/); the decode cache is $BIRDCLEF_CACHE (train_job's
# default: ~/.cache/birdclef).  Runs in the current folder (--demo writes demo_data/ there).
# PYTHON: the interpreter (default python3).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec "${PYTHON:-python3}" "$root/train_job.py" --out "${BIRDCLEF_RUNS:-runs}" "$@"
