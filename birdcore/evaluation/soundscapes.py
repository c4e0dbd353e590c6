"""Field soundscapes with a run: evaluate, calibrate, and write the competition's submission.

The plain functions behind ``python -m birdcore.soundscapes`` (``birdcore.cli.soundscapes``) and
the dashboard's Soundscapes page:

- ``evaluate``: score the labelled rows with the run's saved post-processing and thresholds, and
  report the metrics of ``soundscape_metrics``;
- ``calibrate``: choose post-processing (leave one file out) and thresholds for a goal on labelled
  soundscapes, and save them into the run (``soundscape.json``; ``thresholds.json``, the previous
  file kept), so classify, predict and the dashboard use them;
- ``submission``: ``row_id,birds`` for the rows of a ``test.csv``.

A run's soundscape settings (``soundscape.json``, optional): the post-processing, BirdNET's window
overlap, the least overlap of a window with a row, and the place of the location filter.  A run
without the file uses the defaults that won, leave one file out, on the development soundscapes
(BENCHMARKS.md, "Field soundscapes"): smoothing 0.2, and BirdNET's windows overlapping by 1.5 s
for kinds whose windows can overlap.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from birdcore.data.soundscapes import SoundscapeRows
from birdcore.evaluation import soundscape_metrics as SM
from birdcore.evaluation.calibration import Goal, Labels, calibrate as calibrate_thresholds
from birdcore.evaluation.calibration import choose_postprocessing, default_grid
from birdcore.evaluation.postprocess import PostProcessing, apply
from birdcore.evaluation.soundscape_scoring import MIN_OVERLAP_SECONDS, RowScores, score_rows
from birdcore.io.atomic import atomic_write_json
from birdcore.runs.thresholds import save_thresholds, threshold_vector

log = logging.getLogger("birdcore")
SETTINGS_FILE = "soundscape.json"
SETTINGS_FORMAT = 1


DEFAULT_POSTPROCESSING = PostProcessing(smoothing=0.2)  # the development winner (BENCHMARKS.md)
DEFAULT_OVERLAP = 1.5  # seconds, for kinds whose windows can overlap (the development winner)


@dataclass
class SoundscapeSettings:
    """How a run scores soundscapes; saved in the run as ``soundscape.json``."""

    postprocessing: PostProcessing = field(default_factory=lambda: DEFAULT_POSTPROCESSING)
    overlap: float = 0.0  # seconds by which BirdNET's 3 s windows overlap (BirdNET runs)
    min_overlap: float = MIN_OVERLAP_SECONDS  # least overlap of a window with a 5 s row, seconds
    place: dict | None = None  # {"lat", "lon", "week"} of the location filter, or None

    def to_dict(self) -> dict:
        return {"postprocessing": self.postprocessing.to_dict(), "overlap": self.overlap,
                "min_overlap": self.min_overlap, "place": self.place}

    @classmethod
    def from_dict(cls, data: dict | None) -> "SoundscapeSettings":
        data = data or {}
        return cls(PostProcessing.from_dict(data.get("postprocessing")), float(data.get("overlap", 0.0)),
                   float(data.get("min_overlap", MIN_OVERLAP_SECONDS)), data.get("place"))


def default_settings(kind) -> SoundscapeSettings:
    """The development defaults for a run of this kind (``models.base.ModelKind``) without
    ``soundscape.json``."""
    return SoundscapeSettings(overlap=DEFAULT_OVERLAP if kind.supports_overlap else 0.0)


def read_settings(run) -> tuple[SoundscapeSettings, dict]:
    """A run's saved settings and the whole ``soundscape.json`` (the defaults and {} without one);
    ``run``: a ``LoadedRun`` or a run folder."""
    if isinstance(run, (str, Path)):
        from birdcore.models.base import kind_for, kind_name
        from birdcore.runs.folder import read_manifest

        folder, kind = Path(run), kind_for(kind_name(read_manifest(Path(run))))
    else:
        folder, kind = (None if run.path == Path(".") else Path(run.path)), run.kind
    path = folder / SETTINGS_FILE if folder is not None else None
    if path is None or not path.is_file():
        return default_settings(kind), {}
    data = json.loads(path.read_text())
    return SoundscapeSettings.from_dict(data.get("settings")), data


def labels_for(scored: RowScores, run) -> tuple[Labels, dict[str, int]]:
    """Truth of the scored rows in the run's species, and {labelled name the run lacks: rows}."""
    from birdcore.data.species_names import SpeciesResolver

    truth, unknown, missing = SM.label_matrix(scored.table["birds"], scored.codes, SpeciesResolver(run.species))
    ends = np.minimum(scored.table["end_s"].to_numpy(float),
                      scored.table["file"].map(scored.seconds).to_numpy(float))
    row_hours = np.clip(ends - scored.table["start_s"].to_numpy(float), 0, None) / 3600.0
    return Labels(truth, unknown, scored.files, row_hours), missing


def place_masks(run, place: dict | None, files) -> dict | None:
    """{file: (C,) kept species} from the location filter at ``place`` (the same for every file)."""
    if not place:
        return None
    from birdcore.serving.birdnet_range import Place, species_filter

    keep = species_filter(run.species, Place(float(place["lat"]), float(place["lon"]), int(place.get("week", -1)))).keep
    return {key: keep for key in dict.fromkeys(files)}


def processed_scores(run, scored: RowScores, settings: SoundscapeSettings) -> np.ndarray:
    return apply(settings.postprocessing, scored.scores, scored.files, place_masks(run, settings.place, scored.files))


def evaluate(run, rows: SoundscapeRows, *, settings: SoundscapeSettings | None = None,
             thresholds: np.ndarray | None = None, scored: RowScores | None = None) -> dict:
    """Metrics of ``run`` on labelled ``rows`` with its saved settings and thresholds (or those given);
    ``scored`` reuses row scores already computed with the same overlap."""
    if not rows.labelled:
        raise ValueError(f"{rows.source}: these rows have no labels (a test.csv?); use submit")
    settings = settings or read_settings(run)[0]
    scored = scored or score_rows(run, rows, overlap=settings.overlap, min_overlap=settings.min_overlap)
    labels, missing = labels_for(scored, run)
    scores = processed_scores(run, scored, settings)
    thr = threshold_vector(run.thresholds, scored.codes) if thresholds is None else thresholds
    result = SM.report(labels.truth, labels.unknown, scores, thr, scored.codes, hours=float(labels.row_hours.sum()),
                       n_files=len(scored.seconds))
    result.update({"species_not_in_run": missing, "files_not_scored": scored.failed,
                   "postprocessing": settings.postprocessing.describe(), "overlap": settings.overlap})
    return result


def calibrate(run, rows: SoundscapeRows, *, goal: Goal, overlap: float | None = None,
              min_overlap: float = MIN_OVERLAP_SECONDS, place: dict | None = None,
              grid: list[PostProcessing] | None = None, per_species: bool = True, save: bool = True) -> dict:
    """Choose post-processing and the threshold scheme (leave one file out; ``per_species`` False
    allows global thresholds only) and thresholds for ``goal`` on ``rows``, and save
    them into the run (unless ``save`` is False).  Returns what was chosen, with every setting's
    held-out result and the in-sample metrics."""
    if not rows.labelled:
        raise ValueError(f"{rows.source}: calibration needs labelled rows")
    overlap = read_settings(run)[0].overlap if overlap is None else float(overlap)
    scored = score_rows(run, rows, overlap=overlap, min_overlap=min_overlap)
    labels, missing = labels_for(scored, run)
    masks = place_masks(run, place, scored.files)
    grid = grid or default_grid(location=masks is not None)
    post, use_species, results = choose_postprocessing(labels, scored.scores, goal, grid, masks=masks,
                                                       per_species=(False, True) if per_species else (False,))
    scores = apply(post, scored.scores, labels.files, masks)
    global_t, thr = calibrate_thresholds(labels, scores, goal, per_species=use_species)
    settings = SoundscapeSettings(post, overlap, min_overlap, place)
    metrics = evaluate(run, rows, settings=settings, thresholds=thr, scored=scored)
    chosen = {"goal": str(goal), "settings": settings.to_dict(), "per_species_thresholds": use_species,
              "global_threshold": round(float(global_t), 6),
              "species_thresholds": {c: round(float(t), 6) for c, t in zip(scored.codes, thr)},
              "held_out": max(results, key=lambda r: r["objective"]), "grid": results,
              "in_sample": {k: v for k, v in metrics.items() if k != "per_species"},
              "species_not_in_run": missing, "files_not_scored": scored.failed}
    if save:
        save_calibration(run.path, chosen, labels_source=rows.source, n_files=len(scored.seconds),
                         n_rows=len(scored.table))
    return chosen


def save_calibration(run_dir: Path, chosen: dict, *, labels_source: str, n_files: int, n_rows: int) -> None:
    """Write ``soundscape.json`` and the thresholds (the previous thresholds.json is kept)."""
    source = f"soundscapes: {labels_source} ({n_files} files, {n_rows} rows), goal {chosen['goal']}"
    save_thresholds(run_dir, target_fpr=None, global_threshold=chosen["global_threshold"],
                    species_thresholds=chosen["species_thresholds"], source=source,
                    extra={"goal": chosen["goal"]})
    atomic_write_json(Path(run_dir) / SETTINGS_FILE, {
        "format": SETTINGS_FORMAT, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "chosen_on": source,
        **{k: chosen[k] for k in ("goal", "settings", "per_species_thresholds", "global_threshold", "held_out", "grid",
                                  "in_sample")}})


def submission(run, rows: SoundscapeRows, *, settings: SoundscapeSettings | None = None) -> pd.DataFrame:
    """The competition's ``row_id,birds`` for every row of ``rows`` (a test.csv): the run's species
    whose post-processed score reaches their threshold, space-separated, or ``nocall``.  Rows of
    files that could not be scored are ``nocall``, and are logged."""
    settings = settings or read_settings(run)[0]
    scored = score_rows(run, rows, overlap=settings.overlap, min_overlap=settings.min_overlap)
    scores = processed_scores(run, scored, settings)
    predicted = SM.decisions(scores, threshold_vector(run.thresholds, scored.codes))
    codes = np.array(scored.codes)
    birds = {rid: " ".join(codes[p]) or "nocall" for rid, p in zip(scored.table["row_id"], predicted)}
    return pd.DataFrame({"row_id": rows.table["row_id"],
                         "birds": [birds.get(r, "nocall") for r in rows.table["row_id"]]})

