"""Reviewing detections: a store of verdicts, sampling for review, precision from reviews.

``python -m birdcore.review`` (``birdcore.cli.review``) is the headless interface; the dashboard's
Review page is the interactive one.
"""
