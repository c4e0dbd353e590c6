"""``python -m birdcore.soundscapes evaluate|calibrate|submit RUN ...``: a run on field soundscapes.

Examples:
    python -m birdcore.soundscapes evaluate runs/NAME --labels labels.csv --audio-dir audio/ --json
    python -m birdcore.soundscapes calibrate runs/NAME --labels labels.csv --audio-dir audio/ --goal precision=0.9
    python -m birdcore.soundscapes submit runs/NAME --test test.csv --audio-dir test_audio/ --out submission.csv

Labels: the 2020 competition's example_test_audio_summary.csv, BirdCLEF 2021's
train_soundscape_labels.csv, or Raven selection tables (a file or a folder).  Only the audio files
the labels (or test.csv) refer to are scored; a missing one is named and the rest goes on.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from birdcore.cli.common import (HelpFormatter, add_place_args, fail, log,
                                 place_from_args, setup_logging)
from birdcore.models.device import import_keras_quietly
from birdcore.evaluation.soundscapes import DEFAULT_OVERLAP


def _place(args) -> dict | None:
    place = place_from_args(args)
    return None if place is None else {"lat": place.lat, "lon": place.lon, "week": place.week}


def build_parser(prog: str = "python -m birdcore.soundscapes") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, *, labels: bool = True) -> None:
        p.add_argument("run_dir", help="a complete run folder, or 'birdnet' (BirdNET V2.4 over its 6,522 species)")
        if labels:
            p.add_argument("--labels", type=Path, required=True,
                           help="annotated soundscapes: a labels CSV, or Raven selection tables (file or folder)")
        p.add_argument("--audio-dir", type=Path, default=None,
                       help="folder of the audio files, subfolders included (default: the files beside the "
                            "labels or --test file, and its audio/, example_test_audio/, test_audio/, "
                            "train_soundscapes/ or test_soundscapes/ folder)")
        p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")

    ev = sub.add_parser("evaluate", help="metrics with the run's saved settings and thresholds",
                        formatter_class=HelpFormatter)
    common(ev)
    ev.add_argument("--json", action="store_true", help="the metrics as one JSON object on the last line")
    ev.add_argument("--per-species", action="store_true", help="also print the per-species table")

    cal = sub.add_parser("calibrate", help="choose thresholds and post-processing and save them into the run",
                         formatter_class=HelpFormatter)
    common(cal)
    cal.add_argument("--goal", default="f1", help="f1 (best row-wise F1), precision=P, or fph=N (false positives "
                                                   "per hour)")
    cal.add_argument("--overlap", type=float, default=None,
                     help="seconds by which BirdNET's 3 s windows overlap (default: the run's saved setting; a run never "
                          f"calibrated: {DEFAULT_OVERLAP:g} for BirdNET runs, the development winner, 0 for others)")
    cal.add_argument("--global-only", action="store_true",
                     help="one threshold for every species (otherwise per-species thresholds are tried too, and kept "
                          "only when they win leave-one-file-out)")
    cal.add_argument("--dry-run", action="store_true", help="report the choice without saving it")
    cal.add_argument("--json", action="store_true", help="the choice as one JSON object on the last line")
    where = cal.add_argument_group("location filter", "also try BirdNET's range model at this place and time")
    add_place_args(where)

    sm = sub.add_parser("submit", help="the competition's row_id,birds for a test.csv", formatter_class=HelpFormatter)
    common(sm, labels=False)
    sm.add_argument("--test", type=Path, required=True, help="the rows to predict (test.csv)")
    sm.add_argument("--out", type=Path, required=True, help="submission CSV to write")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m birdcore.soundscapes") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.verbose)
    import_keras_quietly()
    try:
        from birdcore.data.soundscapes import read_rows
        from birdcore.evaluation import soundscapes as S
        from birdcore.evaluation.calibration import Goal
        from birdcore.runs.loading import load_run_ref

        goal = Goal.parse(args.goal) if args.command == "calibrate" else None
        place = _place(args) if args.command == "calibrate" else None
        rows = read_rows(args.test if args.command == "submit" else args.labels, audio_dir=args.audio_dir)
        if rows.missing:
            log.warning("%d of %d files have no audio in the folder and are left out: %s", len(rows.missing),
                        len(rows.files), ", ".join(rows.missing[:10]))
        run = load_run_ref(args.run_dir)
        if args.command == "evaluate":
            result = S.evaluate(run, rows)
            _print_report(result, per_species=args.per_species)
            if args.json:
                print(json.dumps({k: v for k, v in result.items() if k != "per_species"}))
        elif args.command == "calibrate":
            if run.path == Path("."):
                raise ValueError("calibrate saves into a run folder; make one with train_job.py --baseline birdnet "
                                 "--species-list FILE --out DIR --name NAME")
            chosen = S.calibrate(run, rows, goal=goal, overlap=args.overlap, place=place,
                                 per_species=not args.global_only, save=not args.dry_run)
            _print_choice(chosen, saved=not args.dry_run, run_dir=run.path)
            if args.json:
                print(json.dumps({k: v for k, v in chosen.items() if k != "grid"}))
        else:
            table = S.submission(run, rows)
            from birdcore.io.atomic import atomic_write_text

            atomic_write_text(args.out, table.to_csv(index=False))
            log.info("%s: %d rows, %d with birds", args.out, len(table), int((table["birds"] != "nocall").sum()))
        return 0
    except Exception as exc:  # user-facing: one line, no traceback
        return fail(exc, args.verbose)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _print_report(result: dict, *, per_species: bool) -> None:
    print(f"{result['n_files']} files, {result['n_rows']} rows of 5 s ({result['n_rows_with_birds']} with birds), "
          f"{result['hours']:.2f} h; post-processing: {result['postprocessing']}")
    print("  row-wise F1 " + _fmt(result["row_f1"]) + f"  (nocall everywhere: {_fmt(result['nocall_f1'])})  "
          f"macro F1 {_fmt(result['macro_f1'])}  cmAP {_fmt(result['cmap'])} (padded {_fmt(result['padded_cmap'])})  "
          f"macro ROC-AUC {_fmt(result['macro_auc'])}")
    print(f"  precision {_fmt(result['precision'])}  recall {_fmt(result['recall'])}  "
          f"false positives per hour {_fmt(result['fp_per_hour'])}")
    if result["species_not_in_run"]:
        print("  labelled species this run does not have (count as misses): "
              + ", ".join(f"{k} ({v} rows)" for k, v in sorted(result["species_not_in_run"].items())))
    if per_species:
        for row in result["per_species"]:
            print(f"    {row['species']:<12} pos {row['positives']:>4}  det {row['detections']:>4}  AP {_fmt(row['ap'])}  "
                  f"AUC {_fmt(row['auc'])}  thr {row['threshold']:.3f}  P {_fmt(row['precision'])}  "
                  f"R {_fmt(row['recall'])}")
    sys.stdout.flush()


def _print_choice(chosen: dict, *, saved: bool, run_dir: Path) -> None:
    from birdcore.evaluation.postprocess import PostProcessing

    post = PostProcessing.from_dict(chosen["settings"]["postprocessing"])
    held = chosen["held_out"]
    print(f"goal {chosen['goal']}: post-processing {post.describe()}; "
          f"{'per-species and ' if chosen['per_species_thresholds'] else ''}global threshold "
          f"{chosen['global_threshold']:.3f}, "
          f"{sum(t != chosen['global_threshold'] for t in chosen['species_thresholds'].values())} species with their own")
    print(f"  held out (one file at a time): row-wise F1 {_fmt(held['row_f1'])}  precision {_fmt(held['precision'])}  "
          f"false positives per hour {_fmt(held['fp_per_hour'])}  ({len(chosen['grid'])} settings tried)")
    ins = chosen["in_sample"]
    print(f"  on all these files: row-wise F1 {_fmt(ins['row_f1'])}  cmAP {_fmt(ins['cmap'])}  "
          f"precision {_fmt(ins['precision'])}  recall {_fmt(ins['recall'])}  fp/h {_fmt(ins['fp_per_hour'])}")
    print(f"  {'saved into ' + str(run_dir) + ' (soundscape.json, thresholds.json; the previous thresholds kept)' if saved else 'not saved (--dry-run)'}")
