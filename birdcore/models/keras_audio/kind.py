"""The ``keras_audio`` kind: a Keras waveform model (log-mel frontend → InceptionV3 or a small CNN).

Keras (and with it TensorFlow) is imported by the methods that need it, not with this module, so
describing a run (the dashboard's run overview and comparison) costs no TensorFlow import.
"""
from __future__ import annotations

import logging
from pathlib import Path

from birdcore.models.base import ModelKind
from birdcore.models.pooling import POOLING_MODES
from birdcore.models.saving import MODEL_FILE, load_keras

log = logging.getLogger("birdcore")
BACKBONES = ("inception_v3", "small_cnn")


class KerasAudio(ModelKind):
    name = "keras_audio"
    description = "Keras waveform model"
    uses_noise_bank = True

    def check_config(self, cfg) -> None:
        if cfg.train.review_db:
            raise ValueError("reviewed clips train the head of --backbone birdnet runs; this is a waveform model")
        if cfg.model.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {cfg.model.backbone!r} for a Keras waveform model "
                             f"({' | '.join(BACKBONES)}); BirdNET runs are model.kind birdnet_head or birdnet_zero_shot")
        if cfg.model.pooling not in POOLING_MODES:
            raise ValueError(f"unknown pooling {cfg.model.pooling!r} ({' | '.join(POOLING_MODES)})")

    def build(self, cfg, n_species: int, *, inputs=None):
        from birdcore.models.keras_audio.model import build_model

        return build_model(cfg, n_species)

    def training_batches(self, cfg, data, targets, primary, *, noise_bank=None, inputs=None):
        from birdcore.features.augment import WaveAugmenter
        from birdcore.models.keras_audio.batches import TrainingBatches

        rows = data.rows("train")
        return TrainingBatches(load=lambda i: data.load_train(int(rows[i])), targets=targets[rows],
                               species=primary[rows], crop_samples=int(cfg.train.train_seconds * cfg.audio.sample_rate),
                               batch_size=cfg.train.batch_size, augmenter=WaveAugmenter(cfg.augment, cfg.audio.sample_rate),
                               seed=cfg.train.seed, noise_bank=noise_bank, steps_per_epoch=cfg.train.steps_per_epoch)

    def data_scorer(self, model, cfg, inputs, *, batch_segments=32):
        from birdcore.models.keras_audio.scorer import Scorer

        return Scorer(model, batch_segments=batch_segments)

    def export(self, model, run_dir) -> bool:
        import keras

        from birdcore.models.keras_audio.export import EXPORT_DIR, export_savedmodel, savedmodel_supported

        if not savedmodel_supported():
            log.warning("export/ (TF SavedModel) skipped: it needs the TensorFlow backend, this is %s; "
                        "model.keras serves the run", keras.backend.backend())
            return False
        export_savedmodel(model, Path(run_dir) / EXPORT_DIR)
        return True

    def load_model(self, run_dir):
        return load_keras(Path(run_dir) / MODEL_FILE)

    def run_scorer(self, run, *, batch_segments=32, threads=None, overlap=0.0):
        from birdcore.models.keras_audio.scorer import Scorer

        return Scorer(run.model, batch_segments=batch_segments)

    def frontend(self, run):
        from birdcore.models.keras_audio.model import SEGMENT_MODEL_NAME

        return run.model.get_layer(SEGMENT_MODEL_NAME).get_layer("logmel")

    def describe(self, manifest: dict) -> str:
        return f"{manifest.get('backbone', '?')} (weights {manifest.get('weights', '?')})"
