"""Cost of overlapping BirdNET windows in batch scoring: ``predict birdnet --overlap S`` vs windows every 3 s.

    python bench/bench_overlap.py --paths ../shared/data/xc-ca10/train_audio [--overlap 1.5] [--pairs 3]

Runs the two ``python -m birdcore.predict birdnet PATHS --json`` commands in turn (B A B A ...,
one warm-up pair not counted), each a whole process with start-up and decoding, and reports each
one's wall seconds and the ratio A/B pair by pair (pairing keeps the ratio meaningful on a noisy
machine).  Prints one JSON object; quote the median ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--paths", nargs="+", required=True, help="audio files or folders to score")
    p.add_argument("--overlap", type=float, default=1.5)
    p.add_argument("--pairs", type=int, default=3)
    args = p.parse_args()

    base = [sys.executable, "-m", "birdcore.predict", "birdnet", *map(str, args.paths), "--json"]
    with_overlap = [*base, "--overlap", str(args.overlap)]
    timed(base), timed(with_overlap)  # warm-up: file cache, imports
    plain, overlapped = [], []
    for _ in range(args.pairs):
        plain.append(timed(base))
        overlapped.append(timed(with_overlap))
    ratios = [a / b for a, b in zip(overlapped, plain)]
    print(json.dumps({"paths": [str(x) for x in args.paths], "overlap_s": args.overlap, "pairs": args.pairs,
                      "wall_s_no_overlap": [round(x, 2) for x in plain],
                      "wall_s_overlap": [round(x, 2) for x in overlapped],
                      "ratio_median": round(statistics.median(ratios), 3),
                      "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3)}, indent=1))


if __name__ == "__main__":
    main()
