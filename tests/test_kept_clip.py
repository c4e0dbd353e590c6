"""What a dashboard session keeps of a classified clip (``serving.kept_clip``, ``serving.sparse_scores``) and
the process's bounded store of recent uploads (``serving.limits.RecentUploads``)."""
import io

import numpy as np
import pytest
import soundfile as sf

from birdcore.serving.detections import segment_detections
from birdcore.serving.kept_clip import BYTES_PER_SECOND, SCORE_FLOOR, keep_clip, listening_copy, max_kept_bytes
from birdcore.serving.limits import RecentUploads, kept_uploads_bytes
from birdcore.serving.sparse_scores import SparseScores, columns, entries
from birdcore.serving.species_mask import SpeciesMask


def scores(s=40, c=30, seed=0):
    """(S, C) scores, most near 0 as a model's are, a few high."""
    rng = np.random.default_rng(seed)
    out = rng.uniform(0, 0.02, (s, c)).astype(np.float32)  # about half under the 0.01 floor
    high = rng.random((s, c)) < 0.1
    out[high] = rng.uniform(0.05, 1.0, int(high.sum()))
    return out


def test_sparse_scores_keep_what_reaches_the_floor_and_read_as_the_dense_ones():
    dense = scores()
    sparse = SparseScores.from_dense(dense, floor=SCORE_FLOOR, max_entries=10**6)
    above = np.where(dense >= SCORE_FLOOR, dense, 0)
    assert len(sparse) == 40 and sparse.floor == SCORE_FLOOR
    np.testing.assert_array_equal(sparse.dense(), above)
    for (species, score), (want_species, want) in zip(sparse.entries(), entries(above), strict=True):
        np.testing.assert_array_equal(species, want_species)
        np.testing.assert_array_equal(score, want)
    np.testing.assert_array_equal(columns(sparse, [3, 0]), above[:, [3, 0]])
    keep = np.zeros(30, bool)
    keep[[0, 3, 7]] = True
    np.testing.assert_array_equal(SpeciesMask(keep, "three").apply(sparse).dense(), np.where(keep, above, 0))
    from birdcore.runs.loading import birdnet_run

    run = birdnet_run()  # detections from either form are the same, down to the floor
    wide = np.zeros((40, len(run.species)), np.float32)
    wide[:, :30] = dense
    for min_score in (SCORE_FLOOR, 0.5):
        assert segment_detections(run, SparseScores.from_dense(wide, floor=SCORE_FLOOR, max_entries=10**6),
                                  seconds=120.0, min_score=min_score) \
            == segment_detections(run, wide, seconds=120.0, min_score=min_score)


def test_the_detection_count_is_the_number_of_detections_of_either_form():
    """The Classify page labels its CSV button with ``detection_count`` instead of making the rows."""
    from birdcore.runs.loading import birdnet_run
    from birdcore.serving.detections import detection_count

    run = birdnet_run()
    wide = np.zeros((40, len(run.species)), np.float32)
    wide[:, :30] = scores(seed=4)
    for form in (wide, SparseScores.from_dense(wide, floor=SCORE_FLOOR, max_entries=10**6)):
        for min_score in (SCORE_FLOOR, 0.5, 1.0):
            assert detection_count(form, min_score=min_score) \
                == len(segment_detections(run, form, seconds=120.0, min_score=min_score))


def test_too_many_scores_raise_the_floor_to_keep_the_highest():
    dense = np.arange(1, 201, dtype=np.float32).reshape(20, 10) / 200  # 200 distinct scores
    sparse = SparseScores.from_dense(dense, floor=0.0, max_entries=50)
    assert len(sparse.score) == 50 and sparse.floor == pytest.approx(151 / 200)
    assert sorted(sparse.score.tolist()) == sorted(dense.ravel().tolist())[-50:]
    tied = SparseScores.from_dense(np.full((4, 5), 0.5, np.float32), floor=0.0, max_entries=7)
    assert len(tied.score) == 0 and tied.floor > 0.5  # ties at the cut: none kept rather than some


@pytest.mark.parametrize("rate,played_at", [(48000, 24000), (16000, 16000), (20000, 16000)])
def test_listening_copy_is_a_small_mp3_that_keeps_the_sound(rate, played_at):
    t = np.arange(10 * rate) / rate
    wave = (0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)  # a 3 kHz whistle
    data = listening_copy(wave, rate)
    assert sf.info(io.BytesIO(data)).format == "MP3" and len(data) <= 10 * BYTES_PER_SECOND + 2048
    back, back_rate = sf.read(io.BytesIO(data), dtype="float32")
    assert back_rate == played_at and abs(len(back) / back_rate - 10) < 0.1
    spectrum = np.abs(np.fft.rfft(back[back_rate:-back_rate]))
    assert np.fft.rfftfreq(len(back) - 2 * back_rate, 1 / back_rate)[spectrum.argmax()] == pytest.approx(3000, abs=5)


@pytest.fixture(scope="module")
def birdnet():
    from birdcore.runs.loading import birdnet_run
    from birdcore.serving.classify import ClipClassifier

    return ClipClassifier(birdnet_run())


def birdnet_result(clf, minutes, seed=0):
    """Scores of BirdNET's shape for a clip of ``minutes``: one 3 s segment of 6,522 scores every 3 s, ten
    of them 0.01 or more in each segment (real recordings have 4 to 12, ``sparse_scores``)."""
    from birdcore.serving.classify import ClipResult
    from birdcore.serving.detections import top_species

    rng = np.random.default_rng(seed)
    n, c = int(minutes * 20), len(clf.run.species)
    segments = rng.uniform(0, 0.005, (n, c)).astype(np.float32)
    segments[np.arange(n)[:, None], rng.integers(0, c, (n, 10))] = rng.uniform(0.01, 1, (n, 10))
    recording = segments.max(axis=0)
    return ClipResult(name="long.flac", seconds=minutes * 60, recording=recording, segments=segments,
                      top=top_species(clf.run, recording, top=5), segment_seconds=3.0)


def test_a_kept_clip_is_bounded_whatever_the_clips_length(birdnet):
    """A session keeps the scores at 0.01 or more, a uint8 spectrogram and an MP3 of the decoded start (at
    most two minutes; one here): a 30-minute clip (15.6 MB of segment scores) costs what a 2.5-minute one
    does, plus a few KB, under the stated bound."""
    import pickle

    head = (0.1 * np.random.default_rng(1).standard_normal(60 * 48000)).astype(np.float32)  # its first minute
    results = {m: birdnet_result(birdnet, m) for m in (2.5, 30)}
    kept = {m: keep_clip(birdnet, r, head, name="long.flac", digest="x", settings=("birdnet", 0.0))
            for m, r in results.items()}
    sizes = {m: len(pickle.dumps(k)) for m, k in kept.items()}
    bound = max_kept_bytes(len(birdnet.run.species), kept[30].spectrogram.shape)
    assert sizes[30] < bound < 3 * 2**20 and results[30].segments.nbytes > 15e6, (sizes, bound)
    assert sizes[30] - sizes[2.5] < 600 * 10 * 12 * 1.1  # 10 scores of 12 bytes for each of 600 more segments
    dense = results[30].segments
    np.testing.assert_array_equal(kept[30].result.segments.dense(), np.where(dense >= SCORE_FLOOR, dense, 0))
    assert kept[30].head_seconds == 60.0
    assert np.abs(kept[30].image - birdnet.spectrogram(head)).max() <= 0.5 / 255 + 1e-6


def test_recent_uploads_keep_one_per_session_within_the_budget(monkeypatch):
    store = RecentUploads(budget=10)
    store.put("a", "d1", b"1234")
    store.put("b", "d2", b"5678")
    assert store.get("a", "d1") == b"1234" and store.get("a", "d2") is None  # another clip's digest: not this
    store.put("a", "d3", b"abc")  # the session's new upload replaces its old one
    assert store.get("a", "d1") is None and store.total == 7
    store.put("c", "d4", b"wxyz")  # over budget: the least recently used ("b") goes
    assert store.get("b", "d2") is None and store.get("a", "d3") == b"abc" and store.total == 7
    store.put("d", "d5", b"x" * 11)  # larger than the whole budget: not kept
    assert store.get("d", "d5") is None and store.total == 7
    monkeypatch.setenv("BIRDCLEF_KEEP_UPLOADS_MB", "0")
    assert kept_uploads_bytes() == 0
    monkeypatch.setenv("BIRDCLEF_KEEP_UPLOADS_MB", "-1")
    with pytest.raises(ValueError, match="BIRDCLEF_KEEP_UPLOADS_MB"):
        kept_uploads_bytes()
