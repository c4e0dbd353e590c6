"""``python -m birdcore.evaluate RUN_DIR --data-dir DIR [--json]``: score another Cornell-format dataset.

Scores every recording of the dataset whose species are among the run's, with any kind of run, and
prints top-1, top-5 and macro ROC-AUC (with ``--json``, the last line is one JSON object).

Recordings the run trained or validated on are left out by default: those its split.csv puts in
"train" or "val", found by xeno-canto number (the xc_id column, else XC<digits> in the file name) or
by species and file name without extension, in whatever folder or format (for runs on generated
data, whose names are made up: only files with the same bytes as the run's own). The log says how
many were left out, and --json gives excluded_training and excluded_validation. --include-training
scores them too (the figures then include training data: the log and the summary say so). A dataset
of nothing but such recordings stops with one line (exit status 2). Runs without a split.csv (a
zero-shot run made from a species list) and zero-shot runs, which learnt from no recording, leave
out nothing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from birdcore.cli.common import HelpFormatter, add_common_data_args, fail, setup_logging
from birdcore.models.device import import_keras_quietly
from birdcore.evaluation.scoring import evaluate_dataset, format_summary


def build_parser(prog: str = "python -m birdcore.evaluate") -> argparse.ArgumentParser:
    description, details = __doc__.split("\n\n", 2)[0], __doc__.split("\n\n", 2)[2].strip()
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=details,
                                     formatter_class=HelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a complete run folder")
    parser.add_argument("--data-dir", type=Path, required=True, help="Cornell-format dataset to score")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object on the last line")
    parser.add_argument("--include-training", action="store_true",
                        help="also score the recordings the run trained or validated on (its split.csv); left "
                             "out by default, as they overstate how the run does on new recordings")
    parser.add_argument("--batch-segments", type=int, default=32, help="segments per forward pass")
    add_common_data_args(parser)
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m birdcore.evaluate") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.verbose)
    import_keras_quietly()
    try:
        result = evaluate_dataset(args.run_dir, data_dir=args.data_dir, cache_dir=args.cache_dir,
                                  workers=args.workers, batch_segments=args.batch_segments,
                                  include_training=args.include_training)
    except Exception as exc:  # user-facing: one line, no traceback
        return fail(exc, args.verbose)
    print(format_summary(result) + _seen_note(result))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "per_species"}))
    return 0


def _seen_note(result: dict) -> str:
    """What the summary line says about the run's own training and validation recordings."""
    for verb, key in (("left out", "excluded"), ("figures include", "included")):
        n_train, n_val = result.get(f"{key}_training", 0), result.get(f"{key}_validation", 0)
        if n_train or n_val:
            return f"  ({verb} {n_train} training and {n_val} validation recordings of the run)"
    return ""
