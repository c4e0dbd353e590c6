"""Classifying one clip for the dashboard: decode, score, spectrogram, decisions.

Uses the same decoder as training (``birdcore.audio``), the run's model
through ``birdcore.inference.Scorer``, and the model's own ``logmel`` layer
for the picture, so what the visitor sees is what the model sees.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .audio import decode_bytes
from .export import LoadedRun
from .predict import Prediction, top_species

MAX_SPECTROGRAM_SECONDS = 120.0


@dataclass
class ClipResult:
    """Scores of one clip: ``recording`` (C,), ``segments`` (S, C), and the top species."""

    name: str
    seconds: float
    recording: np.ndarray
    segments: np.ndarray
    top: list[Prediction]
    segment_seconds: float


class ClipClassifier:
    """A loaded run plus its traced scorer; one per process in the dashboard."""

    def __init__(self, run: LoadedRun, *, batch_segments: int = 16):
        self.run = run
        self.scorer = run.scorer(batch_segments=batch_segments)
        self.logmel = self._logmel(run)

    @staticmethod
    def _logmel(run: LoadedRun):
        """The model's own frontend when it has one; otherwise the default log-mel settings at the run's rate."""
        if run.kind == "keras_audio":
            return run.model.get_layer("segment_model").get_layer("logmel")
        from .config import FeatureConfig
        from .layers import LogMelFrontend

        f = FeatureConfig()
        return LogMelFrontend(sample_rate=run.sample_rate, n_mels=f.n_mels, fft_length=f.fft_length,
                              window_lengths=f.window_lengths, hop_length=int(run.sample_rate * 0.02),
                              fmin=f.fmin, fmax=None, top_db=f.top_db)

    def classify_wave(self, wave: np.ndarray, *, name: str = "clip", top: int = 5) -> ClipResult:
        scores = self.scorer.score(wave)
        return ClipResult(name=name, seconds=len(wave) / self.run.sample_rate, recording=scores.recording,
                          segments=scores.segments, top=top_species(self.run, scores.recording, top=top),
                          segment_seconds=self.run.config.audio.segment_seconds)

    def decode(self, data: bytes, *, name: str) -> np.ndarray:
        """Decode uploaded bytes in memory (never written under the visitor's file name).

        Raises ``birdcore.audio.AudioError`` naming the upload and the reason.
        """
        return decode_bytes(data, sample_rate=self.run.sample_rate, name=name)

    def spectrogram(self, wave: np.ndarray) -> np.ndarray:
        """(n_mels, n_frames) image in [0, 1] of the first ``MAX_SPECTROGRAM_SECONDS`` (first channel)."""
        clip = wave[: int(MAX_SPECTROGRAM_SECONDS * self.run.sample_rate)]
        return np.asarray(self.logmel(clip[None].astype(np.float32)))[0, :, :, 0]
