"""``python -m birdcore.soundscapes``: the command-line entry point, kept at this name (``birdcore.cli.soundscapes``)."""
import sys

from birdcore.cli.soundscapes import main

if __name__ == "__main__":
    sys.exit(main())
