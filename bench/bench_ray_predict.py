"""``predict`` in this process against ``predict --cluster local`` (Ray) with 1 and 2 actors, as whole
commands, interleaved.

    python bench/bench_ray_predict.py [--audio ../shared/data/xc-pr20/train_audio] [--run birdnet] \
        [--rounds 3] [--files N] [--json FILE]

Files: every audio file under ``--audio`` (default: xc-pr20's ``train_audio``, 203 real mp3 recordings,
2.64 h), sorted as ``birdcore.io.inputs`` lists them; ``--files N`` keeps the first N.  Before the first
round every file is read once (page cache) and ``import ray`` runs once (Ray's libraries in memory).

Each round runs the three configurations once, each as a fresh process timed from start to exit, its
output (``--out``, CSV, ``--min-score``, default 0.5) in a new temporary folder (no resume):

- ``in-process``: ``python -m birdcore.predict RUN FILES... --out X.csv --min-score 0.5``;
- ``ray 1 actor``: the same with ``--cluster local --actors 1`` (``--cpus-per-actor`` 1, the default);
- ``ray 2 actors``: the same with ``--cluster local --actors 2``;
- with ``--with-2cpu-actor``, ``ray 1 actor, 2 CPUs``: ``--cluster local --actors 1 --cpus-per-actor 2``.
  (In this process LiteRT runs as many threads as there are cores, and a thread decodes the next file
  meanwhile; a default actor reserves 1 CPU, runs 1 LiteRT thread and decodes its own files in turn.)

The order rotates (round 1: A B C, round 2: B C A, round 3: C A B, ...), so none always runs first.
Per run: wall seconds, Ray's start-up (``Ray cluster local: N CPUs (X s to start or join)`` in the
log) and the log's last line (``N files scored (H h of audio, R× real time), ...``: R counts from the
start of scoring, Ray's start-up included, not the imports).  Every run's CSV rows, sorted, must equal
those of the first in-process run; where they do not, the largest score difference over matching
(file, start, end, species) rows is reported and the script exits 1.

Reported per configuration: every round's wall seconds, min / median / max, the median of Ray's
start-up and of × real time, and its median wall time / the in-process median; then Ray's overhead
at 1 actor, ``(ray1 - in-process) / in-process`` on the medians, also with Ray's start-up taken out of
the Ray runs (``ray1 - start``).  ``uptime`` (the load) before and after.  A run that fails (exit
status, no summary line) prints its command and the tail of its stderr, and the script exits 1.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    "in-process": [],
    "ray 1 actor": ["--cluster", "local", "--actors", "1"],
    "ray 2 actors": ["--cluster", "local", "--actors", "2"],
}
EXTRA = {  # --with-2cpu-actor: one actor holding both cores (2 LiteRT threads), as the in-process run has
    "ray 1 actor, 2 CPUs": ["--cluster", "local", "--actors", "1", "--cpus-per-actor", "2"],
}
REFERENCE = "in-process"

RAY_START = re.compile(r"Ray cluster \S+: (\d+) CPUs \(([\d.]+) s to start or join\)")
SUMMARY = re.compile(r"(\d+) files scored \(([\d.]+) h of audio, ([\d.]+)× real time\), (\d+) failed, "
                     r"(\d+) detections")


class RunFailed(RuntimeError):
    pass


def list_files(audio: Path, limit: int | None) -> list[str]:
    """The audio files under ``audio`` as ``predict`` lists them, sorted; the first ``limit``."""
    sys.path.insert(0, str(ROOT))
    from birdcore.io.inputs import list_inputs

    listing = list_inputs([str(audio)])
    files = sorted(listing.files)
    if not files:
        raise SystemExit(f"{audio}: no audio files ({'; '.join(listing.problems)})")
    return files[:limit] if limit else files


def audio_seconds(files: list[str]) -> float | None:
    try:
        import soundfile as sf
    except ImportError:
        return None
    return sum(sf.info(f).duration for f in files)


def warm_up(files: list[str], py: str) -> None:
    """Every file read once (page cache) and Ray imported once (its shared libraries), so that the first
    run of the first round does not pay for them."""
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 20):
                pass
    subprocess.run([py, "-c", "import ray, ray.data"], cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)


def read_rows(path: Path) -> list[tuple]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return []
        return sorted(tuple(row) for row in reader)


def compare(rows: list[tuple], ref: list[tuple]) -> dict:
    """Whether ``rows`` equal ``ref`` (both sorted); else the rows only in one of them (by file, start,
    end, species) and the largest score difference over the rows in both."""
    if rows == ref:
        return {"identical": True, "max_score_diff": 0.0}
    def keyed(table):
        return {row[:4]: row for row in table}
    a, b = keyed(rows), keyed(ref)
    common = a.keys() & b.keys()
    diff = 0.0
    for key in common:
        try:
            diff = max(diff, abs(float(a[key][-1]) - float(b[key][-1])))
        except ValueError:
            diff = float("inf")
    return {"identical": False, "max_score_diff": diff, "rows": len(rows), "reference_rows": len(ref),
            "only_here": len(a.keys() - b.keys()), "only_in_reference": len(b.keys() - a.keys())}


def run_once(name: str, base: list[str], extra: list[str], min_score: float, timeout: float) -> tuple[dict, list]:
    """One command in a fresh temporary folder: its figures and its sorted CSV rows."""
    with tempfile.TemporaryDirectory(prefix="bench-ray-predict-") as tmp:
        out = Path(tmp) / "detections.csv"
        cmd = [*base, "--out", str(out), "--min-score", f"{min_score:g}", *extra]
        t0 = time.perf_counter()
        try:
            res = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            tail = (exc.stderr or b"")
            tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
            raise RunFailed(_failure(name, cmd, f"timed out after {timeout:.0f} s", tail)) from None
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            raise RunFailed(_failure(name, cmd, f"exit status {res.returncode}", res.stderr))
        summary = SUMMARY.search(res.stderr)
        if summary is None:
            raise RunFailed(_failure(name, cmd, "no 'N files scored' line in its log", res.stderr))
        start = RAY_START.search(res.stderr)
        if extra and start is None:
            raise RunFailed(_failure(name, cmd, "no 'Ray cluster ...' line in its log", res.stderr))
        figures = {"wall_s": wall, "ray_start_s": float(start.group(2)) if start else None,
                   "ray_cpus": int(start.group(1)) if start else None,
                   "files": int(summary.group(1)), "audio_h": float(summary.group(2)),
                   "x_real_time": float(summary.group(3)), "failed": int(summary.group(4)),
                   "detections": int(summary.group(5)), "load1_after": round(os.getloadavg()[0], 2)}
        if figures["failed"]:
            raise RunFailed(_failure(name, cmd, f"{figures['failed']} files failed", res.stderr))
        return figures, read_rows(out)


def _failure(name: str, cmd: list[str], why: str, stderr: str) -> str:
    shown = " ".join(cmd) if len(cmd) <= 14 else " ".join(cmd[:4]) + f" ... ({len(cmd)} arguments) " + " ".join(cmd[-8:])
    tail = "\n".join((stderr or "").rstrip().splitlines()[-30:])
    return f"{name}: {why}\n  command: {shown}\n  stderr (last lines):\n{tail}"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], stdout=subprocess.PIPE, text=True).stdout.strip()
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def stats(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio", type=Path, default=Path("../shared/data/xc-pr20/train_audio"),
                   help="folder of audio files (relative paths: to the repository root)")
    p.add_argument("--run", default="birdnet", help="run folder, or 'birdnet' (BirdNET zero-shot)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--files", type=int, default=None, help="only the first N files")
    p.add_argument("--min-score", type=float, default=0.5)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one command may take")
    p.add_argument("--json", type=Path, default=None, help="also write every run's figures here")
    p.add_argument("--with-2cpu-actor", action="store_true",
                   help="a fourth configuration: --cluster local --actors 1 --cpus-per-actor 2 (the in-process run "
                        "uses every core for LiteRT; a default actor reserves 1 CPU and runs 1 thread)")
    args = p.parse_args()
    configs = {**CONFIGS, **(EXTRA if args.with_2cpu_actor else {})}
    if args.rounds < 1 or (args.files is not None and args.files < 1):
        p.error("--rounds and --files must be at least 1")

    audio = args.audio if args.audio.is_absolute() else (ROOT / args.audio)
    files = list_files(audio.resolve(), args.files)
    run = args.run if args.run == "birdnet" or Path(args.run).is_absolute() else str((Path.cwd() / args.run).resolve())
    py = sys.executable
    base = [py, "-m", "birdcore.predict", run, *files]
    seconds = audio_seconds(files)
    print(f"{len(files)} files" + ("" if seconds is None else f", {seconds:.0f} s ({seconds / 3600:.2f} h) of audio")
          + f"; run {args.run}; {os.cpu_count()} CPUs; warming up", file=sys.stderr, flush=True)
    warm_up(files, py)

    names = list(configs)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    rows: dict[str, list[list[tuple]]] = {n: [] for n in names}
    load_before = uptime()
    try:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                figures, table = run_once(name, base, configs[name], args.min_score, args.timeout)
                runs[name].append({"round": r + 1, **figures})
                rows[name].append(table)
                start = "" if figures["ray_start_s"] is None else f", Ray start {figures['ray_start_s']:.1f} s"
                print(f"round {r + 1}: {name}: {figures['wall_s']:.1f} s{start}, {figures['x_real_time']:.0f}× real "
                      f"time, {figures['detections']} detections, load {figures['load1_after']}", file=sys.stderr, flush=True)
    except RunFailed as exc:
        print(f"FAILED {exc}", file=sys.stderr)
        return 1
    load_after = uptime()

    ref = rows[REFERENCE][0]
    mismatches = 0
    for name in names:
        for figures, table in zip(runs[name], rows[name]):
            figures["rows"] = len(table)
            figures["same_rows"] = compare(table, ref)
            mismatches += not figures["same_rows"]["identical"]

    med = {n: statistics.median(f["wall_s"] for f in runs[n]) for n in names}
    print(f"\n{len(files)} files" + ("" if seconds is None else f", {seconds / 3600:.2f} h of audio")
          + f", run {args.run}, --min-score {args.min_score:g}, {args.rounds} rounds (rotating order); "
          f"{os.cpu_count()} CPUs")
    print(f"load before: {load_before}\nload after:  {load_after}\n")
    head = ("configuration", "wall s (each round)", "min", "median", "max", "Ray start s (med)",
            "× real time (med)", "median / in-process", "rows = in-process", "max score diff")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in names:
        walls = [f["wall_s"] for f in runs[name]]
        lo, mid, hi = stats(walls)
        starts = [f["ray_start_s"] for f in runs[name] if f["ray_start_s"] is not None]
        start = f"{statistics.median(starts):.1f}" if starts else "–"
        xrt = statistics.median(f["x_real_time"] for f in runs[name])
        same = sum(f["same_rows"]["identical"] for f in runs[name])
        diff = max(f["same_rows"]["max_score_diff"] for f in runs[name])
        print(f"| {name} | {', '.join(f'{w:.1f}' for w in walls)} | {lo:.1f} | {mid:.1f} | {hi:.1f} | {start} | "
              f"{xrt:.0f} | {mid / med[REFERENCE]:.3f} | {same}/{len(walls)} | {diff:.2g} |")

    ray1 = runs["ray 1 actor"]
    overhead = (med["ray 1 actor"] - med[REFERENCE]) / med[REFERENCE]
    ray1_net = statistics.median(f["wall_s"] - f["ray_start_s"] for f in ray1)
    overhead_net = (ray1_net - med[REFERENCE]) / med[REFERENCE]
    print(f"\nRay's overhead at 1 actor: {100 * overhead:+.1f} % of the in-process median wall time "
          f"({med['ray 1 actor']:.1f} s vs {med[REFERENCE]:.1f} s); without Ray's start-up "
          f"(median of wall - start, {ray1_net:.1f} s): {100 * overhead_net:+.1f} %")
    print(f"2 actors vs 1 actor: {med['ray 1 actor'] / med['ray 2 actors']:.2f}× faster (median wall times)")
    print(f"CSV rows: {len(ref)} in the in-process reference; "
          + ("every run's rows identical to it" if not mismatches else f"{mismatches} runs DIFFER from it"))
    for name in names:
        for f in runs[name]:
            if not f["same_rows"]["identical"]:
                print(f"  {name}, round {f['round']}: {json.dumps(f['same_rows'])}")

    if args.json is not None:
        args.json.write_text(json.dumps({
            "files": len(files), "audio_s": seconds, "run": args.run, "min_score": args.min_score,
            "rounds": args.rounds, "cpus": os.cpu_count(), "uptime_before": load_before, "uptime_after": load_after,
            "runs": runs, "median_wall_s": med, "ray1_overhead": overhead, "ray1_overhead_without_start": overhead_net,
        }, indent=1))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
