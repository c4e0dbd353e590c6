"""``python -m birdcore.serve``: the classification API's entry point (``birdcore.cli.serve``)."""
import sys

from birdcore.cli.serve import main

if __name__ == "__main__":
    sys.exit(main())
