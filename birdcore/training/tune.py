"""Hyperparameter search with keras-tuner (Bayesian optimisation).

Search space: Adam learning rate (log scale), maximum time-mask width,
maximum frequency-mask width and maximum dB-floor raise.  Objective:
validation recording top-1 (``val_top1``), never the test split.  The tuner's
state lives in the run's ``tuning/`` folder, so an interrupted search resumes
where it stopped.  For a distributed search, start one chief and several
workers with keras-tuner's ``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``
and ``KERASTUNER_ORACLE_PORT`` variables (see docs/training.md, "Tuning").
"""
from __future__ import annotations

import copy
import logging
import sys

import numpy as np

from birdcore.config import RunConfig
from birdcore.models.base import kind_for

log = logging.getLogger("birdcore")


def apply_hyperparameters(cfg: RunConfig, values: dict) -> RunConfig:
    """A copy of ``cfg`` with tuned values (keys as in the search space) applied."""
    out = copy.deepcopy(cfg)
    if "learning_rate" in values:
        out.train.learning_rate = float(values["learning_rate"])
    if "time_mask_max" in values:
        out.augment.time_mask_max = float(values["time_mask_max"])
    if "freq_mask_max" in values:
        out.augment.freq_mask_max = float(values["freq_mask_max"])
    if "db_floor_max" in values:
        out.augment.db_floor_max = float(values["db_floor_max"])
    return out


def tune_hyperparameters(run, cfg: RunConfig, data, targets: np.ndarray, primary: np.ndarray, *,
                         noise_bank, batch_segments: int, inputs: dict | None = None) -> dict:
    """Run (or resume) the search; returns {"best": values, "trials": [...], "config": tuned RunConfig}."""
    import keras_tuner as kt

    from birdcore.training.callbacks import ValidationScorer
    from birdcore.training.devices import compile_model

    t = cfg.tune
    n_species = len(data.codes)
    kind = kind_for(cfg.model.kind)

    class HyperModel(kt.HyperModel):
        def build(self, hp):
            values = {
                "learning_rate": hp.Float("learning_rate", t.lr_min, t.lr_max, sampling="log"),
                "time_mask_max": hp.Choice("time_mask_max", list(t.time_mask_choices)),
                "freq_mask_max": hp.Choice("freq_mask_max", list(t.freq_mask_choices)),
                "db_floor_max": hp.Choice("db_floor_max", list(t.db_floor_choices)),
            }
            trial_cfg = apply_hyperparameters(cfg, values)
            model = kind.build(trial_cfg, n_species, inputs=inputs)
            compile_model(model, trial_cfg.train.learning_rate, weight_decay=trial_cfg.train.weight_decay,
                          optimizer=kind.optimizer(trial_cfg))
            return model

    tuner = kt.BayesianOptimization(HyperModel(), objective=kt.Objective("val_top1", direction="max"),
                                    max_trials=t.max_trials, seed=cfg.train.seed, overwrite=False,
                                    directory=str(run.path), project_name="tuning")
    batches = kind.training_batches(cfg, data, targets, primary, noise_bank=noise_bank, inputs=inputs)
    scorer = ValidationScorer(data, data.rows("val"), targets, primary, cfg=cfg, batch_segments=batch_segments,
                              inputs=inputs)
    log.info("tuning: up to %d trials of %d epochs (state in %s/tuning)", t.max_trials, t.epochs_per_trial, run.path)
    tuner.search(batches, epochs=t.epochs_per_trial, callbacks=[scorer], verbose=1 if sys.stderr.isatty() else 0)
    trials = []
    for trial in tuner.oracle.trials.values():
        trials.append({"trial_id": trial.trial_id, "status": str(trial.status), "score": trial.score,
                       "values": dict(trial.hyperparameters.values)})
    completed = [tr for tr in tuner.oracle.trials.values() if str(tr.status) == "COMPLETED"]
    if not completed:
        # keras-tuner records a failing trial and goes on; with every trial failed its "best" values
        # would be an untried guess, so the job must stop here rather than train with them.
        reasons = [tr.message for tr in tuner.oracle.trials.values() if getattr(tr, "message", None)]
        last = reasons[-1].strip().splitlines()[-1] if reasons else "no trial ran"
        raise RuntimeError(f"tuning: none of {len(trials)} trials completed (last error: {last}); "
                           f"see {run.path}/tuning/trial_*/trial.json")
    if len(completed) < len(trials):
        log.warning("tuning: %d of %d trials failed (see %s/tuning)", len(trials) - len(completed), len(trials),
                    run.path)
    best = tuner.get_best_hyperparameters(1)[0].values
    log.info("tuning done; best %s", best)
    return {"best": {k: float(v) for k, v in best.items()}, "trials": trials,
            "config": apply_hyperparameters(cfg, best)}
