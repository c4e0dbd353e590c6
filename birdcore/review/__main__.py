"""``python -m birdcore.review``: the command-line entry point (``birdcore.cli.review``)."""
import sys

from birdcore.cli.review import main

sys.exit(main())
