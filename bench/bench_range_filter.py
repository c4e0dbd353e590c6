"""What BirdNET's location filter does for a visitor: BirdNET zero-shot over all 6,522 species,
with and without the species-range model, on every recording of a dataset.

    python bench/bench_range_filter.py --data-dir ../shared/data/xc-pr20 --lat 18.2 --lon -66.5

Each recording is scored once through the product path (``predict birdnet``: streamed decoding,
3 s windows, recording score = max over windows).  Then, from the same scores:

- ``all species``: top-1 / top-5 over BirdNET's 6,522 classes (a visitor's default);
- ``range filter, recording week``: species with occurrence >= 0.03 at (--lat, --lon) in the week
  of the recording's ``date`` (any week when the date is missing);
- ``range filter, any week``;
- ``dataset species only``: restricted to the dataset's own species (the issue's reference setting).

A recording counts as right when the top species' scientific name is its primary species'.
Also lists the dataset species the filter drops.  Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from birdcore.models.birdnet import runtime as bn  # noqa: E402
from birdcore.runs.loading import birdnet_run as global_birdnet_run  # noqa: E402
from birdcore.serving.birdnet_range import ANY_WEEK, Place, species_filter, week_of  # noqa: E402
from birdcore.data.metadata import read_metadata, species_table  # noqa: E402
from birdcore.io.audio import AudioError  # noqa: E402
from birdcore.io.stream import stream_audio  # noqa: E402


def recording_weeks(data_dir: Path, meta: pd.DataFrame) -> list[int]:
    """BirdNET week of each recording from train.csv's ``date`` (ANY_WEEK when missing or unparsable)."""
    raw = pd.read_csv(data_dir / "train.csv", dtype=str, keep_default_na=False)
    dates = {f"{c}/{Path(f).stem}": d for c, f, d in zip(raw["ebird_code"], raw["filename"], raw.get("date", ""))}
    weeks = []
    for rid in meta["recording_id"]:
        try:
            weeks.append(week_of(pd.Timestamp(dates.get(rid, "")).date()))
        except (ValueError, TypeError):
            weeks.append(ANY_WEEK)
    return weeks


def topk_hits(scores: np.ndarray, truth: list[int | None], k: int) -> int:
    order = np.argsort(-scores, axis=1)[:, :k]
    return int(sum(t is not None and t in row for row, t in zip(order, truth)))


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--lat", type=float, required=True, help="latitude used for every recording")
    p.add_argument("--lon", type=float, required=True, help="longitude used for every recording")
    p.add_argument("--threshold", type=float, default=0.03)
    p.add_argument("--scores", type=Path, default=None,
                   help="npz file keeping the recording scores: reused when it exists, written otherwise")
    args = p.parse_args()

    meta = read_metadata(args.data_dir)
    meta = meta[meta["exists"]].reset_index(drop=True)
    run = global_birdnet_run()
    labels = run.codes  # scientific names, BirdNET's order
    columns, missing = bn.map_species(species_table(meta), labels)
    col_of = dict(zip(species_table(meta)["ebird_code"], columns))
    truth = [col_of[c] for c in meta["primary"]]

    if args.scores is not None and args.scores.exists():
        saved = np.load(args.scores)
        scores, seconds, wall, failed = saved["scores"], float(saved["seconds"]), float(saved["wall"]), []
    else:
        scorer = run.scorer()
        t0, seconds, rows, failed = time.perf_counter(), 0.0, [], []
        for path in meta["path"]:
            try:
                chunks = list(stream_audio(Path(path), sample_rate=run.sample_rate, chunk_seconds=60.0))
                res = scorer.score_stream(iter(chunks))
            except AudioError as exc:
                failed.append(str(exc))
                rows.append(np.zeros(len(labels), np.float32))
                continue
            seconds += sum(c.size for c in chunks) / run.sample_rate
            rows.append(res.recording)
        wall = time.perf_counter() - t0
        scores = np.stack(rows)
        if args.scores is not None:
            np.savez(args.scores, scores=scores, seconds=seconds, wall=wall)

    weeks = recording_weeks(args.data_dir, meta)
    masks = {w: species_filter(run.species, Place(args.lat, args.lon, w), threshold=args.threshold).keep
             for w in sorted(set(weeks) | {ANY_WEEK})}
    by_week = np.stack([masks[w] for w in weeks])
    dataset_cols = np.zeros(len(labels), bool)
    dataset_cols[[c for c in columns if c is not None]] = True
    variants = {
        "all species": scores,
        "range filter, recording week": np.where(by_week, scores, 0.0),
        "range filter, any week": np.where(masks[ANY_WEEK][None], scores, 0.0),
        "dataset species only": np.where(dataset_cols[None], scores, 0.0),
    }
    n = len(meta)
    dropped_any = [code for code, c in col_of.items() if c is not None and not masks[ANY_WEEK][c]]
    rest = np.array([code not in dropped_any for code in meta["primary"]])
    rest_truth = [t for t, r in zip(truth, rest) if r]
    out = {"data_dir": str(args.data_dir), "recordings": n, "audio_seconds": round(seconds, 1),
           "scoring_wall_s": round(wall, 1), "place": [args.lat, args.lon], "threshold": args.threshold,
           "species_unknown_to_birdnet": missing, "failed": failed, "variants": {}}
    for name, s in variants.items():
        out["variants"][name] = {"top1": round(topk_hits(s, truth, 1) / n, 4), "top1_count": topk_hits(s, truth, 1),
                                 "top5": round(topk_hits(s, truth, 5) / n, 4),
                                 "top1_on_species_the_filter_keeps": f"{topk_hits(s[rest], rest_truth, 1)}/{int(rest.sum())}"}
    out["dataset_species_dropped_any_week"] = dropped_any
    out["recordings_of_dropped_species"] = int(sum(code in dropped_any for code in meta["primary"]))
    out["species_kept_any_week"] = int(masks[ANY_WEEK].sum())
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
