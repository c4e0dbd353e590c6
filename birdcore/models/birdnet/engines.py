"""Which engine runs BirdNET V2.4: ``litert`` (the TFLite file, CPU) or ``keras`` (the converted
Keras model, ``keras_model``: any Keras backend, a GPU where there is one).

Both give the same outputs (sigmoid scores within ~2e-6 typically, 5e-4 at most on xc-ca10;
BENCHMARKS.md) through the same API (``run``, ``analyze``, ``analyze_stream``, ``labels``,
``with_embeddings``), so BirdNET kinds ask ``birdnet_engine(...)`` and never name an engine.  The
engine is chosen, in order, by ``engine_scope(name)`` (the classify page's setting),
``use_engine(name)`` (the CLI's ``--engine``), the environment variable ``BIRDCLEF_BIRDNET_ENGINE``,
else ``default_engine()`` (LiteRT, the reference, except with JAX on a GPU; see its docstring).

The BirdNET model, in either form, is licensed CC BY-NC-SA 4.0 (``runtime.LICENSE_NOTE``).
"""
from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from birdcore.models.birdnet import runtime as bn

ENGINES = ("litert", "keras")
ENV_VAR = "BIRDCLEF_BIRDNET_ENGINE"


def _keras_backend() -> str:
    """The Keras backend a process will use, without importing Keras ($KERAS_BACKEND, keras.json)."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def default_engine() -> str:
    """The faster engine on this machine; both give the same scores (within 1e-4 per window, converter
    version 2, on a CPU; on a GPU see ``keras_model.correctly_rounded_quotient``).  Keras with JAX on a
    GPU (68x LiteRT on 2 CPU cores at batch 16 on an H200, before that correction); LiteRT
    elsewhere: on 2 CPU cores Keras on TensorFlow is only about as fast in steady state (1.04-1.07x,
    bench/bench_birdnet_engines.py) and every process would first pay TensorFlow's import and the
    converted model's load, which LiteRT does not (BENCHMARKS.md, "BirdNET engines")."""
    if _keras_backend() == "jax":
        import jax

        return "keras" if any(d.platform == "gpu" for d in jax.devices()) else "litert"
    return "litert"

_chosen: str | None = None
_scoped = threading.local()  # engine_scope's choice, for this thread only


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


@contextmanager
def engine_scope(name: str | None):
    """Within the block, BirdNET runners made by this thread use engine ``name`` (None: no change);
    for a server building one model per engine (the classify page) without touching other threads."""
    previous = getattr(_scoped, "engine", None)
    _scoped.engine = previous if name is None else check_engine(name)
    try:
        yield
    finally:
        _scoped.engine = previous


def current_engine() -> str:
    """The engine ``birdnet_engine`` uses now: ``engine_scope``'s, else ``use_engine``'s, else
    $BIRDCLEF_BIRDNET_ENGINE, else the default."""
    if getattr(_scoped, "engine", None) is not None:
        return _scoped.engine
    if _chosen is not None:
        return _chosen
    env = os.environ.get(ENV_VAR)
    return check_engine(env) if env else default_engine()


def birdnet_engine(engine: str | None = None, *, embeddings: bool = False, threads: int | None = None,
                   batch: int = 16):
    """A BirdNET runner (``runtime.BirdNET``'s API) on ``engine`` (default: ``current_engine()``)."""
    engine = check_engine(engine) if engine else current_engine()
    if engine == "keras":
        return KerasBirdNET(embeddings=embeddings, batch=batch)
    return bn.BirdNET(embeddings=embeddings, threads=threads, batch=batch)


_RUN_LOCK = threading.Lock()


def float32_products():
    """A context in which the current Keras backend computes float32 matrix products and convolutions
    in full float32: JAX's ``default_matmul_precision("float32")`` (its default lets XLA use TF32 on
    NVIDIA GPUs); nothing to change for TensorFlow's Keras models, which do not enable TF32 by default."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.default_matmul_precision("float32")
    return nullcontext()


COMPILATION_CACHE_BYTES = 4 << 30  # the most JAX keeps in the folder (least recently used go first)


def use_compilation_cache(folder: Path | None = None) -> Path | None:
    """Under JAX, keep compiled programs on disk so that later processes skip compiling: on an H200
    the converted BirdNET took 80–88 s to compile per batch shape (BENCHMARKS.md).  ``run_batched``
    turns it on where a GPU is visible.  The folder is ``folder``, else ``<cache>/jax-compilation``
    (``$BIRDCLEF_CACHE`` or ``~/.cache/birdclef``), at most ``COMPILATION_CACHE_BYTES`` where the
    ``filelock`` package is installed (JAX needs it to bound the folder; one entry per model and
    batch shape otherwise, tens of MB each); a folder
    already configured (``$JAX_COMPILATION_CACHE_DIR`` or JAX's config) is kept.  It applies to the
    whole process (training steps too) and holds executable code: keep it on a disk only you write.
    Returns the folder in use; None on other backends or when it cannot be written."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    from birdcore.data.cache import default_cache_dir

    folder = Path(folder) if folder else default_cache_dir() / "jax-compilation"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None  # compile every time, as before
    import importlib.util

    jax.config.update("jax_compilation_cache_dir", str(folder))
    if importlib.util.find_spec("filelock") is not None:  # JAX bounds the folder only with it
        jax.config.update("jax_compilation_cache_max_size", COMPILATION_CACHE_BYTES)
    return folder


def run_batched(model, x: np.ndarray, *, batch: int = 16, full_batches: bool | None = None):
    """A Keras ``model``'s outputs on (N, ...) float32 inputs (N ≥ 1), ``batch`` rows per call, in full
    float32 (``float32_products``): one (N, ...) array, or a list of them for a model with several
    outputs.  A backend that compiles per input shape (JAX; TensorFlow's XLA) would compile again for
    every short batch, so short batches run padded: to ``batch`` rows where a GPU is visible (one
    shape; the padding costs next to nothing there, and each compile of BirdNET costs over a minute),
    else to the next power of two (at most log2(batch) + 1 shapes, little wasted compute on a CPU).
    ``full_batches`` overrides that choice.  Under JAX with a GPU, compiled programs are kept on disk
    (``use_compilation_cache``)."""
    from birdcore.models.device import gpu_visible

    gpu = gpu_visible()
    if gpu:
        use_compilation_cache()
    full_batches = gpu if full_batches is None else full_batches
    parts, several = [], False
    with float32_products():
        for start in range(0, len(x), batch):
            chunk = np.ascontiguousarray(x[start:start + batch], dtype=np.float32)
            n = len(chunk)
            size = batch if full_batches else min(batch, 1 << (n - 1).bit_length())
            if size > n:
                chunk = np.concatenate([chunk, np.zeros((size - n, *chunk.shape[1:]), np.float32)])
            out = model.predict_on_batch(chunk)
            several = isinstance(out, (list, tuple))
            parts.append([np.asarray(o)[:n] for o in (out if several else [out])])
    joined = [np.concatenate(p) for p in zip(*parts)]
    return joined if several else joined[0]


class KerasBirdNET(bn.BirdNET):
    """BirdNET V2.4 run by the converted Keras model (``keras_model.load_model``), on the current
    Keras backend; same outputs and API as ``runtime.BirdNET``; thread-safe (one batch at a time).

    Embeddings come from the model's global-average-pool layer directly.  Windows run ``batch`` at
    a time (``run_batched``).  Under JAX, matrix products and convolutions run in full float32
    (``float32_products``): on an NVIDIA H200, XLA's default TF32 moved the sigmoid
    scores by 2.7e-4 (median window) to 2.9e-3, for 1.3x the speed (bench/bench_birdnet_gpu.py).
    """

    engine = "keras"

    def __init__(self, *, embeddings: bool = False, batch: int = 16, model=None):
        from birdcore.models.birdnet import keras_model

        self.with_embeddings = embeddings
        self.batch = int(batch)
        self.model = model if model is not None else keras_model.load_model()
        self._lock = _RUN_LOCK  # runners share the process's one model: one batch at a time
        self.labels = bn.load_labels()

    def run(self, batch_windows: np.ndarray) -> bn.BirdNETOutput:
        """Outputs for (W, 144000) float32 windows at 48 kHz."""
        if len(batch_windows) == 0:
            return bn.BirdNETOutput(np.zeros((0, len(self.labels)), np.float32), None)
        with self._lock:
            logits, embs = run_batched(self.model, batch_windows, batch=self.batch)
        return bn.BirdNETOutput(logits, embs if self.with_embeddings else None)
