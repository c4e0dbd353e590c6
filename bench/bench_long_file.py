"""Peak memory and time of scoring one long field recording, streamed vs decoded whole.

    nice -n 10 python bench/bench_long_file.py [--hours 2] [--sample-rate 22050] [--compare-whole]

Writes a synthetic mono FLAC (noise plus chirps, 16-bit) of ``--hours`` into a
temporary folder, then measures, each in a fresh process so that peak RSS
(``ru_maxrss``) belongs to that step alone:

- ``stream``: a freshly built tiny model (``demo_config`` at the sample rate)
  scoring the file through ``stream_audio`` + ``Scorer.score_stream``;
- ``decode``: ``decode_audio`` of the whole file in one piece (the baseline);
- ``whole`` (with ``--compare-whole``): decode whole + ``Scorer.score``, the
  path ``birdcore.cli.predict`` used before streaming.

Prints one JSON object; memory in MB (2**20 bytes), times in seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_long_flac(path: Path, *, hours: float, sample_rate: int, seed: int = 0) -> float:
    """Noise plus a chirp every 2.7 s, written 60 s at a time (bounded memory); returns seconds written."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = int(round(hours * 3600 * sample_rate))
    block = 60 * sample_rate
    t_block = np.arange(block) / sample_rate
    with sf.SoundFile(path, "w", samplerate=sample_rate, channels=1, format="FLAC", subtype="PCM_16") as out:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start / sample_rate + t_block[:n]) % 2.7  # seconds into the current chirp period
            freq = 2000 + 3000 * t / 0.4  # Hz, a 0.4 s rising chirp
            chirp = np.where(t < 0.4, 0.3 * np.sin(2 * np.pi * np.cumsum(freq) / sample_rate), 0.0)
            out.write((chirp + 0.05 * rng.standard_normal(n)).astype(np.float32))
    return total / sample_rate


def tiny_model(sample_rate: int):
    """A freshly built, seeded (same weights in every process), untrained demo-size model."""
    import keras

    from birdcore.config import demo_config
    from birdcore.models.keras_audio.model import build_model

    cfg = demo_config()
    cfg.audio.sample_rate = sample_rate
    keras.utils.set_random_seed(0)
    return build_model(cfg, 6), cfg


def worker(mode: str, path: Path, sample_rate: int) -> dict:
    """One measurement in this (fresh) process."""
    from birdcore.io.audio import decode_audio

    out: dict = {"mode": mode}
    if mode == "decode":
        t = time.perf_counter()
        wave = decode_audio(path, sample_rate=sample_rate)
        out.update(seconds=time.perf_counter() - t, audio_seconds=wave.size / sample_rate)
    else:
        from birdcore.models.keras_audio.scorer import Scorer
        from birdcore.io.stream import stream_audio

        model, cfg = tiny_model(sample_rate)
        scorer = Scorer(model)
        scorer.score(np.zeros(cfg.audio.segment_samples, np.float32))  # trace before timing
        out["rss_before_scoring_mb"] = round(peak_rss_mb(), 1)
        t = time.perf_counter()
        if mode == "stream":
            scores = scorer.score_stream(stream_audio(path, sample_rate=sample_rate))
        else:
            scores = scorer.score(decode_audio(path, sample_rate=sample_rate))
        out.update(seconds=time.perf_counter() - t, n_segments=int(scores.segments.shape[0]),
                   segment_seconds=cfg.audio.segment_seconds, recording_max=float(scores.recording.max()))
    out["seconds"] = round(out["seconds"], 1)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def measure(mode: str, path: Path, sample_rate: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--file", str(path), "--sample-rate", str(sample_rate)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"mode": mode, "error": res.stderr.strip().splitlines()[-1:] or [f"exit {res.returncode}"]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--sample-rate", type=int, default=22050)
    p.add_argument("--compare-whole", action="store_true", help="also decode whole + Scorer.score (slow, big)")
    p.add_argument("--worker", choices=["stream", "decode", "whole"], help=argparse.SUPPRESS)
    p.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.file, args.sample_rate)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-long-") as tmp:
        path = Path(tmp) / "long.flac"
        t = time.perf_counter()
        seconds = write_long_flac(path, hours=args.hours, sample_rate=args.sample_rate)
        result = {"hours": args.hours, "sample_rate": args.sample_rate, "audio_seconds": seconds,
                  "flac_mb": round(path.stat().st_size / 2**20, 1), "write_seconds": round(time.perf_counter() - t, 1),
                  "float32_audio_mb": round(seconds * args.sample_rate * 4 / 2**20, 1), "cpu_count": os.cpu_count()}
        modes = ["stream", "decode"] + (["whole"] if args.compare_whole else [])
        for mode in modes:
            result[mode] = measure(mode, path, args.sample_rate)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
