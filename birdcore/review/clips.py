"""The numbers of the dashboard's Review page: what to show next, the clip of a detection, progress.

- ``open_review_store(db)``: an existing review database (path or URL), opened without creating
  anything: a missing file or a database that is not a review store is a ``StoreError`` naming it.
- ``sampled_table(store)``: every sampled detection with its current verdict, in sampling order
  (one query; ``Store.queue`` is its rows without a verdict).
- ``Filters`` (species, sites, recording dates), ``next_detection`` (the first queued detection
  the filters keep, or one pinned by Undo), ``progress`` (per species: sampled, yes / no / unsure,
  corrected, left) and ``filter_options``.
- ``detection_clip(path, start_s, end_s, context_s=2)``: the detection with ``context_s`` seconds on
  each side (clipped to the file), decoded in memory (``analysis.soundscapes.row_audio``: only that
  span is read) and brought down to ``DISPLAY_RATE`` at most; ``Clip.wav_bytes()`` for playback.
  Nothing is written to disk.
- ``spectrogram(clip)``: its power spectrogram in dB (0 at the clip's loudest bin, floored at
  ``-TOP_DB``), frequencies in kHz and frame times in seconds from the start of the file;
  ``clip_figure`` draws it with the detection's start and end marked.
- ``resolve_audio(file, audio_dir=, base=)``: where a detection's audio file is.

A detection corrected to another species is stored as verdict ``no`` with ``corrected_species``
(what ``review.exchange`` exports as verified).
"""
from __future__ import annotations

import datetime as dt
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from birdcore.review.store import Store, VERDICTS, detections, open_existing, reviews, samples

DISPLAY_RATE = 32000  # Hz: the clip is resampled down to this rate when the file's rate is higher
CONTEXT_SECONDS = 2.0  # seconds of audio shown and played on each side of a detection
N_FFT = 512  # spectrogram window (16 ms at 32 kHz, 62.5 Hz bins)
MAX_FRAMES = 600  # spectrogram columns at most (the hop grows for long clips)
TOP_DB = 80.0  # dynamic range of the spectrogram

SAMPLED_COLUMNS = ["id", "file", "start_s", "end_s", "species", "common_name", "score", "run", "site", "recorded",
                   "stratum", "weight", "strategy", "verdict", "corrected_species", "reviewer"]
PROGRESS_COLUMNS = ["species", "common_name", "sampled", "yes", "no", "unsure", "corrected", "reviewed", "left",
                    "done"]


# --------------------------------------------------------------------------- the database

def open_review_store(db: str | Path) -> Store:
    """The existing review database at a SQLite path or a SQLAlchemy URL, opened for writing (the
    page records reviews): ``store.open_existing(db, write=True)``.  Nothing is created; a missing,
    empty or foreign database is a ``StoreError`` with a one-line message naming ``db``."""
    return open_existing(db, write=True)


def sampled_table(store: Store) -> pd.DataFrame:
    """Every sampled detection, in sampling order, with its current verdict (the latest review not
    undone, as ``Store.verdicts``; None while it is queued), corrected species and reviewer
    (columns ``SAMPLED_COLUMNS``)."""
    latest = (sa.select(reviews.c.detection_id, sa.func.max(reviews.c.id).label("review_id"))
              .where(reviews.c.undone == sa.false()).group_by(reviews.c.detection_id).subquery())
    current = reviews.alias("current")
    query = (sa.select(detections.c.id, detections.c.file, detections.c.start_s, detections.c.end_s,
                       detections.c.species, detections.c.common_name, detections.c.score, detections.c.run,
                       detections.c.site, detections.c.recorded, samples.c.stratum, samples.c.weight,
                       samples.c.strategy, current.c.verdict, current.c.corrected_species, current.c.reviewer)
             .join(samples, samples.c.detection_id == detections.c.id)
             .outerjoin(latest, latest.c.detection_id == detections.c.id)
             .outerjoin(current, current.c.id == latest.c.review_id)
             .order_by(samples.c.id))
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=SAMPLED_COLUMNS)


def species_names(store: Store) -> dict[str, str]:
    """Every species of the store's detections: code → common name (the code when it has none)."""
    query = sa.select(detections.c.species, sa.func.max(detections.c.common_name)).group_by(detections.c.species)
    with store.engine.connect() as conn:
        return {code: name or code for code, name in sorted(conn.execute(query).all())}


# --------------------------------------------------------------------------- filters, queue, progress

@dataclass(frozen=True)
class Filters:
    """Which sampled detections to review: species codes and sites (empty: all) and a range of
    recording dates, inclusive (None: open; a detection without a date is left out once either end
    is set)."""

    species: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    start: dt.date | None = None
    end: dt.date | None = None

    def apply(self, table: pd.DataFrame, *, species: bool = True) -> pd.DataFrame:
        """The rows of ``table`` (``sampled_table``) these filters keep; ``species=False`` ignores
        the species filter."""
        keep = pd.Series(True, index=table.index)
        if species and self.species:
            keep &= table["species"].isin(self.species)
        if self.sites:
            keep &= table["site"].isin(self.sites)
        if self.start is not None or self.end is not None:
            day = table["recorded"].astype("string").str.slice(0, 10)
            if self.start is not None:
                keep &= (day >= self.start.isoformat()).fillna(False).astype(bool)
            if self.end is not None:
                keep &= (day <= self.end.isoformat()).fillna(False).astype(bool)
        return table[keep]


def filter_options(table: pd.DataFrame) -> dict:
    """What the filters can offer: ``species`` {code: common name} (sorted by name), ``sites``
    (sorted), ``dates`` (first, last recording date) or None when no detection has one."""
    firsts = table.drop_duplicates("species")
    species = {code: (name if isinstance(name, str) and name else code)
               for code, name in zip(firsts["species"], firsts["common_name"])}
    species = dict(sorted(species.items(), key=lambda kv: (kv[1].lower(), kv[0])))
    sites = sorted({s for s in table["site"] if isinstance(s, str) and s})
    days = [d for d in (_day(v) for v in table["recorded"]) if d is not None]
    return {"species": species, "sites": sites, "dates": (min(days), max(days)) if days else None}


def _day(value) -> dt.date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def queue(table: pd.DataFrame, filters: Filters = Filters()) -> pd.DataFrame:
    """The detections still to review (no verdict) that the filters keep, in sampling order."""
    return filters.apply(table[table["verdict"].isna()])


def next_detection(table: pd.DataFrame, filters: Filters = Filters(), *, pinned: int | None = None) -> dict | None:
    """The detection to show: ``pinned`` (the one Undo brought back) while it is sampled and has no
    verdict, whatever the filters; else the first of ``queue``; None when nothing is left."""
    if pinned is not None:
        row = table[(table["id"] == pinned) & table["verdict"].isna()]
        if not row.empty:
            return _record(row.iloc[0])
    rows = queue(table, filters)
    return None if rows.empty else _record(rows.iloc[0])


def _record(row: pd.Series) -> dict:
    out = {}
    for key, value in row.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and math.isnan(value) and key not in ("start_s", "end_s", "score"):
            value = None
        out[key] = value
    out["id"] = int(out["id"])
    return out


def progress(table: pd.DataFrame, filters: Filters = Filters()) -> pd.DataFrame:
    """Per species (columns ``PROGRESS_COLUMNS``), over the sampled detections the site and date
    filters keep (all species, whatever the species filter): sampled, yes, no (corrections
    included), unsure, corrected (another species named), reviewed, left and done (reviewed /
    sampled).  Sorted by common name."""
    rows = filters.apply(table, species=False)
    if rows.empty:
        return pd.DataFrame(columns=PROGRESS_COLUMNS)
    out = []
    for species, group in rows.groupby("species", sort=False):
        names = group["common_name"].dropna()
        counts = {v: int((group["verdict"] == v).sum()) for v in VERDICTS}
        reviewed = int(group["verdict"].notna().sum())
        out.append({"species": species, "common_name": str(names.iat[0]) if len(names) else species,
                    "sampled": len(group), **counts, "corrected": int(group["corrected_species"].notna().sum()),
                    "reviewed": reviewed, "left": len(group) - reviewed, "done": reviewed / len(group)})
    return (pd.DataFrame(out, columns=PROGRESS_COLUMNS)
            .sort_values(["common_name", "species"], key=lambda s: s.str.lower()).reset_index(drop=True))


# --------------------------------------------------------------------------- audio

def resolve_audio(file: str, *, audio_dir: str | Path | None = None, base: str | Path | None = None) -> Path | None:
    """The audio file of a detection: ``file`` itself (absolute, or relative to the working folder),
    else ``file`` under ``audio_dir`` then under ``base`` (the database's folder), else its name
    alone under either; None when none exists."""
    path = Path(file).expanduser()
    candidates = [path]
    roots = [Path(r).expanduser() for r in (audio_dir, base) if r]
    if not path.is_absolute():
        candidates += [root / path for root in roots]
    candidates += [root / path.name for root in roots]
    return next((c for c in candidates if c.is_file()), None)


@dataclass
class Clip:
    """``wave`` float32 mono at ``sample_rate`` Hz, starting ``start_s`` seconds into the file; the
    detection itself spans ``detection_start_s`` to ``detection_end_s`` (file times, the end clipped
    to the file)."""

    wave: np.ndarray
    sample_rate: int
    start_s: float
    detection_start_s: float
    detection_end_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.wave) / self.sample_rate

    def wav_bytes(self) -> bytes:
        """The clip as a 16-bit PCM WAV file, in memory (for ``st.audio``)."""
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, np.clip(self.wave, -1.0, 1.0), self.sample_rate, format="WAV", subtype="PCM_16")
        return buf.getvalue()


def detection_clip(path: str | Path, start_s: float, end_s: float, *, context_s: float = CONTEXT_SECONDS,
                   sample_rate: int = DISPLAY_RATE) -> Clip:
    """The detection [start_s, end_s) of ``path`` with ``context_s`` seconds on each side (clipped to
    the file), decoded in memory, at the file's rate or ``sample_rate`` when the file's is higher.
    Raises ``AudioError`` ("<path>: <reason>") and ValueError for times that are not a span."""
    import soxr

    from birdcore.analysis.soundscapes import row_audio

    if not math.isfinite(context_s) or context_s < 0:
        raise ValueError(f"context must be 0 or more seconds, got {context_s}")
    piece = row_audio(Path(path), float(start_s), float(end_s), context_s=float(context_s), fallback_rate=sample_rate)
    wave, rate = piece.wave, piece.sample_rate
    if rate > sample_rate:
        wave = soxr.resample(wave, rate, sample_rate, quality="HQ").astype(np.float32)
        rate = sample_rate
    return Clip(np.ascontiguousarray(wave, np.float32), int(rate), piece.start_s, piece.row_start_s, piece.row_end_s)


@dataclass
class Spectrogram:
    """``db`` (F, T) float32 power in dB (0 = the clip's loudest bin, floored at ``-top_db``), ``khz``
    (F,) bin frequencies, ``seconds`` (T,) frame centres in seconds from the start of the file."""

    db: np.ndarray
    khz: np.ndarray
    seconds: np.ndarray
    top_db: float


def spectrogram(clip: Clip, *, n_fft: int = N_FFT, max_frames: int = MAX_FRAMES, top_db: float = TOP_DB) -> Spectrogram:
    """Hann-windowed power spectrogram of the clip; the hop is a quarter window, longer when the
    clip would have more than ``max_frames`` frames."""
    x = np.asarray(clip.wave, np.float32)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n_frames = 1 + (len(x) - n_fft) // (n_fft // 4)
    hop = n_fft // 4 if n_frames <= max_frames else math.ceil((len(x) - n_fft) / (max_frames - 1))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    db = 10.0 * np.log10(np.maximum(power, 1e-12))
    db = np.maximum(db - db.max(), -float(top_db)).T.astype(np.float32)
    khz = np.fft.rfftfreq(n_fft, 1.0 / clip.sample_rate) / 1000.0
    seconds = clip.start_s + (np.arange(db.shape[1]) * hop + n_fft / 2) / clip.sample_rate
    return Spectrogram(db, khz.astype(np.float32), seconds, float(top_db))


def clip_figure(spec: Spectrogram, clip: Clip, *, title: str = ""):
    """Plotly heatmap of ``spec``: time in the file (s) across, frequency (kHz) up, the detection's
    start and end as dashed lines.  Traces: one heatmap."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=spec.db, x=spec.seconds, y=spec.khz, zmin=-spec.top_db, zmax=0.0,
                               colorscale="Viridis", colorbar={"title": "dB"},
                               hovertemplate="%{x:.2f} s<br>%{y:.2f} kHz<br>%{z:.0f} dB<extra></extra>"))
    for x in (clip.detection_start_s, clip.detection_end_s):
        fig.add_vline(x=x, line={"color": "white", "dash": "dash", "width": 2})
    fig.update_layout(title=title or None, xaxis_title="time in the file (s)", yaxis_title="frequency (kHz)",
                      height=360, margin={"t": 40 if title else 20, "b": 40})
    fig.update_xaxes(range=[clip.start_s, clip.end_s])
    return fig
