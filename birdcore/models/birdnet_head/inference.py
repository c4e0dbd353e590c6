"""Serving a ``--backbone birdnet`` run without Keras: the trained head evaluated in NumPy.

The head (``head.build_head``) is two dense layers over each 3 s window's BirdNET embedding (plus,
with the prior, a learned weight on BirdNET's logit per species) and a pooling over windows.  For
serving, importing Keras and TensorFlow to run it costs 7-9 s per process, more than BirdNET itself
spends on a minute of audio, so ``load_head`` reads the weights straight from the run's
``model.keras`` (a zip of ``config.json`` and ``model.weights.h5``) and ``NumpyHead`` computes the
same outputs with NumPy (equal to the Keras model to float32 rounding, ~1e-7; tests compare them;
a head trained in mixed precision is evaluated in float32, within its float16 rounding).  A saved
model whose layers are not exactly ``build_head``'s is loaded with Keras instead.

Shapes: W windows, F = 1024 (+ C with the prior) features per window, C species.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from birdcore.models.base import Scores, sigmoid
from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet.engines import birdnet_engine
from birdcore.models.birdnet.scoring import WindowScorer, pool_windows, reporting
from birdcore.models.birdnet_head.embeddings import features


_REQUIRED = {"embeddings": "InputLayer", "mask": "InputLayer", "input_dropout": "Dropout", "hidden": "Dense",
             "head_dropout": "Dropout", "species_logits": "Dense", "recording": "RecordingPooling",
             "segments": "Sigmoid"}
# dtype policies whose variables are float32: a mixed-precision head (trained on a GPU with
# ``--mixed-precision on``, or under "auto" before heads were kept float32) is evaluated in float32,
# which differs from its float16 hidden layer by that layer's rounding (~1e-3 of a logit; tests)
_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
_PRIOR = {"embedding": "SliceFeatures", "birdnet_logits": "SliceFeatures", "prior_scale": "PriorScale",
          "with_prior": "Add"}


class NumpyHead:
    """``build_head``'s model in NumPy, inference only (dropout off).

    Args:
        hidden: (kernel (E, H), bias (H,)) of the ReLU layer, E = 1024.
        species: (kernel (H, C), bias (C,)) of the species logits.
        attention: (kernel (H, C), bias (C,)) of the attention logits, for ``mode`` "attention".
        prior_scale: (C,) weight of BirdNET's prior logits (features E:E+C), or None without the prior.
        mode: the pooling over windows ("max", "mean", "attention"; ``pooling.pool_segments``).
    """

    def __init__(self, *, hidden, species, mode: str, attention=None, prior_scale=None):
        self.hidden = tuple(np.asarray(a, np.float32) for a in hidden)
        self.species = tuple(np.asarray(a, np.float32) for a in species)
        self.attention = None if attention is None else tuple(np.asarray(a, np.float32) for a in attention)
        self.prior_scale = None if prior_scale is None else np.asarray(prior_scale, np.float32)
        self.mode = mode

    def score(self, feats: np.ndarray) -> Scores:
        """Scores of one recording's head input (W, F) float32: segments (W, C), recording (C,)."""
        x = np.asarray(feats, np.float32)
        width = self.hidden[0].shape[0]
        h = np.maximum(x[:, :width] @ self.hidden[0] + self.hidden[1], 0.0)
        logits = h @ self.species[0] + self.species[1]
        if self.prior_scale is not None:
            logits = logits + x[:, width:] * self.prior_scale
        att = None if self.attention is None else h @ self.attention[0] + self.attention[1]
        return Scores(segments=sigmoid(logits).astype(np.float32),
                      recording=pool_windows(logits, mode=self.mode, attention_logits=att))

    def score_many(self, items: Iterable[np.ndarray]) -> Iterator[Scores]:
        for e in items:
            yield self.score(e)


def _snake(name: str) -> str:
    """Keras's name for a layer's group in ``model.weights.h5`` (``keras.src.utils.naming.to_snake_case``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def weight_groups(layers: list[dict]) -> dict[str, str]:
    """Layer name → its group in ``model.weights.h5``, for the layers of one functional model's
    ``config.json`` entry: groups are named by class (``_snake``), numbered in layer order
    (``conv2d``, ``conv2d_1``...); a nested model's own layers sit under ``layers/<its group>/``."""
    groups, seen = {}, {}
    for layer in layers:
        snake = _snake(layer["class_name"])
        groups[layer["config"]["name"]] = snake if snake not in seen else f"{snake}_{seen[snake]}"
        seen[snake] = seen.get(snake, 0) + 1
    return groups


@contextmanager
def open_keras_file(path: Path):
    """(config.json as a dict, model.weights.h5 as an open ``h5py.File``) of a ``.keras`` file;
    ValueError naming the file when it is not one."""
    import h5py

    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            weights = h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .keras model file ({exc})") from exc
    try:
        yield config, weights
    finally:
        weights.close()


def numpy_head_from(layers: list[dict], var: Callable[[str, int], np.ndarray]) -> NumpyHead | None:
    """The head whose functional config has ``layers`` as a ``NumpyHead``, its weights read by
    ``var(layer name, index)``; None when its layers are not exactly ``build_head``'s with float32
    variables (float32 or mixed precision)."""
    by_name = {layer["config"]["name"]: layer for layer in layers}
    classes = {n: layer["class_name"] for n, layer in by_name.items()}
    prior = "prior_scale" in classes
    attention = by_name.get("recording", {}).get("config", {}).get("mode") == "attention"
    expected = {**_REQUIRED, **(_PRIOR if prior else {}), **({"attention_logits": "Dense"} if attention else {})}
    if classes != expected:
        return None
    for name, layer in by_name.items():
        cfg = layer["config"]
        dtype = cfg.get("dtype")
        if isinstance(dtype, dict) and dtype.get("config", {}).get("name", "float32") not in _POLICIES:
            return None
        if classes[name] == "Dense" and (not cfg.get("use_bias", True)
                                         or cfg.get("activation") != ("relu" if name == "hidden" else "linear")):
            return None
    if prior and (by_name["embedding"]["config"].get("start") != 0
                  or by_name["embedding"]["config"].get("stop") != bn.EMBEDDING_SIZE):
        return None
    try:
        return NumpyHead(hidden=(var("hidden", 0), var("hidden", 1)),
                         species=(var("species_logits", 0), var("species_logits", 1)),
                         attention=(var("attention_logits", 0), var("attention_logits", 1)) if attention else None,
                         prior_scale=var("prior_scale", 0) if prior else None,
                         mode=by_name["recording"]["config"]["mode"])
    except KeyError:
        return None


def read_numpy_head(path: Path) -> NumpyHead | None:
    """The head saved in ``path`` (a ``.keras`` file) as a ``NumpyHead``, or None when its layers are
    not exactly ``build_head``'s with float32 variables (then it needs Keras)."""
    with open_keras_file(path) as (config, weights):
        layers = config.get("config", {}).get("layers", [])
        groups = weight_groups(layers)
        return numpy_head_from(layers, lambda name, i: np.asarray(weights[f"layers/{groups[name]}/vars/{i}"]))


def load_head(path: Path):
    """A run's head for serving: a ``NumpyHead`` when the saved model is ``build_head``'s, else the
    Keras model (``models.saving.load_keras``)."""
    head = read_numpy_head(Path(path))
    if head is not None:
        return head
    from birdcore.models.saving import load_keras

    return load_keras(Path(path))


class BirdNETHeadScorer(WindowScorer):
    """Waveforms at 48 kHz → BirdNET embeddings (+ prior logits) → trained head (a ``--backbone birdnet`` run).

    ``model``: a ``NumpyHead`` (``load_head``) or the head's Keras model.
    """

    def __init__(self, model, *, sources: list[list[int]] | None = None, overlap: float = 0.0,
                 birdnet: bn.BirdNET | None = None):
        self.birdnet = birdnet or birdnet_engine(embeddings=True)
        if isinstance(model, NumpyHead):
            self.head = model
        else:
            from birdcore.models.birdnet_head.head import EmbeddingScorer

            self.head = EmbeddingScorer(model)
        self.sources, self.overlap = sources, overlap

    def score_stream(self, chunks: Iterable[np.ndarray], *,
                     progress: Callable[[float], None] | None = None) -> Scores:
        """Scores of one recording given as consecutive 48 kHz chunks (e.g. ``stream.stream_audio``),
        equal to ``score(np.concatenate(chunks))``; ``progress`` gets the seconds consumed so far."""
        out = self.birdnet.analyze_stream(reporting(chunks, progress), overlap=self.overlap)
        return self.head.score(features(out, self.sources))
