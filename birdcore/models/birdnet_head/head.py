"""The head over BirdNET embeddings (``--backbone birdnet``): model, training batches, the Keras scorer
(``inference``: serving a run's head in NumPy, and the waveform scorer).

BirdNET's 1,024-d embeddings of 3 s windows are computed once per recording (cached,
``embeddings``), and a small trainable head turns each window's embedding into species logits,
pooled over windows with the same weak-label pooling as the audio models.  The head can learn
species that BirdNET lacks.
"""
from __future__ import annotations

import math
from typing import Iterable, Iterator

import keras
import numpy as np

from birdcore.data.batches import EpochBatches
from birdcore.models import layers as L
from birdcore.models.base import Scores
from birdcore.models.birdnet import runtime as bn
from birdcore.config import RunConfig


def build_head(cfg: RunConfig, n_species: int) -> keras.Model:
    """{"embeddings": (B, W, F), "mask": (B, W)} → {"recording": (B, C), "segments": (B, W, C)}.

    Dropout → dense ``cfg.model.head_units`` (ReLU) → dropout → dense C species logits.

    F = 1024 (BirdNET embedding), + C BirdNET logits used as a prior when ``cfg.model.birdnet_prior``:
    species logit = head(embedding) + learned weight × BirdNET's logit.
    """
    use_prior = cfg.model.birdnet_prior
    width = bn.EMBEDDING_SIZE + (n_species if use_prior else 0)
    feats = keras.Input((None, width), name="embeddings")
    mask = keras.Input((None,), name="mask")
    emb = L.SliceFeatures(start=0, stop=bn.EMBEDDING_SIZE, name="embedding")(feats) if use_prior else feats
    x = keras.layers.Dropout(cfg.model.dropout, name="input_dropout")(emb)
    x = keras.layers.Dense(cfg.model.head_units, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(cfg.model.dropout, name="head_dropout")(x)
    bias = keras.initializers.Constant(-math.log(max(n_species - 1, 1)))
    logits = keras.layers.Dense(n_species, dtype="float32", bias_initializer=bias, name="species_logits")(x)
    if use_prior:
        prior = L.SliceFeatures(start=bn.EMBEDDING_SIZE, stop=width, name="birdnet_logits")(feats)
        logits = keras.layers.Add(name="with_prior")([logits, L.PriorScale(name="prior_scale")(prior)])
    att = None
    if cfg.model.pooling == "attention":
        att = keras.layers.Dense(n_species, dtype="float32", name="attention_logits")(x)
    recording = L.RecordingPooling(mode=cfg.model.pooling, name="recording")(logits, mask, att)
    segments = L.Sigmoid(name="segments")(logits)
    return keras.Model({"embeddings": feats, "mask": mask}, {"recording": recording, "segments": segments},
                       name="birdnet_head")


class EmbeddingBatches(EpochBatches):
    """Batches of random crops of ``windows`` consecutive embeddings (zero-padded, masked) and targets.

    ``interleaved`` = 2: each loaded sequence holds two interleaved window grids (windows every 1.5 s:
    even ones at 0, 3, 6 s..., odd ones shifted by 1.5 s); each example uses one grid, drawn at random.
    """

    def __init__(self, *, load, targets: np.ndarray, windows: int, batch_size: int, seed: int,
                 steps_per_epoch: int | None = None, workers: int = 1, interleaved: int = 1):
        super().__init__(targets=targets, batch_size=batch_size, seed=seed, steps_per_epoch=steps_per_epoch,
                         workers=workers)
        self.load, self.windows, self.interleaved = load, int(windows), int(interleaved)

    def __getitem__(self, idx: int):
        rows, rng = self.rows_of(idx)
        items = [self.load(int(i)) for i in rows]
        if self.interleaved > 1:
            items = [e[int(rng.integers(0, min(self.interleaved, len(e)))):][::self.interleaved] for e in items]
        x = np.zeros((len(rows), self.windows, items[0].shape[1]), np.float32)
        m = np.zeros((len(rows), self.windows), np.float32)
        for k, e in enumerate(items):
            start = int(rng.integers(0, max(1, len(e) - self.windows + 1)))
            part = e[start:start + self.windows]
            x[k, :len(part)], m[k, :len(part)] = part, 1.0
        return {"embeddings": x, "mask": m}, {"recording": self.targets[rows]}


class EmbeddingScorer:
    """Scores embedding sequences (W, 1024) with a head model, one recording per call."""

    def __init__(self, model: keras.Model, *, batch_segments: int = 32):
        self.model = model
        if keras.backend.backend() == "tensorflow":  # one trace for every length
            import tensorflow as tf

            spec = {"embeddings": tf.TensorSpec((1, None, model.input["embeddings"].shape[-1]), tf.float32),
                    "mask": tf.TensorSpec((1, None), tf.float32)}
            self._forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        else:  # JAX, say: the head is three small layers, called eagerly (no trace per length)
            self._forward = lambda x: model(x, training=False)

    def score_many(self, items: Iterable[np.ndarray]) -> Iterator[Scores]:
        for e in items:
            e = np.asarray(e, np.float32)
            out = self._forward({"embeddings": e[None], "mask": np.ones((1, len(e)), np.float32)})
            yield Scores(segments=keras.ops.convert_to_numpy(out["segments"])[0],
                         recording=keras.ops.convert_to_numpy(out["recording"])[0])

    def score(self, embeddings: np.ndarray) -> Scores:
        return next(self.score_many([embeddings]))
