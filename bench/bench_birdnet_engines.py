"""BirdNET scoring speed by engine: LiteRT (XNNPACK), the converted Keras model on TensorFlow, and on
JAX; the same windows, passes interleaved (A B C A B C ...), best and median pass reported as
seconds of audio per second and as ratios to LiteRT; with the largest sigmoid-score difference
from LiteRT.

Each engine lives in its own worker process (a Keras backend is fixed per process), loaded and
warmed up before timing; only one computes at a time.

    python bench/bench_birdnet_engines.py --windows 64 --repeats 5
    python bench/bench_birdnet_engines.py --audio ../shared/data/xc-ca10/train_audio
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

ENTRIES = {"litert": ("litert", None), "keras-tensorflow": ("keras", "tensorflow"), "keras-jax": ("keras", "jax")}


def _windows(args):
    import numpy as np

    from birdcore.models.birdnet import runtime as bn

    if args.audio:
        from birdcore.io.audio import decode_audio

        files = sorted(p for p in Path(args.audio).rglob("*") if p.suffix.lower() in {".mp3", ".wav", ".flac", ".ogg"})
        return np.concatenate([bn.windows(decode_audio(f, sample_rate=bn.SAMPLE_RATE)) for f in files])
    from birdcore.data.synthetic import make_call, species_names

    rng = np.random.default_rng(0)
    codes = list(species_names())
    waves = [make_call(codes[i % len(codes)], seconds=3.0, sample_rate=bn.SAMPLE_RATE, rng=rng)
             for i in range(args.windows)]
    return np.concatenate([bn.windows(w) for w in waves])


def worker(args) -> None:
    """Load one engine, then for each line "go" on stdin score all windows once and print the seconds."""
    import numpy as np

    from birdcore.models.birdnet.engines import birdnet_engine

    x = _windows(args)
    runner = birdnet_engine(args.engine, batch=args.batch)
    out = runner.run(x[: args.batch])  # warm-up: load, compile for the full batch shape
    runner.run(x[: max(1, len(x) % args.batch)])  # and the tail's
    print(json.dumps({"ready": True, "windows": len(x)}), flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        start = time.perf_counter()
        out = runner.run(x)
        seconds = time.perf_counter() - start
        np.save(args.logits, out.logits)
        print(json.dumps({"seconds": seconds}), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--windows", type=int, default=64, help="generated 3 s windows (without --audio)")
    p.add_argument("--audio", type=Path, default=None, help="a folder of recordings to score instead")
    p.add_argument("--batch", type=int, default=16, help="windows per invoke")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--entries", default=",".join(ENTRIES), help="comma-separated: " + ", ".join(ENTRIES))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--engine", default=None, help=argparse.SUPPRESS)
    p.add_argument("--logits", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    import tempfile

    import numpy as np

    tmp = tempfile.mkdtemp()
    procs = {}
    for name in args.entries.split(","):
        engine, backend = ENTRIES[name]
        env = dict(os.environ, **({"KERAS_BACKEND": backend} if backend else {}), TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [sys.executable, __file__, "--worker", name, "--engine", engine, "--batch", str(args.batch),
               "--windows", str(args.windows), "--logits", f"{tmp}/{name}.npy"]
        if args.audio:
            cmd += ["--audio", str(args.audio)]
        procs[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                       stderr=subprocess.DEVNULL)
    n_windows = None
    for name, proc in procs.items():
        n_windows = json.loads(proc.stdout.readline())["windows"]
    times = {name: [] for name in procs}
    for _ in range(args.repeats):
        for name, proc in procs.items():
            proc.stdin.write("go\n")
            proc.stdin.flush()
            times[name].append(json.loads(proc.stdout.readline())["seconds"])
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    audio = n_windows * 3.0
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    ref = np.load(f"{tmp}/litert.npy") if "litert" in procs else None
    print(f"{n_windows} windows ({audio:g} s of audio), batch {args.batch}, {os.cpu_count()} CPU cores, "
          f"{args.repeats} interleaved passes")
    base = max(audio / t for t in times["litert"]) if "litert" in times else None
    for name, ts in times.items():
        best, median = audio / min(ts), audio / statistics.median(ts)
        diff = ""
        if ref is not None and name != "litert":
            diff = f"  max |sigmoid - LiteRT| {np.abs(sig(np.load(f'{tmp}/{name}.npy')) - sig(ref)).max():.1e}"
        ratio = f"  {best / base:.2f}x LiteRT" if base else ""
        print(f"{name:17s} best {best:7.1f} s/s  median {median:7.1f} s/s{ratio}{diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
