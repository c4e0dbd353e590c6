"""Mixed precision (used on GPUs): the float32 islands stay float32 and training still runs."""
import keras
import numpy as np
import pytest

from birdcore.models.keras_audio.scorer import Scorer
from birdcore.models.keras_audio.model import build_model
from birdcore.training.devices import compile_model, configure_precision

from conftest import tiny_config


@pytest.fixture(params=[("on", "mixed_float16"), ("bf16", "mixed_bfloat16")], ids=["float16", "bfloat16"])
def mixed_policy(request):
    mode, expected = request.param
    assert configure_precision(mode) == expected
    yield expected
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_model_trains_and_scores_in_float32(mixed_policy):
    model = build_model(tiny_config(), 3)
    seg = model.get_layer("segment_model")
    assert seg.get_layer("logmel").compute_dtype == "float32"
    assert seg.get_layer("species_logits").compute_dtype == "float32"
    compile_model(model, 1e-3)
    x = np.random.default_rng(0).standard_normal((4, 32000)).astype("float32") * 0.1
    y = {"recording": np.eye(3, dtype="float32")[[0, 1, 2, 0]]}
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    scores = Scorer(model, batch_segments=4).score(x[0])
    assert scores.recording.dtype == np.float32 and scores.recording.shape == (3,)


def test_auto_precision_follows_the_hardware():
    import tensorflow as tf

    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    try:
        assert configure_precision("auto") == ("mixed_float16" if has_gpu else "float32")
        assert configure_precision("off") == "float32"
        with pytest.raises(ValueError, match="bf17"):
            configure_precision("bf17")
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_auto_precision_stays_float32_for_kinds_that_do_not_allow_it(monkeypatch):
    """On a GPU, "auto" is mixed float16 unless the kind of model says no (BirdNET heads); "on" is
    always mixed."""
    from birdcore.training import devices

    monkeypatch.setattr(devices, "gpu_visible", lambda: True)
    try:
        assert configure_precision("auto") == "mixed_float16"
        assert configure_precision("auto", kind_allows=False) == "float32"
        assert configure_precision("on", kind_allows=False) == "mixed_float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
