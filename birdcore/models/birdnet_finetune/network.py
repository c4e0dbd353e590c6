"""BirdNET V2.4 cut into a frozen front and a trainable tail of its last N blocks, and the whole network.

BirdNET's blocks, in order (``BLOCKS``): the 16 inverted-residual blocks ``BLOCK_1-1`` ... ``BLOCK_4-4``
(layers named ``BLOCK_a-b_*``) and ``POST`` (``BNORM_POST_*`` and ``POST_CONV_1``, the 1,024-channel
convolution before the global average pool).  "The last N blocks" are the last N of these; the
spectrogram front end and the stem (``CONV_0``, ``POOL_0``) are never trained.  The cut is the input
tensor of the first trained block: (3, 8, 192) per window for N ≤ 5 (blocks 4-x and POST).

Three models share the layers:

- ``front``: (N, 144000) 48 kHz windows → (N, D) activations at the cut, flattened (D = 4,608 for N ≤ 5);
- ``tail``: (N, D) activations → (N, 1024 [+ C]) head input: BirdNET's embedding (global average pool
  of the trained blocks), then with the prior one BirdNET logit per species (``PriorLogits``: BirdNET's
  frozen class layer, the max over each species' source columns, as ``birdnet_head.embeddings.features``);
- ``head``: ``birdnet_head.head.build_head``'s model, unchanged.

``training_model`` = tail + head over cached activations; ``whole_model`` = front + tail + head over
raw windows (the run's ``model.keras``).  Both take {"<input>": (B, W, ...), "mask": (B, W)} and give
{"recording": (B, C), "segments": (B, W, C)} like the head.
"""
from __future__ import annotations

import re

import keras
import numpy as np
from keras import ops

from birdcore.models.birdnet import keras_model as bnk
from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet_finetune.names import FRONT, HEAD, TAIL  # noqa: F401 (re-exported)

_PACKAGE = "birdcore"
BLOCKS = tuple(f"BLOCK_{a}-{b}" for a, n in ((1, 3), (2, 4), (3, 5), (4, 4)) for b in range(1, n + 1)) + ("POST",)
ACTIVATIONS = "embeddings"  # training model's input key: the batches of the head (``EmbeddingBatches``) feed it


def check_blocks(n: int) -> int:
    """``n`` if 1 ≤ n ≤ len(BLOCKS), else ValueError (one line)."""
    if not 1 <= int(n) <= len(BLOCKS):
        raise ValueError(f"fine-tuning trains BirdNET's last N blocks: N must be 1 to {len(BLOCKS)}, got {n}")
    return int(n)


def block_of(layer_name: str) -> str | None:
    """The block (``BLOCKS``) a BirdNET layer belongs to, None for the stem, pool and class layer."""
    found = re.match(r"(BLOCK_\d-\d)_", layer_name)
    if found:
        return found.group(1)
    return "POST" if layer_name.startswith(("BNORM_POST", "POST_")) else None


def load_birdnet() -> keras.Model:
    """A private copy of the converted BirdNET (the shared one, ``keras_model.load_model``, serves the
    engine and must never be trained)."""
    bnk.load_model()  # converts and caches it on first use; registers its layers
    return keras.saving.load_model(bnk.cached_model_path(), safe_mode=True, compile=False)


def register_layers() -> None:
    """Register BirdNET's custom layers and the optimizer, so a saved fine-tuned model (or checkpoint,
    with its optimizer) loads in safe mode."""
    from birdcore.models.birdnet_finetune import optimizer  # noqa: F401

    bnk._layers()


def trained_layer_names(birdnet: keras.Model, n: int) -> list[str]:
    """Names of BirdNET's layers in its last ``n`` blocks, in graph order."""
    wanted = set(BLOCKS[-check_blocks(n):])
    found = {block_of(layer.name) for layer in birdnet.layers} - {None}
    if found != set(BLOCKS):
        raise ValueError(f"BirdNET's blocks are not the expected ones: {sorted(found)}")
    return [layer.name for layer in birdnet.layers if block_of(layer.name) in wanted]


# --------------------------------------------------------------------------- layers
@keras.saving.register_keras_serializable(package=_PACKAGE)
class FoldWindows(keras.layers.Layer):
    """(B, W, ...) → (B × W, ...): every window of every recording through a per-window network."""

    def call(self, x):
        return ops.reshape(x, (-1, *x.shape[2:]))

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[2:])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PriorLogits(keras.layers.Layer):
    """BirdNET's frozen class layer on embeddings (N, 1024) → one prior logit per species (N, C): the max
    of BirdNET's logits over the species' ``sources`` (BirdNET columns, ``embeddings.prior_sources``),
    0 for a species with none.  ``kernel`` (1024, K) and ``bias`` (K,) hold BirdNET's K source columns,
    in sorted column order."""

    def __init__(self, sources: list[list[int]], **kw):
        kw.setdefault("dtype", "float32")
        super().__init__(**kw)
        self.sources = [[int(c) for c in s] for s in sources]
        self.columns = sorted({c for s in self.sources for c in s})
        at = {c: i for i, c in enumerate(self.columns)}
        width = max([1] + [len(s) for s in self.sources])
        self._index = np.zeros((len(self.sources), width), np.int32)
        self._valid = np.zeros((len(self.sources), width), bool)
        for j, s in enumerate(self.sources):
            self._index[j, :len(s)] = [at[c] for c in s]
            self._valid[j, :len(s)] = True

    def build(self, input_shape):
        k = max(1, len(self.columns))
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], k), initializer="zeros", trainable=False)
        self.bias = self.add_weight(name="bias", shape=(k,), initializer="zeros", trainable=False)

    def set_from(self, class_layer: keras.layers.Dense) -> None:
        """Take BirdNET's class layer (``CLASS_DENSE_LAYER``) columns."""
        kernel, bias = class_layer.get_weights()
        cols = self.columns or [0]
        self.set_weights([kernel[:, cols], bias[cols]])

    def call(self, emb):
        logits = ops.matmul(ops.cast(emb, "float32"), self.kernel) + self.bias  # (N, K)
        picked = ops.take(logits, self._index.reshape(-1), axis=1)  # (N, C × L)
        picked = ops.reshape(picked, (-1, *self._index.shape))
        valid = ops.convert_to_tensor(self._valid)
        best = ops.max(ops.where(valid, picked, -1e30), axis=-1)
        return ops.where(ops.any(valid, axis=-1), best, 0.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.sources))

    def get_config(self):
        return {**super().get_config(), "sources": self.sources}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class UnfoldWindows(keras.layers.Layer):
    """(B × W, F) per-window outputs → (B, W, F), using the mask's (B, W) shape."""

    def call(self, flat, mask):
        shape = ops.shape(mask)
        return ops.reshape(flat, (shape[0], shape[1], flat.shape[-1]))

    def compute_output_spec(self, flat, mask):
        return keras.KerasTensor((mask.shape[0], mask.shape[1], flat.shape[-1]), dtype=flat.dtype)


# --------------------------------------------------------------------------- models
def split_birdnet(birdnet: keras.Model, n: int, sources: list[list[int]] | None) -> tuple[keras.Model, keras.Model]:
    """(front, tail) of ``birdnet`` (``load_birdnet``) cut before its last ``n`` blocks; the tail's
    BirdNET layers are ``birdnet``'s own (trainable), every other BirdNET layer is frozen."""
    names = trained_layer_names(birdnet, n)
    first = birdnet.get_layer(names[0])
    cut = first.input
    graph = [(layer, layer.input, layer.output) for layer in birdnet.layers]  # before any new call
    for layer in birdnet.layers:
        layer.trainable = layer.name in names
    front_out = keras.layers.Flatten(name="cut_activations")(cut)
    front = keras.Model(birdnet.input, front_out, name=FRONT)
    flat = keras.Input((int(np.prod(cut.shape[1:])),), name="activations")
    tensors = {id(cut): keras.layers.Reshape(tuple(cut.shape[1:]), name="cut")(flat)}
    pool = birdnet.get_layer("GLOBAL_AVG_POOL")
    for layer, inp, out in graph:
        if layer.name in names or layer is pool:
            args = [tensors[id(t)] for t in inp] if isinstance(inp, list) else tensors[id(inp)]
            tensors[id(out)] = layer(args)
    emb = tensors[id(pool.output)]
    if sources is not None:
        prior = PriorLogits(sources, name="prior_logits")
        logits = prior(emb)
        prior.set_from(birdnet.get_layer("CLASS_DENSE_LAYER"))
        emb = keras.layers.Concatenate(name="head_input")([emb, logits])
    return front, keras.Model(flat, emb, name=TAIL)


def _assemble(key: str, width: tuple[int, ...], per_window: list[keras.Model], head: keras.Model,
              name: str) -> keras.Model:
    x = keras.Input((None, *width), name=key)
    mask = keras.Input((None,), name="mask")
    y = FoldWindows(name="fold_windows")(x)
    for part in per_window:
        y = part(y)
    feats = UnfoldWindows(name="unfold_windows")(y, mask)
    return keras.Model({key: x, "mask": mask}, head({"embeddings": feats, "mask": mask}), name=name)


def training_model(tail: keras.Model, head: keras.Model) -> keras.Model:
    """{"embeddings": (B, W, D) cut activations, "mask": (B, W)} → the head's outputs."""
    return _assemble(ACTIVATIONS, (tail.input.shape[-1],), [tail], head, "birdnet_finetune_training")


def whole_model(front: keras.Model, tail: keras.Model, head: keras.Model) -> keras.Model:
    """{"windows": (B, W, 144000) 48 kHz audio, "mask": (B, W)} → the head's outputs: the run's model."""
    return _assemble("windows", (bn.WINDOW_SAMPLES,), [front, tail], head, "birdnet_finetuned")
