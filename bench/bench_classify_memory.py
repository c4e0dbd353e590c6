"""Peak memory of one dashboard classification as a function of the clip's length.

    python bench/bench_classify_memory.py [--minutes 1 5 15 30 60] [--run birdnet] [--overlap 0]

Each length runs in a fresh process: a generated clip (a frequency sweep and noise, 48 kHz mono, written
as FLAC into memory as an upload would arrive) goes through ``ClipClassifier.classify_upload`` (the
classify page's and the API's code), and the process's peak resident memory (``ru_maxrss``) is read
before scoring (the model loaded, the upload's bytes held) and after.  Prints one row per length and a
least-squares line: peak MB ≈ a + b × minutes.  ``--cut M`` passes ``max_seconds`` (the dashboard's
``BIRDCLEF_MAX_UPLOAD_MINUTES``), to show that the limit bounds it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import io, json, resource, sys
import numpy as np, soundfile as sf
from birdcore.runs.loading import load_run_ref
from birdcore.serving.classify import ClipClassifier
minutes, run_ref, overlap, cut = float(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
clf = ClipClassifier(load_run_ref(run_ref))
rate = 48000
rng = np.random.default_rng(0)
buf = io.BytesIO()
with sf.SoundFile(buf, "w", samplerate=rate, channels=1, format="FLAC") as out:
    for start in range(0, int(minutes * 60), 60):
        t = np.arange(int(min(60, minutes * 60 - start) * rate)) / rate
        out.write((0.2 * np.sin(2 * np.pi * (2000 + 500 * np.sin(t)) * t) + 0.01 * rng.standard_normal(t.size))
                  .astype(np.float32))
data = buf.getvalue()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
result, _ = clf.classify_upload(data, name="clip.flac", overlap=overlap,
                                max_seconds=None if cut == "none" else float(cut) * 60)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"minutes": minutes, "upload_mb": len(data) / 2**20, "before_mb": before, "peak_mb": after,
                  "scored_s": result.seconds, "segments": int(len(result.segments))}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 15, 30, 60])
    parser.add_argument("--run", default="birdnet")
    parser.add_argument("--overlap", type=float, default=0.0)
    parser.add_argument("--cut", default="none", help="max minutes scored (the dashboard's limit), or none")
    args = parser.parse_args()
    rows = []
    for minutes in args.minutes:
        res = subprocess.run([sys.executable, "-c", CHILD, str(minutes), args.run, str(args.overlap), args.cut],
                             cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT),
                                                                            "PATH": "/usr/bin:/bin"})
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['minutes']:6g} min  upload {r['upload_mb']:7.1f} MB  model loaded {r['before_mb']:7.0f} MB  "
              f"peak {r['peak_mb']:7.0f} MB  scored {r['scored_s'] / 60:6.1f} min  segments {r['segments']}",
              flush=True)
    if len(rows) >= 2:
        import numpy as np

        x = np.array([r["minutes"] for r in rows])
        y = np.array([r["peak_mb"] for r in rows])
        b, a = np.polyfit(x, y, 1)
        print(f"peak MB ≈ {a:.0f} + {b:.1f} × minutes (least squares over {len(rows)} lengths)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
