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

Inputs are folders (searched recursively), audio files, list files (``.txt``/``.list``: one path or URI
per line), globs, and URIs pyarrow's filesystems read (``s3://bucket/site/``, ``file:///...``):
``birdcore.io.inputs``.

``--cluster local|ADDRESS`` scores on a Ray cluster (``birdcore.serving.ray_batch``: an actor per model
copy, ``--actors N`` of them with ``--cpus-per-actor``/``--gpus-per-actor`` each); without it, files are
scored in this process.  Both give the same rows and use the same journal.

A file that cannot be read gets one line naming it and the reason (and a row in ``OUT.failures.csv``
with ``--out``); the others go on.  Exit status: 0 when every file was scored, 1 when some failed,
2 for a usage error (a bad option or run, nothing to score, an ``--out`` made with other settings).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from birdcore.cli.common import (HelpFormatter, add_engine_arg, add_place_args, at_least, fail, log,
                                 place_from_args, setup_logging, whole_between)
from birdcore.serving.batch import BatchSettings, FileOutcome, FileScorer, producer_key
from birdcore.serving.detections import MAX_TOP, raven_names, write_raven_table

LOG_EVERY_SECONDS = 30.0  # progress lines when stderr is not a terminal


class Progress:
    """Progress over files: a tqdm bar on a terminal, else a log line every ``every`` seconds; both
    say the files and hours of audio done, the speed as a multiple of real time, and the time left."""

    def __init__(self, total: int, *, every: float = LOG_EVERY_SECONDS):
        self.total, self.every, self.done, self.audio_s = total, every, 0, 0.0
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

    def file_done(self, seconds: float = 0.0) -> None:
        """A file finished; ``seconds``: its length."""
        self.done += 1
        self.audio_s += seconds
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(self.rate())
        else:
            self._maybe_log("")

    def rate(self) -> str:
        """"2.4 h of audio, 140× real time" so far."""
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        return f"{self.audio_s / 3600:.2f} h of audio, {self.audio_s / elapsed:.0f}× real time"

    def _maybe_log(self, extra: str) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        elapsed = now - self.t0
        eta = "?" if self.done == 0 else _hms(elapsed / self.done * (self.total - self.done))
        log.info("%d/%d files, %s, %s elapsed, ETA %s%s", self.done, self.total, self.rate(), _hms(elapsed), eta,
                 extra)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def build_parser(prog: str = "python -m birdcore.predict") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("run_dir", type=Path,
                        help="a complete run folder, or 'birdnet' for BirdNET V2.4 zero-shot over its 6,522 "
                             "species (model licensed CC BY-NC-SA 4.0)")
    parser.add_argument("paths", nargs="+",
                        help="audio files, folders (recursive), list files (.txt/.list: a path or URI a line), "
                             "globs, or URIs (s3://bucket/site/, file:///data/)")
    parser.add_argument("--out", type=Path, default=None,
                        help="per-segment detections: a CSV, or a Parquet dataset (a folder) when OUT ends in "
                             ".parquet (resumable: re-run the same command to continue; its journal records the "
                             "run and settings, and a rerun with others is refused)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start --out again even if it holds detections made with other settings")
    parser.add_argument("--raven", type=Path, default=None, help="folder for Raven Pro selection tables")
    parser.add_argument("--summary", type=Path, default=None,
                        help="per-species summary CSV of all of --out's detections (files, segments, best "
                             "score and where), written at the end; needs --out")
    parser.add_argument("--site-day", type=Path, default=None,
                        help="per species × site × day CSV of all of --out's detections: detections, and those at "
                             "the run's thresholds (site: the file's folder; day: the date in its name, "
                             "YYYYMMDD_HHMMSS and the like); needs --out")
    parser.add_argument("--min-score", type=_probability, default=0.5,
                        help="lowest segment score written to --out / --raven")
    parser.add_argument("--top", type=whole_between(1, MAX_TOP), default=5,
                        help=f"species shown per file (1 to {MAX_TOP}, as in the API)")
    parser.add_argument("--overlap", type=float, default=0.0,
                        help="seconds by which BirdNET's 3 s windows overlap (0 to <3; BirdNET runs only): finer "
                             "detection times, more work")
    add_engine_arg(parser, applies="BirdNET runs only")
    parser.add_argument("--json", action="store_true", help="one JSON object per file instead of text")
    parser.add_argument("--species-list", type=Path, default=None,
                        help="text file naming the species to keep, one per line (scientific name, eBird code, "
                             "common name, or BirdNET's Scientific_Common; '#' starts a comment), or a CSV with "
                             "an ebird_code or scientific_name column")
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
    ray = parser.add_argument_group(
        "cluster", "score on a Ray cluster (the one parallel path: it replaces --jobs N, which is now "
                   "--cluster local --actors N); without --cluster, files are scored in this process")
    ray.add_argument("--cluster", default=None, metavar="local|ADDRESS",
                     help="'local' starts Ray on this machine; HOST:PORT (a head started with `ray start --head`) "
                          "or ray://HOST:10001 joins a running cluster")
    ray.add_argument("--actors", type=at_least(1), default=None,
                     help="model copies scoring files at once (default: the cluster's CPUs / --cpus-per-actor)")
    ray.add_argument("--cpus-per-actor", type=_positive, default=1.0,
                     help="CPUs (and compute threads) each actor reserves")
    ray.add_argument("--gpus-per-actor", type=_fraction_or_more, default=0.0,
                     help="GPUs each actor reserves (e.g. 1, or 0.25 to share one GPU between 4 actors)")
    parser.add_argument("--jobs", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")
    return parser


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _fraction_or_more(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def settings_from_args(args) -> BatchSettings:
    """The batch's ``BatchSettings`` from the command line (ValueError for a half-given place)."""
    place = place_from_args(args)
    return BatchSettings(
        run_ref=str(args.run_dir), engine=args.engine, overlap=args.overlap, min_score=args.min_score,
        top=args.top if (args.json or (args.out is None and args.raven is None)) else 0,
        species_list=None if args.species_list is None else str(args.species_list), birds_only=args.birds_only,
        place=None if place is None else (place.lat, place.lon, place.week), range_threshold=args.range_threshold,
        sites=None if args.sites is None else str(args.sites),
        detections=args.out is not None or args.raven is not None)


def main(argv: list[str] | None = None, prog: str = "python -m birdcore.predict") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.verbose)
    results = None  # Keras/TensorFlow are imported (quietly) by the runs that need them: not BirdNET's
    try:
        if args.jobs is not None:
            raise ValueError(f"--jobs is replaced by --cluster local --actors {args.jobs} (one parallel path, on Ray)")
        for option, value in (("--summary", args.summary), ("--site-day", args.site_day)):
            if value is not None and args.out is None:
                raise ValueError(f"{option} needs --out (it summarizes the detections output)")
        if args.cluster is None and (args.actors is not None or args.gpus_per_actor):
            raise ValueError("--actors and --gpus-per-actor need --cluster local|ADDRESS")
        settings = settings_from_args(args)
        # the run and every setting checked before any file is read; the model is loaded here only when
        # this process scores (on a cluster, each actor loads its own)
        scorer = FileScorer(settings, load_model=args.cluster is None)
        from birdcore.io.inputs import list_inputs

        listing = list_inputs(list(args.paths))
        files, missing = listing.files, listing.problems
        if not files:
            raise ValueError("nothing to score: " + "; ".join(missing))
        for line in missing:
            log.error("%s", line)
        for line in scorer.masks.describe(files):
            log.info("%s", line)
        if args.raven is not None and args.raven.exists() and not args.raven.is_dir():  # before --out is written
            raise ValueError(f"--raven {args.raven}: is a file; give a folder for the selection tables")
        done: set[str] = set()
        if args.cluster is not None:  # before --out is written: an address nothing answers at leaves no file
            from birdcore.serving import ray_batch

            started = time.monotonic()
            ray_batch.connect(args.cluster, verbose=args.verbose)
            log.info("Ray cluster %s: %d CPUs (%.1f s to start or join)", args.cluster, ray_batch.cluster_cpus(),
                     time.monotonic() - started)
            ray_batch.check_resources(args.cpus_per_actor, args.gpus_per_actor)  # an actor no node can hold
        if args.out is not None:
            from birdcore.serving.parquet_results import open_results

            results = open_results(args.out, producer=producer_key(settings), overwrite=args.overwrite)
            done = results.open()
        if args.raven is not None:
            args.raven.mkdir(parents=True, exist_ok=True)
        status = _score_files(scorer, files, done, results, args)
        status = 1 if missing else status
        if results is not None:
            results.close()
        if args.summary is not None:
            write_summary(args.out, args.summary)
        if args.site_day is not None:
            write_site_day(scorer.run, args.out, args.site_day)
        return status
    except KeyboardInterrupt:
        log.error("interrupted%s", "; run the same command again to continue" if args.out else "")
        return 130
    except Exception as exc:
        return fail(exc, args.verbose)
    finally:
        if results is not None:
            results.close()


def _scored(scorer: FileScorer, todo: list[str], args, progress: Progress):
    """``FileOutcome`` of each of ``todo``: in this process, in order (a thread decodes ahead while the
    model scores, ``stream.stream_files``; URIs are fetched one by one), or with ``--cluster`` on Ray's
    actors, in the order they finish."""
    if args.cluster is not None:  # joined in main, before --out was written
        from birdcore.serving import ray_batch

        yield from ray_batch.score_on_ray(scorer.settings, todo, actors=args.actors,
                                          cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor)
        return
    from birdcore.io.inputs import is_uri
    from birdcore.io.stream import stream_files

    local = [f for f in todo if not is_uri(f)]
    streams = stream_files([Path(f) for f in local], sample_rate=scorer.run.sample_rate)
    for path in todo:
        if is_uri(path):
            yield scorer.score(path, verbose=args.verbose, on_audio=lambda s, n=path: progress.audio(n, s))
            continue
        _, chunks = next(streams)
        yield scorer.score(path, chunks=chunks, verbose=args.verbose,
                           on_audio=lambda s, n=Path(path).name: progress.audio(n, s))


def _score_files(scorer: FileScorer, files: list[str], done: set[str], results, args) -> int:
    names = raven_names([Path(f) for f in files])
    todo = [p for p in files if p not in done]
    if len(todo) < len(files):
        log.info("%s: %d of %d files already done; skipping them", args.out, len(files) - len(todo), len(files))
    text_output = results is None and args.raven is None
    failures = n_detections = 0
    progress = Progress(len(todo))
    failed_log = Failures(args.out) if args.out is not None else None
    try:
        for res in _scored(scorer, todo, args, progress):
            if res.error is not None:
                log.error("%s", res.error)
                failures += 1
                if failed_log is not None:
                    failed_log.add(res.path, res.error)
                progress.file_done()
                continue
            n_detections += len(res.detections)
            if args.raven is not None:
                write_raven_table(args.raven / names[Path(res.path)], res.detections, sample_rate=scorer.run.sample_rate)
            if results is not None:
                results.add(res.path, res.detections)
            if args.json or text_output:
                _print_top(res, as_json=args.json)
            progress.file_done(res.seconds)
    finally:
        progress.close()
        if failed_log is not None:
            failed_log.close()
    if not text_output:
        log.info("%d files scored (%s), %d failed, %d detections >= %g", len(todo) - failures, progress.rate(),
                 failures, n_detections, args.min_score)
    return 1 if failures else 0


class Failures:
    """``OUT.failures.csv``: ``file,reason`` of each file that could not be scored, appended as they come
    (a rerun tries them again and appends again)."""

    def __init__(self, out: Path):
        self.path = Path(out).with_name(Path(out).name + ".failures.csv")
        self._fh = None

    def add(self, file: str, reason: str) -> None:
        if self._fh is None:
            new = not self.path.exists()
            self._fh = open(self.path, "a", newline="", encoding="utf-8")
            if new:
                self._fh.write("file,reason\n")
        csv.writer(self._fh, lineterminator="\n").writerow([file, reason])
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def write_summary(detections: Path, summary: Path) -> None:
    """Write the per-species summary of a detections output (CSV or Parquet; ``detections.summarize_rows``)
    atomically."""
    from birdcore.io.atomic import atomic_write_text
    from birdcore.serving.detections import summarize_detections, summarize_rows, summary_csv
    from birdcore.serving.parquet_results import detection_rows, is_parquet_output

    rows = summarize_rows(detection_rows(detections)) if is_parquet_output(detections) else \
        summarize_detections(detections)
    atomic_write_text(summary, summary_csv(rows))
    log.info("%s: %d species detected", summary, len(rows))


def write_site_day(run, detections: Path, out: Path) -> None:
    """The per species × site × day table of a detections output, with the run's thresholds."""
    from birdcore.serving.detections import threshold_for
    from birdcore.serving.site_day_summary import write_site_day_summary

    thresholds = {code: threshold_for(run, code) for code in run.codes}
    table = write_site_day_summary(detections, out, thresholds=thresholds if any(
        t is not None for t in thresholds.values()) else None)
    log.info("%s: %d species × site × day rows", out, len(table))


def _print_top(res: FileOutcome, *, as_json: bool) -> None:
    """A file's top species (``res.top``: ``Prediction``s) and, with a location filter, its place."""
    place, preds = res.place, res.top
    if as_json:
        where = {} if place is None else {"place": {"lat": place.lat, "lon": place.lon, "week": place.week}}
        print(json.dumps({"file": res.path, "seconds": res.seconds, **where,
                          "top": [{**p.__dict__, "detected": p.detected, "group": p.group} for p in preds]}),
              flush=True)
        return
    print(f"{res.path}  ({res.seconds:.1f} s)" + ("" if place is None else f"  [species expected at {place.describe()}]"))
    for p in preds:
        decision = "" if p.detected is None else ("  detected" if p.detected else "  below threshold")
        print(f"  {p.score:6.3f}  {p.label}{decision}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
