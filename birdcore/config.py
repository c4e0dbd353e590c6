"""Run configuration: plain dataclasses, saved as JSON inside every run folder.

Every setting that changes what a run produces lives here, so a run folder's
``config.json`` fully describes how it was made.  Units are in the field names
or the comments: seconds, Hz, fractions of an axis.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from birdcore.models.base import legacy_kind


@dataclass
class AudioConfig:
    """How recordings are decoded and cut into segments."""

    sample_rate: int = 22050  # Hz, the model rate; every file is resampled to it
    segment_seconds: float = 5.0  # length of one scored segment (one CNN image)
    max_decode_seconds: float | None = None  # None: decode whole recordings

    @property
    def segment_samples(self) -> int:
        return int(round(self.sample_rate * self.segment_seconds))


@dataclass
class FeatureConfig:
    """Log-mel frontend computed inside the model (``birdcore.features``).

    The three image channels are mel spectrograms of the same audio taken with
    three window lengths (multi-resolution, as in the original), sharing one hop.
    """

    n_mels: int = 128
    fft_length: int = 2048  # samples
    window_lengths: tuple[int, int, int] = (2048, 1024, 512)  # samples, one per channel
    hop_length: int = 430  # samples (~19.5 ms at 22,050 Hz: 257 frames per 5 s)
    fmin: float = 150.0  # Hz
    fmax: float | None = None  # Hz; None means Nyquist
    top_db: float = 80.0  # dynamic range kept below each example's peak


@dataclass
class AugmentConfig:
    """Training-only augmentations; evaluation and serving never apply them.

    Mask widths are fractions of the spectrogram axis (the original's tuned
    150 of 299 bins is 0.5).  ``db_floor_max`` is the largest raise of the
    floor of the [0, 1]-normalized spectrogram (the original's "dB reduction").
    """

    start_removal: bool = True
    start_removal_max_seconds: float = 2.5
    time_mask: bool = True
    time_mask_max: float = 0.5
    freq_mask: bool = True
    freq_mask_max: float = 0.5
    db_floor: bool = True
    db_floor_max: float = 0.5
    same_species_mix: bool = True
    same_species_mix_prob: float = 0.3
    same_species_mix_gain: tuple[float, float] = (0.2, 0.8)  # linear gain of the mixed-in clip
    background_noise: bool = True
    background_noise_prob: float = 0.5
    background_noise_snr_db: tuple[float, float] = (3.0, 30.0)
    background_noise_dir: str | None = None  # folder of noise recordings; None: synthesised coloured noise
    # backbone "birdnet": a training crop is cut, at random, from the usual 3 s windows or from the
    # windows shifted by half a window (1.5 s); validation, test and serving use the usual windows
    birdnet_shifted_windows: bool = False


@dataclass
class ModelConfig:
    # the kind of model (``birdcore.models.base.KINDS``): "keras_audio" | "birdnet_head" | "birdnet_zero_shot"
    # | "birdnet_finetune" | "birdnet_append"
    kind: str = "keras_audio"
    backbone: str = "inception_v3"  # keras_audio: "inception_v3" | "small_cnn" (demo and tests); BirdNET kinds: "birdnet"
    weights: str = "imagenet"  # "imagenet" | "none" | path to a weights file
    pooling: str = "max"  # "max" (original) | "attention" | "mean"
    dropout: float = 0.2
    small_cnn_width: int = 32  # base filters of the small backbone
    # BatchNorm moving-average momentum for the whole backbone.  Keras' 0.99 leaves the inference
    # statistics stale on small datasets (few steps per epoch); 0.9 tracks them within ~20 steps.
    bn_momentum: float = 0.9
    # backbone "birdnet": also feed BirdNET's own logits of the dataset's species as a prior
    birdnet_prior: bool = True
    head_units: int = 512  # backbone "birdnet": width of the head's hidden layer
    # backbone "birdnet": a species BirdNET lacks gets, as its prior, the max logit of BirdNET's
    # species of the same genus (e.g. other Amazona parrots), instead of no prior
    birdnet_relatives: bool = False
    # kind "birdnet_finetune" (``--fine-tune N``): BirdNET's last N blocks (of 17) train with the head
    fine_tune: int = 0
    backbone_lr_scale: float = 0.1  # their learning rate, as a fraction of the head's (train.learning_rate)
    # kind "birdnet_append" (``--backbone birdnet --append``): BirdNET's own species (all 6,522, or those of
    # this species list) plus the training species BirdNET lacks, each scored by a linear layer on the
    # window's embedding trained to beat BirdNET's top logit by ``append_margin`` on its own recordings and
    # to stay ``append_margin`` below it on recordings of other species; ``append_l2``: its L2 penalty;
    # ``append_temperature``: training pools a recording's windows by a smooth max at this temperature;
    # ``append_shots``: training recordings per added species (None: all), for few-shot measurements
    species_list: str | None = None
    append_margin: float = 0.5  # chosen on validation (BENCHMARKS.md, "BirdNET with added species")
    append_l2: float = 1e-3
    append_temperature: float = 3.0  # training's smooth max over windows (0: max); chosen on validation
    append_shots: int | None = None


@dataclass
class SplitConfig:
    method: str = "stratified"  # "stratified" | "xc_hundreds" (original: hundreds digit 0 is test)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 1234


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 8  # recordings per batch
    learning_rate: float = 3.74e-4  # the original's tuned value
    train_seconds: float = 30.0  # random crop per recording and epoch (whole file is eligible)
    secondary_weight: float = 0.0  # target for secondary labels (0 disables soft targets)
    label_smoothing: float = 0.0
    weight_decay: float = 0.0  # decoupled weight decay of Adam (AdamW); 0 = plain Adam
    early_stopping_patience: int = 8  # epochs without validation improvement
    seed: int = 1234
    mixed_precision: str = "auto"  # "auto" (float16 on a GPU, for kinds that allow it) | "on" (float16) | "bf16" | "off"
    steps_per_epoch: int | None = None  # None: one pass over the training recordings
    # birdnet_head: a review database (``python -m birdcore.review``) whose verified clips join the
    # training split: yes (or a corrected species) as positives, no as hard negatives
    review_db: str | None = None


@dataclass
class TuneConfig:
    enabled: bool = False
    max_trials: int = 10
    epochs_per_trial: int = 10
    lr_min: float = 1e-5
    lr_max: float = 1e-3
    time_mask_choices: tuple[float, ...] = (0.25, 0.5, 0.97)
    freq_mask_choices: tuple[float, ...] = (0.25, 0.5, 0.97)
    db_floor_choices: tuple[float, ...] = (0.0, 0.5, 0.9)


@dataclass
class EvalConfig:
    target_fpr: float = 0.001  # per-species threshold operating point (0.1%)


@dataclass
class RunConfig:
    audio: AudioConfig = field(default_factory=AudioConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    synthetic: bool = False  # True for runs trained on generated (demo) data

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            sub = _SECTIONS.get(f.name)
            kwargs[f.name] = _section_from_dict(sub, value) if sub else value
        return cls(**kwargs)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    def override(self, assignments: list[str]) -> "RunConfig":
        """Apply ``section.field=value`` settings (e.g. ``model.dropout=0.5``); values are parsed as
        JSON when they can be (numbers, true/false, null, lists) and must match the field's type.
        Raises ValueError naming a bad assignment."""
        for item in assignments:
            key, sep, raw = item.partition("=")
            section_name, _, name = key.strip().partition(".")
            section = getattr(self, section_name, None) if section_name in _SECTIONS else None
            if not sep or section is None or name not in {f.name for f in dataclasses.fields(section)}:
                raise ValueError(f"--set {item!r}: expected SECTION.FIELD=VALUE with SECTION one of "
                                 f"{', '.join(_SECTIONS)} and a field of it")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            current = getattr(section, name)
            if isinstance(current, bool) or isinstance(value, bool):
                ok = isinstance(value, bool) and isinstance(current, bool)
            elif isinstance(current, int) and isinstance(value, (int, float)):
                ok, value = float(value).is_integer(), int(value)
            elif isinstance(current, float) and isinstance(value, (int, float)):
                ok, value = True, float(value)
            elif isinstance(current, tuple) and isinstance(value, list):
                ok, value = True, tuple(value)
            else:
                ok = current is None or value is None or isinstance(value, type(current))
            if not ok:
                raise ValueError(f"--set {item!r}: {key} is {type(current).__name__} ({current!r})")
            setattr(section, name, value)
        return self

    def check(self) -> "RunConfig":
        """Check the ranges of the numeric settings (``_RULES``) before anything is built or read;
        raises ``ConfigValueError`` (a ValueError) naming the first bad field, e.g.
        ``model.dropout=5: must be in [0, 1)``.  Returns the config."""
        for key, (test, reason, optional) in _RULES.items():
            section_name, name = key.split(".")
            value = getattr(getattr(self, section_name), name)
            if value is None and optional:
                continue
            try:
                ok = test(value)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigValueError(key, value, reason)
        s = self.split
        if s.val_fraction + s.test_fraction >= 1:
            raise ConfigValueError("split.test_fraction", s.test_fraction,
                                   f"split.val_fraction + split.test_fraction must be < 1 (val_fraction is "
                                   f"{s.val_fraction:g}): no training recordings would be left")
        f = self.features
        if f.fmax is not None and f.fmax <= f.fmin:
            raise ConfigValueError("features.fmax", f.fmax, f"must be > features.fmin ({f.fmin:g})")
        if self.tune.lr_max < self.tune.lr_min:
            raise ConfigValueError("tune.lr_max", self.tune.lr_max, f"must be ≥ tune.lr_min ({self.tune.lr_min:g})")
        return self

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        """Read a saved config; accepts a run's config.json ({"config": ..., "versions": ...}) too."""
        data = json.loads(Path(path).read_text())
        return cls.from_dict(data.get("config", data))


_SECTIONS = {
    "audio": AudioConfig,
    "features": FeatureConfig,
    "augment": AugmentConfig,
    "model": ModelConfig,
    "split": SplitConfig,
    "train": TrainConfig,
    "tune": TuneConfig,
    "eval": EvalConfig,
}


class ConfigValueError(ValueError):
    """A config field whose value is out of range: ``key`` ("section.field"), ``value`` and ``reason``."""

    def __init__(self, key: str, value: Any, reason: str):
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"{key}={_show(value)}: {reason}")


def _show(value: Any) -> str:
    """A value as it would be written after ``--set section.field=`` (JSON where it can be)."""
    try:
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    except (TypeError, ValueError):
        return repr(value)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _at_least(low: int):
    return lambda v: _integer(v) and v >= low, f"must be a whole number ≥ {low}"


_POSITIVE = (lambda v: _number(v) and v > 0, "must be > 0")
_NON_NEGATIVE = (lambda v: _number(v) and v >= 0, "must be ≥ 0")
_FRACTION = (lambda v: _number(v) and 0 <= v <= 1, "must be in [0, 1]")
_FRACTION_OPEN = (lambda v: _number(v) and 0 <= v < 1, "must be in [0, 1)")
_PROBABILITY_OPEN = (lambda v: _number(v) and 0 < v < 1, "must be in (0, 1)")


def _pair(low_ok):
    return (lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(_number(x) and low_ok(x) for x in v)
            and v[0] <= v[1])


def _fractions(v) -> bool:
    return isinstance(v, (tuple, list)) and len(v) > 0 and all(_number(x) and 0 <= x <= 1 for x in v)


# The range of every numeric setting: "section.field" -> (test, reason, None allowed).  RunConfig.check
# applies them, so that a bad value is refused, naming the field, before any data is read or model built.
_RULES: dict[str, tuple[Any, str, bool]] = {
    "audio.sample_rate": (*_at_least(1), False),
    "audio.segment_seconds": (*_POSITIVE, False),
    "audio.max_decode_seconds": (*_POSITIVE, True),
    "features.n_mels": (*_at_least(1), False),
    "features.fft_length": (*_at_least(1), False),
    "features.window_lengths": (lambda v: isinstance(v, (tuple, list)) and len(v) == 3
                                and all(_integer(x) and x >= 1 for x in v),
                                "must be 3 whole numbers ≥ 1 (samples)", False),
    "features.hop_length": (*_at_least(1), False),
    "features.fmin": (*_NON_NEGATIVE, False),
    "features.fmax": (*_POSITIVE, True),
    "features.top_db": (*_POSITIVE, False),
    "augment.start_removal_max_seconds": (*_NON_NEGATIVE, False),
    "augment.time_mask_max": (*_FRACTION, False),
    "augment.freq_mask_max": (*_FRACTION, False),
    "augment.db_floor_max": (*_FRACTION, False),
    "augment.same_species_mix_prob": (*_FRACTION, False),
    "augment.same_species_mix_gain": (_pair(lambda x: x >= 0), "must be [low, high] with 0 ≤ low ≤ high", False),
    "augment.background_noise_prob": (*_FRACTION, False),
    "augment.background_noise_snr_db": (_pair(lambda x: True), "must be [low, high] in dB with low ≤ high", False),
    "model.dropout": (*_FRACTION_OPEN, False),
    "model.small_cnn_width": (*_at_least(1), False),
    "model.bn_momentum": (*_FRACTION, False),
    "model.head_units": (*_at_least(1), False),
    "model.fine_tune": (*_at_least(0), False),
    "model.backbone_lr_scale": (*_NON_NEGATIVE, False),
    "model.append_margin": (*_NON_NEGATIVE, False),
    "model.append_l2": (*_NON_NEGATIVE, False),
    "model.append_temperature": (*_NON_NEGATIVE, False),
    "model.append_shots": (*_at_least(1), True),
    "split.val_fraction": (*_FRACTION_OPEN, False),
    "split.test_fraction": (*_FRACTION_OPEN, False),
    "split.seed": (*_at_least(0), False),
    "train.epochs": (*_at_least(1), False),
    "train.batch_size": (*_at_least(1), False),
    "train.learning_rate": (*_POSITIVE, False),
    "train.train_seconds": (*_POSITIVE, False),
    "train.secondary_weight": (*_FRACTION, False),
    "train.label_smoothing": (*_FRACTION_OPEN, False),
    "train.weight_decay": (*_NON_NEGATIVE, False),
    "train.early_stopping_patience": (*_at_least(1), False),
    "train.seed": (*_at_least(0), False),
    "train.steps_per_epoch": (*_at_least(1), True),
    "tune.max_trials": (*_at_least(1), False),
    "tune.epochs_per_trial": (*_at_least(1), False),
    "tune.lr_min": (*_POSITIVE, False),
    "tune.lr_max": (*_POSITIVE, False),
    "tune.time_mask_choices": (_fractions, "must be a list of fractions in [0, 1]", False),
    "tune.freq_mask_choices": (_fractions, "must be a list of fractions in [0, 1]", False),
    "tune.db_floor_choices": (_fractions, "must be a list of fractions in [0, 1]", False),
    "eval.target_fpr": (*_PROBABILITY_OPEN, False),
}


def _section_from_dict(cls, data: dict[str, Any]):
    """Build a section dataclass, ignoring unknown keys and restoring tuples."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    if cls is ModelConfig and "kind" not in data:  # written before kinds had one name
        data = {**data, "kind": legacy_kind(data.get("backbone"))}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            continue
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def demo_config() -> RunConfig:
    """A shrunken configuration that trains in minutes on 2 CPU cores."""
    cfg = RunConfig(synthetic=True)
    cfg.audio = AudioConfig(sample_rate=16000, segment_seconds=2.0)
    cfg.features = FeatureConfig(n_mels=48, fft_length=512, window_lengths=(512, 256, 128), hop_length=256,
                                 fmin=100.0)
    cfg.model = ModelConfig(backbone="small_cnn", weights="none", pooling="max", dropout=0.1, small_cnn_width=16)
    cfg.train = TrainConfig(epochs=12, batch_size=8, learning_rate=2e-3, train_seconds=4.0,
                            early_stopping_patience=12)
    cfg.augment = AugmentConfig(start_removal_max_seconds=0.5, time_mask_max=0.2, freq_mask_max=0.2,
                                db_floor_max=0.3, same_species_mix_prob=0.2, background_noise_prob=0.3,
                                background_noise_snr_db=(10.0, 30.0))
    return cfg
