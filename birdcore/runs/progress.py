"""Runs still being built: how far each has got, for the dashboard and for anyone checking on a job.

``python -m birdcore.progress [RUNS_DIR]`` prints one line per unfinished run (for a terminal on the
training machine); the dashboard's sidebar shows the same lines.

A training job builds its run in ``<out>/.<name>.partial/`` (``runfolder.RunBuilder``) and
writes, epoch by epoch, ``history.csv`` (one row per epoch, with its wall time in seconds),
``train_state.json`` (best validation top-1 and its epoch) and holds ``job.lock`` (pid and
host) while it runs.  This module reads those files only: it never touches a running job.
"""
from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdcore.runs.folder import pid_alive
from birdcore.runs.history import HISTORY_FILE, epoch_seconds

RUNNING, STOPPED, ELSEWHERE = "running", "stopped", "elsewhere"


def eta_seconds(epoch_seconds: list[float], remaining: int, *, earlier: list[float] | tuple = ()) -> float:
    """Seconds left for ``remaining`` epochs, from the wall times of one process's epochs so far.

    The first epoch of a process also compiles the model (about 100 s for InceptionV3 on a GPU,
    where an epoch can then take 5 s), so it is left out once a later epoch has been timed; the
    median of the rest resists a slow epoch.  ``earlier``: wall times of epochs that earlier
    processes timed (a resumed run's history); until this process has timed an epoch after its first,
    their median stands in, so that the first epoch after ``--resume`` does not multiply its
    compile time by every epoch left.
    """
    timed = epoch_seconds[1:] or list(earlier) or epoch_seconds
    return remaining * float(np.median(timed)) if timed else 0.0


def duration(seconds: float) -> str:
    """"1h05m", "4m09s"."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


@dataclass
class RunProgress:
    """Where one unfinished run stands.

    ``state``: "running" (its job holds the lock on this machine), "stopped" (no live job: it was
    interrupted and can be continued with ``--resume``) or "elsewhere" (locked by a job on another
    host, which cannot be checked from here).  ``epochs_done`` counts finished epochs; the others
    are None until the job has written them.
    """

    name: str
    path: Path
    state: str
    epochs_done: int
    epochs_total: int | None
    best_val_top1: float | None
    best_epoch: int | None
    eta_seconds: float | None
    updated: float  # Unix time of the newest file in the run folder (or of the folder itself); 0: unknown
    # the dataset folder saved in the run's config.json, which ``--resume`` reuses; None until the job
    # has read its data (resuming then needs ``--data-dir``)
    data_dir: str | None = None

    def describe(self) -> str:
        """One line for people, e.g. "epoch 34 of 150 · best val top-1 0.652 (epoch 32) · about 9m07s left"."""
        if self.epochs_done == 0:
            where = "preparing data or in the first epoch"
        else:
            where = f"epoch {self.epochs_done}" + (f" of {self.epochs_total}" if self.epochs_total else "")
        parts = [where]
        if self.best_val_top1 is not None and self.best_epoch is not None:
            parts.append(f"best val top-1 {self.best_val_top1:.3f} (epoch {self.best_epoch})")
        if self.state == RUNNING and self.eta_seconds:
            parts.append(f"about {duration(self.eta_seconds)} left")
        elif self.state == STOPPED:
            command = f"train_job.py --resume --name {self.name}" + ("" if self.data_dir else " --data-dir DIR")
            age = f"last written {duration(max(0.0, time.time() - self.updated))} ago; " if self.updated > 0 else ""
            parts.append(f"{age}continue it with `{command}` (and the same --out)")
        elif self.state == ELSEWHERE:
            parts.append("its job runs on another machine")
        return " · ".join(parts)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_progress(partial: Path) -> RunProgress:
    """The progress of the run being built in ``partial`` (a ``.<name>.partial`` folder)."""
    partial = Path(partial)
    name = partial.name[1:-len(".partial")] if partial.name.endswith(".partial") else partial.name
    lock = _read_json(partial / "job.lock")
    if not lock:
        state = STOPPED
    elif lock.get("host") != socket.gethostname():
        state = ELSEWHERE
    else:
        state = RUNNING if isinstance(lock.get("pid"), int) and pid_alive(lock["pid"]) else STOPPED
    history = epoch_seconds(partial / HISTORY_FILE)
    done = max((e for e, _ in history), default=0)
    saved = _read_json(partial / "config.json")
    config = saved.get("config")
    data_dir = saved.get("data_dir") if isinstance(saved.get("data_dir"), str) and saved.get("data_dir") else None
    train = config.get("train") if isinstance(config, dict) else None
    total = train.get("epochs") if isinstance(train, dict) else None
    total = int(total) if isinstance(total, (int, float)) and not isinstance(total, bool) and total > 0 else None
    train_state = _read_json(partial / "train_state.json")
    best, best_epoch = train_state.get("best"), train_state.get("best_epoch")
    has_best = isinstance(best, (int, float)) and isinstance(best_epoch, int) and best_epoch >= 0
    eta = None
    if total and done:
        seconds = [s for _, s in history if s == s]
        eta = eta_seconds(seconds, max(0, total - done)) if seconds else None
    updated = 0.0  # the folder's own time counts too: a job that stopped before writing a file leaves it empty
    for p in (partial, *_entries(partial)):
        try:
            updated = max(updated, p.stat().st_mtime)
        except OSError:
            pass
    return RunProgress(name=name, path=partial, state=state, epochs_done=done, epochs_total=total,
                       best_val_top1=float(best) if has_best else None,
                       best_epoch=best_epoch + 1 if has_best else None, eta_seconds=eta, updated=updated,
                       data_dir=data_dir)


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def runs_in_progress(out_dir: Path) -> list[RunProgress]:
    """Unfinished runs in ``out_dir`` (running ones first, then the most recently updated)."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = [read_progress(p) for p in out.iterdir() if p.is_dir() and p.name.startswith(".")
             and p.name.endswith(".partial")]
    return sorted(found, key=lambda r: (r.state != RUNNING, -r.updated))
