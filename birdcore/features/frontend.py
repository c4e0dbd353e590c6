"""The waveform model's preprocessing: a named, ordered pipeline of layers, saved inside the model.

    segment waveform (N, L) ─ logmel ─ aug_db_floor* ─ aug_freq_mask* ─ aug_time_mask* ─ to_symmetric
                              ─▶ image (N, n_mels, frames, 3) in [-1, 1]

(* augmentation steps: flagged, they act only when ``training=True``, so evaluation and serving
skip them).  Because the steps are layers of the model, training and serving share one definition
and a saved ``model.keras`` carries its own preprocessing.
"""
from __future__ import annotations

import keras

from birdcore.config import RunConfig
from birdcore.features import layers as L


def frontend_pipeline(cfg: RunConfig) -> list[keras.layers.Layer]:
    """The named, ordered preprocessing pipeline from waveform to backbone input."""
    f, a = cfg.features, cfg.augment
    return [
        L.LogMelFrontend(sample_rate=cfg.audio.sample_rate, n_mels=f.n_mels, fft_length=f.fft_length,
                         window_lengths=f.window_lengths, hop_length=f.hop_length, fmin=f.fmin, fmax=f.fmax,
                         top_db=f.top_db, name="logmel"),
        L.DbFloorRaise(max_raise=a.db_floor_max, enabled=a.db_floor and a.db_floor_max > 0, name="aug_db_floor"),
        L.AxisMask(axis=1, max_fraction=a.freq_mask_max, enabled=a.freq_mask and a.freq_mask_max > 0,
                   name="aug_freq_mask"),
        L.AxisMask(axis=2, max_fraction=a.time_mask_max, enabled=a.time_mask and a.time_mask_max > 0,
                   name="aug_time_mask"),
        L.ToSymmetric(name="to_symmetric"),
    ]


def image_shape(cfg: RunConfig) -> tuple[int, int, int]:
    """(n_mels, n_frames, 3) of one segment's spectrogram image."""
    return (cfg.features.n_mels, 1 + cfg.audio.segment_samples // cfg.features.hop_length, 3)
