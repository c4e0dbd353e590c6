# syntax=docker/dockerfile:1
# birdclef images (docs/deploy.md); compose.yaml builds and runs them.
#
#   dashboard  the Streamlit dashboard: CPU TensorFlow and BirdNET V2.4, so a fresh container answers
#              visitors with BirdNET before any run exists; runs are read from the /runs volume
#   api        the same image serving the classification API (python -m birdcore.serve)
#   trainer    train_job.py on NVIDIA GPUs (tensorflow[and-cuda]); runs and decode cache on volumes
#
#   docker build --target dashboard -t birdclef-dashboard .
#
# The install and start steps are the repository's own scripts (scripts/), the ones `make` runs and
# the test suite starts (tests/test_deploy.py starts each CMD below with this file's ENV).

FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VENV=/opt/venv \
    PYTHON=/opt/venv/bin/python \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --gid 10001 birdclef \
    && useradd --uid 10001 --gid 10001 --create-home birdclef
WORKDIR /app
COPY requirements.txt requirements-dev.txt requirements-birdnet.txt ./
COPY scripts/install.sh scripts/


FROM base AS dashboard
RUN scripts/install.sh
COPY . .
RUN mkdir -p /runs
ENV BIRDCLEF_RUNS=/runs \
    STREAMLIT_SERVER_ADDRESS=0.0.0.0 \
    STREAMLIT_SERVER_PORT=8501 \
    STREAMLIT_SERVER_FILE_WATCHER_TYPE=none \
    BIRDCLEF_MODEL=birdnet \
    BIRDCLEF_API_HOST=0.0.0.0 \
    BIRDCLEF_API_PORT=8000
VOLUME ["/runs"]
USER 10001:10001
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "scripts/healthcheck.py", "dashboard"]
CMD ["scripts/start-dashboard.sh"]


FROM dashboard AS api
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "scripts/healthcheck.py", "api"]
CMD ["scripts/start-api.sh"]


FROM base AS trainer
RUN scripts/install.sh --gpu
COPY . .
RUN mkdir -p /runs /cache /work \
    && chown 10001:10001 /runs /cache /work
ENV BIRDCLEF_RUNS=/runs \
    BIRDCLEF_CACHE=/cache
VOLUME ["/runs", "/cache"]
WORKDIR /work
USER 10001:10001
ENTRYPOINT ["/app/scripts/start-trainer.sh"]
CMD ["--help"]
