"""Run folders: the contract between training and the dashboard.

A run is built in ``<out>/.<name>.partial/`` and renamed to ``<out>/<name>/``
only when every file is written, so an interrupted job never leaves a run
that looks complete.  ``run.json`` carries ``format_version``; readers check it.

Layout of a complete run (format version 1)::

    run.json            manifest: format, version, name, status, created/finished, synthetic, summary
    config.json         every setting (RunConfig) plus library versions
    species.csv         index, ebird_code, common_name, sci_name (model output order)
    data_report.json    recordings found, decoded, failed (with reasons), cache timing
    split.csv           recording_id, split (train/val/test), primary
    history.csv         one row per epoch: loss, val_top1, val_loss, lr, seconds
    metrics.json        test metrics (birdcore.evaluation.metrics.evaluate_scores)
    thresholds.json     per-species and global thresholds at the target FPR
    scores.npz          test score matrix: recording_id, species, primary, scores (N, C),
                        secondary (N, C), segment_scores (ΣS, C), segment_offsets (N+1,), segment_seconds
    model.keras         best checkpoint (load with safe_mode=True after importing birdcore.features.layers)
    export/             TF SavedModel: serve(waveform (batch, n) float32) → {recording, segments};
                        written under the TensorFlow Keras backend only (run.json "savedmodel")
"""
from __future__ import annotations

import json
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

from birdcore.io.atomic import atomic_write_json

FORMAT_NAME = "birdclef-run"
FORMAT_VERSION = 1


class RunFolderError(RuntimeError):
    """A run folder cannot be created, resumed or read."""


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("tensorflow", "jax", "keras", "keras-tuner", "numpy", "librosa", "soundfile", "scikit-learn", "pandas"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunBuilder:
    """A run under construction in ``<out>/.<name>.partial``.

    ``open`` takes a lock (refusing a second job on the same name), and
    ``finish`` writes ``run.json`` and renames the folder into place.
    """

    def __init__(self, out_dir: Path, name: str):
        if not name or "/" in name or name.startswith("."):
            raise RunFolderError(f"invalid run name {name!r}")
        self.out_dir = Path(out_dir)
        self.name = name
        self.final = self.out_dir / name
        self.path = self.out_dir / f".{name}.partial"
        self.lock = self.path / "job.lock"

    @classmethod
    def open(cls, out_dir: Path, name: str, *, resume: bool) -> "RunBuilder":
        run = cls(out_dir, name)
        if run.final.exists():
            raise RunFolderError(f"{run.final}: a complete run with this name exists; choose another --name")
        if run.path.exists() and not resume:
            raise RunFolderError(f"{run.path}: an interrupted run with this name exists; "
                                 "add --resume to continue it, or choose another --name")
        run.path.mkdir(parents=True, exist_ok=True)
        run._take_lock()
        return run

    def _take_lock(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    other = json.loads(self.lock.read_text())
                except (OSError, ValueError):
                    other = {}
                same_host = other.get("host") == me["host"]
                if same_host and isinstance(other.get("pid"), int) and not pid_alive(other["pid"]):
                    self.lock.unlink(missing_ok=True)  # stale lock of a killed job on this machine
                    continue
                raise RunFolderError(f"{self.path}: another job (pid {other.get('pid')} on "
                                     f"{other.get('host')}) is writing this run; refusing to run a second one")
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            return
        raise RunFolderError(f"{self.lock}: could not take the run lock")

    def release(self) -> None:
        self.lock.unlink(missing_ok=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def finish(self, manifest: dict[str, Any]) -> Path:
        """Write run.json last and move the folder to its final name."""
        data = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "name": self.name,
                "status": "complete", "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **manifest}
        atomic_write_json(self.file("run.json"), data)
        self.release()
        os.replace(self.path, self.final)
        return self.final


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """Read and check ``run.json``; raises RunFolderError for a missing, incomplete or newer run."""
    path = Path(run_dir) / "run.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{run_dir}: not a complete run (no run.json)") from None
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc})") from None
    if data.get("format") != FORMAT_NAME:
        raise RunFolderError(f"{path}: not a birdclef run")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise RunFolderError(f"{path}: run format {data.get('format_version')} is newer than this "
                             f"software understands ({FORMAT_VERSION}); upgrade birdclef")
    return data


def list_runs(out_dir: Path) -> list[Path]:
    """Complete runs in ``out_dir``, newest first."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    runs = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "run.json").is_file()]
    return sorted(runs, key=lambda p: (p / "run.json").stat().st_mtime, reverse=True)


def added_marks(names) -> dict[str, bool] | None:
    """ebird_code → whether the run added the species (an append run's species.csv ``added`` column, read
    as text or bool), or None for a species table (a DataFrame) without the column."""
    if "added" not in names or "ebird_code" not in names:
        return None
    flags = names["added"].map(lambda v: v is True or str(v).strip().lower() == "true")
    return dict(zip(names["ebird_code"].astype(str), flags.astype(bool)))
