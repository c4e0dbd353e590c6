"""Training a run end to end: data → cache → split → (tuning) → training → test → export.

``train_run`` is the plain function behind ``train_job.py``.  Validation data
alone drives tuning, early stopping and checkpoint choice; the test split is
scored once, at the end, with the best checkpoint.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pandas as pd

from birdcore.features.augment import WaveAugmenter
from birdcore.data.cache import DecodeCache, default_cache_dir
from birdcore.config import RunConfig
from birdcore.data.metadata import read_metadata, species_table
from birdcore.evaluation.scoring import score_arrays, score_recordings, write_evaluation, format_summary
from birdcore.models.birdnet_head.head import EmbeddingBatches, prepare_birdnet_inputs, scorer_for
from birdcore.runs.loading import MODEL_FILE, EXPORT_DIR, export_savedmodel, load_keras, save_keras, savedmodel_supported
from birdcore.models.keras_audio.model import build_model, compile_model, configure_precision
from birdcore.data.batches import TrainingBatches, make_targets
from birdcore.runs.progress import duration, eta_seconds
from birdcore.runs.folder import RunBuilder, atomic_write_json, atomic_write_text, library_versions
from birdcore.data.split import split_recordings, split_summary
from birdcore.evaluation import metrics as M

log = logging.getLogger("birdcore")

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "train_state.json"


@dataclass
class Dataset:
    """Usable recordings of a run, with labels in the model's species order."""

    df: pd.DataFrame  # read_metadata rows that decoded, plus column "split"
    species: pd.DataFrame  # ebird_code, common_name, sci_name
    cache: DecodeCache
    item: Callable[[int], np.ndarray] | None = None  # model input of recording i, if not its waveform
    train_item: Callable[[int], np.ndarray] | None = None  # training input of recording i, if not ``load(i)``

    @property
    def codes(self) -> list[str]:
        return self.species["ebird_code"].tolist()

    def load(self, i: int) -> np.ndarray:
        """Recording i as the model consumes it: cached waveform, or BirdNET embeddings."""
        if self.item is not None:
            return self.item(i)
        return self.cache.load(self.df["path"].iat[i])

    def load_train(self, i: int) -> np.ndarray:
        """Recording i as training batches draw from it (``train_item``, else ``load``)."""
        return self.train_item(i) if self.train_item is not None else self.load(i)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.df["split"].to_numpy() == split)

    def labels(self) -> tuple[np.ndarray, list[list[int]]]:
        index = {c: i for i, c in enumerate(self.codes)}
        primary = np.array([index[p] for p in self.df["primary"]])
        secondary = [[index[s] for s in sec if s in index and s != p]
                     for sec, p in zip(self.df["secondary"], self.df["primary"])]
        return primary, secondary


def prepare_data(run: RunBuilder, cfg: RunConfig, *, data_dir: Path, cache_dir: Path | None,
                 workers: int | None) -> Dataset:
    """Read metadata, fill the decode cache, split (or reuse the run's split), write the data report."""
    meta = read_metadata(Path(data_dir))
    log.info("dataset %s: %d recordings of %d species", data_dir, len(meta), meta["primary"].nunique())
    cache = DecodeCache(Path(cache_dir) if cache_dir else default_cache_dir(), sample_rate=cfg.audio.sample_rate,
                        max_seconds=cfg.audio.max_decode_seconds)
    t0 = time.perf_counter()
    report = cache.build(meta["path"].tolist(), workers=workers, progress=True,
                         durations=dict(zip(meta["path"].astype(str), meta["duration"])))
    log.info("decode cache: %d decoded, %d reused, %d failed in %.1f s (%.2f h of audio)", report.n_decoded,
             report.n_reused, len(report.failed), time.perf_counter() - t0, report.audio_seconds / 3600)
    failed = [{"recording_id": r, "path": p, "reason": report.failed[p]}
              for r, p in zip(meta["recording_id"], meta["path"]) if p in report.failed]
    for item in failed[:20]:
        log.warning("skipped %s", item["reason"] if item["path"] in item["reason"] else f"{item['path']}: {item['reason']}")
    if len(failed) > 20:
        log.warning("... and %d more unreadable recordings (see data_report.json)", len(failed) - 20)
    df = meta[meta["path"].isin(set(report.ok))].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"{data_dir}: no recording could be decoded")
    species = species_table(df)
    split_path = run.file("split.csv")
    if split_path.exists():  # resuming: the split is part of the run
        saved = pd.read_csv(split_path, keep_default_na=False).set_index("recording_id")["split"]
        df["split"] = df["recording_id"].map(saved).fillna("unused")
    else:
        s = cfg.split
        df["split"] = split_recordings(df, method=s.method, val_fraction=s.val_fraction,
                                       test_fraction=s.test_fraction, seed=s.seed).to_numpy()
        atomic_write_text(split_path, df[["recording_id", "split", "primary"]].to_csv(index=False))
    data_report = {
        "data_dir": str(Path(data_dir).resolve()), "synthetic": cfg.synthetic,
        "n_metadata_rows": int(len(meta)), "n_usable": int(len(df)), "n_failed": len(failed),
        "failed": failed, "n_species": int(len(species)),
        "recordings_per_species": df["primary"].value_counts().sort_index().to_dict(),
        "split": split_summary(df["split"], df), "cache": report.to_dict(),
    }
    atomic_write_json(run.file("data_report.json"), data_report)
    atomic_write_text(run.file("species.csv"), species.rename_axis("index").reset_index().to_csv(index=False))
    return Dataset(df, species, cache)


class ValidationScorer(keras.callbacks.Callback):
    """Adds ``val_top1`` and ``val_loss`` (recording level, whole recordings, no augmentation) to the logs."""

    def __init__(self, data: Dataset, rows: np.ndarray, targets: np.ndarray, primary: np.ndarray,
                 *, cfg: RunConfig, batch_segments: int):
        super().__init__()
        self.data, self.rows, self.targets, self.primary = data, rows, targets, primary
        self.cfg, self.batch_segments = cfg, batch_segments
        self._cached = None

    def _scorer(self):
        """One traced scorer per model (keras-tuner builds a new model per trial)."""
        if self._cached is None or self._cached[0] != id(self.model):
            self._cached = (id(self.model), scorer_for(self.model, self.cfg, batch_segments=self.batch_segments))
        return self._cached[1]

    def __deepcopy__(self, memo):  # keras-tuner copies callbacks per trial; the data need not be copied
        return ValidationScorer(self.data, self.rows, self.targets, self.primary, cfg=self.cfg,
                                batch_segments=self.batch_segments)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or len(self.rows) == 0:
            return
        scores, _ = score_recordings(self.model, self.data.load, self.rows, scorer=self._scorer())
        p = np.clip(scores, 1e-7, 1 - 1e-7)
        y = self.targets[self.rows]
        logs["val_loss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        logs["val_top1"] = M.top_k_accuracy(scores, self.primary[self.rows], 1)


class RunKeeper(keras.callbacks.Callback):
    """Per epoch: last checkpoint (with optimizer state) and train state for ``--resume``,
    best checkpoint by ``val_top1`` (ties: lower ``val_loss``), history.csv, early stopping, and a log
    line with the run's ETA."""

    def __init__(self, run: RunBuilder, *, epochs: int, patience: int, state: dict):
        super().__init__()
        self.run, self.epochs, self.patience = run, epochs, patience
        self.state = {"epoch": -1, "best": -math.inf, "best_epoch": -1, "wait": 0, **state}
        self.ckpt = run.file(CHECKPOINT_DIR)
        self.ckpt.mkdir(exist_ok=True)
        self.epoch_seconds: list[float] = []
        self._last_end = time.perf_counter()

    def on_train_begin(self, logs=None):
        self._last_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        val = logs.get("val_top1", -logs.get("loss", 0.0))
        loss = logs.get("val_loss", math.inf)
        st = self.state
        # A validation set of a few dozen recordings ties on top-1 often; a tie goes to the lower
        # validation loss (otherwise the earliest epoch of a plateau would always be kept).
        if val > st["best"] or (val == st["best"] and loss < st.get("best_loss", math.inf)):
            st.update(best=float(val), best_loss=float(loss), best_epoch=epoch, wait=0)
            save_keras(self.model, self.ckpt / "best.keras")
        else:
            st["wait"] += 1
        st["epoch"] = epoch
        save_keras(self.model, self.ckpt / "last.keras")
        # The epoch's whole wall time: training, validation scoring and checkpoints (on a GPU the
        # steps can be under half of it), so that the ETA holds.
        now = time.perf_counter()
        seconds, self._last_end = now - self._last_end, now
        self.epoch_seconds.append(seconds)
        self._append_history(epoch, logs, seconds)
        atomic_write_json(self.run.file(STATE_FILE), st)  # last: a kill before this redoes the epoch
        eta = eta_seconds(self.epoch_seconds, self.epochs - epoch - 1)
        log.info("epoch %d/%d  loss %.4f  val_top1 %.4f  val_loss %.4f  best %.4f (epoch %d)  %.0f s  ETA %s",
                 epoch + 1, self.epochs, logs.get("loss", float("nan")), logs.get("val_top1", float("nan")),
                 logs.get("val_loss", float("nan")), st["best"], st["best_epoch"] + 1, seconds, duration(eta))
        if st["wait"] >= self.patience:
            log.info("early stopping: no validation improvement for %d epochs", st["wait"])
            self.model.stop_training = True

    def _append_history(self, epoch: int, logs: dict, seconds: float) -> None:
        path = self.run.file("history.csv")
        row = {"epoch": epoch + 1, "loss": logs.get("loss"), "val_top1": logs.get("val_top1"),
               "val_loss": logs.get("val_loss"), "seconds": round(seconds, 3)}
        rows = []
        if path.exists():  # drop rows of epochs being redone after a resume
            rows = [r for r in csv.DictReader(path.open()) if int(r["epoch"]) <= epoch]
        rows.append(row)
        lines = [",".join(row)] + [",".join("" if r[k] is None else str(r[k]) for k in row) for r in rows]
        atomic_write_text(path, "\n".join(lines) + "\n")


def is_tuning_worker() -> bool:
    """True in a keras-tuner distributed worker (KERASTUNER_TUNER_ID set to anything but "chief")."""
    return os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief"


class _NoStrategy:
    """Stands in for a tf.distribute strategy under other Keras backends: one device, plain scope."""

    def scope(self):
        return contextlib.nullcontext()


def distribution_strategy():
    """MirroredStrategy over all local GPUs when there are several (multi-node: set TF_CONFIG
    and use MultiWorkerMirroredStrategy — see README); the default strategy otherwise.  Under a
    non-TensorFlow Keras backend (JAX, say), an object whose ``scope()`` does nothing."""
    if keras.backend.backend() != "tensorflow":
        return _NoStrategy()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        log.info("training on %d GPUs with MirroredStrategy", len(gpus))
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def make_batches(cfg: RunConfig, data: Dataset, targets: np.ndarray, primary: np.ndarray, *,
                 noise_bank: list[np.ndarray] | None):
    """Training batches: waveform crops for audio backbones, embedding crops for BirdNET."""
    rows = data.rows("train")
    if cfg.model.backbone == "birdnet":
        return EmbeddingBatches(load=lambda i: data.load_train(int(rows[i])), targets=targets[rows],
                                windows=max(1, math.ceil(cfg.train.train_seconds / cfg.audio.segment_seconds)),
                                batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                                steps_per_epoch=cfg.train.steps_per_epoch,
                                interleaved=2 if data.train_item is not None else 1)
    augmenter = WaveAugmenter(cfg.augment, cfg.audio.sample_rate)
    return TrainingBatches(load=lambda i: data.load(int(rows[i])), targets=targets[rows], species=primary[rows],
                           crop_samples=int(cfg.train.train_seconds * cfg.audio.sample_rate),
                           batch_size=cfg.train.batch_size, augmenter=augmenter, seed=cfg.train.seed,
                           noise_bank=noise_bank, steps_per_epoch=cfg.train.steps_per_epoch)


def load_noise_bank(cfg: RunConfig) -> list[np.ndarray] | None:
    folder = cfg.augment.background_noise_dir
    if not (cfg.augment.background_noise and folder):
        return None
    from birdcore.io.audio import AudioError, decode_audio, is_audio_path

    bank = []
    for path in sorted(Path(folder).rglob("*")):
        if is_audio_path(path):
            try:
                bank.append(decode_audio(path, sample_rate=cfg.audio.sample_rate, max_seconds=600))
            except AudioError as exc:
                log.warning("noise file skipped: %s", exc)
    log.info("background noise bank: %d recordings from %s", len(bank), folder)
    return bank or None


def train_run(*, data_dir: Path, out_dir: Path, name: str, cfg: RunConfig, resume: bool = False,
              cache_dir: Path | None = None, workers: int | None = None, batch_segments: int = 32,
              extra_callbacks: list | None = None) -> Path:
    """Train, evaluate and export one run; returns the complete run folder.

    ``extra_callbacks`` are Keras callbacks added after the run's own (monitoring hooks).
    """
    keras.utils.set_random_seed(cfg.train.seed)
    run = RunBuilder.open(Path(out_dir), name, resume=resume)
    try:
        return _train(run, data_dir=data_dir, cfg=cfg, resume=resume, cache_dir=cache_dir, workers=workers,
                      batch_segments=batch_segments, extra_callbacks=extra_callbacks or [])
    finally:
        run.release()


def _train(run: RunBuilder, *, data_dir, cfg, resume, cache_dir, workers, batch_segments, extra_callbacks) -> Path:
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    state_path = run.file(STATE_FILE)
    config_path = run.file("config.json")
    if resume and config_path.exists():
        saved = json.loads(config_path.read_text())
        cfg = RunConfig.from_dict(saved["config"])
        started = saved.get("started", started)  # run.json's "created" is the run's first start
        log.info("resuming %s with its saved configuration", run.path)
    policy = configure_precision(cfg.train.mixed_precision)
    birdnet = cfg.model.backbone == "birdnet"
    if birdnet and (cfg.audio.sample_rate != 48000 or cfg.audio.segment_seconds != 3.0):
        raise ValueError("the birdnet backbone needs 48 kHz audio and 3 s segments (birdnet_backend.birdnet_config)")
    data = prepare_data(run, cfg, data_dir=data_dir, cache_dir=cache_dir, workers=workers)
    if birdnet:
        prepare_birdnet_inputs(run, cfg, data, cache_root=Path(cache_dir) if cache_dir else default_cache_dir())
    n_species = len(data.codes)
    primary, secondary = data.labels()
    targets = make_targets(primary, secondary, n_species, secondary_weight=cfg.train.secondary_weight,
                           label_smoothing=cfg.train.label_smoothing)
    noise_bank = None if birdnet else load_noise_bank(cfg)
    val_rows = data.rows("val")
    counts = {s: int(len(data.rows(s))) for s in ("train", "val", "test")}
    log.info("split: %s; %d species; precision policy %s", counts, n_species, policy)
    if counts["train"] == 0:
        raise ValueError("the training split is empty: the dataset is too small")

    tuning = None
    if cfg.tune.enabled and not (resume and state_path.exists()):
        from birdcore.training.tune import tune_hyperparameters

        tuning = tune_hyperparameters(run, cfg, data, targets, primary, noise_bank=noise_bank,
                                      batch_segments=batch_segments)
        cfg = tuning.pop("config")
        if is_tuning_worker():
            log.info("tuning worker %s finished; the chief trains the final model", os.environ["KERASTUNER_TUNER_ID"])
            return run.path
    atomic_write_json(config_path, {"config": cfg.to_dict(), "versions": library_versions(),
                                    "data_dir": str(Path(data_dir).resolve()), "started": started})

    strategy = distribution_strategy()
    initial_epoch, state = 0, {}
    last = run.file(CHECKPOINT_DIR) / "last.keras"
    with strategy.scope():
        if resume and state_path.exists() and last.exists():
            state = json.loads(state_path.read_text())
            model = load_keras(last, compile=True)
            initial_epoch = int(state["epoch"]) + 1
            log.info("resuming at epoch %d of %d", initial_epoch + 1, cfg.train.epochs)
        else:
            model = build_model(cfg, n_species)
            compile_model(model, cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    batches = make_batches(cfg, data, targets, primary, noise_bank=noise_bank)
    batches.set_epoch(initial_epoch)
    keeper = RunKeeper(run, epochs=cfg.train.epochs, patience=cfg.train.early_stopping_patience, state=state)
    callbacks = [ValidationScorer(data, val_rows, targets, primary, cfg=cfg, batch_segments=batch_segments), keeper,
                 *extra_callbacks]
    stopped_early = state.get("wait", 0) >= cfg.train.early_stopping_patience
    if initial_epoch < cfg.train.epochs and not stopped_early:
        model.fit(batches, epochs=cfg.train.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                  verbose=1 if sys.stderr.isatty() else 0)

    best_path = run.file(CHECKPOINT_DIR) / "best.keras"
    best = load_keras(best_path if best_path.exists() else last)
    log.info("scoring the test split once with the best checkpoint (epoch %d)", keeper.state["best_epoch"] + 1)
    seg_s = cfg.audio.segment_seconds
    split_arrays = {}
    for split in ("val", "test"):
        rows = data.rows(split)
        scores, segs = score_recordings(best, data.load, rows, progress=split == "test",
                                        scorer=scorer_for(best, cfg, batch_segments=batch_segments))
        split_arrays[split] = score_arrays(data.df.iloc[rows], data.codes, scores, segs, segment_seconds=seg_s)
    metrics = write_evaluation(run.path, split_arrays["test"], split_arrays["val"],
                               target_fpr=cfg.eval.target_fpr)
    log.info("test: %s", format_summary(metrics))
    if tuning is not None:
        atomic_write_json(run.file("tuning.json"), tuning)
    save_keras(best, run.file(MODEL_FILE))
    exported = not birdnet and savedmodel_supported()
    if exported:  # a birdnet run's model is the head; its audio frontend is BirdNET itself
        export_savedmodel(best, run.file(EXPORT_DIR))
    elif not birdnet:
        log.warning("export/ (TF SavedModel) skipped: it needs the TensorFlow backend, this is %s; "
                    "model.keras serves the run", keras.backend.backend())
    history = pd.read_csv(run.file("history.csv")) if run.file("history.csv").exists() else pd.DataFrame()
    manifest = {
        "created": started, "synthetic": cfg.synthetic, "backbone": cfg.model.backbone,
        "weights": cfg.model.weights, "pooling": cfg.model.pooling, "n_species": n_species,
        "sample_rate": cfg.audio.sample_rate, "segment_seconds": seg_s, "split": counts,
        "epochs_trained": int(len(history)), "best_epoch": int(keeper.state["best_epoch"]) + 1,
        "test": {k: metrics[k] for k in ("top1", "top5", "macro_auc", "macro_ap", "n_recordings")},
        "tuned": tuning is not None, "model_kind": "birdnet_head" if birdnet else "keras_audio",
        "savedmodel": exported, "keras_backend": keras.backend.backend(),
    }
    if birdnet:
        from birdcore.models.birdnet.runtime import LICENSE_NOTE

        manifest["license"] = LICENSE_NOTE
    _drop_checkpoints(run)
    final = run.finish(manifest)
    log.info("run complete: %s", final)
    return final


def _drop_checkpoints(run: RunBuilder) -> None:
    """The resume state is no longer needed once the run is complete (the best model is model.keras)."""
    import shutil

    shutil.rmtree(run.file(CHECKPOINT_DIR), ignore_errors=True)
    run.file(STATE_FILE).unlink(missing_ok=True)
