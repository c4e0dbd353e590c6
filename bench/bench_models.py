"""Accuracy and end-to-end speed of several runs on the same held-out recordings, in one process.

    python bench/bench_models.py --data-dir ../shared/data/xc-pr20 runs/A runs/B ... [--max-files N]

For each run folder (a trained run, a --backbone birdnet run, or a --baseline birdnet run) it prints
the test metrics recorded in the run (all runs share the split) and times scoring the test split's
files end to end: decoding the file from disk (no cache) and resampling, then the model.  Reports
seconds of audio per wall-clock second (best of --repeats passes, runs interleaved), and each run's
speed relative to the last run given.
Output: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--max-files", type=int, default=None, help="time only the first N test files")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the files per run (best kept)")
    args = p.parse_args()

    from birdcore.audio import decode_audio
    from birdcore.dataset import read_metadata
    from birdcore.export import load_run

    meta = read_metadata(args.data_dir).set_index("recording_id")
    loaded = {}
    for run_dir in args.runs:
        run = load_run(run_dir)
        split = pd.read_csv(run_dir / "split.csv", keep_default_na=False)
        test_ids = split.loc[split["split"] == "test", "recording_id"].tolist()[: args.max_files]
        paths = [meta.loc[r, "path"] for r in test_ids]
        scorer = run.scorer()
        scorer.score(decode_audio(paths[0], sample_rate=run.sample_rate))  # warm-up: tracing, allocation
        loaded[run_dir] = (run, paths, scorer)
    walls = {run_dir: [] for run_dir in args.runs}
    audio = {}
    for _ in range(args.repeats):  # runs in turn, A B C A B C ..., best pass kept (the machine is noisy)
        for run_dir, (run, paths, scorer) in loaded.items():
            audio_s = 0.0
            t0 = time.perf_counter()
            for path in paths:
                wave = decode_audio(path, sample_rate=run.sample_rate)
                audio_s += len(wave) / run.sample_rate
                scorer.score(wave)
            walls[run_dir].append(time.perf_counter() - t0)
            audio[run_dir] = audio_s
    results = {}
    for run_dir, (run, paths, _) in loaded.items():
        audio_s = audio[run_dir]
        wall = min(walls[run_dir])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        results[run_dir.name] = {
            "kind": run.kind, "backbone": run.manifest.get("backbone"),
            "test_top1": metrics["top1"], "test_top5": metrics["top5"], "test_macro_auc": metrics["macro_auc"],
            "n_test": metrics["n_recordings"], "files_timed": len(paths), "audio_seconds": round(audio_s, 1),
            "wall_seconds": round(wall, 2), "audio_s_per_wall_s": round(audio_s / wall, 1),
            "all_pass_seconds": [round(w, 2) for w in walls[run_dir]],
        }
    base = results[args.runs[-1].name]["audio_s_per_wall_s"]
    for r in results.values():
        r["speed_vs_last"] = round(r["audio_s_per_wall_s"] / base, 2)
    print(json.dumps({"data_dir": str(args.data_dir), "cpu_count": os.cpu_count(), "runs": results}, indent=1))


if __name__ == "__main__":
    main()
