"""Shared command-line plumbing: logging that reads well in a terminal and in a
``nohup`` file, common options, and one-line error reporting (no tracebacks
for bad input unless ``--verbose``)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere

log = logging.getLogger("birdcore")


def setup_logging(verbose: bool = False) -> None:
    """Timestamped lines on stderr: ``2026-11-25 14:03:11 INFO message``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("birdcore")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    logging.getLogger("absl").setLevel(logging.ERROR)


def add_common_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="decode cache folder (default: $BIRDCLEF_CACHE or ~/.cache/birdclef)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPU count)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")


def fail(exc: BaseException, verbose: bool) -> int:
    """Report an error in one line (with the traceback only when verbose); returns exit status 2."""
    if verbose:
        log.exception("failed")
    else:
        log.error("%s", exc if str(exc) else type(exc).__name__)
    return 2
