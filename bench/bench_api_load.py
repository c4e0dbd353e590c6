"""The classification API under load: many clients, bad uploads mixed in, latency and the server's memory.

    python bench/bench_api_load.py [--requests 1000] [--clients 16] [--clip FILE | --seconds 21]
                                   [--run birdnet] [--max-concurrent 2] [--bad-every 10] [--warmup 32]

Starts the API as a subprocess (``python -m birdcore.serve --run RUN --port P --max-concurrent M``),
waits for ``/healthz``, warms it up (``--warmup`` requests from all the clients, bad ones included), then
sends ``--requests`` POST /v1/classify from ``--clients`` threads, each with its own ``requests``
session.  The clip is ``--clip`` or a generated 48 kHz chirp WAV of ``--seconds``.  Every
``--bad-every``-th request is a bad upload, in turn: an empty file, bytes that are not audio, no
``file`` field, and ``top`` out of range.

Records the counts by status code and kind of request, p50/p95/max latency of the good requests, the
throughput (all requests / wall time, and classifications / wall time), and the server's resident
memory (``VmRSS`` of /proc/PID/status) after the warm-up and at the end.  Prints a table and one JSON
line; exits 1 when a requirement fails: a 5xx or a connection error at all, a bad upload answered
other than 4xx, a good one other than 200, or memory growing by ``--max-growth`` (10 %) or more.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

from load_common import chirp_wav, free_port, proc_mb, report

ROOT = Path(__file__).resolve().parents[1]
BAD_KINDS = ("empty file", "not audio", "no file field", "top out of range")


def request_parts(i: int, clip: bytes, name: str, bad_every: int) -> tuple[str, list]:
    """The kind of the ``i``-th request and its multipart parts (``requests``' ``files=``)."""
    if bad_every and i % bad_every == bad_every - 1:
        kind = BAD_KINDS[(i // bad_every) % len(BAD_KINDS)]
        parts = {"empty file": [("file", ("empty.wav", b"", "audio/wav"))],
                 "not audio": [("file", ("notes.wav", b"just some text, not audio " * 40, "audio/wav"))],
                 "no file field": [("top", (None, "3"))],
                 "top out of range": [("top", (None, "999")), ("file", (name, clip, "audio/wav"))]}[kind]
        return kind, parts
    return "good", [("top", (None, "5")), ("file", (name, clip, "audio/wav"))]


def drive(url: str, n: int, clients: int, clip: bytes, *, name: str = "clip.wav", bad_every: int = 10,
          start: int = 0, timeout: float = 300.0) -> tuple[list[dict], float]:
    """``n`` POST /v1/classify from ``clients`` threads (a ``requests.Session`` each); one dict per request
    (kind, status: an int or the exception's name, seconds) and the wall time."""
    local = threading.local()

    def one(i: int) -> dict:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        kind, parts = request_parts(i, clip, name, bad_every)
        began = time.perf_counter()
        try:
            resp = session.post(f"{url}/v1/classify", files=parts, timeout=timeout)
            status, body = resp.status_code, resp.content
            if status == 200 and not json.loads(body).get("top"):
                status = "200 without species"
        except requests.RequestException as exc:
            status = type(exc).__name__
        return {"i": i, "kind": kind, "status": status, "seconds": time.perf_counter() - began}

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        rows = list(pool.map(one, range(start, start + n)))
    return rows, time.perf_counter() - began


def check(rows: list[dict]) -> list[str]:
    """The requirements a list of ``drive`` rows fails: any 5xx or connection error, a bad upload not
    answered 4xx, a good one not 200."""
    problems = []
    server_errors = [r for r in rows if not isinstance(r["status"], int) or r["status"] >= 500]
    if server_errors:
        problems.append(f"{len(server_errors)} requests got a 5xx or no answer: "
                        f"{Counter(str(r['status']) for r in server_errors).most_common(5)}")
    bad = [r for r in rows if r["kind"] != "good" and not (isinstance(r["status"], int) and 400 <= r["status"] < 500)]
    if bad:
        problems.append(f"{len(bad)} bad uploads not answered 4xx: "
                        f"{Counter((r['kind'], str(r['status'])) for r in bad).most_common(5)}")
    good = [r for r in rows if r["kind"] == "good" and r["status"] != 200]
    if good:
        problems.append(f"{len(good)} good uploads not answered 200: "
                        f"{Counter(str(r['status']) for r in good).most_common(5)}")
    return problems


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode} before answering /healthz")
        try:
            resp = requests.get(f"{url}/healthz", timeout=2)
            if resp.status_code == 200:
                return resp.json()
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url}/healthz did not answer within {timeout:g} s")


def percentile(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests measured (bad ones included)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (threads)")
    parser.add_argument("--clip", type=Path, help="an audio file to send (default: a generated chirp WAV)")
    parser.add_argument("--seconds", type=float, default=21.0, help="length of the generated clip")
    parser.add_argument("--run", default="birdnet", help="the API's --run")
    parser.add_argument("--max-concurrent", type=int, default=2, help="the API's --max-concurrent")
    parser.add_argument("--bad-every", type=int, default=10, help="every Nth request is a bad upload (0: none)")
    parser.add_argument("--warmup", type=int, default=32, help="requests before the memory baseline")
    parser.add_argument("--max-growth", type=float, default=10.0, help="allowed RSS growth after warm-up, percent")
    parser.add_argument("--port", type=int, default=0, help="the API's port (0: a free one)")
    args = parser.parse_args()

    clip = args.clip.read_bytes() if args.clip else chirp_wav(args.seconds)
    name = args.clip.name if args.clip else f"chirp{args.seconds:g}s.wav"
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = tempfile.NamedTemporaryFile("w+", prefix="bench_api_load_", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "birdcore.serve", "--run", args.run, "--port", str(port),
           "--max-concurrent", str(args.max_concurrent)]
    print(f"$ {' '.join(cmd[1:])}  (log: {log.name})", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        health = wait_healthy(url, proc)
        started_s = time.perf_counter() - t0
        rss_loaded = proc_mb(proc.pid)
        warm_rows, _ = drive(url, args.warmup, args.clients, clip, name=name, bad_every=args.bad_every)
        rss_warm = proc_mb(proc.pid)
        rows, wall = drive(url, args.requests, args.clients, clip, name=name, bad_every=args.bad_every,
                           start=args.warmup)
        rss_end, hwm = proc_mb(proc.pid), proc_mb(proc.pid, "VmHWM")
        alive = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    good = [r["seconds"] for r in rows if r["kind"] == "good" and r["status"] == 200]
    counts = Counter(str(r["status"]) for r in rows)
    by_kind = {kind: dict(Counter(str(r["status"]) for r in rows if r["kind"] == kind))
               for kind in ("good", *BAD_KINDS)}
    growth = 100.0 * (rss_end - rss_warm) / rss_warm
    problems = check(warm_rows + rows)
    if growth >= args.max_growth:
        problems.append(f"server RSS grew {growth:.1f} % after warm-up (limit {args.max_growth:g} %)")
    if not alive:
        problems.append("the API process died")
    summary = {
        "bench": "api_load", "model": health.get("model"), "clip": name, "clip_bytes": len(clip),
        "requests": args.requests, "clients": args.clients, "max_concurrent": args.max_concurrent,
        "bad_every": args.bad_every, "warmup": args.warmup, "cpus": os.cpu_count(), "startup_s": round(started_s, 1),
        "status_counts": dict(counts), "by_kind": by_kind, "good_ok": len(good),
        "latency_s": {"p50": round(percentile(good, 50), 3), "p95": round(percentile(good, 95), 3),
                      "max": round(max(good, default=float("nan")), 3)},
        "wall_s": round(wall, 1), "requests_per_s": round(args.requests / wall, 2),
        "classifications_per_s": round(len(good) / wall, 2),
        "rss_mb": {"loaded": round(rss_loaded, 1), "after_warmup": round(rss_warm, 1), "end": round(rss_end, 1),
                   "peak_hwm": round(hwm, 1)},
        "rss_growth_pct": round(growth, 2), "ok": not problems, "problems": problems,
    }
    rows_out = [
        ("model", f"{summary['model']} (--max-concurrent {args.max_concurrent}, {os.cpu_count()} CPUs)"),
        ("clip", f"{name} ({len(clip) / 1024:.0f} KB)"),
        ("requests", f"{args.requests} from {args.clients} clients, every {args.bad_every}th bad; "
                     f"{args.warmup} warm-up requests before"),
        ("status codes", ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))),
        *((f"  {kind}", ", ".join(f"{k}: {v}" for k, v in sorted(c.items()))) for kind, c in by_kind.items()),
        ("latency of good (s)", f"p50 {summary['latency_s']['p50']:.2f}, p95 {summary['latency_s']['p95']:.2f}, "
                                f"max {summary['latency_s']['max']:.2f}"),
        ("throughput", f"{summary['requests_per_s']:.2f} requests/s, {summary['classifications_per_s']:.2f} "
                       f"classifications/s ({wall:.1f} s wall)"),
        ("server RSS (MB)", f"loaded {rss_loaded:.0f}, after warm-up {rss_warm:.0f}, end {rss_end:.0f} "
                            f"({growth:+.1f} %), peak {hwm:.0f}"),
        ("requirements", "met" if not problems else "FAILED: " + "; ".join(problems)),
    ]
    report(rows_out, summary)
    if problems:
        log.seek(0)
        print("server log (tail):\n" + log.read()[-3000:], file=sys.stderr)
    log.close()
    os.unlink(log.name)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
