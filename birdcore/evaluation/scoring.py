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
from birdcore.runs.thresholds import DEFAULT_THRESHOLD

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
    with the recall and false-positive rate they give on the test set.

    A species without a positive recording there (BirdNET's thousands of species in an ``--append``
    run) has only negatives to choose on: just above their maximum would be a threshold near 0 that
    flags it everywhere (43,021 false positives per hour on the development soundscapes).  It takes
    ``DEFAULT_THRESHOLD`` (0.5, BirdNET's customary confidence) instead."""
    source = val if val is not None and len(val["primary"]) else test
    chosen = M.species_metrics(source["scores"], source["primary"], species=list(source["species"]),
                               secondary=source["secondary"], target_fpr=target_fpr)
    glob = M.global_threshold(source["scores"], source["primary"], secondary=source["secondary"],
                              target_fpr=target_fpr)
    species = {}
    for i, row in enumerate(chosen):
        threshold = row["threshold"] if row["n_pos"] else DEFAULT_THRESHOLD
        species[row["species"]] = {"threshold": threshold, **_rates(test, i, threshold)}
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


class NothingHeldOut(ValueError):
    """Every recording ``evaluate_dataset`` could score is one the run trained or validated on."""


def evaluate_dataset(run_dir: Path, *, data_dir: Path, cache_dir: Path | None = None, workers: int | None = None,
                     batch_segments: int = 32, include_training: bool = False) -> dict:
    """Score every usable recording of ``data_dir`` with the run's model; returns the metrics dict
    plus ``skipped`` (recordings not scored, with reasons).

    Recordings the run trained or validated on (its ``split.csv``, matched by ``evaluation.held_out``)
    are left out unless ``include_training``; ``excluded_training`` / ``excluded_validation`` count
    those left out, ``included_training`` / ``included_validation`` those scored anyway, and
    ``run_test_recordings`` the run's own test recordings among those scored.  NothingHeldOut
    (one line) when every recording left is one the run saw."""
    from birdcore.data.cache import DecodeCache, default_cache_dir
    from birdcore.data.metadata import read_metadata
    from birdcore.runs.loading import load_run

    run = load_run(run_dir)
    codes = run.codes
    df = in_run_codes(read_metadata(Path(data_dir)), run.species)
    skipped = {}
    known = df["primary"].isin(codes)
    for _, row in df[~known].iterrows():
        skipped[row["recording_id"]] = f"species {row['primary']} is not among the run's species"
    df = df[known].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"{data_dir}: none of its species are among the run's {len(codes)} species")
    df, overlap = _leave_out_seen(run, df, data_dir=data_dir, include_training=include_training)
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
    n_test = int(ok["recording_id"].isin(overlap.pop("test_ids")).sum())
    metrics.update(overlap, run_test_recordings=n_test)
    return metrics


def in_run_codes(df: pd.DataFrame, species: pd.DataFrame) -> pd.DataFrame:
    """``df`` (a dataset's metadata) with its primary and secondary species named by the run's codes where
    ``data.species_names`` resolves them (Cornell 2020's ``pasfly`` is a run's ``wesfly``, an eBird code is
    BirdNET's scientific name); names it cannot resolve are kept as they are (reported as unknown)."""
    from birdcore.data.species_names import SpeciesResolver

    codes = set(species["ebird_code"])
    resolve = SpeciesResolver(species)
    names = set(df["primary"]) | {s for row in df["secondary"] for s in row}
    to_run = {n: n if n in codes else (resolve.code(n) or n) for n in names}
    renamed = {n: c for n, c in to_run.items() if n != c}
    if renamed:
        shown = ", ".join(f"{n} → {c}" for n, c in list(renamed.items())[:5])
        log.info("species named differently in the dataset and the run, matched by name: %s%s", shown,
                 f" and {len(renamed) - 5} more" if len(renamed) > 5 else "")
    out = df.copy()
    out["primary"] = out["primary"].map(to_run)
    out["secondary"] = out["secondary"].map(lambda row: [to_run[s] for s in row])
    return out


def _leave_out_seen(run, df: pd.DataFrame, *, data_dir, include_training: bool) -> tuple[pd.DataFrame, dict]:
    """``df`` without the recordings the run trained or validated on (all of them with
    ``include_training``), and the counts for the result; logs what it did."""
    from birdcore.evaluation.held_out import SEEN, read_split, run_data_dir, run_split_of

    counts = {"excluded_training": 0, "excluded_validation": 0, "included_training": 0, "included_validation": 0}
    split = read_split(run.path)
    if split is None:
        log.debug("%s has no split.csv: it saw no recordings, none is left out", run.path)
        return df, {**counts, "test_ids": set()}
    if not run.kind.trains:  # zero-shot: it learnt nothing from any recording, nothing to leave out
        log.info("%s was not trained (%s): every recording is new to it, none is left out", run.path.name,
                 run.kind.description)
        return df, {**counts, "test_ids": set()}
    synthetic = bool(run.manifest.get("synthetic", run.config.synthetic))
    parts = run_split_of(df, split, synthetic=synthetic, run_data_dir=run_data_dir(run.path))
    n = {part: int((parts == part).sum()) for part in SEEN}
    test_ids = set(df.loc[parts == "test", "recording_id"])
    seen = parts.isin(list(SEEN))
    if not seen.any():
        return df, {**counts, "test_ids": test_ids}
    what = f"{n['train']} training and {n['val']} validation recordings"
    if include_training:
        log.warning("these figures include %s of the run (--include-training; its split.csv): they overstate how "
                    "it does on recordings it has not seen", what)
        counts.update(included_training=n["train"], included_validation=n["val"])
        return df, {**counts, "test_ids": test_ids}
    if seen.all():
        raise NothingHeldOut(
            f"{data_dir}: all {len(df)} recordings of the run's species were used to train ({n['train']}) or validate "
            f"({n['val']}) {run.path.name} (its split.csv), so none is left to score; give --include-training to "
            "score them anyway (the figures then include training data), or a dataset of other recordings")
    log.info("left out %d of the %d recordings: the run trained on %d and validated on %d of them (its split.csv); "
             "--include-training scores them too", int(seen.sum()), len(df), n["train"], n["val"])
    if test_ids:
        log.info("%d of the recordings scored are the run's own test recordings (scored in its metrics.json too)",
                 len(test_ids))
    counts.update(excluded_training=n["train"], excluded_validation=n["val"])
    return df[~seen.to_numpy()].reset_index(drop=True), {**counts, "test_ids": test_ids}

