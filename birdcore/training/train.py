"""Training a run end to end: data → cache → split → (tuning) → training → test → export.

``train_run`` is the plain function behind ``train_job.py``, for every kind of model
(``models.base``): the kind prepares its inputs, builds its model and its batches; a kind that
is not trained (BirdNET zero-shot) goes straight to scoring.  Validation data alone drives
tuning, early stopping and checkpoint choice; the test split is scored once, at the end, with
the best checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import keras

from birdcore.config import RunConfig
from birdcore.data.cache import default_cache_dir
from birdcore.data.labels import make_targets
from birdcore.evaluation.scoring import evaluate_splits, format_summary
from birdcore.io.atomic import atomic_write_json
from birdcore.models.base import ModelKind, kind_for
from birdcore.models.saving import MODEL_FILE, load_keras, save_keras
from birdcore.runs.folder import RunBuilder, library_versions, read_manifest
from birdcore.runs.history import HISTORY_FILE, read_history
from birdcore.training.callbacks import CHECKPOINT_DIR, STATE_FILE, RunKeeper, ValidationScorer
from birdcore.training.devices import (TrainingDevices, compile_model, configure_precision, is_tuning_worker,
                                       training_devices)
from birdcore.training.prepare import load_noise_bank, noise_folder, prepare_data

log = logging.getLogger("birdcore")


def train_run(*, data_dir: Path, out_dir: Path, name: str, cfg: RunConfig, resume: bool = False,
              cache_dir: Path | None = None, workers: int | None = None, batch_segments: int = 32,
              extra_callbacks: list | None = None, devices: int | str | None = None) -> Path:
    """Train (for kinds that train), evaluate and export one run; returns the complete run folder.

    ``devices``: how many devices train (a number, or None/"all" for every visible accelerator:
    ``training.devices.training_devices``); ``cfg.train.batch_size`` is the global batch over them.
    A resumed run may use another number of devices than it started with.
    ``extra_callbacks`` are Keras callbacks added after the run's own (monitoring hooks).
    """
    done = Path(out_dir) / name
    if resume and (done / "run.json").is_file():  # the job finished before: nothing to resume
        read_manifest(done)  # a run this software reads, or RunFolderError
        _drop_checkpoints(done)
        log.info("%s is already complete; nothing to resume", done)
        return done
    placement = training_devices(devices)  # DeviceError (one line) before anything is read
    resume = check_inputs(data_dir=data_dir, out_dir=out_dir, name=name, cfg=cfg, resume=resume, devices=placement)
    keras.utils.set_random_seed(cfg.train.seed)
    run = RunBuilder.open(Path(out_dir), name, resume=resume)
    try:
        return _train(run, data_dir=data_dir, cfg=cfg, resume=resume, cache_dir=cache_dir, workers=workers,
                      batch_segments=batch_segments, extra_callbacks=extra_callbacks or [], devices=placement)
    except Exception:
        if not resume and not _worth_resuming(run.path):  # failed before training began: leave nothing behind
            import shutil

            shutil.rmtree(run.path, ignore_errors=True)
        raise
    finally:
        run.release()


def check_inputs(*, data_dir: Path, out_dir: Path, name: str, cfg: RunConfig, resume: bool,
                 devices: TrainingDevices | None = None) -> bool:
    """What can be checked before a run folder is made, so that bad input leaves nothing behind: the
    run name (a run to resume, or a free name), the config (ranges, the kind's rules), the data folder
    and its metadata, the noise folder, (for a new run) that the split leaves recordings to train
    and validate on, that the global batch splits over the ``devices``, and the backbone's starting weights (ImageNet's fetched now, not after hours of
    decoding: ``training.weights``).  Returns whether the run resumes (False for a run to resume that
    has no folder yet: it starts).  Raises RunFolderError, ``config.ConfigValueError``, ``DatasetError``,
    ``WeightsUnavailable`` or ValueError, each with a one-line message."""
    from birdcore.runs.folder import RunFolderError

    out, builder = Path(out_dir), RunBuilder(Path(out_dir), name)  # RunFolderError for a bad name
    if builder.final.exists():
        raise RunFolderError(f"{builder.final}: a complete run with this name exists; choose another --name")
    if resume and not builder.path.is_dir():  # killed before its folder existed: start it (bench_kill_resume)
        log.info("no run %s to resume in %s yet: starting it", name, out)
        resume = False
    if not resume and builder.path.exists():
        raise RunFolderError(f"{builder.path}: an interrupted run with this name exists; "
                             "add --resume to continue it, or choose another --name")
    saved = builder.path / "config.json"
    if resume and saved.is_file():  # the run goes on with its own configuration: check that one
        cfg = RunConfig.load(saved)
    cfg.check()
    kind = kind_for(cfg.model.kind)
    kind.check_config(cfg)  # the kind's own rules (BirdNET's audio settings, ...)
    if devices is not None and kind.uses_training_loop:
        devices.check_batch(cfg.train.batch_size)
    if data_dir is None or not Path(data_dir).is_dir():
        raise ValueError(f"{data_dir}: no such folder" if data_dir is None or not Path(data_dir).exists()
                         else f"{data_dir}: not a folder")
    noise = noise_folder(cfg)
    if noise is not None and kind_for(cfg.model.kind).uses_noise_bank:
        from birdcore.io.audio import AUDIO_EXTENSIONS, is_audio_path

        if not any(is_audio_path(p) and p.is_file() for p in Path(noise).rglob("*")):
            log.warning("background noise folder %s has no audio files (%s); training mixes in synthesised "
                        "coloured noise instead", noise, " ".join(AUDIO_EXTENSIONS))
    from birdcore.data.metadata import read_metadata

    meta = read_metadata(Path(data_dir))  # DatasetError: no or unreadable metadata
    if not resume or not (builder.path / "split.csv").exists():  # a resumed run keeps its saved split
        check_split(meta[meta["exists"]], cfg, data_dir=data_dir)
    from birdcore.training.weights import check_weights

    check_weights(cfg)  # last, after the quick checks: it may download ImageNet's weights (WeightsUnavailable)
    return resume


def check_split(meta, cfg: RunConfig, *, data_dir) -> None:
    """Refuse a dataset whose split leaves the training or the validation part empty.

    Validation picks the best checkpoint, stops training early and sets the per-species thresholds,
    so a run without it would have no sound thresholds and nothing to choose its model by: it is
    refused up front, saying how many recordings per species the split needs, rather than trained."""
    from birdcore.data.split import _counts, split_recordings

    s = cfg.split
    if meta.empty:
        raise ValueError(f"{data_dir}: none of the recordings in its metadata exist")
    parts = split_recordings(meta, method=s.method, val_fraction=s.val_fraction, test_fraction=s.test_fraction,
                             seed=s.seed)
    if (parts == "train").sum() == 0:
        raise ValueError(f"{data_dir}: the training split is empty (split.method {s.method}): the dataset is too "
                         "small")
    if (parts == "val").sum() > 0:
        return
    why = "validation picks the checkpoint, stops training early and sets the thresholds"
    if s.val_fraction <= 0:
        raise ValueError(f"split.val_fraction is 0: the validation split is empty ({why}); give it a fraction > 0")
    if s.method == "stratified":
        need = next(n for n in range(1, 10_000) if _counts(n, s.val_fraction, s.test_fraction)[0] >= 1)
        most = int(meta["primary"].value_counts().max())
        raise ValueError(f"{data_dir}: the validation split would be empty: at val_fraction {s.val_fraction:g} and "
                         f"test_fraction {s.test_fraction:g} a species needs at least {need} recordings to give "
                         f"train, validation and test one each, and no species here has more than {most} ({why})")
    raise ValueError(f"{data_dir}: the validation split would be empty (split.method {s.method}, val_fraction "
                     f"{s.val_fraction:g}): add recordings ({why})")


def _worth_resuming(path: Path) -> bool:
    """Whether a failed run's folder holds work a --resume would continue (a finished epoch or tuning)."""
    return (path / STATE_FILE).exists() or (path / "tuning").exists()


def _train(run: RunBuilder, *, data_dir, cfg, resume, cache_dir, workers, batch_segments, extra_callbacks,
           devices: TrainingDevices) -> Path:
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    state_path = run.file(STATE_FILE)
    config_path = run.file("config.json")
    saved = json.loads(config_path.read_text()) if resume and config_path.exists() else None
    if saved is not None:
        cfg = RunConfig.from_dict(saved["config"])
        started = saved.get("started", started)  # run.json's "created" is the run's first start
    kind = kind_for(cfg.model.kind)
    loop = kind.uses_training_loop  # the Keras training loop (else trained in prepare_inputs, or not)
    n_devices = devices.n if loop else 1  # the devices it trains on
    if saved is not None:
        before = saved.get("devices", 1)
        log.info("resuming %s with its saved configuration%s", run.path,
                 f" on {n_devices} devices (it trained on {before} before)" if before != n_devices else "")
    batch_segments = -(-batch_segments // devices.n) * devices.n  # scoring batches split evenly too
    kind.check_config(cfg)
    policy = configure_precision(cfg.train.mixed_precision, kind_allows=kind.mixed_precision)
    data = prepare_data(run, cfg, data_dir=data_dir, cache_dir=cache_dir, workers=workers)
    inputs = kind.prepare_inputs(run, cfg, data, cache_root=Path(cache_dir) if cache_dir else default_cache_dir())
    n_species = len(data.codes)
    counts = {s: int(len(data.rows(s))) for s in ("train", "val", "test")}
    log.info("split: %s; %d species; precision policy %s", counts, n_species, policy)
    if counts["val"] == 0:  # checked on the metadata before; unreadable recordings can still empty it
        raise ValueError(f"{data_dir}: no validation recordings are left once the unreadable ones are skipped "
                         "(see the warnings above); validation picks the checkpoint and sets the thresholds")

    tuning, best_epoch, model = None, 0, None
    with devices.scope() if loop else contextlib.nullcontext():  # build, tune, train and score there
        if loop:
            if counts["train"] == 0:
                raise ValueError("the training split is empty: the dataset is too small")
            primary, secondary = data.labels()
            targets = make_targets(primary, secondary, n_species, secondary_weight=cfg.train.secondary_weight,
                                   label_smoothing=cfg.train.label_smoothing)
            noise_bank = load_noise_bank(cfg) if kind.uses_noise_bank else None
            if cfg.tune.enabled and not (resume and state_path.exists()):
                from birdcore.training.tune import tune_hyperparameters

                tuning = tune_hyperparameters(run, cfg, data, targets, primary, noise_bank=noise_bank,
                                              batch_segments=batch_segments, inputs=inputs)
                cfg = tuning.pop("config")
                if is_tuning_worker():
                    log.info("tuning worker %s finished; the chief trains the final model",
                             os.environ["KERASTUNER_TUNER_ID"])
                    return run.path
        atomic_write_json(config_path, {"config": cfg.to_dict(), "versions": library_versions(),
                                        "data_dir": str(Path(data_dir).resolve()), "started": started,
                                        "devices": n_devices})
        if loop:
            model, best_epoch = _fit(run, kind, cfg, data, targets, primary, noise_bank=noise_bank, inputs=inputs,
                                     resume=resume, batch_segments=batch_segments, extra_callbacks=extra_callbacks,
                                     devices=devices)

        log.info("scoring the validation and test splits%s",
                 f" with the best checkpoint (epoch {best_epoch})" if loop else "")
        metrics = evaluate_splits(run.path, data, kind.data_scorer(model, cfg, inputs, batch_segments=batch_segments),
                                  target_fpr=cfg.eval.target_fpr, segment_seconds=cfg.audio.segment_seconds)
    log.info("test: %s", format_summary(metrics))
    if tuning is not None:
        atomic_write_json(run.file("tuning.json"), tuning)
    exported = False
    if model is not None:
        save_keras(kind.serving_model(model, cfg, inputs=inputs), run.file(MODEL_FILE))
        exported = kind.export(model, run.path)
    manifest = {
        "created": started, "synthetic": cfg.synthetic, "model_kind": kind.name, "backbone": cfg.model.backbone,
        "weights": cfg.model.weights, "pooling": cfg.model.pooling, "n_species": n_species,
        "sample_rate": cfg.audio.sample_rate, "segment_seconds": cfg.audio.segment_seconds, "split": counts,
        "epochs_trained": int(len(read_history(run.file(HISTORY_FILE)))), "best_epoch": best_epoch,
        "test": {k: metrics[k] for k in ("top1", "top5", "macro_auc", "macro_ap", "n_recordings")},
        "tuned": tuning is not None, "savedmodel": exported, "keras_backend": keras.backend.backend(),
        "devices": n_devices, **kind.manifest(cfg, inputs),
    }
    final = run.finish(manifest)
    _drop_checkpoints(final)  # after the rename: a kill before it leaves a complete run, never a lost state
    log.info("run complete: %s", final)
    return final


def species_run(*, species_list: Path, out_dir: Path, name: str, cfg: RunConfig) -> Path:
    """A run for the species of a list, with no recordings: for a kind that is not trained (BirdNET
    zero-shot).  It has the run files a model needs to score audio (config, species, thresholds at
    the kind's customary 0.5, the kind's own files) and no recording-level metrics: they are absent
    from run.json, not zero.  Thresholds can then be chosen on soundscapes
    (``python -m birdcore.soundscapes calibrate``)."""
    from birdcore.data.species_lists import species_table
    from birdcore.io.atomic import atomic_write_text
    from birdcore.runs.thresholds import DEFAULT_THRESHOLD

    kind = kind_for(cfg.model.kind)
    if kind.trains:
        raise ValueError(f"a {kind.description} needs recordings to train on: give --data-dir")
    kind.check_config(cfg)
    species = species_table(species_list)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run = RunBuilder.open(Path(out_dir), name, resume=False)
    try:
        atomic_write_json(run.file("config.json"), {"config": cfg.to_dict(), "versions": library_versions(),
                                                    "species_list": str(Path(species_list).resolve()),
                                                    "started": started})
        atomic_write_text(run.file("species.csv"), species.rename_axis("index").reset_index().to_csv(index=False))
        inputs = kind.prepare_inputs(run, cfg, SpeciesOnly(species), cache_root=default_cache_dir())
        atomic_write_json(run.file("thresholds.json"), {
            "target_fpr": None, "chosen_on": "none (no recordings): the customary confidence",
            "global": {"threshold": DEFAULT_THRESHOLD}, "species": {}})
        atomic_write_json(run.file("data_report.json"), {"species_list": str(Path(species_list).resolve()),
                                                         "n_species": int(len(species)), "n_usable": 0})
        log.info("%d species from %s", len(species), species_list)
        final = run.finish({
            "created": started, "synthetic": False, "model_kind": kind.name, "backbone": cfg.model.backbone,
            "weights": cfg.model.weights, "pooling": cfg.model.pooling, "n_species": int(len(species)),
            "sample_rate": cfg.audio.sample_rate, "segment_seconds": cfg.audio.segment_seconds,
            "epochs_trained": 0, "best_epoch": 0, "tuned": False, "savedmodel": False,
            "keras_backend": keras.backend.backend(), "species_list": Path(species_list).name,
            **kind.manifest(cfg, inputs),
        })
    finally:
        run.release()
    log.info("run complete: %s", final)
    return final


class SpeciesOnly:
    """Stands in for a ``Dataset`` where a kind only needs the species (no recordings)."""

    def __init__(self, species):
        self.species = species

    @property
    def codes(self) -> list[str]:
        return self.species["ebird_code"].tolist()


def _fit(run: RunBuilder, kind: ModelKind, cfg: RunConfig, data, targets, primary, *, noise_bank, inputs, resume,
         batch_segments, extra_callbacks, devices: TrainingDevices):
    """Train (or resume training) the kind's model; returns the best checkpoint and its epoch (1-based).
    Called inside the devices' scope (``TrainingDevices.scope``), which places every model it builds or loads."""
    state_path = run.file(STATE_FILE)
    initial_epoch, state = 0, {}
    last = run.file(CHECKPOINT_DIR) / "last.keras"
    if resume and state_path.exists() and last.exists():  # onto the current devices, whatever it trained on
        state = json.loads(state_path.read_text())
        model = devices.adopt(load_keras(last, compile=True))
        initial_epoch = int(state["epoch"]) + 1
    else:
        model = devices.adopt(kind.build(cfg, len(data.codes), inputs=inputs))
        compile_model(model, cfg.train.learning_rate, weight_decay=cfg.train.weight_decay,
                      optimizer=kind.optimizer(cfg))
    stopped_early = state.get("wait", 0) >= cfg.train.early_stopping_patience
    if state:
        if initial_epoch >= cfg.train.epochs or stopped_early:
            why = (f"finished ({cfg.train.epochs} of {cfg.train.epochs} epochs)" if initial_epoch >= cfg.train.epochs
                   else f"stopped early (after {initial_epoch} epochs)")
            log.info("resuming: training had %s before the interruption; going on to scoring", why)
        else:
            log.info("resuming at epoch %d of %d", initial_epoch + 1, cfg.train.epochs)
    keeper = RunKeeper(run, epochs=cfg.train.epochs, patience=cfg.train.early_stopping_patience, state=state)
    if initial_epoch < cfg.train.epochs and not stopped_early:
        batches = kind.training_batches(cfg, data, targets, primary, noise_bank=noise_bank, inputs=inputs)
        batches.set_epoch(initial_epoch)
        callbacks = [ValidationScorer(data, data.rows("val"), targets, primary, cfg=cfg, batch_segments=batch_segments,
                                      inputs=inputs), keeper, *extra_callbacks]
        devices.fit(model, batches, epochs=cfg.train.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                    verbose=1 if sys.stderr.isatty() else 0)
    best_path = run.file(CHECKPOINT_DIR) / "best.keras"
    best = devices.portable(load_keras(best_path if best_path.exists() else last))  # scored, then saved to serve
    return best, int(keeper.state["best_epoch"]) + 1


def _drop_checkpoints(run_dir: Path) -> None:
    """The resume state is not needed once the run is complete (the best model is model.keras)."""
    import shutil

    shutil.rmtree(Path(run_dir) / CHECKPOINT_DIR, ignore_errors=True)
    (Path(run_dir) / STATE_FILE).unlink(missing_ok=True)
