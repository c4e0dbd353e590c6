"""Scores of a run for every 5 s row of annotated soundscapes, from windows of any length.

Each labelled audio file is streamed once through the run's scorer (bounded memory), giving
window scores (W, C) every ``hop`` seconds (BirdNET's 3 s windows with or without overlap, the
Keras model's own segments).  A row [start, end) takes, per species, the maximum over the
windows that overlap it by at least ``min_overlap`` seconds (capped at the window length, so a
model whose segments are the rows always counts).  Rows past the end of the audio score 0.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from birdcore.data.soundscapes import SoundscapeRows

log = logging.getLogger("birdcore")

MIN_OVERLAP_SECONDS = 1.0  # a 3 s window counts for a 5 s row when it overlaps it by at least 1 s


@dataclass
class RowScores:
    """Per-row scores of the rows whose audio could be scored.

    ``table``: the rows (``SoundscapeRows.table`` columns) in order; ``scores`` (R, C) float32 in
    [0, 1] over ``codes`` (the run's species); ``seconds``: each scored file's length;
    ``failed``: file key → one-line reason for files that could not be scored (their rows dropped).
    """

    table: pd.DataFrame
    scores: np.ndarray
    codes: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> np.ndarray:
        """(R,) file key of each row."""
        return self.table["file"].to_numpy()

    def hours(self) -> float:
        """Hours of audio the rows cover (whole-file rows count the file's length)."""
        total = 0.0
        for key, rows in self.table.groupby("file", sort=False):
            length = self.seconds.get(key, 0.0)
            end = np.minimum(rows["end_s"].to_numpy(float), length)
            total += float(np.clip(end - rows["start_s"].to_numpy(float), 0, None).sum())
        return total / 3600.0

    def subset(self, mask: np.ndarray) -> "RowScores":
        return RowScores(self.table[mask].reset_index(drop=True), self.scores[mask], self.codes,
                         {k: v for k, v in self.seconds.items() if k in set(self.table["file"][mask])}, self.failed)


def rows_from_windows(windows: np.ndarray, *, hop: float, length: float, starts: np.ndarray, ends: np.ndarray,
                      min_overlap: float = MIN_OVERLAP_SECONDS) -> np.ndarray:
    """Row scores (R, C): for row r, the max over windows i (covering [i·hop, i·hop + length) s)
    that overlap [starts[r], ends[r]) by at least min(min_overlap, length) s; 0 when none does.

    Args:
        windows: (W, C) window scores.
        hop, length: seconds between window starts, and window length.
        starts, ends: (R,) row bounds in seconds (``ends`` may be inf: the whole file).
    """
    n_windows, n_species = windows.shape
    begin = np.arange(n_windows) * hop
    need = min(min_overlap, length)
    out = np.zeros((len(starts), n_species), np.float32)
    for r, (a, b) in enumerate(zip(starts, ends)):
        overlap = np.minimum(begin + length, b) - np.maximum(begin, a)
        hit = overlap >= need - 1e-9
        if hit.any():
            out[r] = windows[hit].max(axis=0)
    return out


def score_rows(run, rows: SoundscapeRows, *, overlap: float = 0.0, min_overlap: float = MIN_OVERLAP_SECONDS,
               on_file: Callable[[str, int, int], None] | None = None) -> RowScores:
    """Score the rows of ``rows`` whose audio exists with ``run`` (a ``runs.loading.LoadedRun``).

    Files without audio and files that fail to decode are logged with their reason and left out
    (``RowScores.failed``); the others go on.  Rows that start after their file's audio ends (a
    file cut short) are logged and left out too.  ``on_file(key, done, total)`` reports progress.
    """
    from birdcore.io.audio import AudioError
    from birdcore.io.stream import stream_audio

    scorer = run.scorer(overlap=overlap)
    hop = run.segment_hop_seconds(overlap)
    length = float(run.config.audio.segment_seconds)
    parts, seconds, failed = [], {}, {}
    for key in rows.missing:
        failed[key] = f"{key}: no audio file for it in the audio folder (give --audio-dir DIR where it is elsewhere)"
        log.warning("%s", failed[key])
    todo = [k for k in rows.files if rows.audio.get(k) is not None]
    for done, key in enumerate(todo):
        path = rows.audio[key]
        counted = [0]

        def chunks(path=path, counted=counted):
            for chunk in stream_audio(path, sample_rate=run.sample_rate):
                counted[0] += chunk.size
                yield chunk

        try:
            windows = scorer.score_stream(chunks()).segments
        except AudioError as exc:
            failed[key] = str(exc)
            log.warning("%s", exc)
            continue
        seconds[key] = counted[0] / run.sample_rate
        table = rows.table[rows.table["file"] == key]
        beyond = table["start_s"].to_numpy(float) >= seconds[key]
        if beyond.any():  # a file shorter than its labels (cut short?): those rows have no audio
            note = (f"{key}: the audio ends at {seconds[key]:.1f} s; {int(beyond.sum())} of its {len(table)} rows "
                    f"start after that and are left out")
            log.warning("%s", note)
            table = table[~beyond]
            if table.empty:
                failed[key] = note
                continue
        parts.append((table, rows_from_windows(windows, hop=hop, length=length, starts=table["start_s"].to_numpy(float),
                                               ends=table["end_s"].to_numpy(float), min_overlap=min_overlap)))
        if on_file is not None:
            on_file(key, done + 1, len(todo))
    if not parts:
        raise ValueError(f"{rows.source}: none of the {len(rows.files)} labelled audio files could be scored")
    table = pd.concat([t for t, _ in parts], ignore_index=True)
    return RowScores(table, np.concatenate([s for _, s in parts]).astype(np.float32), list(run.codes), seconds, failed)
