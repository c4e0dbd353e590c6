"""Saving and loading the inference artifacts of a run.

- ``model.keras``: the Keras model, loaded in safe mode (no arbitrary code);
  needs only ``birdcore.features.layers`` (not the training code).
- ``export/``: a TF SavedModel whose ``serve`` takes a raw waveform batch
  (batch, n_samples) float32 at the run's sample rate, of any length, and
  returns ``{"recording": (batch, C), "segments": (batch, S, C)}``; it loads
  with plain TensorFlow, without birdcore.  Written only under the TensorFlow
  Keras backend (``savedmodel_supported``); ``model.keras`` loads under any.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import pandas as pd

from birdcore.features import layers as _layers  # noqa: F401  (registers the custom layers for loading)
from birdcore.config import RunConfig
from birdcore.runs.folder import read_manifest

MODEL_FILE = "model.keras"
EXPORT_DIR = "export"


def save_keras(model: keras.Model, path: Path) -> None:
    """Save a ``.keras`` file atomically (write beside it, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def load_keras(path: Path, *, compile: bool = False) -> keras.Model:
    return keras.models.load_model(path, safe_mode=True, compile=compile)


def savedmodel_supported() -> bool:
    """Whether ``export_savedmodel`` can run: it needs the TensorFlow Keras backend."""
    return keras.backend.backend() == "tensorflow"


def export_savedmodel(model: keras.Model, path: Path) -> None:
    """Write the TF SavedModel serving artifact (replacing any previous one); TensorFlow backend only."""
    import tensorflow as tf

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.export(str(tmp), format="tf_saved_model", verbose=False,
                 input_signature=[tf.TensorSpec((None, None), tf.float32, name="waveform")])
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def load_savedmodel(path: Path):
    """The loaded SavedModel; call ``.serve(waveform (batch, n) float32)`` → dict of outputs.

    Keep the returned object alive while using ``serve`` (it owns the variables).
    """
    import tensorflow as tf

    return tf.saved_model.load(str(path))


@dataclass
class LoadedRun:
    """A complete run, ready to score audio."""

    path: Path
    manifest: dict
    config: RunConfig
    species: pd.DataFrame  # index, ebird_code, common_name, sci_name in model output order
    thresholds: dict
    model: keras.Model | None  # None for a BirdNET zero-shot run
    birdnet_columns: list | None = None  # BirdNET output column per species; default from birdnet_species.json

    @property
    def kind(self) -> str:
        """"keras_audio" (waveform model), "birdnet_head" or "birdnet_zero_shot"."""
        return self.manifest.get("model_kind", "keras_audio")

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    @property
    def codes(self) -> list[str]:
        return self.species["ebird_code"].tolist()

    def segment_hop_seconds(self, overlap: float = 0.0) -> float:
        """Seconds between the starts of consecutive segments scored with ``overlap``."""
        if self.kind in ("birdnet_zero_shot", "birdnet_head"):
            from birdcore.models.birdnet import runtime as bn

            return bn.hop_samples(overlap) / bn.SAMPLE_RATE
        if overlap:
            raise ValueError("overlapping windows are for BirdNET runs (3 s windows); "
                             "this run's model cuts its own fixed segments")
        return float(self.config.audio.segment_seconds)

    def scorer(self, *, batch_segments: int = 32, threads: int | None = None, overlap: float = 0.0):
        """An object with ``score(wave)``, ``score_stream(chunks)`` and ``score_many(waves)`` giving
        ``inference.Scores`` for waveforms (float32 (n_samples,) at ``self.sample_rate``); one per
        caller, it holds a traced function.  ``threads``: BirdNET interpreter threads (default: all
        cores).  ``overlap``: seconds by which BirdNET's 3 s windows overlap (BirdNET runs only)."""
        self.segment_hop_seconds(overlap)  # validates overlap for this kind of run
        if self.kind in ("birdnet_zero_shot", "birdnet_head"):
            from birdcore.models.birdnet import runtime as bn
            from birdcore.models.birdnet_head.head import BirdNETHeadScorer, ZeroShotScorer, prior_sources

            if self.kind == "birdnet_zero_shot":
                columns = self.birdnet_columns
                if columns is None:
                    columns = json.loads((self.path / "birdnet_species.json").read_text())["columns"]
                return ZeroShotScorer(columns, overlap=overlap, birdnet=bn.BirdNET(threads=threads))
            mapping = json.loads((self.path / "birdnet_species.json").read_text())
            sources = mapping.get("prior_sources") or prior_sources(mapping["columns"])  # older runs: own columns
            return BirdNETHeadScorer(self.model, sources=sources if mapping.get("prior") else None, overlap=overlap,
                                     birdnet=bn.BirdNET(embeddings=True, threads=threads))
        from birdcore.models.keras_audio.scorer import Scorer

        return Scorer(self.model, batch_segments=batch_segments)


def load_run(run_dir: Path) -> LoadedRun:
    """Load a complete run folder (checks its format version); raises RunFolderError or OSError."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    cfg = RunConfig.load(run_dir / "config.json")
    species = pd.read_csv(run_dir / "species.csv", keep_default_na=False)
    thr_path = run_dir / "thresholds.json"
    thresholds = json.loads(thr_path.read_text()) if thr_path.exists() else {}
    model = None if manifest.get("model_kind") == "birdnet_zero_shot" else load_keras(run_dir / MODEL_FILE)
    return LoadedRun(run_dir, manifest, cfg, species, thresholds, model)
