"""What the load and memory benchmarks share: a free local port, a generated clip, a process's memory.

Imported by the scripts next to it (``python bench/X.py`` puts ``bench/`` on ``sys.path``); scripts in
``bench/`` do not import from ``tests/``.
"""
from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chirp_wav(seconds: float, rate: int = 48000, seed: int = 0) -> bytes:
    """A WAV of rising 2-6 kHz chirps (0.5 s every second) over faint noise, 16-bit mono; written a minute
    at a time, so an hour-long clip costs no more memory than its bytes."""
    import soundfile as sf

    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    with sf.SoundFile(buf, "w", samplerate=rate, channels=1, format="WAV", subtype="PCM_16") as out:
        for start in range(0, int(np.ceil(seconds)), 60):
            t = np.arange(int(min(60, seconds - start) * rate)) / rate
            phase = t % 1.0
            sweep = np.sin(2 * np.pi * (2000 * phase + 4000 * phase ** 2)) * (phase < 0.5)
            out.write((0.3 * sweep + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    return buf.getvalue()


def proc_mb(pid: int, field: str = "VmRSS") -> float:
    """``field`` (VmRSS, VmHWM) of /proc/PID/status, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def report(rows: list[tuple[str, str]], summary: dict) -> None:
    """The benchmark's figures as an aligned table, then the summary as one JSON line (the last line)."""
    import json

    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(json.dumps(summary), flush=True)
