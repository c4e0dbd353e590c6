#!/usr/bin/env python
"""Train, evaluate and export a bird-call model headless (thin CLI over birdcore.training.train.train_run).

Examples:
    python train_job.py --demo
    python train_job.py --data-dir /data/birdsong-recognition --weights imagenet
    python train_job.py --data-dir /data/birdsong-recognition --tune --max-trials 10
    python train_job.py --data-dir /data/birdsong-recognition --name my-run --resume
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from birdcore.cli.common import HelpFormatter, add_common_data_args, add_engine_arg, fail, import_tensorflow_quietly, log, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=HelpFormatter)
    p.add_argument("--data-dir", type=Path, help="dataset folder (train.csv or train_metadata.csv + train_audio/)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="folder that receives the run folder")
    p.add_argument("--name", help="run name (default: a timestamp)")
    p.add_argument("--demo", action="store_true",
                   help="generate a small synthetic dataset (unless --data-dir is given) and train a small "
                        "model on it in a few minutes on CPU; the run is labelled synthetic")
    p.add_argument("--config", type=Path, help="a config.json to start from (a run's or a RunConfig dict)")
    p.add_argument("--weights", default=None, help="imagenet | none | FILE (default imagenet; demo: none)")
    p.add_argument("--backbone", choices=["inception_v3", "small_cnn", "birdnet"], default=None,
                   help="default inception_v3 (demo: small_cnn); birdnet: a head on frozen BirdNET V2.4 "
                        "embeddings (model CC BY-NC-SA 4.0)")
    p.add_argument("--baseline", choices=sorted(BASELINES), default=None,
                   help="write a BirdNET V2.4 zero-shot run on the same split instead of training "
                        "(model CC BY-NC-SA 4.0)")
    add_engine_arg(p, applies="--baseline/--backbone birdnet")
    p.add_argument("--species-list", type=Path, default=None,
                   help="with --baseline and no --data-dir: the run's species, one name per line (eBird code, "
                        "scientific or common name) or a CSV with an ebird_code or scientific_name column; no "
                        "recordings needed (thresholds then come from python -m birdcore.soundscapes calibrate)")
    p.add_argument("--fine-tune", type=int, default=None, metavar="N",
                   help="--backbone birdnet: also train BirdNET's last N blocks (of 17; 0: the frozen head), at "
                        "model.backbone_lr_scale (0.1) times the head's learning rate; model.keras is then the "
                        "whole network (default 0)")
    p.add_argument("--reviews", default=None, metavar="DB",
                   help="--backbone birdnet: a review database (python -m birdcore.review) whose verified clips join "
                        "the training split, yes as positives and no as hard negatives")
    p.add_argument("--pooling", choices=["max", "attention", "mean"], default=None, help="default max")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 40; demo 12)")
    p.add_argument("--batch-size", type=int, default=None, help="recordings per batch (default 8)")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default 3.74e-4; --backbone birdnet: 3e-4)")
    p.add_argument("--train-seconds", type=float, default=None, help="random crop per recording (default 30)")
    p.add_argument("--split", choices=["stratified", "xc_hundreds"], default=None,
                   help="stratified by species (default) or the original's XC-number rule")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the train/val/test split and of training (default 1234); other seeds give "
                        "other held-out sets, for repeated-split estimates")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="any config field, e.g. --set model.dropout=0.5 --set train.weight_decay=1e-4 "
                        "(repeatable; applied after the other options)")
    p.add_argument("--secondary-weight", type=float, default=None,
                   help="soft target for secondary (background) labels; 0 disables (default 0)")
    p.add_argument("--no-augment", action="store_true", help="disable every augmentation")
    p.add_argument("--noise-dir", type=Path, default=None, help="folder of background-noise recordings to mix in")
    p.add_argument("--mixed-precision", choices=["auto", "on", "bf16", "off"], default=None,
                   help="default auto: float16 on a GPU, float32 on CPU; bf16: bfloat16 (A100/H100 and newer)")
    p.add_argument("--target-fpr", type=float, default=None, help="threshold operating point (default 0.001)")
    p.add_argument("--tune", action="store_true", help="search hyperparameters with keras-tuner first")
    p.add_argument("--max-trials", type=int, default=None, help="tuning trials (default 10)")
    p.add_argument("--trial-epochs", type=int, default=None, help="epochs per tuning trial (default 10)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run (give its --name)")
    p.add_argument("--batch-segments", type=int, default=32, help="segments per forward pass when scoring")
    add_common_data_args(p)
    return p


BACKBONE_KINDS = {"birdnet": "birdnet_head"}  # --backbone values that are their own kind of model
FINE_TUNE_KINDS = {"birdnet": "birdnet_finetune"}  # --backbone values whose backbone --fine-tune N > 0 trains
BASELINES = {"birdnet": "birdnet_zero_shot"}  # --baseline values: kinds that are not trained


def config_from_args(args):
    from birdcore.config import RunConfig, demo_config
    from birdcore.models.base import kind_for

    cfg = RunConfig.load(args.config) if args.config else (demo_config() if args.demo else RunConfig())
    m, t = cfg.model, cfg.train
    for value, obj, attr in [
        (args.weights, m, "weights"), (args.backbone, m, "backbone"), (args.pooling, m, "pooling"),
        (args.epochs, t, "epochs"), (args.batch_size, t, "batch_size"), (args.lr, t, "learning_rate"),
        (args.train_seconds, t, "train_seconds"), (args.split, cfg.split, "method"),
        (args.secondary_weight, t, "secondary_weight"), (args.mixed_precision, t, "mixed_precision"),
        (args.target_fpr, cfg.eval, "target_fpr"), (args.max_trials, cfg.tune, "max_trials"),
        (args.trial_epochs, cfg.tune, "epochs_per_trial"),
    ]:
        if value is not None:
            setattr(obj, attr, value)
    if args.seed is not None:
        cfg.split.seed = cfg.train.seed = args.seed
    if args.fine_tune is not None:
        if args.fine_tune < 0:
            raise ValueError(f"--fine-tune N: N is a number of blocks (≥ 0), got {args.fine_tune}")
        if args.fine_tune and (args.baseline or (args.backbone or m.backbone) not in FINE_TUNE_KINDS):
            raise ValueError(f"--fine-tune is for a trained --backbone {' or '.join(FINE_TUNE_KINDS)}")
        m.fine_tune = args.fine_tune
    if args.baseline:
        m.kind = BASELINES[args.baseline]
    elif args.backbone:
        m.kind = BACKBONE_KINDS.get(args.backbone, "keras_audio")
        if m.fine_tune and args.backbone in FINE_TUNE_KINDS:
            m.kind = FINE_TUNE_KINDS[args.backbone]
    given = {name for name, value in (("learning_rate", args.lr), ("pooling", args.pooling)) if value is not None}
    kind_for(m.kind).configure(cfg, given=given)
    if args.fine_tune:
        kind_for(m.kind).check_config(cfg)  # N too large: said now, before any data is read
    if args.noise_dir:
        cfg.augment.background_noise_dir = str(args.noise_dir)
    if args.reviews:
        cfg.train.review_db = str(args.reviews)
    if args.no_augment:
        a = cfg.augment
        a.start_removal = a.time_mask = a.freq_mask = a.db_floor = a.same_species_mix = a.background_noise = False
    cfg.tune.enabled = bool(args.tune)
    return cfg.override(args.set)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if not args.data_dir and not args.demo and not (args.baseline and args.species_list):
        log.error("give --data-dir DIR (a Cornell-format dataset), or --demo for a synthetic one, or --baseline "
                  "with --species-list FILE")
        return 2
    if args.species_list and not args.baseline:
        log.error("--species-list makes a --baseline run for the listed species; trained runs take their species "
                  "from --data-dir")
        return 2
    name = args.name
    import_tensorflow_quietly()
    if args.engine:
        from birdcore.models.birdnet.engines import use_engine

        use_engine(args.engine)
    try:
        cfg = config_from_args(args)
        data_dir = args.data_dir
        if args.demo and data_dir is None:
            from birdcore.data.synthetic import make_synthetic_dataset

            data_dir = Path("demo_data")
            if not (data_dir / "train.csv").exists():
                log.info("generating a synthetic demo dataset in %s", data_dir)
                make_synthetic_dataset(data_dir, n_species=6, recordings_per_species=12, seconds=(4.0, 9.0),
                                       sample_rate=cfg.audio.sample_rate, seed=0)
        if args.demo:
            cfg.synthetic = True
        name = name or time.strftime(("demo-synthetic-" if cfg.synthetic else "run-") + "%Y%m%d-%H%M%S")
        if args.baseline and not args.name:
            name = time.strftime(f"{args.baseline}-zero-shot-%Y%m%d-%H%M%S")
        if args.baseline and args.species_list and data_dir is None:
            from birdcore.training.train import species_run

            print(species_run(species_list=args.species_list, out_dir=args.out, name=name, cfg=cfg))
            return 0
        from birdcore.training.train import train_run

        final = train_run(data_dir=data_dir, out_dir=args.out, name=name, cfg=cfg, resume=args.resume,
                          cache_dir=args.cache_dir, workers=args.workers, batch_segments=args.batch_segments)
    except KeyboardInterrupt:
        log.error("interrupted; continue later with --resume --name %s", name or "<run name>")
        return 130
    except Exception as exc:
        return fail(exc, args.verbose)
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
