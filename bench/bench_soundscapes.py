"""Every soundscape setting tried on development soundscapes, judged leave-one-file-out.

    python train_job.py --baseline birdnet --species-list ../shared/data/cornell264_species.csv \
        --out runs --name cornell264-birdnet
    python bench/bench_soundscapes.py --run runs/cornell264-birdnet \
        --labels ../shared/data/soundscapes-dev/labels.csv --audio-dir ../shared/data/soundscapes-dev/audio \
        --overlaps 0 1.5 --lat 42.48 --lon -76.45 --date 2019-06-15 --cache /tmp/bench-soundscapes

Each audio file is scored once per window overlap (cached in ``--cache``).  For every setting, each
file's rows are decided with thresholds calibrated on the other files only (``goal f1``), and the
pooled held-out decisions give row-wise F1, precision, recall and false positives per hour;
threshold-free figures (cmAP, macro ROC-AUC) are computed on the post-processed scores.  The
baseline is plain BirdNET at its customary 0.5.  Output: a table on stderr and one JSON object.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from birdcore.data.soundscapes import read_rows  # noqa: E402
from birdcore.evaluation import soundscape_metrics as SM  # noqa: E402
from birdcore.evaluation.calibration import Goal, default_grid, held_out_decisions  # noqa: E402
from birdcore.evaluation.postprocess import apply  # noqa: E402
from birdcore.evaluation.soundscape_scoring import score_rows  # noqa: E402
from birdcore.evaluation.soundscapes import labels_for, place_masks  # noqa: E402
from birdcore.runs.loading import load_run_ref  # noqa: E402


def scored_rows(run, rows, overlap: float, min_overlap: float, cache: Path | None, tag: str):
    path = cache / f"{tag}-overlap{overlap:g}-min{min_overlap:g}.pkl" if cache else None
    if path is not None and path.exists():
        return pickle.loads(path.read_bytes()), None
    t0 = time.perf_counter()
    scored = score_rows(run, rows, overlap=overlap, min_overlap=min_overlap)
    seconds = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(scored))
    return scored, seconds


def figures(labels, scores, predicted) -> dict:
    hours = float(labels.row_hours.sum())
    tp, n_pred = int((labels.truth & predicted).sum()), int(predicted.sum())
    n_pos = int(labels.truth.sum() + labels.unknown.sum())
    return {"row_f1": round(SM.row_f1(labels.truth, predicted, labels.unknown), 4),
            "precision": round(tp / n_pred, 4) if n_pred else None, "recall": round(tp / n_pos, 4),
            "fp_per_hour": round(SM.fp_per_hour(labels.truth, predicted, hours), 2),
            "macro_f1": _r(SM.macro_f1(labels.truth, predicted)), "cmap": _r(SM.cmap(labels.truth, scores)),
            "padded_cmap": _r(SM.padded_cmap(labels.truth, scores)), "macro_auc": _r(SM.macro_auc(labels.truth, scores))}


def _r(x):
    return None if x is None else round(x, 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True, help="run folder (or 'birdnet')")
    p.add_argument("--labels", type=Path, required=True)
    p.add_argument("--audio-dir", type=Path, default=None)
    p.add_argument("--overlaps", type=float, nargs="+", default=[0.0, 1.5])
    p.add_argument("--min-overlaps", type=float, nargs="+", default=[1.0])
    p.add_argument("--lat", type=float, default=None)
    p.add_argument("--lon", type=float, default=None)
    p.add_argument("--date", default=None, help="YYYY-MM-DD of the recordings (the location filter's week)")
    p.add_argument("--cache", type=Path, default=None, help="folder for the row scores (reused when present)")
    args = p.parse_args()

    run = load_run_ref(args.run)
    rows = read_rows(args.labels, audio_dir=args.audio_dir)
    place = None
    if args.lat is not None and args.lon is not None:
        from birdcore.serving.birdnet_range import week_of

        week = week_of(dt.date.fromisoformat(args.date)) if args.date else -1
        place = {"lat": args.lat, "lon": args.lon, "week": week}
    goal = Goal("f1")
    results, timings = [], {}
    for overlap in args.overlaps:
        for min_overlap in args.min_overlaps:
            scored, seconds = scored_rows(run, rows, overlap, min_overlap, args.cache, Path(args.run).name)
            if seconds is not None:
                timings[f"overlap {overlap:g}"] = round(seconds, 1)
            labels, missing = labels_for(scored, run)
            masks = place_masks(run, place, scored.files)
            base = {"overlap": overlap, "min_overlap": min_overlap}
            plain = SM.decisions(scored.scores, np.full(scored.scores.shape[1], 0.5, np.float32))
            results.append({**base, "setting": "plain BirdNET, threshold 0.5 (no calibration)",
                            **figures(labels, scored.scores, plain)})
            for per_species in (False, True):
                for post in default_grid(location=masks is not None):
                    scores = apply(post, scored.scores, labels.files, masks)
                    predicted = held_out_decisions(labels, scores, goal, per_species=per_species)
                    results.append({**base, "setting": ("per-species + global" if per_species else "global") +
                                    f" thresholds; post-processing: {post.describe()}", "per_species": per_species,
                                    "postprocessing": post.to_dict(), **figures(labels, scores, predicted)})
    calibrated = [r for r in results if "postprocessing" in r]
    best = max(calibrated, key=lambda r: r["row_f1"])
    plain_rows = [r for r in results if "postprocessing" not in r]
    print(f"{'overlap':>7} {'minov':>5} {'row F1':>7} {'prec':>6} {'recall':>6} {'fp/h':>6} {'cmAP':>6}  setting",
          file=sys.stderr)
    for r in sorted(results, key=lambda r: -r["row_f1"])[:25] + plain_rows:
        print(f"{r['overlap']:>7g} {r['min_overlap']:>5g} {r['row_f1']:>7.4f} {r['precision'] or 0:>6.3f} "
              f"{r['recall']:>6.3f} {r['fp_per_hour']:>6.1f} {r['cmap'] or 0:>6.3f}  {r['setting']}", file=sys.stderr)
    print(json.dumps({"run": str(args.run), "labels": str(args.labels), "n_rows": int(len(rows.table)),
                      "n_files": len(rows.files), "place": place, "goal": str(goal), "scoring_seconds": timings,
                      "species_not_in_run": missing, "n_settings": len(calibrated), "best": best,
                      "baseline": plain_rows, "results": results}))


if __name__ == "__main__":
    main()
