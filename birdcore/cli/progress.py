"""``python -m birdcore.progress [RUNS_DIR]``: the unfinished runs of a runs folder, one line each."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from birdcore.cli.common import HelpFormatter
from birdcore.runs.progress import runs_in_progress


def build_parser(prog: str = "python -m birdcore.progress") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, formatter_class=HelpFormatter,
                                     description="Where the unfinished runs of a runs folder stand.")
    parser.add_argument("runs_dir", nargs="?", type=Path, default=Path("runs"), help="the runs folder (--out)")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m birdcore.progress") -> int:
    """Print the unfinished runs of a runs folder, one line each; exit status 0 (1 if the folder is missing)."""
    args = build_parser(prog).parse_args(argv)
    if not args.runs_dir.is_dir():
        print(f"{args.runs_dir}: no such runs folder", file=sys.stderr)
        return 1
    runs = runs_in_progress(args.runs_dir)
    if not runs:
        print(f"{args.runs_dir}: no unfinished runs")
    for r in runs:
        print(f"{r.name} ({r.state}): {r.describe()}")
    return 0

