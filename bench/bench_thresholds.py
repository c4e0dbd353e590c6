"""ThresholdExplorer speed at full Cornell size (2,222 test recordings × 264 species), random scores.

    python bench/bench_thresholds.py [--recordings 2222] [--species 264] [--calls 200]

Prints one JSON line: construction seconds, and median / p95 milliseconds per
``at()`` call for random scalar thresholds and for random per-species arrays
(a slider move must stay well under 100 ms), and the whole recomputation of a slider move on
the thresholds page (``at`` plus building its four figures from the cached curves).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from birdcore.analysis.scores import ScoreTable, roc_det_points  # noqa: E402
from birdcore.analysis.thresholds import ThresholdExplorer  # noqa: E402
from birdcore.analysis.plots import accuracy_coverage_figure, det_figure, metrics_vs_threshold_figure, roc_figure  # noqa: E402


def random_table(n: int, c: int, *, seed: int = 0) -> ScoreTable:
    """Beta(0.5, 8) scores (N, C) with the primary column raised, 1% secondary pairs."""
    rng = np.random.default_rng(seed)
    primary = rng.integers(0, c, n)
    scores = rng.beta(0.5, 8.0, (n, c)).astype(np.float32)
    scores[np.arange(n), primary] = rng.beta(4.0, 2.0, n).astype(np.float32)
    return ScoreTable(recording_id=np.array([f"XC{i}" for i in range(n)]), species=[f"sp{j:03d}" for j in range(c)],
                      primary=primary, scores=scores, secondary=rng.random((n, c)) < 0.01)


def timed_ms(fn, args: list) -> list[float]:
    out = []
    for a in args:
        start = time.perf_counter()
        fn(a)
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recordings", type=int, default=2222)
    p.add_argument("--species", type=int, default=264)
    p.add_argument("--calls", type=int, default=200)
    args = p.parse_args()
    table = random_table(args.recordings, args.species)
    start = time.perf_counter()
    explorer = ThresholdExplorer(table)
    build_s = time.perf_counter() - start
    rng = np.random.default_rng(1)
    scalar = timed_ms(explorer.at, [float(t) for t in rng.random(args.calls)])
    arrays = timed_ms(explorer.at, [rng.random(args.species) for _ in range(args.calls)])
    start = time.perf_counter()
    curve = explorer.curve(n_points=200)
    curve_ms = (time.perf_counter() - start) * 1000.0
    start = time.perf_counter()
    points = roc_det_points(table)
    roc_ms = (time.perf_counter() - start) * 1000.0

    def slider_move(t: float) -> None:
        """What the thresholds page recomputes when the slider moves (curves are cached per run)."""
        stats = explorer.at(t)
        op = (stats["fpr"], stats["tpr"])
        roc_figure(points, operating_point=op)
        det_figure(points, operating_point=op)
        metrics_vs_threshold_figure(curve, threshold=t)
        accuracy_coverage_figure(curve, threshold=t)

    slider_move(0.5)  # first figure build imports plotly's templates
    moves = timed_ms(slider_move, [float(t) for t in rng.random(20)])
    print(json.dumps({
        "recordings": args.recordings, "species": args.species, "calls": args.calls,
        "construct_s": round(build_s, 3),
        "at_scalar_ms": {"median": round(float(np.median(scalar)), 4), "p95": round(float(np.percentile(scalar, 95)), 4)},
        "at_per_species_ms": {"median": round(float(np.median(arrays)), 4),
                              "p95": round(float(np.percentile(arrays, 95)), 4)},
        "curve_pooled_ms": round(curve_ms, 2),
        "roc_points_pooled_ms": round(roc_ms, 1),
        "slider_move_ms": {"median": round(float(np.median(moves)), 1), "p95": round(float(np.percentile(moves, 95)), 1),
                           "what": "at() + ROC, DET, metrics-vs-threshold and accuracy-coverage figures"},
    }))


if __name__ == "__main__":
    main()
