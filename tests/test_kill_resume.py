"""Training survives ``kill -9``: the partial run stays partial, and ``--resume`` finishes it exactly once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from birdcore.runs.folder import RunBuilder, RunFolderError, read_manifest

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 240.0  # for the first job to record its second epoch


def train_cmd(data: Path, tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train_job.py"), "--data-dir", str(data), "--out", str(tmp / "runs"),
            "--name", "k", "--epochs", "6", "--cache-dir", str(tmp / "cache"), "--config", str(tmp / "cfg.json"),
            "--workers", "1", *extra]


def recorded_epoch(partial: Path) -> int:
    """The last epoch index in train_state.json whose history.csv row is also written (-1 if none)."""
    try:
        state = json.loads((partial / "train_state.json").read_text())
        history = pd.read_csv(partial / "history.csv")
    except (OSError, ValueError):  # not written yet
        return -1
    epoch = int(state["epoch"])
    return epoch if epoch + 1 in set(history["epoch"]) else -1


def kill_after_second_epoch(cmd: list[str], *, cwd: Path, env: dict, log_path: Path, runs: Path,
                            name: str) -> subprocess.Popen:
    """Start a training job that makes run ``name`` in ``runs``, ``kill -9`` it once its second epoch is
    recorded; returns the reaped process."""
    partial = runs / f".{name}.partial"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + DEADLINE_S
            while recorded_epoch(partial) < 1:
                assert time.monotonic() < deadline, "no second epoch in time:\n" + log_path.read_text()[-3000:]
                try:  # a short, bounded wait that also notices the job ending early
                    proc.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    continue
                pytest.fail("the job ended before it could be killed:\n" + log_path.read_text()[-3000:])
            with pytest.raises(RunFolderError, match="another job"):  # the running job holds the lock
                RunBuilder.open(runs, name, resume=True)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()  # reap it: a zombie would still look alive to the stale-lock check
    return proc


def test_lock_refuses_a_second_job_in_the_same_process(tmp_path):
    first = RunBuilder.open(tmp_path, "locked", resume=False)
    try:
        with pytest.raises(RunFolderError, match="another job"):
            RunBuilder.open(tmp_path, "locked", resume=True)
    finally:
        first.release()
    RunBuilder.open(tmp_path, "locked", resume=True).release()  # free again once released


def test_kill_9_then_resume_completes_once(tmp_path):
    from birdcore.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", n_species=3, recordings_per_species=6, seconds=(2.0, 3.0),
                                  sample_rate=16000, seed=2)
    tiny_config(epochs=6).save(tmp_path / "cfg.json")
    runs = tmp_path / "runs"
    partial, final = runs / ".k.partial", runs / "k"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log_path = tmp_path / "first.log"
    proc = kill_after_second_epoch(train_cmd(data, tmp_path), cwd=tmp_path, env=env, log_path=log_path,
                                   runs=runs, name="k")
    assert proc.returncode == -signal.SIGKILL
    assert partial.is_dir() and not final.exists()
    assert (partial / "job.lock").exists()  # stale: its owner is gone
    killed_at = json.loads((partial / "train_state.json").read_text())["epoch"]
    assert 1 <= killed_at < 5

    res = subprocess.run(train_cmd(data, tmp_path, "--resume"), cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert f"resuming at epoch {killed_at + 2} of 6" in res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(final)
    assert not partial.exists() and final.is_dir()
    manifest = read_manifest(final)
    assert manifest["status"] == "complete" and manifest["epochs_trained"] == 6
    history = pd.read_csv(final / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert not (final / "train_state.json").exists() and not (final / "job.lock").exists()
    for name in ("model.keras", "metrics.json", "thresholds.json", "scores.npz", "export/saved_model.pb"):
        assert (final / name).exists(), name
