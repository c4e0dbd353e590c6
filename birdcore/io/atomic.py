"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Everything is written beside its destination (same folder, so the same file system) under a
hidden temporary name, flushed to disk, then renamed into place with ``os.replace``.  A failure
or a kill leaves at most a hidden ``.NAME.*.tmp`` file, never a truncated destination.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def replacing(path: Path, *, suffix: str = ".tmp", directory: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on leaving the block without an error it
    replaces ``path`` (a file, or with ``directory`` a folder, whose old contents are removed).
    ``suffix`` keeps a file type that the writer insists on (``.keras``, ``.npy``, ``.npz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix))
        shutil.rmtree(tmp)  # writers such as SavedModel export create the folder themselves
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory:
            shutil.rmtree(path, ignore_errors=True)
        else:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON (no NaN) atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_npz(path: Path, **arrays) -> None:
    """Save arrays (no pickled objects) as a compressed ``.npz`` atomically."""
    with replacing(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def write_npy(path: Path, array: np.ndarray) -> None:
    """Save one array (no pickled objects) as ``.npy`` atomically."""
    with replacing(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as handle:
            np.lib.format.write_array(handle, np.asarray(array), allow_pickle=False)
