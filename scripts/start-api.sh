#!/usr/bin/env bash
# Start the classification API (python -m birdcore.serve): what `make api` and the api image's CMD run.
#
#   BIRDCLEF_MODEL              a run folder, or birdnet (default)
#   BIRDCLEF_API_HOST           address to listen on (default 127.0.0.1; the image: 0.0.0.0)
#   BIRDCLEF_API_PORT           port (default 8000)
#   BIRDCLEF_API_MAX_UPLOAD_MB  largest request in MB (default 200)
#   BIRDCLEF_API_ROOT_PATH      path prefix a reverse proxy serves it under, e.g. /api (default none)
#   PYTHON                      the interpreter (default python3)
# Further arguments go to python -m birdcore.serve.
set -euo pipefail
cd "$(dirname "$0")/.."
args=(--run "${BIRDCLEF_MODEL:-birdnet}" --host "${BIRDCLEF_API_HOST:-127.0.0.1}"
      --port "${BIRDCLEF_API_PORT:-8000}" --max-upload-mb "${BIRDCLEF_API_MAX_UPLOAD_MB:-200}")
if [ -n "${BIRDCLEF_API_ROOT_PATH:-}" ]; then
    args+=(--root-path "$BIRDCLEF_API_ROOT_PATH")
fi
exec "${PYTHON:-python3}" -m birdcore.serve "${args[@]}" "$@"
