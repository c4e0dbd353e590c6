"""``python -m birdcore.review COMMAND --db DB ...``: verify detections, measure precision, set thresholds.

Examples:
    python -m birdcore.review import detections.csv --db review.sqlite --run runs/NAME
    python -m birdcore.review sample --db review.sqlite --per-species 50 --strategy stratified --seed 1
    python -m birdcore.review report --db review.sqlite --target-precision 0.9 --json
    python -m birdcore.review thresholds --db review.sqlite --run runs/NAME --target-precision 0.9
    python -m birdcore.review import-labels --db review.sqlite --labels labels.csv
    python -m birdcore.review export --db review.sqlite --raven verified/   (or --labels verified.csv)

DB is a SQLite file or a SQLAlchemy URL such as
postgresql+psycopg://user@host/birds for a team's shared database.  Reviews are made on the
dashboard's Review page; `import-labels` records existing annotations as reviews.  Only `import`
makes a new database (when DB does not exist); every other command needs an existing review
database, and `report`, `thresholds` and `export` open it read-only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from birdcore.cli.common import HelpFormatter, fail, log, setup_logging, text_table


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def build_parser(prog: str = "python -m birdcore.review") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, formatter_class=HelpFormatter)
        p.add_argument("--db", required=True, help="review database: a SQLite file or a SQLAlchemy URL" + (
            " (made when it does not exist)" if name == "import" else " (an existing one, made by import)"))
        p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")
        return p

    imp = add("import", "detections from python -m birdcore.predict --out")
    imp.add_argument("detections", type=Path, help="the detections CSV")
    imp.add_argument("--run", default="", help="the run that produced them (a run folder or 'birdnet')")
    lab = add("import-labels", "existing annotations as reviews of the detections they cover")
    lab.add_argument("--labels", type=Path, required=True,
                     help="labels the soundscape evaluation reads (2020/2021 CSV, Raven tables)")
    lab.add_argument("--audio-dir", type=Path, default=None, help="audio folder, if the labels need one")
    lab.add_argument("--reviewer", default=None, help="name recorded with the reviews (default: labels:<file>)")
    smp = add("sample", "choose detections to review, per species")
    smp.add_argument("--per-species", type=int, required=True, help="detections per species")
    smp.add_argument("--strategy", choices=["stratified", "random", "top"], default="stratified",
                     help="stratified over score bins (precision at every threshold), random, or the top scores")
    smp.add_argument("--seed", type=int, default=0, help="seed of the draw (same seed, same sample)")
    smp.add_argument("--bins", type=int, default=5, help="score bins for stratified sampling")
    rep = add("report", "precision per species from the reviews")
    rep.add_argument("--target-precision", type=_probability, default=None,
                     help="also give the threshold that reaches this precision")
    rep.add_argument("--json", action="store_true", help="one JSON object on the last line")
    thr = add("thresholds", "write the thresholds for a target precision into a run")
    thr.add_argument("--run", type=Path, required=True, help="the run folder whose thresholds.json to update")
    thr.add_argument("--target-precision", type=_probability, required=True, help="precision to reach")
    exp = add("export", "verified detections as Raven tables or soundscape labels")
    where = exp.add_mutually_exclusive_group(required=True)
    where.add_argument("--raven", type=Path, help="folder for one selection table per audio file")
    where.add_argument("--labels", type=Path, help="CSV of 5 s rows (BirdCLEF 2021 layout)")
    return parser


# how each command opens --db: "create" (import: made when missing), "write" (an existing one,
# written to) or "read" (an existing one, opened read-only); none of them creates anything else
ACCESS = {"import": "create", "import-labels": "write", "sample": "write", "report": "read", "thresholds": "read",
          "export": "read"}


def main(argv: list[str] | None = None, prog: str = "python -m birdcore.review") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.verbose)
    try:
        if args.command in ("import", "thresholds"):
            _check_run(args.run)
        if args.command == "import":
            return _import(args)
        from birdcore.review.store import open_existing

        store = open_existing(args.db, write=ACCESS[args.command] == "write")
        return COMMANDS[args.command](store, args)
    except Exception as exc:  # user-facing: one line, no traceback
        return fail(exc, args.verbose)


def _check_run(run) -> None:
    """ValueError naming ``--run`` unless it is a run folder (``import`` also takes "" and "birdnet")."""
    from birdcore.runs.folder import read_manifest
    from birdcore.runs.loading import BIRDNET_REF

    text = str(run)
    if text in ("", BIRDNET_REF) and not isinstance(run, Path):
        return
    path = Path(text).expanduser()
    if not path.exists():
        raise ValueError(f"{text}: no such run folder (--run takes a run folder made by train_job.py"
                         f"{' or birdnet' if not isinstance(run, Path) else ''})")
    if not path.is_dir():
        raise ValueError(f"{text}: not a run folder")
    try:
        read_manifest(path)
    except Exception as exc:
        reason = str(exc).split(": ", 1)[-1]  # read_manifest's message names the folder already
        raise ValueError(f"{text}: not a run folder ({reason})") from None


def _import(args) -> int:
    """Read the CSV first, then open (or make) the database; a database this import made is removed
    again when nothing could be stored in it."""
    from birdcore.review.exchange import read_detections
    from birdcore.review.store import open_store, sqlite_path

    table = read_detections(args.detections)
    _check_detections_of(args.detections, table, args.run)
    path = sqlite_path(args.db)
    made = [] if path is None else _missing(path)
    try:
        store = open_store(args.db)
        added, known = store.import_detections(table, run=str(args.run))
    except BaseException:
        if made:
            _remove(made)
        raise
    log.info("%s: %d detections added, %d already in %s", args.detections, added, known, args.db)
    return 0


def _check_detections_of(csv_path: Path, table, run) -> None:
    """ValueError when the detections were not made by ``--run``: their journal (``<csv>.done``) names
    another run, or they name species the run does not have (matched by ``data.species_names``)."""
    from birdcore.data.species_names import SpeciesResolver
    from birdcore.runs.loading import BIRDNET_REF, run_species
    from birdcore.serving.parquet_results import journal_of_output, producer_of_output

    text = str(run)
    if not text:
        return
    made_by = (producer_of_output(csv_path) or {}).get("run")
    expected = BIRDNET_REF if text == BIRDNET_REF and not isinstance(run, Path) else str(Path(text).resolve())
    if made_by is not None and made_by != expected:
        raise ValueError(f"{csv_path}: its detections were made by {made_by}, not --run {text} (its journal "
                         f"{journal_of_output(csv_path)} says so); import them with --run {made_by}, or score again with {text}")
    species = run_species(text)
    unknown = SpeciesResolver(species).unmatched(table["species"].astype(str))
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ValueError(f"{csv_path}: {len(unknown)} detected species are not species of --run {text}: {shown}; "
                         f"were these detections made by another model?")


def _missing(path: Path) -> list[Path]:
    """``path`` and the folders above it that do not exist yet (what making it would create), deepest first."""
    path = path.absolute()
    if path.exists() or path.is_symlink():
        return []
    out = [path]
    for parent in path.parents:
        if parent.exists():
            break
        out.append(parent)
    return out


def _remove(made: list[Path]) -> None:
    """Remove a database file this process made (with its WAL files), then its new empty folders."""
    database, folders = made[0], made[1:]
    if database.exists() and database.is_file():
        for suffix in ("", "-wal", "-shm", "-journal"):
            database.with_name(database.name + suffix).unlink(missing_ok=True)
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def _import_labels(store, args) -> int:
    from birdcore.review.exchange import reviews_from_labels

    result = reviews_from_labels(store.detections(), args.labels, audio_dir=args.audio_dir)
    if result.warning:
        log.warning("%s", result.warning)
    if result.not_judged:
        log.info("%d detections of classes that are not birds (%s) left unreviewed: the labels name birds only",
                 sum(result.not_judged.values()), ", ".join(sorted(result.not_judged)))
    found = result.verdicts
    reviewer = args.reviewer or f"labels:{args.labels.name}"
    for row in found.itertuples(index=False):
        store.add_review(row.detection_id, row.verdict, reviewer=reviewer)
    log.info("%s: %d detections covered by the labels recorded as reviews (%d yes, %d no)", args.labels,
             len(found), int((found["verdict"] == "yes").sum()), int((found["verdict"] == "no").sum()))
    return 0


def _sample(store, args) -> int:
    from birdcore.review.sampling import draw

    detections = store.detections()
    if detections.empty:
        raise ValueError(f"{args.db}: no detections yet; import a detections CSV first")
    taken = set(store.samples()["detection_id"]) | set(store.verdicts()["id"])
    rows = draw(detections, per_species=args.per_species, strategy=args.strategy, seed=args.seed, bins=args.bins,
                exclude=taken)
    store.add_samples(rows)
    per = {}
    for r in rows:
        per[r["species"]] = per.get(r["species"], 0) + 1
    log.info("%d detections of %d species added to the review queue (%s, seed %d)", len(rows), len(per),
             args.strategy, args.seed)
    return 0


def _report(store, args) -> int:
    from birdcore.review.precision import species_report

    rows = species_report(store.detections(), store.verdicts(), target=args.target_precision)
    header = ["species", "detections", "reviewed", "precision [95% interval]"]
    header += [] if args.target_precision is None else [f"threshold for {args.target_precision:g}"]
    table = []
    for r in rows:
        prec = "n/a" if r["precision"] is None else f"{r['precision']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        line = [str(r["species"]), str(r["n_detections"]), str(r["n_reviewed"]), prec]
        if args.target_precision is not None:
            line.append("n/a" if r["threshold"] is None else f"{r['threshold']:.3f}")
        table.append(line + ([f"({r['note']})"] if r["note"] else []))
    print(text_table(header, table, right=(1, 2)))
    if args.json:
        keys = ("species", "n_reviewed", "precision", "ci_low", "ci_high", "threshold", "n_detections", "note")
        print(json.dumps({"target_precision": args.target_precision,
                          "species": [{k: r.get(k) for k in keys} for r in rows]}))
    sys.stdout.flush()
    return 0


def _thresholds(store, args) -> int:
    from birdcore.review.precision import species_report
    from birdcore.runs.loading import load_run
    from birdcore.runs.thresholds import save_thresholds

    run = load_run(args.run)
    rows = species_report(store.detections(), store.verdicts(), target=args.target_precision)
    chosen = {r["species"]: r["threshold"] for r in rows if r["threshold"] is not None and r["species"] in run.codes}
    if not chosen:
        raise ValueError(f"no species of {args.run} reaches precision {args.target_precision:g} with enough reviews; "
                         "nothing written")
    glob = (run.thresholds.get("global") or {}).get("threshold", 0.5)
    save_thresholds(args.run, target_fpr=None, global_threshold=float(glob), species_thresholds=chosen,
                    source=f"reviews in {args.db} (target precision {args.target_precision:g})",
                    extra={"target_precision": args.target_precision})
    skipped = [r["species"] for r in rows if r["species"] not in chosen]
    log.info("%s: thresholds of %d species written (the previous file kept as thresholds.previous.json)%s",
             args.run, len(chosen), f"; kept for {len(skipped)} others: {', '.join(skipped[:8])}" if skipped else "")
    return 0


def _export(store, args) -> int:
    from birdcore.review.exchange import export_labels, export_raven

    verdicts = store.verdicts()
    if args.raven is not None:
        log.info("%s: %d selection tables of verified detections", args.raven, export_raven(verdicts, args.raven))
    else:
        log.info("%s: %d rows of verified labels", args.labels, export_labels(verdicts, args.labels))
    return 0


COMMANDS = {"import-labels": _import_labels, "sample": _sample, "report": _report,
            "thresholds": _thresholds, "export": _export}
