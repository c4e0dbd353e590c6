"""Which engine runs BirdNET V2.4: ``litert`` (the TFLite file, CPU) or ``keras`` (the converted
Keras model, ``keras_model``: any Keras backend, a GPU where there is one).

Both give the same outputs (sigmoid scores within ~1e-6 typically, see BENCHMARKS.md) through the
same API (``run``, ``analyze``, ``analyze_stream``, ``labels``, ``with_embeddings``), so BirdNET kinds
ask ``birdnet_engine(...)`` and never name an engine.  The engine is chosen, in order, by
``use_engine(name)`` (the CLI's ``--engine``, the classify page's setting), the environment
variable ``BIRDCLEF_BIRDNET_ENGINE``, else ``DEFAULT_ENGINE`` (the faster on this project's CPU,
measured by ``bench/bench_birdnet_engines.py``).

The BirdNET model, in either form, is licensed CC BY-NC-SA 4.0 (``runtime.LICENSE_NOTE``).
"""
from __future__ import annotations

import os
import threading

import numpy as np

from birdcore.models.birdnet import runtime as bn

ENGINES = ("litert", "keras")
DEFAULT_ENGINE = "litert"  # bench/bench_birdnet_engines.py: LiteRT (XNNPACK) is faster on 2 CPU cores
ENV_VAR = "BIRDCLEF_BIRDNET_ENGINE"

_chosen: str | None = None


def check_engine(name: str) -> str:
    """``name`` lower-cased if it is an engine; ValueError otherwise."""
    key = str(name).strip().lower()
    if key not in ENGINES:
        raise ValueError(f"unknown BirdNET engine {name!r}: choose one of {', '.join(ENGINES)}")
    return key


def use_engine(name: str | None) -> None:
    """Run BirdNET with engine ``name`` from now on in this process (None: back to the default)."""
    global _chosen
    _chosen = None if name is None else check_engine(name)


def current_engine() -> str:
    """The engine ``birdnet_engine`` uses now (``use_engine``, else $BIRDCLEF_BIRDNET_ENGINE, else the default)."""
    if _chosen is not None:
        return _chosen
    env = os.environ.get(ENV_VAR)
    return check_engine(env) if env else DEFAULT_ENGINE


def birdnet_engine(engine: str | None = None, *, embeddings: bool = False, threads: int | None = None,
                   batch: int = 16):
    """A BirdNET runner (``runtime.BirdNET``'s API) on ``engine`` (default: ``current_engine()``)."""
    engine = check_engine(engine) if engine else current_engine()
    if engine == "keras":
        return KerasBirdNET(embeddings=embeddings, batch=batch)
    return bn.BirdNET(embeddings=embeddings, threads=threads, batch=batch)


class KerasBirdNET(bn.BirdNET):
    """BirdNET V2.4 run by the converted Keras model (``keras_model.load_model``), on the current
    Keras backend; same outputs and API as ``runtime.BirdNET``; thread-safe (one batch at a time).

    Embeddings come from the model's global-average-pool layer directly.  Batches shorter than
    ``batch`` run padded to the next power of two, so a backend that compiles per input shape
    (JAX) compiles at most log2(batch) + 1 times.
    """

    engine = "keras"

    def __init__(self, *, embeddings: bool = False, batch: int = 16, model=None):
        from birdcore.models.birdnet import keras_model

        self.with_embeddings = embeddings
        self.batch = int(batch)
        self.model = model if model is not None else keras_model.load_model()
        self._lock = threading.Lock()
        self.labels = bn.load_labels()

    def run(self, batch_windows: np.ndarray) -> bn.BirdNETOutput:
        """Outputs for (W, 144000) float32 windows at 48 kHz."""
        logits, embs = [], []
        with self._lock:
            for start in range(0, len(batch_windows), self.batch):
                chunk = np.ascontiguousarray(batch_windows[start:start + self.batch], dtype=np.float32)
                n = len(chunk)
                size = min(self.batch, 1 << (n - 1).bit_length())
                if size > n:
                    chunk = np.concatenate([chunk, np.zeros((size - n, chunk.shape[1]), np.float32)])
                out, emb = self.model.predict_on_batch(chunk)
                logits.append(np.asarray(out)[:n])
                if self.with_embeddings:
                    embs.append(np.asarray(emb)[:n])
        empty = np.zeros((0, len(self.labels)), np.float32)
        return bn.BirdNETOutput(np.concatenate(logits) if logits else empty,
                                np.concatenate(embs) if embs else None)
