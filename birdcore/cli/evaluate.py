"""``python -m birdcore.evaluate RUN_DIR --data-dir DIR [--json]``: score another Cornell-format dataset.

Scores every recording of the dataset whose species are among the run's, with any kind of run, and
prints top-1, top-5 and macro ROC-AUC (with ``--json``, the last line is one JSON object).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from birdcore.cli.common import HelpFormatter, add_common_data_args, fail, import_tensorflow_quietly, setup_logging
from birdcore.evaluation.scoring import evaluate_dataset, format_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m birdcore.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a complete run folder")
    parser.add_argument("--data-dir", type=Path, required=True, help="Cornell-format dataset to score")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object on the last line")
    parser.add_argument("--batch-segments", type=int, default=32, help="segments per forward pass")
    add_common_data_args(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    import_tensorflow_quietly()
    try:
        result = evaluate_dataset(args.run_dir, data_dir=args.data_dir, cache_dir=args.cache_dir,
                                  workers=args.workers, batch_segments=args.batch_segments)
    except Exception as exc:  # user-facing: one line, no traceback
        return fail(exc, args.verbose)
    print(format_summary(result))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "per_species"}))
    return 0
