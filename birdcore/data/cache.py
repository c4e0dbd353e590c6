"""Decode cache: every recording is decoded once and reused across epochs and runs.

An entry is ``root/<2 hex>/<sha1>.npy`` holding float16 mono audio of shape
``(n_samples,)`` at the cache's sample rate (Hz).  The key hashes the absolute
source path, its size and mtime (ns), the sample rate, ``max_seconds`` and
:data:`CACHE_FORMAT`, so editing a source or changing audio settings simply
misses the old entry.  Entries are written atomically (temp file, fsync,
``os.replace``) and validated on load; a corrupt entry counts as missing.

Entries are read by training's worker threads, so their ``.npy`` headers are parsed here
(:func:`npy_header`), not by numpy: ``np.load`` evaluates a header with ``ast.literal_eval``,
which under Python 3.11 can fail with ``SystemError: AST constructor recursion depth mismatch``
when another thread compiles at the same moment (python/cpython#106905: the AST constructor's
recursion counter is shared by all threads, and the GIL can change hands inside it during a
garbage collection).  In ``model.fit`` that surfaced as ``[[{{node PyFunc}}]] [[IteratorGetNext]]``.

A source that cannot be decoded is skipped (reported with its reason); a cache
that cannot be written (disk full, read-only, no permission) stops the build
with ``CacheWriteError``, since going on would silently train on part of the
data.  Given the sources' durations, ``build`` first checks that the free space
can hold the new entries (2 bytes per sample) and stops early if it cannot.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from birdcore.io.atomic import write_npy
from birdcore.io.audio import decode_audio

log = logging.getLogger("birdcore.data.cache")
CACHE_FORMAT = 1  # bump when the entry layout or decoding changes
_F16_MAX = float(np.finfo(np.float16).max)
_WRITE_FAILED = "cache write failed: "  # reason prefix of a job that decoded but could not be stored
SPACE_MARGIN = 1.05  # free space asked for: the entries' size plus 5%


class CacheWriteError(OSError):
    """The cache folder cannot take the entries (full, read-only, no permission); names the folder."""


def _gigabytes(n_bytes: float) -> str:
    """"42 MB", "1.3 GB"."""
    return f"{n_bytes / 1e6:.0f} MB" if n_bytes < 1e9 else f"{n_bytes / 1e9:.1f} GB"


def default_cache_dir() -> Path:
    """``$BIRDCLEF_CACHE`` if set, else ``~/.cache/birdclef``."""
    env = os.environ.get("BIRDCLEF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "birdclef"


@dataclass
class CacheReport:
    """Outcome of :meth:`DecodeCache.build`; times and durations are in seconds."""

    ok: list[str] = field(default_factory=list)  # sources now available in the cache
    failed: dict[str, str] = field(default_factory=dict)  # source -> one-line reason
    n_decoded: int = 0
    n_reused: int = 0
    seconds: float = 0.0  # wall time of the build
    audio_seconds: float = 0.0  # total cached audio of the ok sources

    def to_dict(self) -> dict:
        return asdict(self)


class DecodeCache:
    """Float16 decoded audio under ``root`` for one (sample_rate, max_seconds) setting."""

    def __init__(self, root: str | Path, *, sample_rate: int, max_seconds: float | None = None):
        self.root = Path(root).expanduser()
        self.sample_rate = int(sample_rate)
        self.max_seconds = None if max_seconds is None else float(max_seconds)

    def entry_path(self, source: str | Path) -> Path:
        """Where ``source``'s entry lives now; raises FileNotFoundError if the source is gone."""
        return _entry_path(self.root, os.path.abspath(source), self.sample_rate, self.max_seconds)

    def load(self, source: str | Path) -> np.ndarray:
        """Read-only memory-mapped float16 audio, shape (n_samples,); KeyError if not cached
        (a corrupt entry is deleted).  Safe to call from several threads at once.

        Each live memmap holds an open file descriptor until it is garbage collected.
        """
        try:
            entry = self.entry_path(source)
        except OSError:  # the source is gone
            raise KeyError(str(source)) from None
        try:
            handle = open(entry, "rb")
        except FileNotFoundError:
            raise KeyError(str(source)) from None
        with handle:  # one open file: the header checked is the data mapped
            try:
                n, offset = _entry_header(handle)
            except ValueError:  # partial or foreign file
                _remove(entry)
                raise KeyError(str(source)) from None
            return np.memmap(handle, dtype="<f2", mode="r", offset=offset, shape=(n,))

    def build(
        self,
        sources: list[str | Path],
        *,
        workers: int | None = None,
        progress: bool = False,
        durations: dict[str, float] | None = None,
    ) -> CacheReport:
        """Decode every source not cached yet; a bad file never stops the build.

        ``workers`` processes decode in parallel (default ``os.cpu_count()``;
        1 decodes in this process).  Sources keep their given spelling in the
        report.  ``durations``: seconds per source (e.g. the metadata's
        ``duration`` column; unknown ones left out), for the free-space check.
        Raises ``CacheWriteError`` when the cache cannot hold or write the entries.
        """
        start = time.perf_counter()
        report = CacheReport()
        samples: dict[str, int] = {}
        todo: list[tuple[str, str, str]] = []  # (source, absolute source, entry path)
        order = list(dict.fromkeys(str(s) for s in sources))
        bar = _progress_bar(len(order), progress)
        for src in order:
            try:
                entry = self.entry_path(src)
            except FileNotFoundError:
                report.failed[src] = "file not found"
                bar.update(1)
                continue
            except OSError as exc:
                report.failed[src] = exc.strerror or type(exc).__name__
                bar.update(1)
                continue
            n = _entry_samples(entry)
            if n is None:
                todo.append((src, os.path.abspath(src), str(entry)))
            else:
                samples[src] = n
                report.n_reused += 1
                bar.update(1)

        def done(src: str, n: int | None, reason: str | None) -> None:
            if n is None and reason and reason.startswith(_WRITE_FAILED):
                bar.close()
                raise CacheWriteError(f"decode cache {self.root}: {reason[len(_WRITE_FAILED):]} (after "
                                      f"{report.n_decoded} new entries, which are kept); free some space or choose "
                                      f"another --cache-dir")
            if n is None:
                report.failed[src] = reason or "unknown error"
            else:
                samples[src] = n
                report.n_decoded += 1
            bar.update(1)

        self._check_space([src for src, _, _ in todo], durations or {})
        jobs = [(src, path, entry, self.sample_rate, self.max_seconds) for src, path, entry in todo]
        n_workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
        if n_workers == 1:
            for job in jobs:
                done(job[0], *_decode_job(*job[1:]))
        else:
            _run_in_pool(jobs, n_workers, done)
        bar.close()

        report.ok = [s for s in order if s in samples]
        report.audio_seconds = sum(samples[s] for s in report.ok) / self.sample_rate
        report.seconds = time.perf_counter() - start
        return report


    def needed_bytes(self, sources: list[str], durations: dict[str, float]) -> float:
        """Bytes the entries of ``sources`` will take, from their ``durations`` (s; unknown ones count 0)."""
        seconds = 0.0
        for src in sources:
            d = durations.get(src)
            if d is not None and math.isfinite(d) and d > 0:
                seconds += min(d, self.max_seconds) if self.max_seconds else d
        return seconds * self.sample_rate * 2

    def _check_space(self, sources: list[str], durations: dict[str, float]) -> None:
        need = self.needed_bytes(sources, durations) * SPACE_MARGIN
        if need <= 0:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.root).free
        except OSError as exc:
            raise CacheWriteError(f"decode cache {self.root}: cannot use this folder "
                                  f"({exc.strerror or type(exc).__name__})") from None
        log.info("decode cache %s: %d recordings to decode, about %s; %s free", self.root, len(sources),
                 _gigabytes(need / SPACE_MARGIN), _gigabytes(free))
        if need > free:
            raise CacheWriteError(f"decode cache {self.root}: {len(sources)} recordings need about "
                                  f"{_gigabytes(need)} (float16 at {self.sample_rate} Hz), but only "
                                  f"{_gigabytes(free)} is free there; free some space or choose another "
                                  f"--cache-dir")


def _entry_path(root: Path, abs_source: str, sample_rate: int, max_seconds: float | None) -> Path:
    st = os.stat(abs_source)
    blob = json.dumps([abs_source, st.st_size, st.st_mtime_ns, sample_rate, max_seconds, CACHE_FORMAT])
    key = hashlib.sha1(blob.encode("utf-8")).hexdigest()
    return root / key[:2] / f"{key}.npy"


def _entry_samples(entry: Path) -> int | None:
    """n_samples of a valid entry; None if missing or unreadable.  A corrupt entry (not a complete
    float16 1-D .npy file) is deleted; one that cannot be read just now (no permission, too many
    open files) is kept, and the build writes a new one over it."""
    try:
        with open(entry, "rb") as handle:
            return _entry_header(handle)[0]
    except ValueError:  # partial or foreign file
        _remove(entry)
        return None
    except OSError:
        return None


def _entry_header(handle) -> tuple[int, int]:
    """(n_samples, data offset) of the entry open in ``handle``; ValueError if it is not a cache entry."""
    dtype, shape, _, offset = npy_header(handle)
    if dtype != np.dtype("<f2") or len(shape) != 1 or shape[0] <= 0:
        raise ValueError(f"not a float16 1-D entry: {dtype} {shape}")
    return shape[0], offset


_NPY_MAGIC = b"\x93NUMPY"
_NPY_FIELD = re.compile(r"'(descr|fortran_order|shape)'\s*:\s*('[^']*'|True|False|\([\d\s,]*\))\s*,?")


def npy_header(handle) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran_order, data offset) of the ``.npy`` file open in ``handle`` (read from
    its start), checked against the file's size.  ValueError if it is not a complete ``.npy`` file of a
    plain dtype (no pickled objects, no structured dtype).

    Parses the header without ``ast.literal_eval`` (which ``np.load`` uses), so that threads can call it
    at the same time under Python 3.11 (see the module docstring).
    """
    start = handle.read(8)
    if len(start) != 8 or start[:6] != _NPY_MAGIC:
        raise ValueError("not a .npy file")
    major = start[6]
    if major not in (1, 2, 3):
        raise ValueError(f"unsupported .npy version {major}.{start[7]}")
    size_bytes = 2 if major == 1 else 4
    raw = handle.read(size_bytes)
    if len(raw) != size_bytes:
        raise ValueError("truncated .npy header")
    header_len = int.from_bytes(raw, "little")
    header = handle.read(header_len)
    if len(header) != header_len:
        raise ValueError("truncated .npy header")
    text = header.decode("utf-8" if major == 3 else "latin1").strip()
    fields = dict(_NPY_FIELD.findall(text))
    if not (text.startswith("{") and text.endswith("}")) or _NPY_FIELD.sub("", text[1:-1]).strip() \
            or set(fields) != {"descr", "fortran_order", "shape"}:
        raise ValueError(f"unexpected .npy header {text[:200]!r}")
    dims = fields["shape"][1:-1].split(",")
    if len(dims) == 1 and dims[0].strip():  # "(3)" is a number, not a shape
        raise ValueError(f"unexpected .npy header {text[:200]!r}")
    try:
        dtype = np.dtype(fields["descr"][1:-1])
        shape = tuple(int(d) for d in dims if d.strip())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"unexpected .npy header {text[:200]!r}: {exc}") from None
    if dtype.hasobject or dtype.fields is not None:
        raise ValueError(f"unsupported .npy dtype {dtype} (objects or fields)")
    offset = 8 + size_bytes + header_len
    size = os.fstat(handle.fileno()).st_size
    if size != offset + dtype.itemsize * math.prod(shape):
        raise ValueError(f"a .npy file of {size} bytes for {dtype} {shape} after a {offset}-byte header")
    return dtype, shape, fields["fortran_order"] == "True", offset


def load_npy_mmap(path: str | Path) -> np.memmap:
    """A read-only memory map of the ``.npy`` file at ``path``, like ``np.load(path, mmap_mode="r")``
    but safe to call from several threads under Python 3.11 (header read by :func:`npy_header`).
    OSError if it cannot be opened, ValueError if it is not a complete ``.npy`` file of a plain dtype."""
    with open(path, "rb") as handle:
        dtype, shape, fortran, offset = npy_header(handle)
        return np.memmap(handle, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _decode_job(abs_source: str, entry: str, sample_rate: int, max_seconds: float | None):
    """Decode one source into ``entry``: (n_samples, None) or (None, reason).  Never raises."""
    try:
        audio = decode_audio(abs_source, sample_rate=sample_rate, max_seconds=max_seconds)
        half = np.clip(audio, -_F16_MAX, _F16_MAX).astype("<f2")
    except Exception as exc:  # AudioError, or anything else the decoder raises: skip this source
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return None, " ".join(str(reason).split())
    try:
        write_npy(Path(entry), half)
    except OSError as exc:  # the cache's problem (full, read-only...), not the recording's: stop the build
        return None, _WRITE_FAILED + (exc.strerror or f"{type(exc).__name__}: {exc}")
    return int(half.shape[0]), None


def _run_in_pool(jobs: list[tuple], n_workers: int, done, *, task=None) -> None:
    """Run ``task`` (default ``_decode_job``) over ``jobs`` in worker processes, calling ``done(src, n, reason)``.

    Uses "spawn" workers (safe when TensorFlow threads exist in the parent) and
    keeps at most 2 jobs per worker in flight.  If a worker dies (a decoder
    crash), the jobs in flight are retried one per fresh process so only the
    culprit is reported as failed.
    """
    task = task or _decode_job
    context = multiprocessing.get_context("spawn")
    queue = deque(jobs)
    while queue:
        suspects = []
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
            running = {}
            while queue or running:
                while queue and len(running) < 2 * n_workers:
                    job = queue.popleft()
                    running[pool.submit(task, *job[1:])] = job
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                try:
                    for future in finished:
                        job = running.pop(future)
                        done(job[0], *future.result())
                except BrokenProcessPool:
                    suspects = [job, *running.values()]
                    break
        for job in suspects:
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as solo:
                try:
                    done(job[0], *solo.submit(task, *job[1:]).result())
                except BrokenProcessPool:
                    done(job[0], None, "decoder process crashed")


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, disable=not enabled, file=sys.stderr, unit="file",
                desc="decode", mininterval=0.1 if interactive else 30)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
