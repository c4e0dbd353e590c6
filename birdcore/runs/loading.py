"""Loading a complete run to score audio, whatever its kind of model.

``load_run(RUN_DIR)`` reads a run folder (any format version this software reads);
``load_run_ref("birdnet")`` gives BirdNET V2.4 over all its species, a run without a folder.
The run's kind (``models.base``) supplies its model, scorer and segment timing, so callers never
ask which kind it is.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from birdcore.config import RunConfig
from birdcore.models.base import ModelKind, RunScorer, kind_for, kind_name
from birdcore.runs.folder import read_manifest

BIRDNET_REF = "birdnet"  # the built-in model: BirdNET V2.4 zero-shot over its 6,522 species


@dataclass
class LoadedRun:
    """A complete run, ready to score audio."""

    path: Path
    manifest: dict
    config: RunConfig
    species: pd.DataFrame  # index, ebird_code, common_name, sci_name in model output order
    thresholds: dict
    model: object | None  # what the kind serves with (``ModelKind.load_model``): a Keras model, a NumPy head, a
    # fine-tuned BirdNET for LiteRT; None for a kind without one (BirdNET zero-shot)
    birdnet_columns: list | None = None  # BirdNET output column per species; default from the run's files

    @property
    def kind(self) -> ModelKind:
        """The run's kind of model (``models.base``)."""
        return kind_for(kind_name(self.manifest, self.config.to_dict()))

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    @property
    def codes(self) -> list[str]:
        return self.species["ebird_code"].tolist()

    def segment_hop_seconds(self, overlap: float = 0.0) -> float:
        """Seconds between the starts of consecutive segments scored with ``overlap`` (ValueError
        for an overlap this kind of run cannot use)."""
        return self.kind.segment_hop_seconds(self.config, overlap)

    def scorer(self, *, batch_segments: int = 32, threads: int | None = None, overlap: float = 0.0) -> RunScorer:
        """A scorer of waveforms (float32 (n_samples,) at ``self.sample_rate``) with ``score``,
        ``score_many``, ``score_stream`` and ``with_overlap``; one per caller (it may hold a traced
        function).  ``threads``: BirdNET interpreter threads (default: all cores).  ``overlap``:
        seconds by which BirdNET's 3 s windows overlap (kinds with ``supports_overlap``)."""
        self.segment_hop_seconds(overlap)  # validates overlap for this kind of run
        return self.kind.run_scorer(self, batch_segments=batch_segments, threads=threads, overlap=overlap)


def load_run(run_dir: Path, *, model: bool = True) -> LoadedRun:
    """Load a complete run folder (checks its format version); raises RunFolderError or OSError.
    ``model=False``: everything but the model (``LoadedRun.model`` None), to check settings against the
    run where the model is loaded elsewhere (a Ray cluster's actors)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    cfg = RunConfig.load(run_dir / "config.json")
    species = pd.read_csv(run_dir / "species.csv", keep_default_na=False)
    thr_path = run_dir / "thresholds.json"
    thresholds = json.loads(thr_path.read_text()) if thr_path.exists() else {}
    kind = kind_for(kind_name(manifest, cfg.to_dict()))
    return LoadedRun(run_dir, manifest, cfg, species, thresholds,
                     _load_model_quietly(kind, run_dir) if model else None)


def _load_model_quietly(kind: ModelKind, run_dir: Path):
    """``kind.load_model(run_dir)`` without the start-up chatter TensorFlow writes to stderr when a
    kind's model needs it (the GPU probe included).  Kinds that serve without Keras (BirdNET's) do
    not import it, so callers need not import TensorFlow up front."""
    from birdcore.io.native_stderr import quiet_native_stderr

    with quiet_native_stderr():
        model = kind.load_model(run_dir)
        if "tensorflow" in sys.modules:
            sys.modules["tensorflow"].config.list_physical_devices("GPU")
    return model


def birdnet_run() -> LoadedRun:
    """BirdNET V2.4 zero-shot over all its 6,522 classes, as a ``LoadedRun`` for classifying clips.

    Species codes are BirdNET's scientific names (its label file has no eBird codes); the
    decision threshold is BirdNET's customary 0.5 confidence for every species.
    """
    from birdcore.models.birdnet import runtime as bn

    species = bn.species_table()
    cfg = RunConfig()
    cfg.model.kind = "birdnet_zero_shot"
    kind_for(cfg.model.kind).configure(cfg)
    manifest = {"model_kind": cfg.model.kind, "name": "BirdNET V2.4", "license": bn.LICENSE_NOTE,
                "synthetic": False, "global_birdnet": True}
    return LoadedRun(path=Path("."), manifest=manifest, config=cfg, species=species,
                     thresholds={"global": {"threshold": 0.5}, "species": {}}, model=None,
                     birdnet_columns=list(range(len(species))))


def run_species(ref: str | Path) -> pd.DataFrame:
    """The species table of a run folder (``species.csv``) or of ``"birdnet"``, without loading a model."""
    if str(ref) == BIRDNET_REF:
        from birdcore.models.birdnet import runtime as bn

        return bn.species_table()
    read_manifest(Path(ref))
    return pd.read_csv(Path(ref) / "species.csv", keep_default_na=False)


def load_run_ref(ref: str | Path, *, model: bool = True) -> LoadedRun:
    """A run folder, or ``"birdnet"`` for BirdNET V2.4 over all its species (``birdnet_run``);
    ``model=False``: without its model (``load_run``)."""
    return birdnet_run() if str(ref) == BIRDNET_REF else load_run(Path(ref), model=model)
