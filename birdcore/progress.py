"""``python -m birdcore.progress``: the command-line entry point, kept at this name (``birdcore.cli.progress``)."""
import sys

from birdcore.cli.progress import main

if __name__ == "__main__":
    sys.exit(main())
