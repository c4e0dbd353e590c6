"""Serve the classification API: ``python -m birdcore.serve --run RUN_DIR|birdnet --port 8000``.

The model is loaded once, before the server listens, and shared by every request
(``birdcore.serving.api``).  ``/docs`` describes the endpoints.  Behind a reverse proxy that serves the
API under a path prefix (``https://example.org/api/`` -> ``http://127.0.0.1:8000/``), give the prefix
as ``--root-path /api`` so the docs' links carry it; rate limits belong to the proxy (docs/deploy.md).
"""
from __future__ import annotations

import argparse
import os
import sys

from birdcore.cli.common import HelpFormatter, fail, log, setup_logging
from birdcore.models.device import import_keras_quietly


def build_parser(prog: str = "python -m birdcore.serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=HelpFormatter,
        description="The classification API: POST /v1/classify (an audio file, multipart), GET /v1/species, "
                    "GET /healthz, and OpenAPI docs at /docs.")
    p.add_argument("--run", required=True,
                   help="a run folder, or 'birdnet' for BirdNET V2.4 over its 6,522 species (model CC BY-NC-SA 4.0)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--max-upload-mb", type=float, default=200.0,
                   help="largest request body in MB (the dashboard's limit); larger requests get 413")
    p.add_argument("--max-concurrent", type=int, default=2,
                   help="classifications run at once (others wait); bounds the memory of decoded audio")
    p.add_argument("--root-path", default=None, help="path prefix the reverse proxy serves the API under, e.g. /api")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="a web origin (https://birds.example.org) whose pages may call the API from a browser; "
                        "repeat for several (default: none, CORS off; $BIRDCLEF_API_CORS_ORIGINS, space-separated)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    return p


def check_args(args: argparse.Namespace) -> None:
    """ValueError naming the option that is out of range."""
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0..65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise ValueError(f"--max-upload-mb must be positive, got {args.max_upload_mb:g}")
    if args.max_concurrent < 1:
        raise ValueError(f"--max-concurrent must be at least 1, got {args.max_concurrent}")
    args.cors_origin = list(args.cors_origin) or os.environ.get("BIRDCLEF_API_CORS_ORIGINS", "").split()
    for origin in args.cors_origin:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"--cors-origin must be an origin such as https://birds.example.org, got {origin!r}")
    args.root_path = (args.root_path or "").rstrip("/")
    if args.root_path and not args.root_path.startswith("/"):
        raise ValueError(f"--root-path must start with '/', got {args.root_path!r}")


def load_app(*, run_ref: str, max_upload_mb: float, max_concurrent: int, root_path: str = "",
             cors_origins: tuple[str, ...] = ()):
    """The FastAPI app around the run ``run_ref`` (a run folder or ``birdnet``), loaded now."""
    from birdcore.io.native_stderr import quiet_native_stderr
    from birdcore.runs.loading import load_run_ref

    with quiet_native_stderr():
        run = load_run_ref(run_ref)  # a missing run fails here, before TensorFlow starts
    import_keras_quietly()
    with quiet_native_stderr():
        from birdcore.serving.api import create_app
        from birdcore.serving.classify import ClipClassifier

        classifier = ClipClassifier(run)
    return create_app(classifier, max_upload_bytes=int(max_upload_mb * 1024 ** 2), max_concurrent=max_concurrent,
                      root_path=root_path, cors_origins=tuple(cors_origins))


def main(argv: list[str] | None = None, prog: str = "python -m birdcore.serve") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.verbose)
    try:
        check_args(args)
        app = load_app(run_ref=args.run, max_upload_mb=args.max_upload_mb, max_concurrent=args.max_concurrent,
                       root_path=args.root_path, cors_origins=tuple(args.cors_origin))
    except Exception as exc:
        return fail(exc, args.verbose)
    import uvicorn

    from birdcore.serving.api import model_name

    clf = app.state.classifier
    log.info("loaded %s (%d species); starting the API on http://%s:%d/ (docs: /docs%s)", model_name(clf),
             len(clf.run.species), args.host, args.port,
             f"; behind the proxy at {args.root_path}/docs" if args.root_path else "")
    # uvicorn logs its own start-up failures (a port in use) in one line and exits with status 3
    uvicorn.run(app, host=args.host, port=args.port, log_level="debug" if args.verbose else "info",
                server_header=False, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
