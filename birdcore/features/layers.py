"""Preprocessing layers of the waveform model: segment framing, the log-mel frontend and the
spectrogram augmentations (``birdcore.models.layers`` has the layers after the backbone).

Everything here is serialisable and registered under the ``birdcore``
package, so a saved ``.keras`` model loads in safe mode after
``import birdcore.features.layers``.  Layers whose ``augmentation`` attribute is True
act only when ``training=True``: evaluation and serving never augment.

Written with ``keras.ops`` and ``keras.random`` only, so the same model runs
under any Keras backend (TensorFlow here; JAX or PyTorch where TensorFlow is
not installed, e.g. ``bench/bench_gpu_train.py`` on a GPU machine).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from birdcore.features.windows import frame_segments, n_windows

_PACKAGE = "birdcore"


def mel_weight_matrix(*, n_mels: int, n_bins: int, sample_rate: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filters on the HTK mel scale, (n_bins, n_mels) float32.

    Maps a power spectrum with ``n_bins`` = fft_length // 2 + 1 linear bins
    (0 Hz to Nyquist) to ``n_mels`` bands whose edges are evenly spaced in mel
    between ``fmin`` and ``fmax`` (Hz).  The DC bin gets no weight.  The same
    matrix as ``tf.signal.linear_to_mel_weight_matrix`` (tested), in numpy so
    that the frontend does not depend on the backend.
    """
    def to_mel(hz):
        return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)

    bins_mel = to_mel(np.linspace(0.0, sample_rate / 2.0, n_bins)[1:])[:, None]
    edges = np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2)
    lower, center, upper = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    rising = (bins_mel - lower) / (center - lower)
    falling = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.pad(weights, [[1, 0], [0, 0]]).astype(np.float32)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LogMelFrontend(keras.layers.Layer):
    """Waveform → three-channel log-mel image, normalised per example.

    Input: (batch, n_samples) float32 audio at ``sample_rate``.
    Output: (batch, n_mels, n_frames, 3) float32 in [0, 1], one channel per
    window length; n_frames = 1 + n_samples // hop_length.  Each example is
    scaled on its own (its peak maps to 1, ``top_db`` below it to 0), never
    over the batch, so a clip's score does not depend on its batch mates.
    """

    def __init__(self, *, sample_rate: int, n_mels: int, fft_length: int, window_lengths, hop_length: int,
                 fmin: float, fmax: float | None, top_db: float, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.fft_length = int(fft_length)
        self.window_lengths = tuple(int(w) for w in window_lengths)
        self.hop_length = int(hop_length)
        self.fmin = float(fmin)
        self.fmax = None if fmax is None else float(fmax)
        self.top_db = float(top_db)
        if max(self.window_lengths) > self.fft_length:
            raise ValueError("window lengths must not exceed fft_length")
        self._mel = mel_weight_matrix(n_mels=self.n_mels, n_bins=self.fft_length // 2 + 1,
                                      sample_rate=self.sample_rate, fmin=self.fmin,
                                      fmax=self.fmax or self.sample_rate / 2)

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop_length

    def call(self, waveform):
        x = ops.cast(waveform, "float32")
        half = self.fft_length // 2
        x = ops.pad(x, [[0, 0], [half, half]])
        mel_matrix = ops.convert_to_tensor(self._mel)
        channels = []
        for wl in self.window_lengths:
            # periodic Hann of wl samples, centred in fft_length-sample frames
            real, imag = ops.stft(x, sequence_length=wl, sequence_stride=self.hop_length,
                                  fft_length=self.fft_length, window="hann", center=False)
            power = ops.square(real) + ops.square(imag)  # (batch, frames, bins)
            channels.append(ops.matmul(power, mel_matrix))  # (batch, frames, mels)
        mel = ops.stack(channels, axis=-1)  # (batch, frames, mels, 3)
        db = ops.log(ops.maximum(mel, 1e-10)) * (10.0 / float(np.log(10.0)))
        peak = ops.max(db, axis=(1, 2, 3), keepdims=True)
        db = ops.maximum(db, peak - self.top_db)
        low = ops.min(db, axis=(1, 2, 3), keepdims=True)
        img = (db - low) / ops.maximum(peak - low, 1e-6)
        return ops.transpose(img, (0, 2, 1, 3))  # (batch, mels, frames, 3)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(sample_rate=self.sample_rate, n_mels=self.n_mels, fft_length=self.fft_length,
                   window_lengths=list(self.window_lengths), hop_length=self.hop_length, fmin=self.fmin,
                   fmax=self.fmax, top_db=self.top_db)
        return cfg


class _SpecAugment(keras.layers.Layer):
    """Base of the training-only spectrogram augmentations on (batch, mels, frames, ch) in [0, 1]."""

    augmentation = True

    def __init__(self, *, enabled: bool = True, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.enabled = bool(enabled)
        # seeded random ops: traced backends (JAX) need the generator as layer state
        self.seed_generator = keras.random.SeedGenerator()

    def call(self, spec, training=None):
        if not training or not self.enabled:
            return spec
        return self.augment(spec)

    def augment(self, spec):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self):
        cfg = super().get_config()
        cfg["enabled"] = self.enabled
        return cfg


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DbFloorRaise(_SpecAugment):
    """Raise the floor of each normalised spectrogram by f ~ U(0, max_raise),
    then stretch back to [0, 1]: quiet background drops out (the original's
    "dB reduction")."""

    def __init__(self, *, max_raise: float, **kwargs):
        super().__init__(**kwargs)
        self.max_raise = float(max_raise)

    def augment(self, spec):
        floor = keras.random.uniform((ops.shape(spec)[0], 1, 1, 1), 0.0, self.max_raise,
                                     seed=self.seed_generator)
        return (ops.maximum(spec, floor) - floor) / ops.maximum(1.0 - floor, 1e-6)

    def get_config(self):
        return {**super().get_config(), "max_raise": self.max_raise}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AxisMask(_SpecAugment):
    """Zero one random band along ``axis`` (1 = mel bins, 2 = time frames) of
    each example; its width is uniform in [0, max_fraction × axis length]."""

    def __init__(self, *, axis: int, max_fraction: float, **kwargs):
        super().__init__(**kwargs)
        if axis not in (1, 2):
            raise ValueError("axis must be 1 (frequency) or 2 (time)")
        self.axis = int(axis)
        self.max_fraction = float(max_fraction)

    def augment(self, spec):
        batch = ops.shape(spec)[0]
        length = ops.shape(spec)[self.axis]
        max_width = ops.cast(ops.cast(length, "float32") * self.max_fraction, "int32")
        draw = keras.random.uniform((2, batch), seed=self.seed_generator)
        width = ops.cast(draw[0] * ops.cast(max_width + 1, "float32"), "int32")
        width = ops.minimum(width, length)
        start = ops.cast(draw[1] * ops.cast(length - width + 1, "float32"), "int32")
        pos = ops.arange(length)[None, :]
        band = (pos >= start[:, None]) & (pos < (start + width)[:, None])  # (batch, length)
        keep = ops.cast(ops.logical_not(band), spec.dtype)
        shape = [-1, 1, 1, 1]
        shape[self.axis] = length
        return spec * ops.reshape(keep, shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "max_fraction": self.max_fraction}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ToSymmetric(keras.layers.Layer):
    """Map [0, 1] to [-1, 1], the input range InceptionV3 expects."""

    def call(self, spec):
        return spec * 2.0 - 1.0


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SegmentFramer(keras.layers.Layer):
    """(batch, n_samples) → segments (batch × n_segments, segment_samples) and
    mask (batch, n_segments); see ``windows.frame_segments``."""

    def __init__(self, *, segment_samples: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.segment_samples = int(segment_samples)

    def call(self, waveform):
        segments, mask = frame_segments(waveform, self.segment_samples)
        flat = ops.reshape(segments, (-1, self.segment_samples))
        return flat, mask

    def compute_output_spec(self, waveform):
        batch, n = waveform.shape[0], waveform.shape[1]
        n_segments = None if n is None else n_windows(n, self.segment_samples, self.segment_samples)
        flat_rows = None if batch is None or n_segments is None else batch * n_segments
        return (keras.KerasTensor((flat_rows, self.segment_samples), dtype=self.compute_dtype),
                keras.KerasTensor((batch, n_segments), dtype="float32"))

    def get_config(self):
        return {**super().get_config(), "segment_samples": self.segment_samples}
