"""Classifying one clip for the dashboard: decode, score, spectrogram, decisions.

Uses the same decoder as training (``birdcore.io.audio``), the run's model
through ``birdcore.models.keras_audio.scorer.Scorer``, and the model's own ``logmel`` layer
for the picture, so what the visitor sees is what the model sees.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from birdcore.io.audio import AudioError, decode_bytes, states_frame_count, truncation
from birdcore.io.stream import stream_bytes
from birdcore.config import FeatureConfig
from birdcore.features.layers import LogMelFrontend
from birdcore.runs.loading import LoadedRun
from birdcore.serving.detections import Prediction, top_kept, top_species
from birdcore.serving.species_mask import SpeciesMask, combine

MAX_SPECTROGRAM_SECONDS = 120.0
AUDIO_SUFFIXES = (".mp3", ".ogg", ".flac", ".wav", ".m4a", ".webm")


def _header(data: bytes) -> tuple[float | None, bool]:
    """(duration from the file header in ``data``, or None when libsndfile cannot tell; whether the
    file states that length, ``audio.states_frame_count``, rather than libsndfile estimating it)."""
    try:
        import soundfile as sf

        info = sf.info(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - any header problem: no progress fraction, scoring reports the error
        return None, False
    if not info.samplerate:
        return None, False
    return info.frames / info.samplerate, states_frame_count(io.BytesIO(data), info.format)


@dataclass
class ClipResult:
    """Scores of one clip: ``recording`` (C,), ``segments`` (S, C) (an array; the small form a dashboard
    session keeps is ``sparse_scores.SparseScores``, ``kept_clip``), and the top species.

    Segment i spans [i × ``hop_seconds``, i × ``hop_seconds`` + ``segment_seconds``) s; the hop is
    the segment length unless BirdNET's windows overlap."""

    name: str
    seconds: float
    recording: np.ndarray
    segments: np.ndarray
    top: list[Prediction]
    segment_seconds: float
    hop_seconds: float | None = None
    warnings: list[str] = field(default_factory=list)  # problems that did not stop scoring (truncated file)

    def __post_init__(self):
        if self.hop_seconds is None:
            self.hop_seconds = self.segment_seconds


class ClipClassifier:
    """A loaded run plus its traced scorer; one per process in the dashboard."""

    def __init__(self, run: LoadedRun, *, batch_segments: int = 16):
        self.run = run
        self.scorer = run.scorer(batch_segments=batch_segments)
        self.logmel = self._logmel(run)

    @staticmethod
    def _logmel(run: LoadedRun):
        """The model's own frontend when it has one; otherwise the default log-mel settings at the run's rate."""
        own = run.kind.frontend(run)
        if own is not None:
            return own

        f = FeatureConfig()
        return LogMelFrontend(sample_rate=run.sample_rate, n_mels=f.n_mels, fft_length=f.fft_length,
                              window_lengths=f.window_lengths, hop_length=int(run.sample_rate * 0.02),
                              fmin=f.fmin, fmax=None, top_db=f.top_db)

    def classify_wave(self, wave: np.ndarray, *, name: str = "clip", top: int = 5) -> ClipResult:
        scores = self.scorer.score(wave)
        return ClipResult(name=name, seconds=len(wave) / self.run.sample_rate, recording=scores.recording,
                          segments=scores.segments, top=top_species(self.run, scores.recording, top=top),
                          segment_seconds=self.run.config.audio.segment_seconds)

    @property
    def supports_overlap(self) -> bool:
        """Whether ``classify_upload(overlap=...)`` may overlap windows (BirdNET runs: 3 s windows)."""
        return self.run.kind.supports_overlap

    def classify_upload(self, data: bytes, *, name: str, top: int = 5, overlap: float = 0.0,
                        progress: Callable[[float], None] | None = None,
                        max_seconds: float | None = None) -> tuple[ClipResult, np.ndarray]:
        """Score uploaded bytes; returns the result and the first ``MAX_SPECTROGRAM_SECONDS`` of audio.

        The upload is decoded from memory in chunks (``stream_bytes``: bounded memory for the
        decoded audio of hour-long field recordings; nothing is written to disk); ``progress``
        receives the fraction done.  ``overlap``: seconds by which BirdNET's 3 s windows overlap
        (BirdNET runs only; ValueError otherwise), for finer detection times.  ``max_seconds``: the
        longest audio scored; a longer upload is cut there, with a warning (a public dashboard's bound
        on work and memory).  Raises ``AudioError`` naming the upload.
        """
        hop = self.run.segment_hop_seconds(overlap)  # refuses an overlap this run cannot use
        scorer = self.scorer.with_overlap(overlap) if overlap else self.scorer
        if not data:
            raise AudioError(name, "empty file")
        head = decode_bytes(data, sample_rate=self.run.sample_rate, name=name, max_seconds=MAX_SPECTROGRAM_SECONDS)
        total, stated = _header(data)
        report = None if progress is None or not total else (lambda done: progress(min(1.0, done / total)))
        decoded = [0]  # samples at the run's rate
        limit = None if max_seconds is None else int(max_seconds * self.run.sample_rate)
        cut = [False]

        def counted(chunks):
            for chunk in chunks:
                if limit is not None and decoded[0] + len(chunk) > limit:
                    chunk, cut[0] = chunk[: max(0, limit - decoded[0])], True
                decoded[0] += len(chunk)
                if len(chunk):
                    yield chunk
                if cut[0]:
                    getattr(chunks, "close", lambda: None)()  # stop decoding the rest
                    return

        scores = scorer.score_stream(counted(stream_bytes(data, sample_rate=self.run.sample_rate, name=name)),
                                     progress=report)
        rate = self.run.sample_rate
        seconds = decoded[0] / rate  # what decoded, not the header's length (a truncated file has less)
        note = None if cut[0] else truncation(header_frames=round(total * rate) if stated else 0,
                                              decoded_frames=decoded[0], rate=rate)
        warnings = [f"{name}: {note}"] if note else []
        if cut[0]:
            warnings.append(f"{name}: only the first {max_seconds / 60:g} minutes were scored (this server's limit; "
                            f"the file is {'longer' if not total else f'{total / 60:.1f} minutes long'})")
        return ClipResult(name=name, seconds=seconds, recording=scores.recording, segments=scores.segments,
                          top=top_species(self.run, scores.recording, top=top),
                          segment_seconds=self.run.config.audio.segment_seconds, hop_seconds=hop,
                          warnings=warnings), head

    def spectrogram(self, wave: np.ndarray) -> np.ndarray:
        """(n_mels, n_frames) image in [0, 1] of the first ``MAX_SPECTROGRAM_SECONDS`` (first channel)."""
        clip = wave[: int(MAX_SPECTROGRAM_SECONDS * self.run.sample_rate)]
        return np.asarray(self.logmel(clip[None].astype(np.float32)))[0, :, :, 0]


def restrict(result: ClipResult, run: LoadedRun, keep, *, top: int = 5) -> tuple[ClipResult, list[Prediction]]:
    """``result`` with the species a ``species_mask.SpeciesMask`` drops scored 0, and the
    species it dropped that scored higher than the filtered result's best (best first), so a
    page can say what the filter removed.  The top list holds kept species only (empty when
    the mask keeps none)."""
    recording, segments = keep.apply(result.recording), keep.apply(result.segments)
    kept_top = top_kept(run, result.recording, keep, top=top)
    best = kept_top[0].score if kept_top else 0.0
    only_dropped = np.where(keep.keep, -np.inf, result.recording)
    dropped = [p for p in top_species(run, only_dropped, top=top) if p.score > best]
    return replace(result, recording=recording, segments=segments, top=kept_top), dropped


def narrow(result: ClipResult, run: LoadedRun, masks, *,
           top: int = 5) -> tuple[ClipResult, list[Prediction], SpeciesMask | None]:
    """``result`` restricted to the species every given mask keeps (``restrict``; None entries and
    an empty list leave it as it is), the higher-scoring species the masks removed, and the
    combined mask (None when there was none).  The classify page and the API narrow alike."""
    keep = combine(masks)
    if keep is None:
        return result, [], None
    narrowed, dropped = restrict(result, run, keep, top=top)
    return narrowed, dropped, keep
