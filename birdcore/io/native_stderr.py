"""What native libraries write straight to the process's stderr (file descriptor 2).

libmpg123 (inside libsndfile) prints a line for each damaged mp3 frame, and
TensorFlow prints start-up chatter; neither goes through Python, so neither can
be logged or silenced the usual way.  ``NativeStderr`` points fd 2 at a temp
file for the length of a ``with`` block; afterwards ``.text`` holds what was
written meanwhile, for the caller to log, drop or replay.

fd 2 is one per process, so blocks share the redirection: the first to start
points fd 2 at the temp file, the last to end points it back.  Each block gets
the text written since it started that no block ending earlier took, so every
byte goes to exactly one block; with threads, a block may get a line another
thread's code wrote meanwhile.  The temp file is made once per process and
emptied after each use, so a capture costs a few system calls (microseconds).
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading

_STDERR_FD = 2  # native code writes here, whatever ``sys.stderr`` is
_lock = threading.Lock()
_users = 0  # blocks running now
_real: int | None = None  # a duplicate of the real fd 2 while redirected (None: not redirected)
_sink = None  # the temp file fd 2 points at while redirected, kept for the next time
_sink_pid = 0  # the process that made it (a forked child makes its own)
_taken: list[tuple[int, int]] = []  # (start, end) byte ranges of the temp file that ended blocks took


class NativeStderr:
    """Context manager capturing fd 2 during the block; ``text`` holds the capture afterwards."""

    def __init__(self) -> None:
        self.text = ""
        self._start = 0

    def __enter__(self) -> "NativeStderr":
        global _users
        with _lock:
            if _users == 0:
                _redirect()
            _users += 1
            self._start = _end()
        return self

    def __exit__(self, *exc) -> bool:
        global _users
        with _lock:
            end = _end()
            if end > self._start:
                pieces = [os.pread(_sink.fileno(), b - a, a) for a, b in _untaken(self._start, end)]
                self.text = b"".join(pieces).decode(errors="replace")
                _taken.append((self._start, end))
            _users -= 1
            if _users == 0:
                _restore()
        return False

    def replay(self) -> None:
        """Write the captured text to ``sys.stderr`` (after the block)."""
        if self.text and sys.stderr is not None:
            sys.stderr.write(self.text)
            sys.stderr.flush()


@contextlib.contextmanager
def quiet_native_stderr():
    """Hide what native code writes to stderr inside the block (TensorFlow's start-up
    chatter about oneDNN and missing CUDA drivers, LiteRT's "Created TensorFlow Lite XNNPACK
    delegate"): logged at debug level (``-v`` shows it), replayed if the block fails."""
    captured = NativeStderr()
    try:
        with captured:
            yield
    except BaseException:
        captured.replay()
        raise
    if captured.text.strip():
        import logging

        logging.getLogger("birdcore").debug("native: %s", captured.text.strip())


def _redirect() -> None:
    """Point fd 2 at the (empty) temp file; leaves fd 2 alone when it cannot (then nothing is captured)."""
    global _real, _sink, _sink_pid
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        if _sink is None or _sink_pid != os.getpid():
            _sink, _sink_pid = tempfile.TemporaryFile(), os.getpid()
        real = os.dup(_STDERR_FD)
    except (OSError, ValueError):
        return
    try:
        os.dup2(_sink.fileno(), _STDERR_FD)
    except OSError:
        os.close(real)
        return
    _real = real
    _taken.clear()


def _restore() -> None:
    global _real
    if _real is None:
        return
    os.dup2(_real, _STDERR_FD)
    os.close(_real)
    _real = None
    os.ftruncate(_sink.fileno(), 0)
    os.lseek(_sink.fileno(), 0, os.SEEK_SET)
    try:  # what Python code buffered meanwhile goes to the real stderr
        if sys.stderr is not None:
            sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _untaken(start: int, end: int) -> list[tuple[int, int]]:
    """The parts of bytes [start, end) of the temp file that no ended block took."""
    pieces, pos = [], start
    for a, b in sorted(_taken):
        if b <= pos or a >= end:
            continue
        if a > pos:
            pieces.append((pos, a))
        pos = max(pos, b)
    if pos < end:
        pieces.append((pos, end))
    return pieces


def _end() -> int:
    """Bytes written to the temp file so far (0 when not redirected)."""
    return 0 if _real is None else os.fstat(_sink.fileno()).st_size
