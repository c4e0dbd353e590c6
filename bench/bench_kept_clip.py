"""What a dashboard session keeps of a classified clip, and what keeping it costs, by clip length.

    python bench/bench_kept_clip.py [--minutes 0.35 1 2 10 30] [--run birdnet]

For each length: a generated clip (rising chirps over faint noise, 48 kHz mono, a WAV in memory as an
upload arrives) goes through ``ClipClassifier.classify_upload`` (the classify page's scoring) and then
``serving.kept_clip.keep_clip`` (what the page keeps).  Prints, per length: the upload's size, what the
old page kept in session state (the dense segment scores and up to 2 minutes of decoded audio; the
upload itself stayed in Streamlit's upload store and again behind the audio player), the ``KeptClip``'s
bytes (its parts: sparse scores, uint8 spectrogram, MP3) and its pickled size, and the CPU seconds of
scoring and of keeping (``time.process_time``), one JSON line per length.
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from load_common import chirp_wav

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[0.35, 1, 2, 10, 30])
    parser.add_argument("--run", default="birdnet")
    args = parser.parse_args()

    from birdcore.cli.common import quiet_native_stderr
    from birdcore.runs.loading import load_run_ref
    from birdcore.serving.classify import ClipClassifier
    from birdcore.serving.kept_clip import keep_clip, max_kept_bytes

    with quiet_native_stderr():
        clf = ClipClassifier(load_run_ref(args.run))
    mb = 2 ** 20
    print(f"{'clip':>8} {'upload':>9} {'old page kept*':>15} {'KeptClip':>9} {'scores':>8} {'spectro':>8} "
          f"{'mp3':>7} {'pickled':>8} {'score s':>8} {'keep s':>7}")
    for minutes in args.minutes:
        data = chirp_wav(minutes * 60)
        t0 = time.process_time()
        result, head = clf.classify_upload(data, name="clip.wav")
        t1 = time.process_time()
        kept = keep_clip(clf, result, head, name="clip.wav", digest="-", settings=(args.run, 0.0))
        t2 = time.process_time()
        old = result.segments.nbytes + head.nbytes  # plus the upload, twice referenced (store and player)
        row = {"minutes": minutes, "upload_mb": len(data) / mb, "old_session_state_mb": old / mb,
               "kept_mb": kept.nbytes / mb, "scores_mb": kept.result.segments.nbytes / mb,
               "spectrogram_mb": kept.spectrogram.nbytes / mb, "mp3_mb": len(kept.audio) / mb,
               "pickled_mb": len(pickle.dumps(kept)) / mb, "kept_scores": int(len(kept.result.segments.score)),
               "score_cpu_s": t1 - t0, "keep_cpu_s": t2 - t1,
               "bound_mb": max_kept_bytes(len(clf.run.species), kept.spectrogram.shape) / mb}
        print(f"{minutes:>6g} m {row['upload_mb']:>7.1f} MB {row['old_session_state_mb']:>12.1f} MB "
              f"{row['kept_mb']:>6.2f} MB {row['scores_mb']:>8.3f} {row['spectrogram_mb']:>8.3f} "
              f"{row['mp3_mb']:>7.3f} {row['pickled_mb']:>8.2f} {row['score_cpu_s']:>8.2f} {row['keep_cpu_s']:>7.2f}")
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    print("* the old page's session state (dense segment scores and up to 2 min of decoded audio); the upload "
          "stayed besides, in Streamlit's upload store and behind the audio player")
    return 0


if __name__ == "__main__":
    sys.exit(main())
