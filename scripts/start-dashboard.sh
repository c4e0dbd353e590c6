#!/usr/bin/env bash
# Start the dashboard: what `make run` and the dashboard image's CMD run.
#
# Streamlit reads .streamlit/config.toml (listen address, upload limit, XSRF protection, theme) from
# the repository root, then STREAMLIT_* variables, which override it, e.g. STREAMLIT_SERVER_PORT (8501),
# STREAMLIT_SERVER_ADDRESS and STREAMLIT_SERVER_BASE_URL_PATH (a path prefix behind a reverse proxy).
#
#   BIRDCLEF_DASHBOARD_HOST  address to listen on (default 127.0.0.1, config.toml's server.address;
#                            0.0.0.0: every interface; the image sets STREAMLIT_SERVER_ADDRESS=0.0.0.0)
#   BIRDCLEF_RUNS            the runs folder (default runs/)
#   PYTHON                   the interpreter (default python3)
#   MALLOC_MMAP_THRESHOLD_   glibc: blocks of at least this many bytes get a memory map of their own, given
#                            back to the system when freed (default here 1048576). glibc's own threshold
#                            grows with the largest block freed, so the decoded audio of every answered clip
#                            stayed in the process (BENCHMARKS.md, "memory per session").
# Arguments go to `streamlit run`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${BIRDCLEF_DASHBOARD_HOST:-}" ]; then
    export STREAMLIT_SERVER_ADDRESS="$BIRDCLEF_DASHBOARD_HOST"
fi
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-1048576}"
exec "${PYTHON:-python3}" -m streamlit run app.py "$@"
