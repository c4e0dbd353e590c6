#!/usr/bin/env python
"""``python train_job.py ...``: train, evaluate and export a bird-call model headless.

The command lives in ``birdcore.cli.train`` (installed: ``birdclef train``); this script runs it
unchanged, with the same options, help, messages and exit statuses.
"""
import sys

# the names tests and scripts import from here
from birdcore.cli.train import (BACKBONE_KINDS, BASELINES, FINE_TUNE_KINDS, OPTION_OF_FIELD,  # noqa: F401
                                OneLineParser, build_parser, check_args, config_from_args, config_problem,
                                main, saved_data_dir)

if __name__ == "__main__":
    sys.exit(main())
