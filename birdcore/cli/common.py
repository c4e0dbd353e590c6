"""Shared command-line plumbing: logging that reads well in a terminal and in a
``nohup`` file, common options, and one-line error reporting (no tracebacks
for bad input unless ``--verbose``)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from birdcore.io.native_stderr import quiet_native_stderr

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere

log = logging.getLogger("birdcore")


_log_stream = None  # the process's stderr, on a file descriptor of its own (see setup_logging)


def _stderr_for_logs():
    """Where log lines go: the process's real stderr through a duplicate of fd 2, made once.  Native
    code's output is captured by pointing fd 2 elsewhere for a while (``io.native_stderr``: mp3
    decoder notes, TensorFlow's start-up chatter, which is dropped); a log line another thread
    writes meanwhile would be captured, and dropped, with it.  A replaced ``sys.stderr`` (a test's
    capture) is used as it is."""
    global _log_stream
    stream = sys.stderr
    if stream is None or stream is not sys.__stderr__:
        return stream
    if _log_stream is None:
        try:
            _log_stream = os.fdopen(os.dup(stream.fileno()), "w", buffering=1, encoding=stream.encoding,
                                    errors="backslashreplace")
        except (AttributeError, OSError, ValueError):
            return stream
    return _log_stream


def setup_logging(verbose: bool = False) -> None:
    """Timestamped lines on stderr: ``2026-11-25 14:03:11 INFO message``."""
    handler = logging.StreamHandler(_stderr_for_logs())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("birdcore")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    logging.getLogger("absl").setLevel(logging.ERROR)
    tf_log = logging.getLogger("tensorflow")
    if not any(isinstance(f, _ExpectedRetracing) for f in tf_log.filters):
        tf_log.addFilter(_ExpectedRetracing())


class _ExpectedRetracing(logging.Filter):
    """Drops TensorFlow's "N of the last M calls ... triggered tf.function retracing" warning.  Each
    model gets one traced scorer; keras-tuner builds a new model per trial, so one trace per trial is
    expected, but TensorFlow counts them together (same code) and warns as if something were wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default only when it has a real one (not None or False), 100 columns wide;
    the description and epilog keep their own lines (examples stay one command a line)."""

    def __init__(self, prog: str):
        super().__init__(prog, width=100)

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


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


def date_arg(text: str):
    """argparse type of ``--date``: a ``datetime.date`` from YYYY-MM-DD."""
    import datetime as dt

    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def add_place_args(group) -> None:
    """``--lat``, ``--lon`` and ``--date`` or ``--week``: the place and time of the location filter."""
    group.add_argument("--lat", type=float, default=None, help="latitude of the recordings, degrees")
    group.add_argument("--lon", type=float, default=None, help="longitude of the recordings, degrees")
    when = group.add_mutually_exclusive_group()
    when.add_argument("--date", type=date_arg, default=None, help="recording date, YYYY-MM-DD (sets the week)")
    when.add_argument("--week", type=int, default=-1, help="BirdNET week 1..48 (4 per month); -1 = any time of year")


def place_from_args(args):
    """The ``birdnet_range.Place`` of ``--lat/--lon/--date/--week``, or None without ``--lat/--lon``;
    ValueError for half a place or a date without one."""
    if args.lat is None and args.lon is None:
        if args.date is not None or args.week != -1:
            raise ValueError("--date/--week need --lat and --lon (the location filter works on a place)")
        return None
    if args.lat is None or args.lon is None:
        raise ValueError("the location filter needs both --lat and --lon")
    from birdcore.serving.birdnet_range import Place, week_of

    return Place(args.lat, args.lon, week_of(args.date) if args.date is not None else args.week)


def at_least(low: int):
    """argparse type: a whole number ≥ ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be ≥ {low}, got {value}")
        return value

    parse.__name__ = f"whole number ≥ {low}"
    return parse


def text_table(header: list[str], rows: list[list[str]], *, right: tuple[int, ...] = ()) -> str:
    """Rows of text cells as aligned columns (two spaces apart; columns in ``right`` right-aligned);
    a row may have one cell more than the header (a note), printed as it is."""
    n = len(header)
    widths = [max([len(header[i])] + [len(r[i]) for r in rows if len(r) > i]) for i in range(n)]

    def line(cells: list[str]) -> str:
        out = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells[:n])]
        return "  ".join(out + cells[n:]).rstrip()

    return "\n".join([line(header)] + [line(r) for r in rows])


def whole_between(low: int, high: int):
    """argparse type: a whole number in [``low``, ``high``]."""
    above = at_least(low)

    def parse(text: str) -> int:
        value = above(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be ≤ {high}, got {value}")
        return value

    parse.__name__ = f"whole number in [{low}, {high}]"
    return parse


def add_engine_arg(parser, *, applies: str) -> None:
    """``--engine litert|keras``: what runs BirdNET (``models.birdnet.engines``); ``applies`` says to
    which runs it applies, for the help text."""
    from birdcore.models.birdnet.engines import ENGINES

    parser.add_argument("--engine", choices=list(ENGINES), default=None,
                        help=f"{applies}: what runs BirdNET, litert (the TFLite file, CPU) or keras (the converted "
                             "Keras model: TensorFlow or JAX, a GPU where there is one); same scores. Default: "
                             "$BIRDCLEF_BIRDNET_ENGINE, else the faster on this machine: litert on a CPU (keras is "
                             "about as fast once loaded, but imports TensorFlow first), keras with JAX on a GPU. Sigmoid "
                             "scores agree within 1e-4 (1.9e-5 on xc-pr20's windows)")
