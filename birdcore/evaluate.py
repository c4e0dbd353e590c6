"""``python -m birdcore.evaluate``: the command-line entry point, kept at this name (``birdcore.cli.evaluate``)."""
import sys

from birdcore.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
