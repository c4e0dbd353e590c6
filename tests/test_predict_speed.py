"""What makes ``predict`` on BirdNET runs fast (issue #15) must not change its scores: the embedding
map without SVD, pooling and the head in NumPy (no Keras import), decoding ahead of the model."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet.scoring import pool_windows

ROOT = Path(__file__).resolve().parents[1]


def test_unprojection_is_the_pseudo_inverse():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(300, 40))
    got = bn.unprojection(w)
    assert got.shape == (300, 40)
    np.testing.assert_allclose(got, np.linalg.pinv(w).T, rtol=1e-5, atol=1e-7)
    x = rng.normal(size=(5, 40))
    np.testing.assert_allclose((x @ w.T) @ got, x, atol=1e-4)  # embeddings recovered from logits


@pytest.mark.parametrize("mode", ["max", "mean", "attention"])
def test_numpy_pooling_equals_the_model_pooling(mode):
    from birdcore.models.pooling import pool_segments

    rng = np.random.default_rng(1)
    logits = rng.normal(scale=4, size=(7, 5)).astype(np.float32)
    att = rng.normal(scale=3, size=(7, 5)).astype(np.float32) if mode == "attention" else None
    ref = np.asarray(pool_segments(logits[None], np.ones((1, 7), np.float32), mode=mode,
                                   attention_logits=None if att is None else att[None]))[0]
    got = pool_windows(logits, mode=mode, attention_logits=att)
    assert got.dtype == np.float32 and got.shape == (5,)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert not np.allclose(pool_windows(logits * 2, mode=mode, attention_logits=att), ref, atol=1e-3)


def _saved_head(tmp_path, *, prior: bool, pooling: str, n_species: int = 4, policy: str = "float32"):
    """A ``build_head`` model with random weights, built under the dtype ``policy``, saved as a run's
    model.keras."""
    import keras

    from birdcore.config import RunConfig
    from birdcore.models.birdnet_head.head import build_head
    from birdcore.models.saving import save_keras

    cfg = RunConfig()
    cfg.model.birdnet_prior, cfg.model.pooling, cfg.model.head_units = prior, pooling, 16
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_head(cfg, n_species)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(2)
    for v in model.weights:
        v.assign(rng.normal(scale=0.2, size=tuple(v.shape)).astype(np.float32) + (1.0 if "scale" in v.path else 0.0))
    path = tmp_path / "model.keras"
    save_keras(model, path)
    return keras.models.load_model(path, safe_mode=True, compile=False), path


@pytest.mark.parametrize("prior,pooling", [(True, "attention"), (False, "attention"), (True, "max"), (False, "mean")])
def test_numpy_head_equals_the_keras_head(tmp_path, prior, pooling):
    from birdcore.models.birdnet_head.head import EmbeddingScorer
    from birdcore.models.birdnet_head.inference import NumpyHead, load_head

    model, path = _saved_head(tmp_path, prior=prior, pooling=pooling)
    head = load_head(path)
    assert isinstance(head, NumpyHead)
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(9, bn.EMBEDDING_SIZE + (4 if prior else 0))).astype(np.float32)
    ref, got = EmbeddingScorer(model).score(feats), head.score(feats)
    np.testing.assert_allclose(got.segments, ref.segments, atol=1e-5)
    np.testing.assert_allclose(got.recording, ref.recording, atol=1e-5)
    assert np.abs(ref.recording - 0.5).max() > 1e-3  # not a trivial model


def test_a_head_trained_in_mixed_precision_serves_in_numpy(tmp_path):
    """Heads trained on a GPU in mixed float16 (``--mixed-precision on``, or "auto" before heads were
    kept float32) hold float32 variables: NumPy serves them in float32, within the float16 hidden
    layer's rounding of the Keras model, instead of loading Keras."""
    from birdcore.models.birdnet_head.head import EmbeddingScorer
    from birdcore.models.birdnet_head.inference import NumpyHead, load_head

    model, path = _saved_head(tmp_path, prior=True, pooling="attention", policy="mixed_float16")
    assert model.get_layer("hidden").compute_dtype == "float16"
    head = load_head(path)
    assert isinstance(head, NumpyHead)
    feats = np.random.default_rng(3).normal(size=(9, bn.EMBEDDING_SIZE + 4)).astype(np.float32)
    ref, got = EmbeddingScorer(model).score(feats), head.score(feats)
    np.testing.assert_allclose(got.segments, ref.segments, atol=2e-3)
    np.testing.assert_allclose(got.recording, ref.recording, atol=2e-3)
    assert np.abs(ref.recording - 0.5).max() > 1e-2


def test_a_head_of_other_layers_is_loaded_with_keras(tmp_path):
    import keras

    from birdcore.models.birdnet_head.inference import load_head
    from birdcore.models.saving import save_keras

    inp = keras.Input((None, bn.EMBEDDING_SIZE), name="embeddings")
    model = keras.Model(inp, keras.layers.Dense(3, name="hidden")(inp))
    save_keras(model, tmp_path / "model.keras")
    assert isinstance(load_head(tmp_path / "model.keras"), keras.Model)


def test_numpy_head_loads_without_importing_keras(tmp_path):
    _, path = _saved_head(tmp_path, prior=True, pooling="attention")
    code = ("import sys; from birdcore.models.birdnet_head.inference import load_head; "
            f"h = load_head({str(path)!r}); print(type(h).__name__, 'keras' in sys.modules, "
            "'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["NumpyHead", "False", "False"]


@pytest.mark.skipif(not bn.birdnet_available(), reason="BirdNET not installed")
def test_predict_birdnet_imports_no_keras(tmp_path):
    from birdcore.data.synthetic import make_call

    wav = tmp_path / "call.wav"
    sf.write(wav, make_call("synchi1", seconds=4.0, sample_rate=48000, rng=np.random.default_rng(0)), 48000)
    code = ("import sys; from birdcore.cli.predict import main; s = main(['birdnet', sys.argv[1], '--json']); "
            "print('modules', 'keras' in sys.modules, 'tensorflow' in sys.modules, s)")
    out = subprocess.run([sys.executable, "-c", code, str(wav)], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.splitlines()[-1].split() == ["modules", "False", "False", "0"]


@pytest.mark.skipif(not bn.birdnet_available(), reason="BirdNET not installed")
def test_head_scorer_scores_equal_with_numpy_or_keras_head(tmp_path):
    from birdcore.data.synthetic import make_call
    from birdcore.models.birdnet_head.inference import BirdNETHeadScorer, load_head

    model, path = _saved_head(tmp_path, prior=True, pooling="attention")
    rng = np.random.default_rng(4)
    wave = np.concatenate([make_call(c, seconds=4.0, sample_rate=48000, rng=rng) for c in ("synchi1", "syntri1", "synhar1")])
    sources = [[10], [200], [], [3000]]
    birdnet = bn.BirdNET(embeddings=True, threads=2)
    ref = BirdNETHeadScorer(model, sources=sources, birdnet=birdnet).score(wave)
    got = BirdNETHeadScorer(load_head(path), sources=sources, birdnet=birdnet).score(wave)
    assert got.segments.shape == ref.segments.shape == (4, 4)
    np.testing.assert_allclose(got.segments, ref.segments, atol=1e-5)
    np.testing.assert_allclose(got.recording, ref.recording, atol=1e-5)


def test_stream_files_reads_ahead_with_the_same_chunks_and_errors(tmp_path):
    from birdcore.io.audio import AudioError
    from birdcore.io.stream import stream_audio, stream_files

    rng = np.random.default_rng(5)
    good = []
    for i, seconds in enumerate([2.5, 0.7, 4.0]):
        p = tmp_path / f"f{i}.wav"
        sf.write(p, rng.normal(scale=0.1, size=int(seconds * 22050)).astype(np.float32), 22050)
        good.append(p)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 10)
    paths = [good[0], bad, tmp_path / "missing.wav", good[1], good[2], good[0]]
    got = []
    for k, (path, chunks) in enumerate(stream_files(paths, sample_rate=48000, chunk_seconds=1.0, ahead=2)):
        assert path == paths[k]
        if k == 5:  # stopping early skips the rest of the file
            next(iter(chunks))
            continue
        try:
            got.append((path, np.concatenate(list(chunks))))
        except AudioError as exc:
            got.append((path, str(exc)))
    assert [p for p, _ in got] == paths[:5]
    for path, out in got:
        if path in good:
            np.testing.assert_array_equal(out, np.concatenate(list(stream_audio(path, sample_rate=48000,
                                                                                chunk_seconds=1.0))))
        else:
            assert isinstance(out, str) and str(path) in out
