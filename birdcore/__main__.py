"""``python -m birdcore COMMAND ...``: the ``birdclef`` command (``birdcore.cli.main``)."""
import sys

from birdcore.cli.main import main

sys.exit(main(prog="python -m birdcore"))
