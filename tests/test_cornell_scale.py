"""The Cornell-size rehearsal's data set, and what it found growing with species or recordings."""
import cProfile
import gc
import os
import pstats
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from birdcore.data.cornell_scale import (CORNELL_RECORDINGS, CORNELL_SPECIES, CORNELL_TEST, make_cornell_scale_dataset,
                                         species_counts, held_out_counts, xc_numbers)

ROOT = Path(__file__).resolve().parents[1]


def test_counts_have_the_cornell_shape_and_sizes():
    full = species_counts()
    assert len(full) == CORNELL_SPECIES and full.sum() == CORNELL_RECORDINGS
    assert full.min() == 9 and full.max() == 100 and (full == 100).sum() > CORNELL_SPECIES / 2
    tests = held_out_counts(full, CORNELL_TEST)
    assert tests.sum() == CORNELL_TEST and tests.min() >= 1 and (tests <= full - 2).all()
    for total in (3 * CORNELL_SPECIES, 2000, 21_374):
        smaller = species_counts(total)
        assert smaller.sum() == total and smaller.min() >= 3
    xc = xc_numbers(np.array([True, False, False, True]))
    assert list((xc // 100) % 10 == 0) == [True, False, False, True] and len(set(xc)) == 4


def test_a_small_cornell_shaped_set_splits_as_stated(tmp_path):
    from birdcore.data.metadata import read_metadata
    from birdcore.data.split import split_recordings

    species = [(f"sp{j}", f"Species {j}", f"Genus species{j}") for j in range(4)]
    summary = make_cornell_scale_dataset(tmp_path, species=species, recordings=40, duration_factor=0.01)
    meta = read_metadata(tmp_path)
    real = pd.read_csv(tmp_path / "train.csv")["real_duration"]
    assert len(meta) == 40 and meta["exists"].all() and meta["primary"].nunique() == 4
    np.testing.assert_allclose(meta["duration"], np.maximum(real * 0.01, 1 / 22050), atol=1e-3)
    split = split_recordings(meta, method="xc_hundreds")
    assert (split == "test").sum() == summary["test"] == round(40 * CORNELL_TEST / CORNELL_RECORDINGS)


def test_confusion_figure_of_264_species_stays_cheap():
    """The run overview drew its 264 × 264 confusion matrix from nested lists of cell texts, which
    Plotly validates and copies one by one: 3.1 million Python calls, 0.3-0.7 s per render."""
    from birdcore.analysis.plots import confusion_figure

    codes = [f"sp{i:03d}" for i in range(264)]
    rng = np.random.default_rng(0)
    counts = np.zeros((264, 264), np.int64)
    np.add.at(counts, (rng.integers(0, 264, 2222), rng.integers(0, 264, 2222)), 1)
    matrix = pd.DataFrame(counts, index=codes, columns=codes)
    confusion_figure(matrix)  # imports and Plotly's first-use set-up out of the count
    profile = cProfile.Profile()
    profile.enable()
    fig = confusion_figure(matrix)
    fig.to_dict()  # what st.plotly_chart does with it
    profile.disable()
    assert pstats.Stats(profile).total_calls < 1_200_000
    text = np.asarray(fig.data[0].text)
    assert text.shape == (264, 264) and (text[counts == 0] == "").all() and (text[counts > 0] != "").all()


def test_describing_a_waveform_run_imports_no_tensorflow():
    """The run overview and the comparison describe a run through its kind; for keras_audio runs that
    imported Keras and TensorFlow (about 8 s and 600 MB more for the page's first render)."""
    code = ("import sys; from birdcore.models.base import kind_for; kind = kind_for('keras_audio'); "
            "kind.describe({'backbone': 'inception_v3'}); assert kind.trains; "
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-1000:]
    assert res.stdout.strip() == "[]"


def test_a_dashboard_run_leaves_little_for_the_collector_to_walk(trained_run, monkeypatch):
    """Streamlit collects garbage after every run (twice once Keras is loaded), walking every tracked
    object: 450,000 with TensorFlow loaded, 0.3-0.8 s per slider move.  The app freezes what is alive."""
    from streamlit.testing.v1 import AppTest

    from birdcore.serving.heap import NEW_OBJECTS

    import keras  # noqa: F401  (the dashboard's process has it once any page describes a waveform model)

    monkeypatch.setenv("BIRDCLEF_RUNS", str(trained_run.parent))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page("pages/thresholds.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(gc.get_objects()) < NEW_OBJECTS
    assert gc.get_freeze_count() > 200_000


def test_visitors_objects_alone_are_never_frozen_imports_are(tmp_path, monkeypatch):
    """Sessions are full of reference cycles: frozen, they would outlive the session.  Only new imports
    (TensorFlow, Keras, a kind) make the heap freeze."""
    from birdcore.serving import heap

    heap.settle_heap(threshold=0)  # whatever this process imported so far
    frozen = gc.get_freeze_count()

    class Session:
        def __init__(self):
            self.me = self  # a cycle, as Streamlit's session objects have

    sessions = [Session() for _ in range(2_000)]
    # frozen objects still die by reference count, so the count may fall a little; it must not grow
    assert heap.settle_heap(threshold=1_000) is False and gc.get_freeze_count() <= frozen
    (tmp_path / "freshly_imported_module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("freshly_imported_module")
    assert heap.settle_heap(threshold=1_000) is True and gc.get_freeze_count() > frozen
    del sessions


def test_training_batches_get_a_worker_thread_per_core(monkeypatch):
    """A fixed 2 threads delivered fewer recordings per second than one H200 consumed at batch 32."""
    from birdcore.models.keras_audio.batches import TrainingBatches

    def batches():
        return TrainingBatches(load=lambda i: np.zeros(100, np.float32), targets=np.eye(2, dtype=np.float32),
                               species=np.arange(2), crop_samples=50, batch_size=1, augmenter=None, seed=0)

    for cores, threads in ((16, 16), (64, 16), (1, 2), (None, 2)):
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        b = batches()
        assert b.workers == threads and b.max_queue_size >= threads
