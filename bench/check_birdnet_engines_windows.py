"""Per-window equality of the BirdNET engines: every 3 s window of every recording in a folder scored by
LiteRT and by the converted Keras model (current Keras backend), the largest |sigmoid difference|
over the 6,522 classes per window; prints max, 95th percentile, median, the share within 1e-4 and
the worst windows.

    python bench/check_birdnet_engines_windows.py ../shared/data/xc-pr20/train_audio
    KERAS_BACKEND=jax python bench/check_birdnet_engines_windows.py ../shared/data/xc-ca10/train_audio
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="recordings (searched recursively)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--worst", type=int, default=5, help="list this many worst windows")
    args = p.parse_args()
    from birdcore.io.audio import decode_audio
    from birdcore.models.birdnet import runtime as bn
    from birdcore.models.birdnet.engines import birdnet_engine

    files = sorted(f for f in args.folder.rglob("*") if f.suffix.lower() in {".mp3", ".wav", ".flac", ".ogg"})
    litert, keras_run = birdnet_engine("litert", batch=args.batch), birdnet_engine("keras", batch=args.batch)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    rows = []
    for f in files:
        w = bn.windows(decode_audio(f, sample_rate=bn.SAMPLE_RATE))
        d = np.abs(sig(keras_run.run(w).logits) - sig(litert.run(w).logits)).max(axis=1)
        rows += [(d[i], f.name, i) for i in range(len(d))]
    d = np.array([r[0] for r in rows])
    print(f"{len(files)} files, {len(d)} windows: max |Δ sigmoid| {d.max():.2e}, 95th percentile "
          f"{np.percentile(d, 95):.2e}, median {np.median(d):.2e}; within 1e-4: {(d <= 1e-4).mean():.1%}")
    for diff, name, i in sorted(rows, reverse=True)[: args.worst]:
        print(f"  {name} window {i}: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
