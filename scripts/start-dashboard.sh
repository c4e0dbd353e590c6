#!/usr/bin/env bash
# Start the dashboard: what `make run` and the dashboard image's CMD run.
#
# Streamlit reads .streamlit/config.toml (upload limit, XSRF protection, theme) from the repository
# root, then STREAMLIT_* variables, e.g. STREAMLIT_SERVER_PORT (8501), STREAMLIT_SERVER_ADDRESS and
# STREAMLIT_SERVER_BASE_URL_PATH (a path prefix behind a reverse proxy).  BIRDCLEF_RUNS is the runs
# folder (default runs/).  PYTHON: the interpreter (default python3).  Arguments go to `streamlit run`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m streamlit run app.py "$@"
