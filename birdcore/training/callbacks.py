"""Training callbacks: validation scoring, and the run keeper (checkpoints, history, early stopping)."""
from __future__ import annotations

import logging
import math
import time

import keras
import numpy as np

from birdcore.config import RunConfig
from birdcore.data.dataset import Dataset
from birdcore.evaluation import metrics as M
from birdcore.evaluation.scoring import score_recordings
from birdcore.io.atomic import atomic_write_json
from birdcore.models.base import kind_for
from birdcore.models.saving import save_keras
from birdcore.runs.folder import RunBuilder
from birdcore.runs.history import HISTORY_FILE, append_epoch, epoch_seconds
from birdcore.runs.progress import duration, eta_seconds

log = logging.getLogger("birdcore")

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "train_state.json"


class ValidationScorer(keras.callbacks.Callback):
    """Adds ``val_top1`` and ``val_loss`` (recording level, whole recordings, no augmentation) to the logs."""

    def __init__(self, data: Dataset, rows: np.ndarray, targets: np.ndarray, primary: np.ndarray,
                 *, cfg: RunConfig, batch_segments: int, inputs: dict | None = None):
        super().__init__()
        self.data, self.rows, self.targets, self.primary = data, rows, targets, primary
        self.cfg, self.batch_segments, self.inputs = cfg, batch_segments, inputs or {}
        self.kind = kind_for(cfg.model.kind)
        self._cached = None

    def _scorer(self):
        """One traced scorer per model (keras-tuner builds a new model per trial)."""
        if self._cached is None or self._cached[0] != id(self.model):
            self._cached = (id(self.model), self.kind.data_scorer(self.model, self.cfg, self.inputs,
                                                                      batch_segments=self.batch_segments))
        return self._cached[1]

    def __deepcopy__(self, memo):  # keras-tuner copies callbacks per trial; the data need not be copied
        return ValidationScorer(self.data, self.rows, self.targets, self.primary, cfg=self.cfg,
                                batch_segments=self.batch_segments, inputs=self.inputs)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or len(self.rows) == 0:
            return
        scores, _ = score_recordings(self._scorer(), self.data.load, self.rows)
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
        # a resumed run: the epochs earlier processes timed and kept, for the ETA of this one's first
        self.earlier_seconds = [t for e, t in epoch_seconds(run.file(HISTORY_FILE))
                                if e <= self.state["epoch"] + 1 and t == t]
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
        eta = eta_seconds(self.epoch_seconds, self.epochs - epoch - 1, earlier=self.earlier_seconds)
        log.info("epoch %d/%d  loss %.4f  val_top1 %.4f  val_loss %.4f  best %.4f (epoch %d)  %.0f s  ETA %s",
                 epoch + 1, self.epochs, logs.get("loss", float("nan")), logs.get("val_top1", float("nan")),
                 logs.get("val_loss", float("nan")), st["best"], st["best_epoch"] + 1, seconds, duration(eta))
        if st["wait"] >= self.patience:
            log.info("early stopping: no validation improvement for %d epochs", st["wait"])
            self.model.stop_training = True

    def _append_history(self, epoch: int, logs: dict, seconds: float) -> None:
        append_epoch(self.run.file(HISTORY_FILE), {"epoch": epoch + 1, "loss": logs.get("loss"),
                                                   "val_top1": logs.get("val_top1"),
                                                   "val_loss": logs.get("val_loss"), "seconds": round(seconds, 3)})
