"""``birdclef COMMAND ...`` (and ``python -m birdcore COMMAND ...``): one command for every tool.

Each command is the module's own ``main(argv, prog=...)`` with its own options and help (``birdclef
predict -h`` is ``python -m birdcore.predict -h`` under the name ``birdclef predict``); only the command's module is
imported, so ``birdclef -h`` is quick.  The dashboard (``streamlit run app.py``) is not a command: it is
the repository's ``app.py`` and ``pages/``, which an installed package does not contain.
"""
from __future__ import annotations

import importlib
import sys

# command -> (module with main(argv, prog=...), one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("birdcore.cli.predict", "score audio files with a run or BirdNET (top species, detections CSV, Raven tables)"),
    "evaluate": ("birdcore.cli.evaluate", "score another Cornell-format dataset with a run (top-1, top-5, ROC-AUC)"),
    "soundscapes": ("birdcore.cli.soundscapes", "a run on labelled field soundscapes: evaluate, calibrate, submit"),
    "review": ("birdcore.cli.review", "verify detections, measure precision, set thresholds (review database)"),
    "serve": ("birdcore.cli.serve", "serve the classification API (HTTP)"),
    "progress": ("birdcore.cli.progress", "where the unfinished runs of a runs folder stand"),
    "train": ("birdcore.cli.train", "train, evaluate and export a model headless (train_job.py)"),
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("birdclef")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def help_text(prog: str) -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {prog} [-h] [--version] COMMAND [ARGS ...]", "",
             "Bird-call identification: train runs, score audio, review detections, serve an API.", "",
             "commands:"]
    lines += [f"  {name:{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "options:", "  -h, --help  show this help message and exit",
              "  --version   show the installed version and exit", "",
              f"`{prog} COMMAND -h` shows a command's own options."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, prog: str = "birdclef") -> int:
    """Run ``COMMAND ARGS...``; returns the command's exit status (2 for an unknown command)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        sys.stderr.write(f"{prog}: error: give a command: {', '.join(COMMANDS)} (see {prog} -h)\n")
        return 2
    command, rest = argv[0], argv[1:]
    if command in ("-h", "--help"):
        sys.stdout.write(help_text(prog))
        return 0
    if command == "--version":
        print(f"birdclef {version()}")
        return 0
    if command not in COMMANDS:
        what = "option" if command.startswith("-") else "command"
        sys.stderr.write(f"{prog}: error: unknown {what} '{command}' (choose from {', '.join(COMMANDS)})\n")
        return 2
    module_name, _ = COMMANDS[command]
    return importlib.import_module(module_name).main(rest, prog=f"{prog} {command}")
