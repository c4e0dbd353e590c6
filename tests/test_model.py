"""Model construction: backbones, weights options and the offline ImageNet failure."""
import numpy as np
import pytest

from birdcore.config import RunConfig
from birdcore.features.frontend import image_shape
from birdcore.models.keras_audio.model import WeightsUnavailable, build_backbone, build_model

from conftest import tiny_config


def test_inception_input_is_3_channels_and_at_least_75():
    cfg = RunConfig()
    assert image_shape(cfg) == (128, 257, 3)
    cfg.features.n_mels = 64
    cfg.model.weights = "none"
    with pytest.raises(ValueError, match="75"):
        build_backbone(cfg)


def test_inception_builds_offline_and_loads_a_local_weights_file(tmp_path):
    cfg = RunConfig()
    cfg.model.weights = "none"
    cfg.audio.segment_seconds = 2.0  # 2 s segments keep the test light; the shape rule is the same
    a = build_backbone(cfg)
    path = tmp_path / "inception_notop.weights.h5"
    a.save_weights(path)
    cfg.model.weights = str(path)
    b = build_backbone(cfg)
    for wa, wb in zip(a.weights[:5], b.weights[:5]):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
    cfg.model.weights = str(tmp_path / "missing.h5")
    with pytest.raises(WeightsUnavailable, match="not found"):
        build_backbone(cfg)


def test_imagenet_download_failure_says_so(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    cfg = RunConfig()
    cfg.model.weights = "imagenet"
    with pytest.raises(WeightsUnavailable, match="could not download the ImageNet weights.*--weights none"):
        build_backbone(cfg)


@pytest.mark.parametrize("pooling", ["max", "mean", "attention"])
def test_model_outputs_for_any_length(pooling):
    cfg = tiny_config()
    cfg.model.pooling = pooling
    model = build_model(cfg, 4)
    for n in (100, 16000, 16000 * 3 + 5):
        out = model(np.random.default_rng(n).standard_normal((2, n)).astype("float32") * 0.1)
        assert out["recording"].shape == (2, 4)
        assert out["segments"].shape == (2, max(1, -(-n // 16000)), 4)
        rec = np.asarray(out["recording"])
        assert ((rec >= 0) & (rec <= 1)).all()


def test_backbone_batchnorm_momentum_follows_the_config():
    import keras

    cfg = tiny_config()
    cfg.model.bn_momentum = 0.8
    bns = [l for l in build_backbone(cfg).layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(l.momentum == 0.8 for l in bns)
