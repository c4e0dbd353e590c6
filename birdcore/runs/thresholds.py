"""A run's ``thresholds.json``: reading a threshold per species, and saving new ones (keeping the old).

Layout: ``target_fpr``, ``chosen_on`` (what chose them), ``global`` {"threshold", ...} and
``species`` {code: {"threshold", ...}}; a species without an entry uses the global threshold.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from birdcore.io.atomic import atomic_write_json, atomic_write_text

# threshold_at_fpr returns the float32 step above 1.0 when a negative scores exactly 1.0.
MAX_THRESHOLD = float(np.nextafter(np.float32(1.0), np.float32(2.0)))
DEFAULT_THRESHOLD = 0.5  # a run without thresholds (BirdNET's customary confidence)


def threshold_vector(thresholds: dict, codes: list[str]) -> np.ndarray:
    """(C,) float32 thresholds in ``codes`` order from a thresholds.json dict (global as fallback)."""
    default = (thresholds.get("global") or {}).get("threshold")
    default = DEFAULT_THRESHOLD if default is None else float(default)
    species = thresholds.get("species") or {}
    out = [(species.get(c) or {}).get("threshold") for c in codes]
    return np.array([default if t is None else float(t) for t in out], np.float32)


def save_thresholds(run_dir: Path | str, *, target_fpr: float | None, global_threshold: float,
                    species_thresholds: dict[str, float] | None, source: str = "dashboard",
                    extra: dict | None = None) -> None:
    """Rewrite ``thresholds.json`` atomically with new thresholds.

    The structure is kept: ``target_fpr``, ``chosen_on`` (set to ``source``),
    ``global`` {"threshold", ...}, ``species`` {code: {"threshold", ...}}.  An
    entry whose threshold changes loses its other keys (test_recall / test_fpr
    would be stale); unchanged entries keep them.  With ``species_thresholds``
    None every species entry is kept; otherwise only the codes given are
    replaced (or added).  The first save copies the file to
    ``thresholds.original.json`` (never overwritten afterwards), and every save keeps the file it
    replaces as ``thresholds.previous.json``.  ``target_fpr`` None keeps the file's own;
    ``extra`` adds entries (how the thresholds were chosen, say).

    Thresholds must be finite and in [0, 1] (the float32 step just above 1.0
    that :func:`birdcore.evaluation.metrics.threshold_at_fpr` can return is accepted);
    ``target_fpr`` finite in [0, 1].  ValueError otherwise, before any write.
    """
    run_dir = Path(run_dir)
    if target_fpr is not None:
        _check_unit("target_fpr", target_fpr, 1.0)
    _check_unit("global threshold", global_threshold, MAX_THRESHOLD)
    for code, t in (species_thresholds or {}).items():
        _check_unit(f"threshold of {code}", t, MAX_THRESHOLD)
    path = run_dir / "thresholds.json"
    text = path.read_text() if path.is_file() else None
    old = json.loads(text) if text else {}
    original = run_dir / "thresholds.original.json"
    if text is not None and not original.exists():
        atomic_write_text(original, text)
    if text is not None:
        atomic_write_text(run_dir / "thresholds.previous.json", text)
    species = {code: dict(entry) for code, entry in old.get("species", {}).items()}
    for code, t in (species_thresholds or {}).items():
        species[code] = _entry(species.get(code, {}), float(t))
    new = dict(old)
    new.update(extra or {})
    new.update({"target_fpr": float(target_fpr) if target_fpr is not None else old.get("target_fpr"),
                "chosen_on": str(source),
                "global": _entry(old.get("global", {}), float(global_threshold)), "species": species})
    atomic_write_json(path, new)


def _entry(old: dict, threshold: float) -> dict:
    return dict(old) if old.get("threshold") == threshold else {"threshold": threshold}


def _check_unit(what: str, value: float, upper: float) -> None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v) or not 0.0 <= v <= upper:
        raise ValueError(f"{what} must be finite and within [0, 1], got {value!r}")
