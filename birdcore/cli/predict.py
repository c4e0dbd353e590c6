"""Score audio files with a run: ``python -m birdcore.predict RUN_DIR PATH... [--out results.csv] [--raven DIR]``.

Files and folders (searched recursively for audio files) are scored one by
one, each streamed in bounded memory (``birdcore.io.stream.stream_audio`` and
``Scorer.score_stream``), so multi-hour field recordings are fine.

Outputs:

- default: the top species of each file (text, or one JSON object per file
  with ``--json``), with scores and the run's per-species threshold decision;
- ``--out results.csv``: per-segment detections (``file,start_s,end_s,species,
  common_name,score`` for every segment and species scoring >= ``--min-score``),
  written file by file.  Finished files are listed in ``results.csv.done``;
  re-running the same command skips them and redoes a file that was cut off;
- ``--raven DIR``: one Raven Pro selection table per file, ``DIR/<stem>.selections.txt``;
- ``--summary species.csv`` (with ``--out``): per species, the files and segments it was detected in
  and its best score, over the whole detections CSV (earlier, resumed passes included).

``--species-list FILE`` keeps only the species it names, and ``--lat``/``--lon``
(with ``--date`` or ``--week``) only those BirdNET's range model expects there
and then (``birdcore.serving.birdnet_range``); ``--sites FILE`` gives a place per folder
or file instead (``birdcore.serving.sites``).  Dropped species score 0 in every output.

A file that cannot be read gets one line naming it and the reason; the
others go on, and the exit status is 1 when any file failed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdcore.cli.common import (HelpFormatter, add_engine_arg, add_place_args, at_least, fail, log,
                                 place_from_args, setup_logging, whole_between)
from birdcore.serving.detections import (MAX_TOP, Prediction, ResultsCsv, raven_names, segment_detections,
                                         top_kept, write_raven_table)

CHUNK_SECONDS = 60.0  # audio streamed per chunk
LOG_EVERY_SECONDS = 30.0  # progress lines when stderr is not a terminal


def expand_paths(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Files as given, and audio files found recursively in folders, in sorted order; and one line
    per path that gives nothing to score (missing, or a folder without audio files)."""
    from birdcore.io.audio import AUDIO_EXTENSIONS, is_audio_path

    out: list[Path] = []
    problems: list[str] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and is_audio_path(q))
            if not found:
                problems.append(f"{p}: no audio files in this folder (looked for "
                                f"{', '.join(sorted(AUDIO_EXTENSIONS))})")
            out.extend(found)
        elif not p.exists():
            problems.append(f"{p}: no such file or folder")
        else:
            out.append(p)
    return out, problems


class Progress:
    """Progress over files: a tqdm bar with ETA on a terminal, else a log line every ``every`` seconds."""

    def __init__(self, total: int, *, every: float = LOG_EVERY_SECONDS):
        self.total, self.every, self.done = total, every, 0
        self.t0 = self._last = time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True)

    def audio(self, name: str, seconds: float) -> None:
        """Within a file: ``seconds`` of audio scored so far."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"{name} {_hms(seconds)}")
        else:
            self._maybe_log(f" (in {name}: {_hms(seconds)} of audio)")

    def file_done(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        else:
            self._maybe_log("")

    def _maybe_log(self, extra: str) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self.t0
        eta = "?" if self.done == 0 else _hms(elapsed / self.done * (self.total - self.done))
        log.info("%d/%d files, %s elapsed, ETA %s%s", self.done, self.total, _hms(elapsed), eta, extra)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class _Counted:
    """Wraps a chunk iterator and counts its samples (the file's length at the model rate)."""

    def __init__(self, chunks):
        self.chunks, self.samples = chunks, 0

    def __iter__(self):
        for chunk in self.chunks:
            self.samples += int(chunk.size)
            yield chunk


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m birdcore.predict", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("run_dir", type=Path,
                        help="a complete run folder, or 'birdnet' for BirdNET V2.4 zero-shot over its 6,522 "
                             "species (model licensed CC BY-NC-SA 4.0)")
    parser.add_argument("paths", type=Path, nargs="+", help="audio files or folders")
    parser.add_argument("--out", type=Path, default=None,
                        help="per-segment detections CSV (resumable: re-run the same command to continue; its "
                             "journal OUT.done records the run and settings, and a rerun with others is refused)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start --out again even if it holds detections made with other settings")
    parser.add_argument("--raven", type=Path, default=None, help="folder for Raven Pro selection tables")
    parser.add_argument("--summary", type=Path, default=None,
                        help="per-species summary CSV of all of --out's detections (files, segments, best "
                             "score and where), written at the end; needs --out")
    parser.add_argument("--min-score", type=_probability, default=0.5,
                        help="lowest segment score written to --out / --raven")
    parser.add_argument("--top", type=whole_between(1, MAX_TOP), default=5,
                        help=f"species shown per file (1 to {MAX_TOP}, as in the API)")
    parser.add_argument("--overlap", type=float, default=0.0,
                        help="seconds by which BirdNET's 3 s windows overlap (0 to <3; BirdNET runs only): finer "
                             "detection times, more work")
    add_engine_arg(parser, applies="BirdNET runs only")
    parser.add_argument("--json", action="store_true", help="one JSON object per file instead of text")
    parser.add_argument("--jobs", type=at_least(1), default=1,
                        help="worker processes scoring files in parallel, each with cores/N threads; for "
                             "machines with many cores (on 2 vCPUs it gave no reliable gain, BENCHMARKS.md)")
    parser.add_argument("--species-list", type=Path, default=None,
                        help="text file naming the species to keep, one per line (scientific name, eBird code, "
                             "common name, or BirdNET's Scientific_Common); '#' starts a comment")
    parser.add_argument("--birds-only", action="store_true",
                        help="leave out classes that are not birds (BirdNET's 11 sounds such as Engine, Human vocal "
                             "and Dog, and its 90 frogs, insects and mammals); without it they are marked in the "
                             "output")
    where = parser.add_argument_group(
        "location filter", "keep only the species BirdNET's range model expects at this place and time "
                           "(model licensed CC BY-NC-SA 4.0); species BirdNET does not know are kept")
    add_place_args(where)
    where.add_argument("--range-threshold", type=_probability, default=0.03,
                       help="lowest occurrence probability of a kept species")
    where.add_argument("--sites", type=Path, default=None,
                       help="CSV of path,lat,lon[,date|week]: a place per folder or file (paths relative to the "
                            "CSV), for batches from several recorders; files under no site use --lat/--lon if "
                            "given, else no location filter")
    parser.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")
    return parser


class FileMasks:
    """The species mask of each file (``SpeciesMask`` or None): ``--species-list`` and the location
    filter, the latter per file with ``--sites`` (files under no site fall back to ``--lat/--lon``,
    else are not filtered by location).  Raises ValueError naming the problem."""

    def __init__(self, run, args):
        from birdcore.serving.species_mask import from_names, read_species_list

        self.run, self.threshold = run, args.range_threshold
        from birdcore.serving.species_mask import birds_only, combine

        self.listed = None
        if args.species_list is not None:
            self.listed = from_names(run.species, read_species_list(args.species_list), source=str(args.species_list))
        if getattr(args, "birds_only", False):
            self.listed = combine([self.listed, birds_only(run.species)])
        self.fallback = location_filter(run, args)
        self.sites = None
        if getattr(args, "sites", None) is not None:
            from birdcore.serving.sites import SiteTable, read_sites

            self.sites = SiteTable(read_sites(args.sites))
        self._filters: dict = {} if self.fallback is None else {self.fallback.place: self.fallback}

    def _range_filter(self, place):
        if place not in self._filters:
            from birdcore.serving.birdnet_range import species_filter

            self._filters[place] = species_filter(self.run.species, place, threshold=self.threshold)
        return self._filters[place]

    def for_file(self, path: Path):
        """The mask for ``path``: the species every filter that applies to it keeps, or None."""
        from birdcore.serving.species_mask import combine

        place = self.place_for(path)
        return combine([self.listed, None if place is None else self._range_filter(place)])

    def place_for(self, path: Path):
        """The place whose range filter applies to ``path`` (a ``birdnet_range.Place``), or None."""
        place = self.sites.place_for(path) if self.sites is not None else None
        if place is None and self.fallback is not None:
            place = self.fallback.place
        return place

    def describe(self, files: list[Path]) -> list[str]:
        """Log lines saying which filters apply, and to how many of ``files``."""
        lines = [f"species: {m.summary()}" for m in (self.listed, self.fallback) if m is not None]
        if self.sites is not None:
            placed = sum(self.sites.place_for(f) is not None for f in files)
            lines.append(f"sites: {len(self.sites.places)} place(s); {placed} of {len(files)} files are under a site")
            if placed < len(files):
                rest = "the --lat/--lon filter" if self.fallback is not None else "no location filter"
                lines.append(f"{len(files) - placed} file(s) under no site get {rest}")
        return lines


def location_filter(run, args):
    """The ``RangeFilter`` asked for by ``--lat/--lon/--date/--week``, or None without ``--lat/--lon``.
    Raises ValueError for a half-given or out-of-range place."""
    place = place_from_args(args)
    if place is None:
        return None
    from birdcore.serving.birdnet_range import species_filter

    return species_filter(run.species, place, threshold=args.range_threshold)


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def producer_key(run, args) -> dict:
    """What makes the detections of ``--out``: the run and every setting that changes them, for its
    journal (``detections.ResultsCsv``).  The engine is left out: LiteRT and Keras give BirdNET's
    scores within 1e-4, so an output may be continued on another machine."""
    from birdcore.runs.loading import BIRDNET_REF

    ref = str(args.run_dir)
    if ref == BIRDNET_REF:
        run_name, run_id = BIRDNET_REF, "BirdNET V2.4"
    else:
        run_name, run_id = str(Path(ref).resolve()), _digest(Path(ref) / "run.json")
    placed = args.lat is not None or args.sites is not None
    return {"run": run_name, "run_id": run_id, "min_score": args.min_score, "overlap": args.overlap,
            "species_list": _digest(args.species_list), "birds_only": bool(args.birds_only),
            "place": None if args.lat is None else f"{args.lat:g},{args.lon:g},week {place_from_args(args).week}",
            "sites": _digest(args.sites), "range_threshold": args.range_threshold if placed else None}


def _digest(path: Path | None) -> str | None:
    """The first 16 hex digits of a file's SHA-256 (its content, wherever it lies), None without a file."""
    if path is None:
        return None
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    results = None  # Keras/TensorFlow are imported (quietly) by the runs that need them: not BirdNET's
    try:
        if args.engine:
            from birdcore.models.birdnet.engines import use_engine

            use_engine(args.engine)
        run = _load(str(args.run_dir))
        run.segment_hop_seconds(args.overlap)  # refuses an overlap this run cannot use, before any work
        masks = FileMasks(run, args)
        if args.summary is not None and args.out is None:
            raise ValueError("--summary needs --out (it summarizes the detections CSV)")
        files, missing = expand_paths(args.paths)
        files = list(dict.fromkeys(files))
        if not files:
            raise ValueError("nothing to score: " + "; ".join(missing))
        for line in missing:
            log.error("%s", line)
        for line in masks.describe(files):
            log.info("%s", line)
        if args.raven is not None and args.raven.exists() and not args.raven.is_dir():  # before --out is written
            raise ValueError(f"--raven {args.raven}: is a file; give a folder for the selection tables")
        done: set[str] = set()
        if args.out is not None:
            results = ResultsCsv(args.out, producer=producer_key(run, args), overwrite=args.overwrite)
            done = results.open()
        if args.raven is not None:
            args.raven.mkdir(parents=True, exist_ok=True)
        status = _score_files(run, files, done, results, args, masks=masks)
        status = 1 if missing else status
        if args.summary is not None:
            results.close()
            write_summary(args.out, args.summary)
        return status
    except KeyboardInterrupt:
        log.error("interrupted%s", "; run the same command again to continue" if args.out else "")
        return 130
    except Exception as exc:
        return fail(exc, args.verbose)
    finally:
        if results is not None:
            results.close()


@dataclass
class FileScores:
    """One file's outcome: scores (recording (C,), segments (S, C)) and length, or a one-line error."""

    path: Path
    seconds: float = 0.0
    recording: np.ndarray | None = None
    segments: np.ndarray | None = None
    error: str | None = None


def score_file(scorer, path: Path, *, sample_rate: int, on_audio=None, verbose: bool = False,
               chunks=None) -> FileScores:
    """Stream one file through ``scorer`` (bounded memory); a failure becomes ``FileScores.error``.
    ``chunks``: the file's decoded chunks when already being read (``stream.stream_files``)."""
    from birdcore.io.audio import AudioError
    from birdcore.io.stream import stream_audio

    if chunks is None:
        chunks = stream_audio(path, sample_rate=sample_rate, chunk_seconds=CHUNK_SECONDS)
    chunks = _Counted(chunks)
    try:
        scores = scorer.score_stream(chunks, progress=on_audio)
    except AudioError as exc:
        return FileScores(path, error=str(exc))
    except Exception as exc:  # never let one odd file stop a batch
        if verbose:
            log.exception("%s: unexpected error", path)
        return FileScores(path, error=f"{path}: unexpected error ({type(exc).__name__}: {exc})")
    return FileScores(path, chunks.samples / sample_rate, scores.recording, scores.segments)


def _load(run_ref: str):
    from birdcore.runs.loading import load_run_ref

    return load_run_ref(run_ref)


_WORKER: dict = {}


def _worker_init(run_ref: str, threads: int, verbose: bool, overlap: float = 0.0, engine: str | None = None) -> None:
    """Per worker process: quiet logging, ``threads`` compute threads, and its own model (BirdNET on ``engine``).

    TensorFlow is imported only if the run's model needs it (BirdNET zero-shot and head runs on LiteRT
    do not); its thread counts are set through the environment it reads when it starts computing."""
    setup_logging(verbose)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    if engine:
        from birdcore.models.birdnet.engines import use_engine

        use_engine(engine)
    run = _load(run_ref)
    _WORKER.update(run=run, scorer=run.scorer(threads=threads, overlap=overlap), verbose=verbose)


def _worker_score(path: Path) -> FileScores:
    return score_file(_WORKER["scorer"], path, sample_rate=_WORKER["run"].sample_rate, verbose=_WORKER["verbose"])


def _scored(run, todo: list[Path], args, progress: "Progress"):
    """FileScores of ``todo`` in order: in this process (a thread decodes ahead while the model
    scores, ``stream.stream_files``), or with ``--jobs N`` in N worker processes (each with cores/N
    compute threads; files are handed out one at a time)."""
    jobs = min(args.jobs, len(todo))
    if jobs <= 1:
        from birdcore.io.stream import stream_files

        scorer = run.scorer(overlap=args.overlap)
        for path, chunks in stream_files(todo, sample_rate=run.sample_rate, chunk_seconds=CHUNK_SECONDS):
            yield score_file(scorer, path, sample_rate=run.sample_rate, verbose=args.verbose, chunks=chunks,
                             on_audio=lambda s, n=path.name: progress.audio(n, s))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    log.info("scoring with %d worker processes, %d thread%s each", jobs, threads, "s" if threads > 1 else "")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init,
                               initargs=(str(args.run_dir), threads, args.verbose, args.overlap, args.engine))
    try:
        yield from pool.map(_worker_score, todo)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _score_files(run, files: list[Path], done: set[str], results: ResultsCsv | None, args, *,
                 masks: FileMasks | None = None) -> int:
    names = raven_names(files)
    todo = [p for p in files if str(p) not in done]
    if len(todo) < len(files):
        log.info("%s: %d of %d files already done; skipping them", args.out, len(files) - len(todo), len(files))
    hop = run.segment_hop_seconds(args.overlap)
    text_output = results is None and args.raven is None
    failures = n_detections = 0
    progress = Progress(len(todo))
    try:
        for res in _scored(run, todo, args, progress):
            path = res.path
            if res.error is not None:
                log.error("%s", res.error)
                failures += 1
                progress.file_done()
                continue
            keep = None if masks is None else masks.for_file(path)
            if keep is not None:
                res.recording, res.segments = keep.apply(res.recording), keep.apply(res.segments)
            if results is not None or args.raven is not None:
                dets = segment_detections(run, res.segments, seconds=res.seconds, min_score=args.min_score,
                                          hop_seconds=hop)
                n_detections += len(dets)
                if args.raven is not None:
                    write_raven_table(args.raven / names[path], dets, sample_rate=run.sample_rate)
                if results is not None:
                    results.add(str(path), dets)
            if args.json or text_output:
                place = None if masks is None else masks.place_for(path)
                _print_top(path, top_kept(run, res.recording, keep, top=args.top), res.seconds,
                           as_json=args.json, place=place)
            progress.file_done()
    finally:
        progress.close()
    if not text_output:
        log.info("%d files scored, %d failed, %d detections >= %g", len(todo) - failures, failures, n_detections,
                 args.min_score)
    return 1 if failures else 0


def write_summary(detections: Path, summary: Path) -> None:
    """Write the per-species summary of a detections CSV (``detections.summarize_detections``) atomically."""
    from birdcore.serving.detections import summarize_detections, summary_csv
    from birdcore.io.atomic import atomic_write_text

    rows = summarize_detections(detections)
    atomic_write_text(summary, summary_csv(rows))
    log.info("%s: %d species detected", summary, len(rows))


def _print_top(path: Path, preds: list[Prediction], seconds: float, *, as_json: bool, place=None) -> None:
    """The file's top species; ``place``: the location filter's place for it (``birdnet_range.Place``)."""
    if as_json:
        where = {} if place is None else {"place": {"lat": place.lat, "lon": place.lon, "week": place.week}}
        print(json.dumps({"file": str(path), "seconds": seconds, **where,
                          "top": [{**p.__dict__, "detected": p.detected, "group": p.group} for p in preds]}),
              flush=True)
        return
    print(f"{path}  ({seconds:.1f} s)" + ("" if place is None else f"  [species expected at {place.describe()}]"))
    for p in preds:
        decision = "" if p.detected is None else ("  detected" if p.detected else "  below threshold")
        print(f"  {p.score:6.3f}  {p.label}{decision}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
