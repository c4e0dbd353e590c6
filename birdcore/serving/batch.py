"""Batch scoring of audio files: what turns one file into its outcome, shared by scoring in this
process and by the actors of a Ray cluster (``serving.ray_batch``), so both give the same rows.

- ``BatchSettings``: the run and every setting of a batch (picklable: sent to each actor);
- ``FileMasks``: the species each file keeps (``--species-list``, ``--birds-only``, the location
  filter, per file with ``--sites``);
- ``FileScorer``: loads the run once, then ``score(path)`` streams a file through the model in
  bounded memory and gives a ``FileOutcome``: the file's length in seconds, its top species
  (``detections.Prediction``), its segment detections (``detections.Detection``, times in seconds)
  or a one-line error;
- ``producer_key``: the run and the settings that change detections, for an output's journal.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("birdcore")

CHUNK_SECONDS = 60.0  # audio streamed per chunk


@dataclass(frozen=True)
class BatchSettings:
    """A batch's run (a run folder or ``"birdnet"``) and settings.  ``place``: (lat, lon, week) of the
    location filter or None; ``detections``: whether segment detections are wanted (``--out`` or
    ``--raven``); ``top``: species listed per file (0: none)."""

    run_ref: str
    engine: str | None = None
    overlap: float = 0.0
    min_score: float = 0.5
    top: int = 5
    species_list: str | None = None
    birds_only: bool = False
    place: tuple[float, float, int] | None = None
    range_threshold: float = 0.03
    sites: str | None = None
    detections: bool = True
    threads: int | None = None


@dataclass
class FileOutcome:
    """One file's result: its length (s), top species, detections and place, or a one-line ``error``."""

    path: str
    seconds: float = 0.0
    top: list = field(default_factory=list)
    detections: list = field(default_factory=list)
    place: object | None = None  # birdnet_range.Place of the location filter applied to it
    error: str | None = None


def _digest(path) -> str | None:
    """The first 16 hex digits of a file's SHA-256 (its content, wherever it lies), None without a file."""
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None


def producer_key(settings: BatchSettings) -> dict:
    """What makes a batch's detections: the run and every setting that changes them, for the journal of
    its output (``detections.ResultsCsv``).  The engine is left out: LiteRT and Keras give BirdNET's
    scores within 1e-4, so an output may be continued on another machine; so are the cluster settings."""
    from birdcore.runs.loading import BIRDNET_REF

    ref = settings.run_ref
    if ref == BIRDNET_REF:
        run_name, run_id = BIRDNET_REF, "BirdNET V2.4"
    else:
        run_name, run_id = str(Path(ref).resolve()), _digest(Path(ref) / "run.json")
    placed = settings.place is not None or settings.sites is not None
    place = None if settings.place is None else "{:g},{:g},week {}".format(*settings.place)
    return {"run": run_name, "run_id": run_id, "min_score": settings.min_score, "overlap": settings.overlap,
            "species_list": _digest(settings.species_list), "birds_only": bool(settings.birds_only),
            "place": place, "sites": _digest(settings.sites),
            "range_threshold": settings.range_threshold if placed else None}


class FileMasks:
    """The species mask of each file (``SpeciesMask`` or None): the species list and ``birds_only``, and
    the location filter, per file with ``sites`` (files under no site fall back to ``place``, else are
    not filtered by location).  Raises ValueError naming the problem."""

    def __init__(self, run, settings: BatchSettings):
        from birdcore.serving.species_mask import birds_only, combine, from_names, read_species_list

        self.run, self.threshold = run, settings.range_threshold
        self.listed = None
        if settings.species_list is not None:
            self.listed = from_names(run.species, read_species_list(settings.species_list),
                                     source=str(settings.species_list))
        if settings.birds_only:
            self.listed = combine([self.listed, birds_only(run.species)])
        self.fallback = None
        if settings.place is not None:
            from birdcore.serving.birdnet_range import Place, species_filter

            self.fallback = species_filter(run.species, Place(*settings.place), threshold=self.threshold)
        self.sites = None
        if settings.sites is not None:
            from birdcore.serving.sites import SiteTable, read_sites

            self.sites = SiteTable(read_sites(Path(settings.sites)))
        self._filters: dict = {} if self.fallback is None else {self.fallback.place: self.fallback}

    def _range_filter(self, place):
        if place not in self._filters:
            from birdcore.serving.birdnet_range import species_filter

            self._filters[place] = species_filter(self.run.species, place, threshold=self.threshold)
        return self._filters[place]

    def for_file(self, path):
        """The mask for ``path``: the species every filter that applies to it keeps, or None."""
        from birdcore.serving.species_mask import combine

        place = self.place_for(path)
        return combine([self.listed, None if place is None else self._range_filter(place)])

    def place_for(self, path):
        """The place whose range filter applies to ``path`` (a ``birdnet_range.Place``), or None."""
        place = self.sites.place_for(Path(path)) if self.sites is not None else None
        if place is None and self.fallback is not None:
            place = self.fallback.place
        return place

    def describe(self, files: list) -> list[str]:
        """Log lines saying which filters apply, and to how many of ``files``."""
        lines = [f"species: {m.summary()}" for m in (self.listed, self.fallback) if m is not None]
        if self.sites is not None:
            placed = sum(self.sites.place_for(Path(f)) is not None for f in files)
            lines.append(f"sites: {len(self.sites.places)} place(s); {placed} of {len(files)} files are under a site")
            if placed < len(files):
                rest = "the --lat/--lon filter" if self.fallback is not None else "no location filter"
                lines.append(f"{len(files) - placed} file(s) under no site get {rest}")
        return lines


class _Counted:
    """Wraps a chunk iterator and counts its samples (the file's length at the model rate)."""

    def __init__(self, chunks):
        self.chunks, self.samples = chunks, 0

    def __iter__(self):
        for chunk in self.chunks:
            self.samples += int(chunk.size)
            yield chunk


class FileScorer:
    """A batch's model and filters, loaded once (in this process, or once per Ray actor)."""

    def __init__(self, settings: BatchSettings, *, run=None, load_model: bool = True):
        """``load_model=False``: the run and every setting checked, but no model loaded (``score`` then
        cannot be used): the driver of a Ray job, whose actors load the model."""
        if settings.engine:
            from birdcore.models.birdnet.engines import use_engine

            use_engine(settings.engine)
        if run is None:
            from birdcore.runs.loading import load_run_ref

            run = load_run_ref(settings.run_ref, model=load_model)
        self.settings, self.run = settings, run
        self.hop = run.segment_hop_seconds(settings.overlap)  # refuses an overlap this run cannot use
        self.masks = FileMasks(run, settings)
        self.scorer = run.scorer(overlap=settings.overlap, threads=settings.threads) if load_model else None

    def score(self, path: str, *, chunks=None, on_audio=None, verbose: bool = False) -> FileOutcome:
        """Stream one file (a local path, or a URI: ``io.inputs``) through the model; a failure becomes
        ``FileOutcome.error`` (one line naming the file).  ``chunks``: the file's decoded chunks when
        already being read (``stream.stream_files``)."""
        from birdcore.io.audio import AudioError

        path = str(path)
        try:
            if chunks is not None:
                return self._outcome(path, chunks, on_audio)
            from birdcore.io.inputs import open_audio_source
            from birdcore.io.stream import stream_files

            with open_audio_source(path) as local, contextlib.closing(stream_files(
                    [Path(local)], sample_rate=self.run.sample_rate, chunk_seconds=CHUNK_SECONDS)) as files:
                _, file_chunks = next(files)  # a thread decodes the next chunk while the model scores
                return self._outcome(path, file_chunks, on_audio)
        except AudioError as exc:
            return FileOutcome(path, error=str(exc))
        except Exception as exc:  # never let one odd file stop a batch
            if verbose:
                log.exception("%s: unexpected error", path)
            return FileOutcome(path, error=f"{path}: unexpected error ({type(exc).__name__}: {exc})")

    def _outcome(self, path: str, chunks, on_audio) -> FileOutcome:
        from birdcore.serving.detections import segment_detections, top_kept

        counted = _Counted(chunks)
        scores = self.scorer.score_stream(counted, progress=on_audio)
        seconds = counted.samples / self.run.sample_rate
        keep = self.masks.for_file(path)
        recording, segments = scores.recording, scores.segments
        if keep is not None:
            recording, segments = keep.apply(recording), keep.apply(segments)
        out = FileOutcome(path, seconds=seconds, place=self.masks.place_for(path))
        if self.settings.top:
            out.top = top_kept(self.run, np.asarray(recording), keep, top=self.settings.top)
        if self.settings.detections:
            out.detections = segment_detections(self.run, segments, seconds=seconds,
                                                min_score=self.settings.min_score, hop_seconds=self.hop)
        return out
