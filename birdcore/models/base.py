"""What every kind of model provides, the shared result types, and the registry of kinds.

A *kind* is one way a run turns audio into species scores.  Five exist:

- ``keras_audio``: a Keras waveform model (log-mel frontend → InceptionV3 or a small CNN), trained;
- ``birdnet_head``: a trained head over frozen BirdNET V2.4 embeddings of 3 s windows;
- ``birdnet_zero_shot``: BirdNET V2.4's own scores, restricted to the run's species; no training;
- ``birdnet_finetune``: BirdNET V2.4's last blocks trained together with the head (``--fine-tune N``);
- ``birdnet_append``: BirdNET V2.4's own species and scores, plus the training species it lacks (``--append``).

The kind's name is the same in ``config.json`` (``model.kind``) and in ``run.json``
(``model_kind``).  Training, tuning, evaluation, loading, classify, predict and the dashboard
ask a run's kind (``kind_for(name)``) what to do and never compare kind names themselves.
Kinds are imported lazily by name (``KINDS``), as perch-hoplite's model zoo does, so a
BirdNET-only command never imports TensorFlow, and this module imports nothing else of the
project.

Array shapes: C species; S segments (windows) of a recording; waveforms are float32
``(n_samples,)`` at the run's sample rate (Hz).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator, Protocol

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logits → probabilities, elementwise (clipped so extreme logits do not overflow)."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


@dataclass
class Scores:
    """One recording's scores: ``segments`` (S, C) and ``recording`` (C,), probabilities in [0, 1]."""

    segments: np.ndarray
    recording: np.ndarray


Progress = Callable[[float], None]  # called with the seconds of audio consumed so far


class RunScorer(Protocol):
    """Scores waveforms at the run's rate with a run's model; one per caller (it may hold a trace)."""

    def score(self, wave: np.ndarray) -> Scores: ...

    def score_many(self, waves: Iterable[np.ndarray]) -> Iterator[Scores]:
        """``Scores`` of each waveform, in order (batched across recordings where the kind can)."""

    def score_stream(self, chunks: Iterable[np.ndarray], *, progress: Progress | None = None) -> Scores:
        """Scores of one recording given as consecutive chunks, equal to ``score(concatenate(chunks))``,
        in bounded memory; ``progress`` receives the seconds consumed so far."""

    def with_overlap(self, overlap: float) -> "RunScorer":
        """This scorer with windows overlapping by ``overlap`` seconds (kinds with
        ``supports_overlap``); shares the loaded model, so it is cheap."""


class ModelKind:
    """The interface of a kind of model.  Subclasses set ``name`` and implement the methods.

    ``cfg`` is a ``birdcore.config.RunConfig``; ``data`` a ``birdcore.data.dataset.Dataset``;
    ``run`` (at training time) a ``birdcore.runs.folder.RunBuilder`` and (when serving) a
    ``birdcore.runs.loading.LoadedRun``.
    """

    name: ClassVar[str]
    description: ClassVar[str]  # a few words for people ("BirdNET V2.4 zero-shot")
    trains: ClassVar[bool] = True  # False: the run has no trained model (model.keras) and learnt from no recording
    trained_by_loop: ClassVar[bool] = True  # False: ``prepare_inputs`` fits the model itself (no Keras training
    # loop, tuning or devices; no model.keras)
    supports_overlap: ClassVar[bool] = False  # windows can overlap (``with_overlap``)
    uses_noise_bank: ClassVar[bool] = False  # training mixes in background-noise recordings
    mixed_precision: ClassVar[bool] = True  # train.mixed_precision "auto" may compute in float16 on a GPU

    @property
    def uses_training_loop(self) -> bool:
        """Trained by the Keras training loop (and so by tuning, on the training devices)."""
        return self.trains and self.trained_by_loop

    # ---- configuration
    def configure(self, cfg, *, given: set[str] = frozenset()) -> None:
        """Set what this kind requires or defaults to in ``cfg`` (in place); ``given`` names the
        settings the user chose explicitly ("learning_rate", "pooling"), which defaults keep."""

    def check_config(self, cfg) -> None:
        """Raise ValueError when ``cfg`` cannot work for this kind."""

    # ---- training
    def prepare_inputs(self, run, cfg, data, *, cache_root) -> dict:
        """Make what the model consumes from the decoded data (embeddings, say), write the kind's
        own run files, and return the inputs context passed to ``data_scorer``; default: nothing."""
        return {}

    def build(self, cfg, n_species: int, *, inputs: dict | None = None):
        """The untrained Keras model (outputs ``recording`` (B, C) and ``segments`` (B, S, C));
        ``inputs`` is what ``prepare_inputs`` returned (None where nothing was prepared)."""
        raise NotImplementedError(f"{self.name} has no trainable model")

    def optimizer(self, cfg):
        """The Keras optimizer to train with, or None for the default (``training.devices.compile_model``:
        Adam at ``cfg.train.learning_rate``)."""
        return None

    def training_batches(self, cfg, data, targets: np.ndarray, primary: np.ndarray, *, noise_bank=None,
                         inputs: dict | None = None):
        """A ``keras.utils.PyDataset`` of training batches drawn from the training split (and the
        extra examples ``prepare_inputs`` put in ``inputs``, for kinds that take them)."""
        raise NotImplementedError(f"{self.name} is not trained")

    def data_scorer(self, model, cfg, inputs: dict, *, batch_segments: int = 32):
        """A scorer whose ``score_many`` takes recordings as ``data.load(i)`` gives them (waveforms,
        or embeddings after ``prepare_inputs``) and yields ``Scores``: validation and test scoring."""
        raise NotImplementedError

    def serving_model(self, model, cfg, *, inputs: dict | None = None):
        """The model saved as the run's ``model.keras``, from the trained one (and ``prepare_inputs``'s
        ``inputs``); default: the same."""
        return model

    def export(self, model, run_dir) -> bool:
        """Write serving artifacts beyond ``model.keras`` (a SavedModel, say); True when written."""
        return False

    def manifest(self, cfg, inputs: dict) -> dict:
        """The kind's own ``run.json`` entries (licence, species it lacks...)."""
        return {}

    # ---- serving
    def load_model(self, run_dir):
        """The run's Keras model, or None for a kind without one."""
        return None

    def run_scorer(self, run, *, batch_segments: int = 32, threads: int | None = None,
                   overlap: float = 0.0) -> RunScorer:
        """A scorer of waveforms at ``run.sample_rate`` with a loaded run."""
        raise NotImplementedError

    def segment_hop_seconds(self, cfg, overlap: float = 0.0) -> float:
        """Seconds between the starts of consecutive segments scored with ``overlap``; ValueError
        for an overlap this kind cannot use."""
        if overlap:
            raise ValueError(f"overlapping windows are for BirdNET runs (3 s windows); this run's model "
                             f"({self.description}) cuts its own fixed segments")
        return float(cfg.audio.segment_seconds)

    def frontend(self, run):
        """The model's own spectrogram layer (waveform (B, n) → (B, mels, frames, channels)) for
        showing what the model sees, or None when the model has none."""
        return None

    def describe(self, manifest: dict) -> str:
        """The model, for the run overview: e.g. "inception_v3 (weights none)"."""
        return self.description


# name → "module:Class"; imported on first use
KINDS: dict[str, str] = {
    "keras_audio": "birdcore.models.keras_audio.kind:KerasAudio",
    "birdnet_head": "birdcore.models.birdnet_head.kind:BirdNETHead",
    "birdnet_zero_shot": "birdcore.models.birdnet_zero_shot.kind:BirdNETZeroShot",
    "birdnet_finetune": "birdcore.models.birdnet_finetune.kind:BirdNETFineTune",
    "birdnet_append": "birdcore.models.birdnet_append.kind:BirdNETAppend",
}
DEFAULT_KIND = "keras_audio"
_loaded: dict[str, ModelKind] = {}


class UnknownKind(ValueError):
    """A kind name that is not in ``KINDS``."""


def kind_for(name: str) -> ModelKind:
    """The kind called ``name`` (imported on first use)."""
    if name not in KINDS:
        raise UnknownKind(f"unknown kind of model {name!r} (one of {', '.join(KINDS)})")
    if name not in _loaded:
        module, _, cls = KINDS[name].partition(":")
        _loaded[name] = getattr(importlib.import_module(module), cls)()
    return _loaded[name]


def kind_name(manifest: dict[str, Any] | None = None, config: dict[str, Any] | None = None) -> str:
    """The kind of a run from its ``run.json`` and/or its config's ``model`` section; runs written
    before kinds had one name (format 1 without ``model_kind``) are recognised by their backbone."""
    if manifest and manifest.get("model_kind"):
        return str(manifest["model_kind"])
    model = (config or {}).get("model", config or {})
    if model.get("kind"):
        return str(model["kind"])
    return legacy_kind(model.get("backbone") or (manifest or {}).get("backbone"))


def legacy_kind(backbone: str | None) -> str:
    """The kind of a config written before ``model.kind`` existed, from its backbone."""
    return {"birdnet": "birdnet_head", "birdnet_zero_shot": "birdnet_zero_shot"}.get(backbone or "", DEFAULT_KIND)
