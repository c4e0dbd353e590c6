"""Bounded work for a server shared by visitors: at most N classifications at once in the process.

``WorkSlots(n).slot(on_wait)`` is a context manager: it takes one of ``n`` slots, waiting while all are
taken (``on_wait(waiting)`` is called meanwhile with how many callers wait, so a page can say so), and
gives the slot back on exit.  The dashboard holds one ``WorkSlots`` per process (``ui.classify_clip``),
as the API bounds its own with ``--max-concurrent``.  ``BIRDCLEF_MAX_CONCURRENT`` (default 2) sets ``n``;
``BIRDCLEF_MAX_UPLOAD_MINUTES`` (default 30) the longest audio one classification scores.

``RecentUploads`` holds the last upload of each dashboard session, for scoring it again with other
settings (another model or window overlap), within one byte budget for the whole process
(``BIRDCLEF_KEEP_UPLOADS_MB``, default 64): the oldest go first, so what visitors' uploads cost once
answered does not grow with the number of visitors or the length of their clips.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from typing import Callable, Iterator

CONCURRENT_ENV = "BIRDCLEF_MAX_CONCURRENT"
MINUTES_ENV = "BIRDCLEF_MAX_UPLOAD_MINUTES"
DEFAULT_CONCURRENT = 2
DEFAULT_MINUTES = 30.0
KEEP_UPLOADS_ENV = "BIRDCLEF_KEEP_UPLOADS_MB"
DEFAULT_KEEP_UPLOADS_MB = 64.0


def _number(env: str, default: float, *, low: float) -> float:
    text = os.environ.get(env, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{env}={text!r}: expected a number") from None
    if value < low:
        raise ValueError(f"{env}={text!r}: must be at least {low:g}")
    return value


def max_concurrent() -> int:
    """Classifications one dashboard process runs at once (``BIRDCLEF_MAX_CONCURRENT``, default 2)."""
    return int(_number(CONCURRENT_ENV, DEFAULT_CONCURRENT, low=1))


def max_upload_seconds() -> float:
    """The longest audio one dashboard classification scores, in seconds (``BIRDCLEF_MAX_UPLOAD_MINUTES``,
    default 30 minutes); longer uploads are cut there, with a warning."""
    return 60.0 * _number(MINUTES_ENV, DEFAULT_MINUTES, low=0.05)


def kept_uploads_bytes() -> int:
    """Bytes of answered uploads one dashboard process keeps for scoring them again (``BIRDCLEF_KEEP_UPLOADS_MB``,
    default 64; 0: none kept, a visitor who changes the model or the overlap uploads the clip again)."""
    return int(_number(KEEP_UPLOADS_ENV, DEFAULT_KEEP_UPLOADS_MB, low=0) * 2**20)


class RecentUploads:
    """The last upload of each session, at most ``budget`` bytes in all (least recently used dropped first).

    ``put(session, digest, data)`` replaces the session's upload (one too large for the budget is not
    kept); ``get(session, digest)`` returns the bytes, or None once they were dropped.  Thread-safe."""

    def __init__(self, budget: int):
        self.budget = max(0, int(budget))
        self._lock = threading.Lock()
        self._uploads: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self.total = 0

    def put(self, session: str, digest: str, data: bytes) -> None:
        with self._lock:
            old = self._uploads.pop(session, None)
            if old is not None:
                self.total -= len(old[1])
            if len(data) > self.budget:
                return
            self._uploads[session] = (digest, data)
            self.total += len(data)
            while self.total > self.budget:
                _, (_, dropped) = self._uploads.popitem(last=False)
                self.total -= len(dropped)

    def get(self, session: str, digest: str) -> bytes | None:
        with self._lock:
            kept = self._uploads.get(session)
            if kept is None or kept[0] != digest:
                return None
            self._uploads.move_to_end(session)
            return kept[1]


class WorkSlots:
    """``size`` slots shared by the threads of one process (one Streamlit session each)."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError("WorkSlots needs at least one slot")
        self.size = int(size)
        self._slots = threading.BoundedSemaphore(self.size)
        self._lock = threading.Lock()
        self.waiting = 0

    @contextlib.contextmanager
    def slot(self, on_wait: Callable[[int], None] | None = None, *, poll_seconds: float = 0.5) -> Iterator[None]:
        """Hold one slot for the block; while none is free, ``on_wait(waiting)`` every ``poll_seconds``."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.waiting += 1
            try:
                if on_wait is not None:
                    on_wait(self.waiting)
                while not self._slots.acquire(timeout=poll_seconds):
                    if on_wait is not None:
                        on_wait(self.waiting)
            finally:
                with self._lock:
                    self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
