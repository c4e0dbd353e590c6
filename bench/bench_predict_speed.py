"""``predict`` against the bare BirdNET loop, as whole processes, interleaved (issue #15, must-have 6).

    python bench/bench_predict_speed.py --data-dir ../shared/data/xc-pr20 \
        --zero-shot-run /tmp/bench/runs/splits-seed1234-birdnet-zero-shot \
        --head-run /tmp/bench/runs/splits-seed1234-head-default [--finetune-run RUN] [--rounds 3] [--old-tree DIR]

Files: 3 recordings per species of ``train_audio`` (20 species: 60 files), drawn with
``numpy.random.default_rng(--seed)`` from each species' sorted file list; the total audio length is
reported.  Each round runs every entry once, in the same order (A B C ... A B C ...), each as a fresh
process timed from start to exit:

- ``bare``: ``bench/bare_birdnet_loop.py`` (librosa decoding at 48 kHz, 3 s windows, LiteRT with
  2 threads, one invoke per file): the reference of each round's ratios;
- ``compute``: the same with ``--compute-only``: windows decoded beforehand (cached as .npy), only the
  invokes timed (inside the process): BirdNET's bare compute;
- ``predict birdnet``, ``predict ZERO_SHOT_RUN``, ``predict HEAD_RUN`` and, with ``--finetune-run``,
  ``predict FINETUNE_RUN`` (``--json``, 2 cores);
- with ``--old-tree DIR`` (a checkout of an earlier commit, e.g. ``git archive HEAD birdcore | tar -x
  -C DIR``), the same three ``predict`` commands run from there ("before");
- the single clip ``--clip`` (about 72 s) through bare and the three ``predict`` commands.

Reported per entry: every round's seconds, min and median, ``speed_vs_bare`` (bare's seconds in the
same round / the entry's: ≥ 1 is as fast as the bare loop or faster) and ``vs_compute`` (the entry's
seconds / the round's bare compute: ≤ 1.10 is within 10 %), min and median over rounds.  Also
for each ``predict`` on the clip: its import time, its run time inside the process, and whether
Keras or TensorFlow were imported and ``uptime`` before and after.  Output: one JSON object.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def choose_files(data_dir: Path, per_species: int, seed: int) -> list[Path]:
    """``per_species`` recordings of each species folder of ``train_audio``, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for folder in sorted(p for p in (data_dir / "train_audio").iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.mp3"))
        out += [files[i] for i in sorted(rng.choice(len(files), size=min(per_species, len(files)), replace=False))]
    return out


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}...: exit {res.returncode}\n{res.stderr[-2000:]}")
    return seconds, res.stdout


def import_time(cmd: list[str], cwd: Path) -> dict:
    """For a ``python -m birdcore.predict ...`` command: the seconds from start until ``main`` is about
    to run (imports), the whole run, and whether Keras / TensorFlow were in ``sys.modules`` at the end.
    (``-X importtime`` misses what is imported while fd 2 is captured, as TensorFlow is, quietly.)"""
    argv = cmd[3:]
    code = ("import sys, time, json; t0 = time.perf_counter(); from birdcore.cli.predict import main; "
            "t1 = time.perf_counter(); import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(sys.argv[1:])\n"
            "print(json.dumps({'imports_s': round(t1 - t0, 2), 'run_s': round(time.perf_counter() - t0, 2), "
            "'keras': 'keras' in sys.modules, 'tensorflow': 'tensorflow' in sys.modules}))")
    res = subprocess.run([cmd[0], "-c", code, *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def uptime() -> str:
    return subprocess.run(["uptime"], stdout=subprocess.PIPE, text=True).stdout.strip()


def summarize(times: dict[str, list[float]], ref: str, compute: list[float] | None) -> dict:
    out = {}
    for name, secs in times.items():
        speed = [b / s for b, s in zip(times[ref], secs)]
        entry = {"seconds": [round(s, 2) for s in secs], "min_s": round(min(secs), 2),
                 "median_s": round(statistics.median(secs), 2),
                 "speed_vs_bare": {"min": round(min(speed), 3), "median": round(statistics.median(speed), 3),
                                   "each": [round(x, 3) for x in speed]}}
        if compute is not None:
            rel = [s / c for s, c in zip(secs, compute)]
            entry["vs_compute"] = {"min": round(min(rel), 3), "median": round(statistics.median(rel), 3),
                                   "each": [round(x, 3) for x in rel]}
        out[name] = entry
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--zero-shot-run", type=Path, required=True)
    p.add_argument("--head-run", type=Path, required=True)
    p.add_argument("--finetune-run", type=Path, default=None, help="a fine-tuned run (kind birdnet_finetune): its predict runs too")
    p.add_argument("--per-species", type=int, default=3)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clip", type=Path, default=None, help="single clip (default: train_audio/purtan1/XC33685.mp3, 72 s)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/bench/bare-windows"), help="decoded windows of --compute-only")
    p.add_argument("--old-tree", type=Path, default=None, help="a checkout of earlier code: its predict runs too")
    p.add_argument("--old-runs", nargs="+", default=None, metavar="LABEL",
                   help="with --old-tree, only these entries run from it (birdnet, zero-shot, head, fine-tuned)")
    p.add_argument("--no-clip", action="store_true")
    p.add_argument("--imports-only", action="store_true", help="only the import figures of the clip commands")
    args = p.parse_args()

    import soundfile as sf

    py = sys.executable
    args.data_dir = args.data_dir.resolve()  # entries run from other folders (--old-tree)
    files = [str(f) for f in choose_files(args.data_dir, args.per_species, args.seed)]
    audio_s = sum(sf.info(f).duration for f in files)
    clip = str(args.clip or args.data_dir / "train_audio" / "purtan1" / "XC33685.mp3")
    runs = {"birdnet": "birdnet", "zero-shot run": str(args.zero_shot_run), "head run": str(args.head_run)}
    if args.finetune_run:
        runs["fine-tuned run"] = str(args.finetune_run)
    trees = {"": ROOT, **({"before: ": args.old_tree} if args.old_tree else {})}

    batch = {"bare": ([py, str(HERE / "bare_birdnet_loop.py"), *files], ROOT)}
    def chosen(prefix: str, label: str) -> bool:
        return not prefix or args.old_runs is None or label.split(" run")[0] in args.old_runs

    for prefix, tree in trees.items():
        for label, ref in runs.items():
            if chosen(prefix, label):
                batch[f"{prefix}predict {label}"] = ([py, "-m", "birdcore.predict", ref, *files, "--json"], tree)
    single = {"clip bare": ([py, str(HERE / "bare_birdnet_loop.py"), clip], ROOT)}
    for prefix, tree in trees.items():
        for label, ref in runs.items():
            if chosen(prefix, label):
                single[f"clip {prefix}predict {label}"] = ([py, "-m", "birdcore.predict", ref, clip, "--json"], tree)
    compute_cmd = [py, str(HERE / "bare_birdnet_loop.py"), "--compute-only", "--cache", str(args.cache), *files]

    if args.imports_only:
        print(json.dumps({name: import_time(cmd, cwd) for name, (cmd, cwd) in single.items() if "predict" in name},
                         indent=1))
        return
    print(f"{len(files)} files, {audio_s:.0f} s of audio; warming up (caches, page cache)", file=sys.stderr)
    subprocess.run(compute_cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for cmd, cwd in single.values():
        subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    load_before = uptime()
    times: dict[str, list[float]] = {name: [] for name in [*batch, *([] if args.no_clip else single)]}
    compute, compute_proc = [], []
    for r in range(args.rounds):
        for name, (cmd, cwd) in batch.items():
            times[name].append(timed(cmd, cwd)[0])
            print(f"round {r + 1}: {name}: {times[name][-1]:.1f} s", file=sys.stderr, flush=True)
        secs, out = timed(compute_cmd, ROOT)
        bare_out = json.loads(out.strip().splitlines()[-1])
        compute.append(bare_out["loop_s"])
        n_windows = bare_out["windows"]
        compute_proc.append(secs)
        print(f"round {r + 1}: compute: {compute[-1]:.1f} s ({secs:.1f} s process)", file=sys.stderr, flush=True)
        if not args.no_clip:
            for name, (cmd, cwd) in single.items():
                times[name].append(timed(cmd, cwd)[0])
    imports = {} if args.no_clip else {name: import_time(cmd, cwd) for name, (cmd, cwd) in single.items()
                                       if "predict" in name}
    report = {
        "files": len(files), "audio_s": round(audio_s, 1), "choice": f"{args.per_species} per species, seed {args.seed}",
        "rounds": args.rounds, "cpus": os.cpu_count(), "uptime_before": load_before, "uptime_after": uptime(),
        "bare_compute_s": {"each": [round(c, 2) for c in compute], "min": round(min(compute), 2),
                           "median": round(statistics.median(compute), 2),
                           "windows": n_windows, "ms_per_window": round(1000 * min(compute) / n_windows, 1),
                           "process_s": [round(c, 2) for c in compute_proc]},
        "batch": summarize({k: v for k, v in times.items() if not k.startswith("clip")}, "bare", compute),
    }
    if not args.no_clip:
        report["clip"] = {"file": clip, "seconds": round(sf.info(clip).duration, 1),
                          **summarize({k: v for k, v in times.items() if k.startswith("clip")}, "clip bare", None)}
        report["imports"] = imports
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
