"""Training on several devices (``train_job.py --devices N``): the same step as on one device, runs
that complete, and runs killed on N devices that resume on another number.

Several devices are simulated on the CPU, in subprocesses (the count is fixed when a backend starts):
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` for JAX, logical CPU devices for TensorFlow.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from birdcore.training.devices import DeviceError, training_devices

from conftest import tiny_config
from test_kill_resume import kill_after_second_epoch

ROOT = Path(__file__).resolve().parents[1]
TF_LOGICAL_CPUS = ("import sys, runpy, tensorflow as tf; "  # split the CPU into N devices, then run the script
                   "tf.config.set_logical_device_configuration(tf.config.list_physical_devices('CPU')[0], "
                   "[tf.config.LogicalDeviceConfiguration()] * int(sys.argv[1])); "
                   "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def jax_env(devices: int = 2) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def tf_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow"}


def step(cmd: list[str], env: dict) -> dict:
    res = subprocess.run([sys.executable, *cmd], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_step_on_two_jax_devices_equals_a_step_on_one():
    """DataParallel runs one program over the global batch: augmentation and batch norm included."""
    out = step([str(ROOT / "tests" / "devices_step.py")], jax_env())
    assert out["devices"] == 2 and out["backend"] == "jax"
    assert out["max_weight_moved"] > 0.05  # the steps did move the weights
    assert out["max_weight_diff"] < 1e-5, out
    assert out["loss_many"] == pytest.approx(out["loss_one"], abs=1e-5)


def test_a_step_on_two_mirrored_tensorflow_devices_equals_a_step_on_one():
    """Under MirroredStrategy, batch norm uses the global batch (``TrainingDevices.adopt``); without it
    each replica normalises its own half and the step differs by about 1e-2.  The model's random
    augmentation is left out here: each replica draws its own masks."""
    out = step(["-c", TF_LOGICAL_CPUS, "2", str(ROOT / "tests" / "devices_step.py"), "--no-augment"], tf_env())
    assert out["devices"] == 2 and out["backend"] == "tensorflow"
    assert out["max_weight_moved"] > 0.05
    assert out["max_weight_diff"] < 1e-5, out


def test_devices_beyond_what_is_visible_are_refused_in_one_line():
    with pytest.raises(DeviceError, match=r"--devices 64: the \w+ backend sees only \d+ CPU device"):
        training_devices(64)
    one = training_devices("all")  # no accelerator here: one device
    assert one.n == 1
    one.check_batch(7)  # any batch splits over one device


def test_a_global_batch_that_does_not_split_evenly_is_refused():
    from birdcore.training.devices import TrainingDevices

    with pytest.raises(DeviceError, match=r"--batch-size 10 is the global batch, split over 4 devices: it must be a "
                                          r"multiple of 4 \(e\.g\. 8 or 12\)"):
        TrainingDevices(4, ("gpu:0", "gpu:1", "gpu:2", "gpu:3"), "GPU").check_batch(10)


@pytest.mark.parametrize("value, message", [("0", "at least 1 device"), ("two", "a number of devices or 'all'")])
def test_the_devices_option_takes_a_number_or_all(value, message, tmp_path, capsys):
    from birdcore.cli.train import main

    with pytest.raises(SystemExit) as stop:
        main(["--demo", "--devices", value, "--out", str(tmp_path)])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_train_job_on_more_devices_than_visible_stops_before_reading_data(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "train_job.py"), "--data-dir", str(tmp_path), "--devices", "3",
                          "--out", str(tmp_path / "runs")], cwd=tmp_path, env=jax_env(2), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--devices 3: the jax backend sees only 2 CPU devices (cpu:0, cpu:1)" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_a_run_killed_on_two_jax_devices_resumes_on_one(synth_dir, tmp_path):
    from birdcore.runs.folder import read_manifest

    tiny_config(epochs=4).save(tmp_path / "cfg.json")
    runs = tmp_path / "runs"
    cmd = [sys.executable, str(ROOT / "train_job.py"), "--data-dir", str(synth_dir), "--out", str(runs),
           "--name", "d", "--cache-dir", str(tmp_path / "cache"), "--config", str(tmp_path / "cfg.json"),
           "--workers", "1"]
    proc = kill_after_second_epoch([*cmd, "--devices", "2"], cwd=tmp_path, env=jax_env(2),
                                   log_path=tmp_path / "first.log", runs=runs, name="d")
    assert proc.returncode == -signal.SIGKILL
    first = (tmp_path / "first.log").read_text()
    assert "training on 2 CPU devices (cpu:0, cpu:1) with DataParallel" in first
    assert json.loads((runs / ".d.partial" / "config.json").read_text())["devices"] == 2

    res = subprocess.run([*cmd, "--resume", "--devices", "1"], cwd=tmp_path, env=jax_env(2), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on 1 devices (it trained on 2 before)" in res.stderr and "resuming at epoch" in res.stderr
    manifest = read_manifest(runs / "d")
    assert manifest["devices"] == 1 and manifest["epochs_trained"] == 4


def test_a_run_on_two_mirrored_tensorflow_devices_completes_and_serves(synth_dir, tmp_path):
    tiny_config(epochs=2).save(tmp_path / "cfg.json")
    res = subprocess.run([sys.executable, "-c", TF_LOGICAL_CPUS, "2", str(ROOT / "train_job.py"), "--data-dir",
                          str(synth_dir), "--out", str(tmp_path / "runs"), "--name", "m", "--cache-dir",
                          str(tmp_path / "cache"), "--config", str(tmp_path / "cfg.json"), "--workers", "1",
                          "--devices", "2"], cwd=tmp_path, env=tf_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "training on 2 CPU devices" in res.stderr and "MirroredStrategy" in res.stderr
    run_dir = tmp_path / "runs" / "m"
    assert json.loads((run_dir / "run.json").read_text())["devices"] == 2
    # the served model is portable: batch norm is not left synchronised (JAX could not load it)
    from birdcore.runs.loading import load_run

    model = load_run(run_dir).model
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.synchronized for layer in norms)
