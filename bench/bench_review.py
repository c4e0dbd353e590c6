"""Thresholds from reviews, checked against fully labelled soundscapes (simulated reviewers).

    python bench/bench_review.py --run runs/cornell264 --labels ../shared/data/soundscapes-dev/labels.csv \
        --audio-dir ../shared/data/soundscapes-dev/audio --per-species 50 --target 0.9 --repeats 50

BirdNET's windows (3 s, overlapping by ``--overlap`` s) scoring at least ``--min-score`` are the
detections; a detection is correct when a labelled 5 s row it overlaps names its species (the rule
of ``python -m birdcore.review import-labels``).  For each repeat, ``--per-species`` detections
per species are drawn (``review.sampling``, stratified), "reviewed" with the labels, and
``review.precision`` gives each species' threshold for the target precision and its interval; the
true precision of every detection at or above that threshold is then read off the full labels.
Reported: how often the promised precision is reached, how often the interval covers the truth,
and the row-wise F1 of the soundscapes with per-species thresholds from reviews against one global
threshold from the same reviews.  Output: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from birdcore.data.soundscapes import read_rows  # noqa: E402
from birdcore.evaluation import soundscape_metrics as SM  # noqa: E402
from birdcore.evaluation.soundscape_scoring import rows_from_windows  # noqa: E402
from birdcore.evaluation.soundscapes import labels_for  # noqa: E402
from birdcore.evaluation.soundscape_scoring import RowScores  # noqa: E402
from birdcore.review import precision as P  # noqa: E402
from birdcore.review.sampling import draw  # noqa: E402
from birdcore.runs.loading import load_run_ref  # noqa: E402


def windows_of(run, rows, overlap: float) -> dict[str, np.ndarray]:
    from birdcore.io.stream import stream_audio

    scorer = run.scorer(overlap=overlap)
    return {key: scorer.score_stream(stream_audio(path, sample_rate=run.sample_rate)).segments
            for key, path in rows.audio.items() if path is not None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--labels", type=Path, required=True)
    p.add_argument("--audio-dir", type=Path, default=None)
    p.add_argument("--overlap", type=float, default=1.5)
    p.add_argument("--min-score", type=float, default=0.05)
    p.add_argument("--per-species", type=int, default=50)
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--min-detections", type=int, default=30, help="species with fewer detections are left out")
    p.add_argument("--cache", type=Path, default=None, help=".npz of the window scores (reused when present)")
    args = p.parse_args()

    run = load_run_ref(args.run)
    rows = read_rows(args.labels, audio_dir=args.audio_dir)
    if args.cache is not None and args.cache.exists():
        with np.load(args.cache) as z:
            windows = {k: z[k] for k in z.files}
    else:
        windows = windows_of(run, rows, args.overlap)
        if args.cache is not None:
            np.savez_compressed(args.cache, **windows)
    hop, length = run.segment_hop_seconds(args.overlap), run.config.audio.segment_seconds
    codes = run.codes
    # detections and their truth
    det = []
    for key, w in windows.items():
        table = rows.table[rows.table["file"] == key]
        for i in range(len(w)):
            start, end = i * hop, i * hop + length
            named = {b for birds in table[(table["start_s"] < end) & (table["end_s"] > start)]["birds"] for b in birds}
            for c in np.flatnonzero(w[i] >= args.min_score):
                det.append((key, start, end, codes[c], float(w[i, c]), codes[c] in named))
    det = pd.DataFrame(det, columns=["file", "start_s", "end_s", "species", "score", "correct"]).reset_index(names="id")
    counts = det.groupby("species")["correct"].agg(["size", "sum"])
    eligible = counts[(counts["size"] >= args.min_detections) & (counts["sum"] > 0)].index.tolist()
    print(f"{len(det)} detections >= {args.min_score}; {len(eligible)} species with >= {args.min_detections} "
          f"detections and a correct one: {', '.join(eligible)}", file=sys.stderr)
    # row scores for F1 (max over windows overlapping a row by >= 1 s)
    parts = []
    for key, w in windows.items():
        table = rows.table[rows.table["file"] == key]
        parts.append((table, rows_from_windows(w, hop=hop, length=length, starts=table["start_s"].to_numpy(float),
                                               ends=table["end_s"].to_numpy(float))))
    table = pd.concat([t for t, _ in parts], ignore_index=True)
    seconds = {k: len(w) * hop + length for k, w in windows.items()}
    scored = RowScores(table, np.concatenate([s for _, s in parts]), codes, seconds, {})
    labels, _ = labels_for(scored, run)

    per_species, f1_rows = {sp: {"reached": 0, "covered": 0, "found": 0} for sp in eligible}, []
    index = {c: i for i, c in enumerate(codes)}
    for rep in range(args.repeats):
        sample = pd.DataFrame(draw(det[det["species"].isin(eligible)], per_species=args.per_species,
                                   strategy="stratified", seed=rep))
        reviewed = det.set_index("id").loc[sample["detection_id"]]
        thr_species = np.full(len(codes), 1.01, np.float32)  # species without a threshold detect nothing
        for sp in eligible:
            pop = det.loc[det["species"] == sp, "score"].to_numpy()
            mine = reviewed[reviewed["species"] == sp]
            chosen = P.threshold_for(pop, mine["score"].to_numpy(), mine["correct"].to_numpy(), args.target)
            if chosen["threshold"] is None:
                continue
            t = chosen["threshold"]
            true = det[(det["species"] == sp) & (det["score"] >= t)]["correct"].mean()
            stats = per_species[sp]
            stats["found"] += 1
            stats["reached"] += bool(true >= args.target - 1e-9)
            low, high = chosen["ci_at_threshold"]
            stats["covered"] += bool(low <= true <= high)
            thr_species[index[sp]] = t
        # one global threshold from the same reviews (pooled over species)
        pooled = reviewed
        glob = P.threshold_for(det[det["species"].isin(eligible)]["score"].to_numpy(), pooled["score"].to_numpy(),
                               pooled["correct"].to_numpy(), args.target)["threshold"]
        thr_global = np.full(len(codes), 1.01 if glob is None else glob, np.float32)
        thr_global[[index[c] for c in codes if c not in eligible]] = 1.01
        f1_rows.append({"per_species": SM.row_f1(labels.truth, SM.decisions(scored.scores, thr_species), labels.unknown),
                        "global": SM.row_f1(labels.truth, SM.decisions(scored.scores, thr_global), labels.unknown),
                        "global_threshold": glob})
    f1 = pd.DataFrame(f1_rows)
    summary = {sp: {**s, "detections": int(counts.loc[sp, "size"]), "correct": int(counts.loc[sp, "sum"])}
               for sp, s in per_species.items()}
    found = sum(s["found"] for s in per_species.values())
    print(json.dumps({
        "run": str(args.run), "labels": str(args.labels), "target": args.target, "per_species": args.per_species,
        "repeats": args.repeats, "n_detections": int(len(det)), "species": summary,
        "thresholds_found": found,
        "promise_kept": round(sum(s["reached"] for s in per_species.values()) / max(found, 1), 4),
        "interval_covered": round(sum(s["covered"] for s in per_species.values()) / max(found, 1), 4),
        "row_f1_per_species_mean": round(float(f1["per_species"].mean()), 4),
        "row_f1_global_mean": round(float(f1["global"].mean()), 4),
        "per_species_better": int((f1["per_species"] > f1["global"]).sum()),
        "equal": int((f1["per_species"] == f1["global"]).sum()),
        "nocall_f1": round(SM.row_f1(labels.truth, np.zeros_like(labels.truth), labels.unknown), 4)}))


if __name__ == "__main__":
    main()
