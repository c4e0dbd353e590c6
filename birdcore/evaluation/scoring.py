"""Scoring sets of recordings with any kind of model, and writing a run's evaluation files.

``evaluate_splits`` is the tail every run ends with (score validation and test, write scores,
metrics and thresholds); ``evaluate_dataset`` scores another Cornell-format dataset with a
complete run (``python -m birdcore.evaluate``, ``birdcore.cli.evaluate``).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from birdcore.data.labels import label_indices, secondary_mask
from birdcore.evaluation import metrics as M
from birdcore.io.atomic import atomic_write_json, write_npz

log = logging.getLogger("birdcore")


def score_recordings(scorer, load: Callable[[int], np.ndarray], indices: Sequence[int], *,
                     progress: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """Score recordings ``load(i)`` for i in ``indices`` with ``scorer`` (its ``score_many`` takes
    what ``load`` gives: waveforms, or a kind's own inputs such as embeddings).

    Returns recording scores (N, C) float32 and a list of N segment-score arrays (S_i, C);
    (0, 0) scores when ``indices`` is empty.
    """
    items = (np.asarray(load(int(i)), dtype=np.float32) for i in indices)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, total=len(indices), desc="scoring", unit="rec", file=sys.stderr,
                     mininterval=0.5 if sys.stderr.isatty() else 30)
    rec, segs = [], []
    for s in scorer.score_many(items):
        rec.append(s.recording.astype(np.float32))
        segs.append(s.segments.astype(np.float32))
    return (np.stack(rec) if rec else np.zeros((0, 0), np.float32)), segs


def label_arrays(df: pd.DataFrame, codes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Primary indices (N,) and secondary mask (N, C) of ``df`` rows in the model's species order."""
    primary, secondary = label_indices(df["primary"], df["secondary"], codes)
    return primary, secondary_mask(secondary, len(codes))


def score_arrays(df: pd.DataFrame, codes: list[str], scores: np.ndarray, segments: list[np.ndarray], *,
                 segment_seconds: float) -> dict[str, np.ndarray]:
    """The arrays of ``scores.npz`` (see ``birdcore.runs.folder``)."""
    primary, secondary = label_arrays(df, codes)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in segments])]).astype(np.int64)
    seg = np.concatenate(segments) if segments else np.zeros((0, len(codes)), np.float32)
    scores = scores if len(scores) else np.zeros((0, len(codes)), np.float32)
    return {
        "recording_id": df["recording_id"].to_numpy().astype(str),
        "species": np.array(codes, dtype=str),
        "primary": primary,
        "scores": scores.astype(np.float32),
        "secondary": secondary,
        "segment_scores": seg.astype(np.float16),
        "segment_offsets": offsets,
        "segment_seconds": np.float32(segment_seconds),
    }


def evaluate_arrays(arrays: dict[str, np.ndarray], *, target_fpr: float) -> dict:
    return M.evaluate_scores(arrays["scores"], arrays["primary"], species=list(arrays["species"]),
                             secondary=arrays["secondary"], target_fpr=target_fpr)


def thresholds_from(val: dict[str, np.ndarray] | None, test: dict[str, np.ndarray], *, target_fpr: float) -> dict:
    """Per-species and global thresholds chosen on validation scores (test if none),
    with the recall and false-positive rate they give on the test set."""
    source = val if val is not None and len(val["primary"]) else test
    chosen = M.species_metrics(source["scores"], source["primary"], species=list(source["species"]),
                               secondary=source["secondary"], target_fpr=target_fpr)
    glob = M.global_threshold(source["scores"], source["primary"], secondary=source["secondary"],
                              target_fpr=target_fpr)
    species = {}
    for i, row in enumerate(chosen):
        species[row["species"]] = {"threshold": row["threshold"],
                                   **_rates(test, i, row["threshold"])}
    return {"target_fpr": target_fpr, "chosen_on": "val" if source is val else "test",
            "global": {"threshold": glob["threshold"], **_rates(test, None, glob["threshold"])},
            "species": species}


def _rates(arrays: dict[str, np.ndarray], column: int | None, threshold: float) -> dict:
    """Test recall and FPR of ``score >= threshold`` for one species column (None: all pooled)."""
    scores, primary, secondary = arrays["scores"], arrays["primary"], arrays["secondary"]
    pos = np.zeros_like(secondary)
    pos[np.arange(len(primary)), primary] = True
    valid = ~secondary
    if column is not None:
        scores, pos, valid = scores[:, column], pos[:, column], valid[:, column]
    hit = scores >= threshold
    n_pos, n_neg = int((pos & valid).sum()), int((~pos & valid).sum())
    return {"test_recall": float((hit & pos & valid).sum() / n_pos) if n_pos else None,
            "test_fpr": float((hit & ~pos & valid).sum() / n_neg) if n_neg else None}


def write_evaluation(run_path: Path, test: dict[str, np.ndarray], val: dict[str, np.ndarray] | None, *,
                     target_fpr: float) -> dict:
    """Write scores.npz, metrics.json and thresholds.json into ``run_path``; returns the metrics."""
    metrics = evaluate_arrays(test, target_fpr=target_fpr)
    write_npz(Path(run_path) / "scores.npz", **test)
    atomic_write_json(Path(run_path) / "metrics.json", metrics)
    atomic_write_json(Path(run_path) / "thresholds.json", thresholds_from(val, test, target_fpr=target_fpr))
    return metrics


def evaluate_splits(run_path: Path, data, scorer, *, target_fpr: float, segment_seconds: float) -> dict:
    """The tail of every run: score the validation and test recordings of ``data`` (a
    ``data.dataset.Dataset``) with ``scorer`` (a kind's ``data_scorer``), write scores.npz,
    metrics.json and thresholds.json (chosen on validation) into ``run_path``; returns the metrics."""
    arrays = {}
    for split in ("val", "test"):
        rows = data.rows(split)
        scores, segs = score_recordings(scorer, data.load, rows, progress=split == "test")
        arrays[split] = score_arrays(data.df.iloc[rows], data.codes, scores, segs, segment_seconds=segment_seconds)
    return write_evaluation(run_path, arrays["test"], arrays["val"], target_fpr=target_fpr)


def format_summary(metrics: dict) -> str:
    return (f"recordings {metrics['n_recordings']}  species {metrics['n_species']}  "
            f"top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  "
            f"macro ROC-AUC {_fmt(metrics['macro_auc'])}  macro AP {_fmt(metrics['macro_ap'])}")


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def evaluate_dataset(run_dir: Path, *, data_dir: Path, cache_dir: Path | None = None, workers: int | None = None,
                     batch_segments: int = 32) -> dict:
    """Score every usable recording of ``data_dir`` with the run's model; returns the metrics dict
    plus ``skipped`` (recordings not scored, with reasons)."""
    from birdcore.data.cache import DecodeCache, default_cache_dir
    from birdcore.data.metadata import read_metadata
    from birdcore.runs.loading import load_run

    run = load_run(run_dir)
    codes = run.codes
    df = read_metadata(Path(data_dir))
    skipped = {}
    known = df["primary"].isin(codes)
    for _, row in df[~known].iterrows():
        skipped[row["recording_id"]] = f"species {row['primary']} is not among the run's species"
    df = df[known].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"{data_dir}: none of its species are among the run's {len(codes)} species")
    cache = DecodeCache(Path(cache_dir) if cache_dir else default_cache_dir(),
                        sample_rate=run.sample_rate, max_seconds=run.config.audio.max_decode_seconds)
    report = cache.build(df["path"].tolist(), workers=workers, progress=sys.stderr.isatty(),
                         durations=dict(zip(df["path"].astype(str), df["duration"])))
    for path, reason in report.failed.items():
        rid = df.loc[df["path"] == path, "recording_id"]
        skipped[rid.iloc[0] if len(rid) else path] = reason
        log.warning("skipped %s", reason if str(path) in reason else f"{path}: {reason}")
    ok = df[df["path"].isin(report.ok)].reset_index(drop=True)
    if ok.empty:
        raise ValueError(f"{data_dir}: no recording could be decoded")
    paths = ok["path"].tolist()
    scorer = run.scorer(batch_segments=batch_segments)  # waveforms at the run's rate, whatever its kind
    scores, segs = score_recordings(scorer, lambda i: cache.load(paths[i]), range(len(ok)),
                                    progress=sys.stderr.isatty())
    arrays = score_arrays(ok, codes, scores, segs, segment_seconds=run.config.audio.segment_seconds)
    metrics = evaluate_arrays(arrays, target_fpr=run.config.eval.target_fpr)
    metrics["skipped"] = skipped
    return metrics

