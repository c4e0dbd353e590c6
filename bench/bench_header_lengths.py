"""Does the truncation warning flag whole files?  For every audio file under the given folders, the
frame count in its header against the frames libsndfile really decodes, and whether
``birdcore.io.audio.truncation`` would warn.

    python bench/bench_header_lengths.py ../shared/data

Prints one JSON object: files read, files flagged, and the five largest shortfalls (seconds).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from birdcore.io.audio import DecoderMessages, is_audio_path, truncation  # noqa: E402


def decoded_frames(path: Path) -> tuple[int, int, int]:
    """(header frames, decoded frames, rate) of one file, read in one-minute blocks."""
    decoder = DecoderMessages(str(path))  # keeps libmpg123's notes off the terminal
    with decoder.capture(), sf.SoundFile(path) as handle:
        n = 0
        while True:
            block = handle.read(handle.samplerate * 60, dtype="float32", always_2d=True)
            if not len(block):
                break
            n += len(block)
        return handle.frames, n, handle.samplerate


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folders", type=Path, nargs="+")
    args = p.parse_args()
    files = sorted(f for d in args.folders for f in d.rglob("*") if f.is_file() and is_audio_path(f))
    rows = []
    for f in files:
        header, decoded, rate = decoded_frames(f)
        rows.append({"file": str(f), "short_s": round((header - decoded) / rate, 3),
                     "flagged": truncation(header_frames=header, decoded_frames=decoded, rate=rate) is not None})
    rows.sort(key=lambda r: r["short_s"], reverse=True)
    print(json.dumps({"files": len(rows), "flagged": sum(r["flagged"] for r in rows), "largest_shortfalls": rows[:5]},
                     indent=1))


if __name__ == "__main__":
    main()
