"""Interruption at any moment: ``kill -9`` a demo training job at random moments, resume it, check the run.

    python bench/bench_kill_resume.py [--tries 20] [--seed 0] [--keep]

In a temporary folder, one uninterrupted ``train_job.py --demo`` run first generates ``demo_data/``
(shared by every try through ``--data-dir``) and measures how long a whole job takes.  Then, for
each try K, it starts

    python train_job.py --demo --data-dir demo_data --out runs --name kill-K --cache-dir cache-K

in a session of its own (a fresh decode cache, so that kills can land while decoding too), kills
the whole process group (the decode worker processes included) with SIGKILL at a moment drawn
uniformly over the reference run's duration, notes the phase the kill hit from the tail of the
job's log (start-up, decoding, epoch N, scoring the test split, export, finished), then runs the
same command plus ``--resume`` and checks the result: ``read_manifest`` accepts ``runs/kill-K``,
``run.json`` says ``complete``, every file of the layout in ``birdcore/runs/folder.py``'s
docstring is there (``export/`` when ``run.json`` says ``savedmodel``), and ``load_run`` loads the
run and scores a generated recording (finite probabilities, one per species).

A kill that lands before the run folder exists leaves nothing to resume: ``--resume`` then
starts the run afresh.  A kill that lands after the job finished leaves a complete run, which
``--resume`` refuses (exit status 2, "a complete run with this name exists"); the try counts as
passed when that complete run checks out.  A job that fails on its own before its kill counts as a
failure too.  The jobs run one at a time.

Prints one line per try and a JSON summary (tries, phases hit, failures with the tail of the
resumed job's log); exits with status 1 if any try failed.  ``--keep`` keeps the temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TRAIN_JOB = ROOT / "train_job.py"
TAIL_CHARS = 3000


def job_command(tmp: Path, name: str, cache: Path, *extra: str, data_dir: Path | None = None) -> list[str]:
    cmd = [sys.executable, str(TRAIN_JOB), "--demo", "--out", str(tmp / "runs"), "--name", name,
           "--cache-dir", str(cache)]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    return cmd + list(extra)


def run_job(cmd: list[str], cwd: Path, log_path: Path, *, timeout: float) -> tuple[int, float]:
    """Run a job to its end (its own session; the group is killed on timeout): (exit status, seconds)."""
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            rc = proc.wait()
    return rc, time.monotonic() - start


def reference_run(tmp: Path) -> tuple[int, float]:
    """The uninterrupted run that generates demo_data/ in ``tmp``: (exit status, seconds of a job
    without the data generation, which the tries skip)."""
    log_path, readme = tmp / "reference.log", tmp / "demo_data" / "README.txt"  # README: written last
    gen_start = gen_end = None
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(job_command(tmp, "reference", tmp / "cache-reference"), cwd=tmp, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while proc.poll() is None:
                if time.monotonic() - start > 3600:
                    raise TimeoutError("the reference run took over an hour")
                now = time.monotonic()
                if gen_start is None and "generating a synthetic demo dataset" in tail(log_path, 1 << 16):
                    gen_start = now
                if gen_end is None and readme.exists():
                    gen_end = now
                time.sleep(0.05)
        finally:
            kill_group(proc)
            proc.wait()
    total = time.monotonic() - start
    generation = (gen_end - gen_start) if gen_start is not None and gen_end is not None else 0.0
    return proc.returncode, total - generation


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the job and its workers (decode processes, resource tracker)
    except ProcessLookupError:
        pass


def tail(path: Path, n: int = TAIL_CHARS) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


_EPOCH = re.compile(r"INFO epoch (\d+)/(\d+) ")


def phase_of(log_text: str) -> str:
    """The phase a job was in, from its log so far (the last milestone line it wrote)."""
    phase = "start-up"
    for line in log_text.splitlines():
        if "run complete:" in line:
            phase = "finished"
        elif " INFO test: " in line:
            phase = "export"
        elif " INFO scoring the " in line:  # "scoring the validation and test splits ..."
            phase = "scoring the test split"
        elif m := _EPOCH.search(line):
            done, total = int(m.group(1)), int(m.group(2))
            phase = f"epoch {done + 1}" if done < total else "scoring the test split"
        elif " INFO split: " in line:
            phase = "epoch 1"
        elif "INFO dataset " in line or "decode cache" in line or line.startswith("decode:"):
            phase = "decoding"
    return phase


def layout_files(manifest: dict) -> list[str]:
    """The files of a complete run, from the layout in ``birdcore.runs.folder``'s docstring."""
    from birdcore.runs import folder

    names = re.findall(r"^    ([\w.]+/?)\s", folder.__doc__ or "", flags=re.M)
    if not names:
        raise RuntimeError("no file layout found in birdcore/runs/folder.py's docstring")
    return [n for n in names if n != "export/" or manifest.get("savedmodel")]


def check_run(run: Path) -> str | None:
    """None if ``run`` is a complete, valid run that loads and scores audio; else what is wrong."""
    import numpy as np

    from birdcore.data.synthetic import make_call
    from birdcore.runs.folder import read_manifest
    from birdcore.runs.loading import load_run

    try:
        manifest = read_manifest(run)
    except Exception as exc:
        return f"read_manifest: {exc}"
    if manifest.get("status") != "complete":
        return f"run.json status {manifest.get('status')!r}"
    missing = [n for n in layout_files(manifest) if not (run / n.rstrip("/")).exists()]
    if missing:
        return f"missing files: {', '.join(missing)}"
    leftovers = [n for n in ("train_state.json", "job.lock", "checkpoints") if (run / n).exists()]
    if leftovers:
        return f"resume state left in a complete run: {', '.join(leftovers)}"
    try:
        loaded = load_run(run)
        rng = np.random.default_rng(0)
        wave = make_call(loaded.codes[0], seconds=5.0, sample_rate=loaded.sample_rate, rng=rng)
        scores = loaded.scorer().score(wave).recording
    except Exception as exc:
        return f"load_run/score: {type(exc).__name__}: {exc}"
    if scores.shape != (len(loaded.codes),) or not np.all(np.isfinite(scores)):
        return f"bad scores {scores!r}"
    return None


def one_try(k: int, tmp: Path, data_dir: Path, kill_at: float, timeout: float) -> dict:
    name = f"kill-{k}"
    cache = tmp / f"cache-{k}"
    partial, final = tmp / "runs" / f".{name}.partial", tmp / "runs" / name
    first_log, resume_log = tmp / f"{name}.log", tmp / f"{name}.resume.log"
    cmd = job_command(tmp, name, cache, data_dir=data_dir)
    rec = {"try": k, "kill_at_s": round(kill_at, 2)}

    with open(first_log, "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=kill_at)
            rec["exited_before_kill"] = rc
        except subprocess.TimeoutExpired:
            rc = None
        kill_group(proc)  # also when it has exited: stray workers of its group
        proc.wait()
    log_text = tail(first_log, 1 << 20)
    rec["phase"] = phase_of(log_text) if rc is None else ("finished" if rc == 0 else f"exited {rc}")
    rec["run_folder_existed"] = partial.is_dir() or final.is_dir()
    try:
        rec["state_epoch"] = json.loads((partial / "train_state.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        pass
    rec["complete_before_resume"] = final.is_dir()

    rc, seconds = run_job(cmd + ["--resume"], tmp, resume_log, timeout=timeout)
    rec["resume_rc"], rec["resume_s"] = rc, round(seconds, 1)
    resumed = tail(resume_log, 1 << 20)
    if m := re.search(r"resuming at epoch (\d+)", resumed):
        rec["resumed_at"] = f"epoch {m.group(1)}"
    elif "going on to scoring" in resumed:
        rec["resumed_at"] = "scoring"
    if rec["complete_before_resume"]:
        rec["note"] = "already complete; --resume " + ("refused it" if rc != 0 else "accepted it")
        expected_rc_ok = True
    else:
        expected_rc_ok = rc == 0
    problems = []
    if rec.get("exited_before_kill", 0) != 0:  # it failed on its own: as much a bug as a failed resume
        problems.append(f"the job exited with status {rec['exited_before_kill']} before the kill")
    if not expected_rc_ok:
        problems.append(f"resume exited with status {rc}")
    if problem := check_run(final):
        problems.append(problem)
    rec["ok"] = not problems
    if problems:
        rec["problem"] = "; ".join(problems)
        rec["first_log_tail"] = tail(first_log)
        rec["resume_log_tail"] = tail(resume_log)
    return rec


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tries", type=int, default=20, help="kill/resume tries")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (runs, caches, logs)")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-kill-resume-"))
    rng = random.Random(args.seed)
    results, failures = [], []
    try:
        # The reference run generates demo_data/ in tmp (the cwd) and times a whole job.
        rc, duration = reference_run(tmp)
        if rc != 0 or check_run(tmp / "runs" / "reference"):
            print(f"the uninterrupted reference run failed (status {rc}):\n{tail(tmp / 'reference.log')}",
                  file=sys.stderr)
            return 1
        print(f"reference run: {duration:.1f} s without the data generation; killing {args.tries} jobs "
              f"at moments in [0, {duration:.1f}] s",
              flush=True)
        data_dir = tmp / "demo_data"
        for k in range(args.tries):
            kill_at = rng.uniform(0.0, duration)
            rec = one_try(k, tmp, data_dir, kill_at, timeout=max(600.0, 10 * duration))
            results.append(rec)
            status = "ok" if rec["ok"] else f"FAILED: {rec['problem']}"
            extra = f"; {rec['note']}" if "note" in rec else ""
            if "resumed_at" in rec:
                extra += f"; resumed at {rec['resumed_at']}"
            if not rec["run_folder_existed"]:
                extra += "; no run folder yet"
            print(f"try {k:2d}: killed at {kill_at:5.1f} s ({rec['phase']}){extra}; resume {rec['resume_s']} s "
                  f"-> {status}", flush=True)
            if not rec["ok"]:
                failures.append(rec)
            shutil.rmtree(tmp / f"cache-{k}", ignore_errors=True)
    finally:
        summary = {
            "tries": len(results), "ok": sum(r["ok"] for r in results), "failed": len(failures),
            "seed": args.seed, "reference_seconds": round(duration, 1) if results else None,
            "phases_hit": dict(Counter(r["phase"] for r in results)),
            "kills_before_run_folder": sum(not r["run_folder_existed"] for r in results),
            "complete_before_resume": sum(r["complete_before_resume"] for r in results),
            "failures": [{k: r[k] for k in ("try", "kill_at_s", "phase", "problem", "first_log_tail",
                                             "resume_log_tail") if k in r} for r in failures],
            "folder": str(tmp) if args.keep else None,
        }
        print(json.dumps(summary, indent=1))
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
