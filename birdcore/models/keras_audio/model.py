"""Model construction: waveform in, segment and recording species scores out.

    waveform (batch, n_samples) ─ SegmentFramer ─▶ segments (batch·S, L), mask (batch, S)
    segments ─▶ segment_model ─▶ logits (batch·S, C) [+ attention logits]
      segment_model = LogMelFrontend → DbFloorRaise* → FreqMask* → TimeMask* → ToSymmetric
                      → backbone (InceptionV3 | small CNN) → global average pool → dropout → Dense
      (* training-only augmentations)
    logits ─ SegmentUnflatten ─▶ (batch, S, C) ─ RecordingPooling ─▶ recording scores (batch, C)

The recording model has two outputs: ``recording`` (batch, C) and
``segments`` (batch, S, C), both probabilities in [0, 1].  Weak labels
(Kumar & Raj 2017): the loss is applied to ``recording`` only, so a
recording's label supervises its segments through the pooling, in one
forward pass.
"""
from __future__ import annotations

import math
from pathlib import Path

import keras

from birdcore.features import layers as L
from birdcore.features.frontend import frontend_pipeline, image_shape
from birdcore.models import layers as ML
from birdcore.config import RunConfig

SEGMENT_MODEL_NAME = "segment_model"
INCEPTION_MIN_SIZE = 75


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be obtained (e.g. no internet for ImageNet)."""


def _inception(shape, weights: str) -> keras.Model:
    if shape[0] < INCEPTION_MIN_SIZE or shape[1] < INCEPTION_MIN_SIZE:
        raise ValueError(f"InceptionV3 needs at least {INCEPTION_MIN_SIZE}x{INCEPTION_MIN_SIZE} input; "
                         f"the features give {shape[0]}x{shape[1]} (raise n_mels or lower hop_length)")
    if weights == "none":
        w = None
    elif weights == "imagenet":
        w = "imagenet"
    else:
        if not Path(weights).is_file():
            raise WeightsUnavailable(f"{weights}: weights file not found")
        w = str(weights)
    try:
        return keras.applications.InceptionV3(include_top=False, weights=w, input_shape=shape, pooling="avg")
    except Exception as exc:  # keras raises a variety of URL/OS errors when offline
        if weights == "imagenet":
            raise WeightsUnavailable(
                "could not download the ImageNet weights for InceptionV3 (no internet access?): "
                f"{type(exc).__name__}: {exc}. Use --weights none, or --weights FILE with a local "
                "inception_v3 'notop' weights file.") from exc
        raise WeightsUnavailable(f"{weights}: could not load weights: {exc}") from exc


def _small_cnn(shape, width: int) -> keras.Model:
    """A compact CNN backbone for the demo and tests (same interface as InceptionV3 with pooling='avg')."""
    x = inp = keras.Input(shape)
    for i, mult in enumerate((1, 2, 4, 4)):
        x = keras.layers.Conv2D(width * mult, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, x, name="small_cnn")


def build_backbone(cfg: RunConfig) -> keras.Model:
    shape = image_shape(cfg)
    if cfg.model.backbone == "inception_v3":
        backbone = _inception(shape, cfg.model.weights)
    elif cfg.model.backbone == "small_cnn":
        if cfg.model.weights not in ("none", None):
            if not Path(cfg.model.weights).is_file():
                raise WeightsUnavailable(f"small_cnn has no pretrained weights; {cfg.model.weights!r} is not a file")
        backbone = _small_cnn(shape, cfg.model.small_cnn_width)
    else:
        raise ValueError(f"unknown backbone {cfg.model.backbone!r} (inception_v3 | small_cnn)")
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = cfg.model.bn_momentum
    return backbone


def build_segment_model(cfg: RunConfig, n_species: int) -> keras.Model:
    """(N, segment_samples) waveforms → logits (N, C) [and attention logits (N, C)]."""
    inp = keras.Input((cfg.audio.segment_samples,), name="segment_waveform")
    x = inp
    for layer in frontend_pipeline(cfg):
        x = layer(x)
    x = build_backbone(cfg)(x)
    x = keras.layers.Dropout(cfg.model.dropout, name="head_dropout")(x)
    # bias at the prior log-odds of one species in C: the first steps start near the right loss
    prior = keras.initializers.Constant(-math.log(max(n_species - 1, 1)))
    logits = keras.layers.Dense(n_species, dtype="float32", bias_initializer=prior, name="species_logits")(x)
    outputs = [logits]
    if cfg.model.pooling == "attention":
        outputs.append(keras.layers.Dense(n_species, dtype="float32", name="attention_logits")(x))
    return keras.Model(inp, outputs, name=SEGMENT_MODEL_NAME)


def build_model(cfg: RunConfig, n_species: int) -> keras.Model:
    """The recording model: (batch, n_samples) waveform → {"recording", "segments"}.

    """
    if cfg.model.pooling not in ("max", "mean", "attention"):
        raise ValueError(f"unknown pooling {cfg.model.pooling!r} (max | mean | attention)")
    segment_model = build_segment_model(cfg, n_species)
    wave = keras.Input((None,), name="waveform")
    flat, mask = L.SegmentFramer(segment_samples=cfg.audio.segment_samples, name="framer")(wave)
    outs = segment_model(flat)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    unflatten = ML.SegmentUnflatten(name="unflatten")
    logits = unflatten(outs[0], mask)
    att = unflatten(outs[1], mask) if len(outs) > 1 else None
    recording = ML.RecordingPooling(mode=cfg.model.pooling, name="recording")(logits, mask, att)
    segments = ML.Sigmoid(name="segments")(logits)
    return keras.Model(wave, {"recording": recording, "segments": segments}, name="birdclef")
