"""Unfinished runs as the dashboard reports them: epoch, best validation top-1, ETA, running or stopped."""
import json
import os
import socket
import time

import pytest

from birdcore.runs.progress import RUNNING, STOPPED, ELSEWHERE, eta_seconds, read_progress, runs_in_progress
from birdcore.runs.folder import RunBuilder


def fake_partial(out, name, *, epochs_total=10, seconds=(100.0, 5.0, 5.0, 6.0), best=(0.65, 2), lock=None):
    """A run folder as a training job leaves it after len(seconds) epochs."""
    path = out / f".{name}.partial"
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"config": {"train": {"epochs": epochs_total}},
                                                  "data_dir": "/data/birdsong"}))
    rows = ["epoch,loss,val_top1,val_loss,seconds"] + [f"{i + 1},0.2,0.5,0.3,{s}" for i, s in enumerate(seconds)]
    (path / "history.csv").write_text("\n".join(rows) + "\n")
    (path / "train_state.json").write_text(json.dumps({"epoch": len(seconds) - 1, "best": best[0],
                                                       "best_epoch": best[1], "wait": 1}))
    if lock is not None:
        (path / "job.lock").write_text(json.dumps(lock))
    return path


def test_a_running_job_reports_epoch_best_and_eta(tmp_path):
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": 0}
    p = read_progress(fake_partial(tmp_path, "gpu", lock=me))
    assert (p.name, p.state, p.epochs_done, p.epochs_total) == ("gpu", RUNNING, 4, 10)
    assert (p.best_val_top1, p.best_epoch) == (0.65, 3)  # train_state's epochs are 0-based
    assert p.eta_seconds == pytest.approx(6 * 5.0)  # 6 epochs left at the median of epochs 2-4, not of all four
    assert p.describe() == "epoch 4 of 10 · best val top-1 0.650 (epoch 3) · about 0m30s left"


def test_a_killed_job_is_stopped_and_says_how_to_continue(tmp_path):
    dead = {"pid": 2 ** 22 + 12345, "host": socket.gethostname(), "started": 0}  # beyond pid_max: no such process
    for name, lock in (("killed", dead), ("interrupted", None)):
        p = read_progress(fake_partial(tmp_path, name, lock=lock))
        assert p.state == STOPPED
        assert f"continue it with `train_job.py --resume --name {name}`" in p.describe()
        assert "left" not in p.describe()
    other = read_progress(fake_partial(tmp_path, "cluster", lock={"pid": 1, "host": "not-" + socket.gethostname()}))
    assert other.state == ELSEWHERE and "another machine" in other.describe()


def test_a_job_still_preparing_data_has_no_numbers_yet(tmp_path):
    path = tmp_path / ".fresh.partial"
    path.mkdir()
    p = read_progress(path)
    assert (p.epochs_done, p.epochs_total, p.best_val_top1, p.eta_seconds) == (0, None, None, None)
    assert p.describe().startswith("preparing data or in the first epoch")


def test_only_unfinished_runs_are_listed_running_first(tmp_path):
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    fake_partial(tmp_path, "old-stopped")
    fake_partial(tmp_path, "live", lock=me)
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "run.json").write_text("{}")
    assert [r.name for r in runs_in_progress(tmp_path)] == ["live", "old-stopped"]
    assert runs_in_progress(tmp_path / "missing") == []


def test_a_real_run_builder_folder_reads_as_running(tmp_path):
    run = RunBuilder.open(tmp_path, "real", resume=False)
    try:
        (listed,) = runs_in_progress(tmp_path)
        assert listed.name == "real" and listed.state == RUNNING
    finally:
        run.release()
    assert runs_in_progress(tmp_path)[0].state == STOPPED


def test_a_run_that_stopped_before_writing_anything_has_a_real_age_and_a_command_that_works(tmp_path):
    """An empty partial folder (a job that failed or was killed before reading its data) is "last written"
    when the folder was, not in 1970, and resuming it needs --data-dir: it saved none."""
    path = tmp_path / ".early.partial"
    path.mkdir()
    then = time.time() - 3 * 3600
    os.utime(path, (then, then))
    p = read_progress(path)
    assert abs(p.updated - then) < 2 and p.data_dir is None
    assert "last written 3h00m ago" in p.describe()
    assert "`train_job.py --resume --name early --data-dir DIR`" in p.describe()


def test_a_stopped_run_with_a_saved_data_folder_resumes_with_its_name_alone(tmp_path):
    p = read_progress(fake_partial(tmp_path, "saved"))
    assert p.data_dir == "/data/birdsong"
    assert "`train_job.py --resume --name saved` (and the same --out)" in p.describe()


def test_eta_uses_the_median_of_later_epochs():
    assert eta_seconds([108.0, 5.0, 4.0, 6.0], remaining=10) == 50.0
    assert eta_seconds([30.0], remaining=3) == 90.0
    assert eta_seconds([], remaining=3) == 0.0


def test_garbage_in_a_run_folder_reads_as_unknown_not_an_error(tmp_path):
    path = tmp_path / ".odd.partial"
    path.mkdir()
    (path / "config.json").write_text('{"config": "not a dict"}')
    (path / "train_state.json").write_text("[1, 2")
    (path / "history.csv").write_text("epoch,seconds\n1,2.0\nx,y\n2,\n")
    (path / "job.lock").write_text("garbage")
    p = read_progress(path)
    assert (p.state, p.epochs_done, p.epochs_total, p.best_val_top1, p.eta_seconds) == (STOPPED, 2, None, None, None)
    assert p.describe().startswith("epoch 2 ·")


def test_the_command_line_prints_one_line_per_unfinished_run(tmp_path, capsys):
    from birdcore.cli.progress import main

    me = {"pid": os.getpid(), "host": socket.gethostname()}
    fake_partial(tmp_path, "live", lock=me)
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out == "live (running): epoch 4 of 10 · best val top-1 0.650 (epoch 3) · about 0m30s left\n"
    assert main([str(tmp_path / "empty")]) == 1 and "no such runs folder" in capsys.readouterr().err
    (tmp_path / "done").mkdir()
    assert main([str(tmp_path / "done")]) == 0 and "no unfinished runs" in capsys.readouterr().out


def test_first_epoch_after_a_resume_takes_its_eta_from_the_epochs_before(tmp_path, caplog):
    """The first epoch of a resumed process also compiles: its ETA comes from the epochs earlier
    processes timed (5 s each here), not from its own 100 s times every epoch left (10 minutes)."""
    import keras

    from birdcore.training.callbacks import RunKeeper

    class Folder:
        def file(self, name):
            return tmp_path / name

    (tmp_path / "history.csv").write_text("epoch,loss,val_top1,val_loss,seconds\n"
                                          + "".join(f"{e},1.0,0.5,1.0,{s}\n" for e, s in ((1, 40.0), (2, 5.0), (3, 5.0), (4, 6.0))))
    keeper = RunKeeper(Folder(), epochs=10, patience=5, state={"epoch": 2, "best": 0.5, "best_epoch": 1, "wait": 0})
    keeper.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    keeper._last_end -= 100.0  # this process's first epoch took 100 s, compiling included
    with caplog.at_level("INFO", logger="birdcore"):
        keeper.on_epoch_end(3, {"loss": 1.0, "val_top1": 0.4, "val_loss": 1.0})
    assert "ETA 0m30s" in caplog.text  # 6 epochs left × the median of epochs 1-3 (5 s); epoch 4 is redone
    assert eta_seconds([100.0], remaining=6, earlier=[40.0, 5.0, 5.0]) == 30.0
    assert eta_seconds([100.0, 7.0], remaining=6, earlier=[40.0, 5.0, 5.0]) == 42.0  # its own, once it has one
