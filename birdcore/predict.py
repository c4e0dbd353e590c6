"""``python -m birdcore.predict``: the command-line entry point, kept at this name (``birdcore.cli.predict``)."""
import sys

from birdcore.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
