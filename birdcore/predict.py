"""Top species for audio files: ``python -m birdcore.predict RUN_DIR PATH... [--top N]``.

Each file is decoded with the same reader as training, scored whole
(segments pooled to a recording score), and its top species printed with
scores and the run's per-species threshold decision.  A file that cannot be
read gets one line naming it and the reason; the others go on.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cli import fail, import_tensorflow_quietly, log, setup_logging


@dataclass
class Prediction:
    """One species' score for a clip."""

    ebird_code: str
    common_name: str
    sci_name: str
    score: float
    threshold: float | None

    @property
    def detected(self) -> bool | None:
        return None if self.threshold is None else self.score >= self.threshold


def top_species(run, recording_scores: np.ndarray, *, top: int = 5) -> list[Prediction]:
    """The ``top`` highest-scoring species of a (C,) recording-score vector, with the run's thresholds."""
    thresholds = run.thresholds.get("species", {})
    order = np.argsort(-recording_scores)[:top]
    out = []
    for i in order:
        row = run.species.iloc[int(i)]
        thr = thresholds.get(row["ebird_code"], {}).get("threshold")
        out.append(Prediction(row["ebird_code"], row["common_name"], row["sci_name"],
                              float(recording_scores[i]), thr))
    return out


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given, and audio files found recursively in folders, in sorted order."""
    from .audio import is_audio_path

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and is_audio_path(q)))
        else:
            out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m birdcore.predict", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a complete run folder")
    parser.add_argument("paths", type=Path, nargs="+", help="audio files or folders")
    parser.add_argument("--top", type=int, default=5, help="species shown per file")
    parser.add_argument("--json", action="store_true", help="one JSON object per file instead of text")
    parser.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    import_tensorflow_quietly()
    try:
        from .export import load_run

        run = load_run(args.run_dir)
    except Exception as exc:
        return fail(exc, args.verbose)
    from .audio import AudioError, decode_audio

    scorer = run.scorer()
    failures = 0
    for path in expand_paths(args.paths):
        try:
            wave = decode_audio(path, sample_rate=run.sample_rate)
        except AudioError as exc:
            log.error("%s", exc)
            failures += 1
            continue
        preds = top_species(run, scorer.score(wave).recording, top=args.top)
        if args.json:
            print(json.dumps({"file": str(path), "seconds": len(wave) / run.sample_rate,
                              "top": [{**p.__dict__, "detected": p.detected} for p in preds]}))
            continue
        print(f"{path}  ({len(wave) / run.sample_rate:.1f} s)")
        for p in preds:
            decision = "" if p.detected is None else ("  detected" if p.detected else "  below threshold")
            print(f"  {p.score:6.3f}  {p.ebird_code:8s} {p.common_name} ({p.sci_name}){decision}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
