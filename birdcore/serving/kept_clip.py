"""What a dashboard session keeps of its last classified clip: a few MB, whatever the clip's length.

A visitor's session keeps its answer so that moving a filter or a slider shows it again without
scoring anew.  Keeping the upload, its decoded audio or the dense segment scores would make every
idle session cost memory in proportion to its clip (100 MB for one minute of WAV, 200 MB for ten,
measured in BENCHMARKS.md).  ``keep_clip`` keeps instead:

- the scores: the recording's (C,) and the segments' as ``SparseScores`` (at most ``MAX_KEPT_SCORES``
  scores of at least ``SCORE_FLOOR``: 1.2 MB at most);
- the picture: the log-mel spectrogram of the first ``MAX_SPECTROGRAM_SECONDS`` as uint8
  (BirdNET: 128 × 6,001, 0.77 MB);
- a listening copy: the same first ``MAX_SPECTROGRAM_SECONDS`` as 64 kbit/s constant-bitrate MP3 at
  24 kHz at most (``listening_copy``: sounds up to 11 kHz, 0.96 MB for two minutes; encoding it costs
  about 0.5 s of CPU a minute, against 1 s at 48 kHz and BirdNET's 0.65 s to score a minute).

So ``KeptClip.nbytes`` is at most about 3 MB (``max_kept_bytes``) for BirdNET, for a clip of any length.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace

import numpy as np

from birdcore.serving.classify import MAX_SPECTROGRAM_SECONDS, ClipResult
from birdcore.serving.sparse_scores import SparseScores

SCORE_FLOOR = 0.01  # the lowest segment score kept, and the lowest a page offers for detections
MAX_KEPT_SCORES = 100_000  # segment scores kept per clip (12 bytes each); real recordings keep far fewer
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000)  # MPEG-2 and 2.5 layer III rates (Hz)
MP3_LEVEL = 0.6  # libsndfile's MP3 compression level: 64 kbit/s at constant bitrate at these rates
BYTES_PER_SECOND = 64_000 // 8  # the listening copy's bytes per second at most


@dataclass(frozen=True)
class KeptClip:
    """A classified clip as a session keeps it.

    ``settings``: what scored it (the model and the window overlap, as the page names them): other
    settings need the audio again.  ``digest``: SHA-256 of the upload.  ``result``: its ``ClipResult``
    with ``segments`` as ``SparseScores``.  ``spectrogram``: (n_mels, n_frames) uint8, the classifier's
    image × 255, and ``audio``: as MP3 (``listening_copy``) for the page's player, both of the clip's first
    ``head_seconds``."""

    name: str
    digest: str
    settings: tuple
    result: ClipResult
    spectrogram: np.ndarray
    audio: bytes
    head_seconds: float

    @property
    def image(self) -> np.ndarray:
        """The spectrogram as float32 in [0, 1] (what ``ClipClassifier.spectrogram`` gave, to 1/255)."""
        return self.spectrogram.astype(np.float32) / 255.0

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays and the audio it holds (names and the top list add a few KB)."""
        segments = self.result.segments
        return int(self.result.recording.nbytes + getattr(segments, "nbytes", 0) + self.spectrogram.nbytes
                   + len(self.audio))


def max_kept_bytes(n_species: int, spectrogram_shape: tuple[int, int]) -> int:
    """The most a ``KeptClip`` of a model with ``n_species`` and that spectrogram shape holds (bytes)."""
    return int(4 * n_species + 12 * MAX_KEPT_SCORES + spectrogram_shape[0] * spectrogram_shape[1]
               + BYTES_PER_SECOND * MAX_SPECTROGRAM_SECONDS + 64 * 1024)  # + the MP3 stream's headers


def listening_copy(wave: np.ndarray, sample_rate: int) -> bytes:
    """``wave`` (N,) float at ``sample_rate`` as a small MP3 for a browser's player (every browser plays
    MP3): brought to the highest of ``MP3_RATES`` at or under ``sample_rate`` (24 kHz at most), constant
    bitrate (``BYTES_PER_SECOND``)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    rate = max([r for r in MP3_RATES if r <= sample_rate] or [MP3_RATES[0]])
    wave = np.asarray(wave, dtype=np.float32)
    if rate != sample_rate:
        g = math.gcd(int(rate), int(sample_rate))
        wave = resample_poly(wave, rate // g, int(sample_rate) // g).astype(np.float32)
    wave = np.clip(wave, -1.0, 1.0)
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=rate, channels=1, format="MP3", subtype="MPEG_LAYER_III",
                      compression_level=MP3_LEVEL, bitrate_mode="CONSTANT") as out:
        for start in range(0, len(wave), 65536):  # short writes: libsndfile's encoders fail on very long ones
            out.write(wave[start:start + 65536])
    return buf.getvalue()


def keep_clip(clf, result: ClipResult, head: np.ndarray, *, name: str, digest: str, settings: tuple,
              floor: float = SCORE_FLOOR, max_entries: int = MAX_KEPT_SCORES) -> KeptClip:
    """What a session keeps of ``result``, scored by ``clf`` (a ``ClipClassifier``), whose first
    seconds of audio at the model's rate are ``head`` (``classify_upload``'s second value)."""
    rate = clf.run.sample_rate
    head = np.asarray(head)[: int(MAX_SPECTROGRAM_SECONDS * rate)]
    image = np.rint(np.clip(clf.spectrogram(head), 0.0, 1.0) * 255).astype(np.uint8)
    audio = listening_copy(head, rate)
    segments = SparseScores.from_dense(result.segments, floor=floor, max_entries=max_entries)
    return KeptClip(name=name, digest=digest, settings=tuple(settings), result=replace(result, segments=segments),
                    spectrogram=image, audio=audio, head_seconds=len(head) / rate)
