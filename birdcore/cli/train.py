"""Train, evaluate and export a bird-call model headless (thin CLI over birdcore.training.train.train_run).

Examples:
    python train_job.py --demo
    python train_job.py --data-dir /data/birdsong-recognition --weights imagenet
    python train_job.py --data-dir /data/birdsong-recognition --tune --max-trials 10
    python train_job.py --name my-run --resume    # continues runs/.my-run.partial with its saved data folder
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from birdcore.cli.common import (HelpFormatter, add_common_data_args, add_engine_arg, at_least, fail,
                                 log, setup_logging)
from birdcore.models.device import import_keras_quietly


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments are one line naming the option and the reason (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's parser; ``prog`` None: the script's name (``train_job.py``), as argparse gives it.
    Under another name (``birdclef train``) the examples say that name."""
    epilog = __doc__.split("\n\n", 1)[1]
    if prog is not None:
        epilog = epilog.replace("python train_job.py", prog)
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=epilog,
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
    p.add_argument("--append", action="store_true",
                   help="with --backbone birdnet: keep BirdNET's own species and scores and add the training "
                        "species it lacks, each scored by a layer trained to compete with BirdNET's logits (as "
                        "BirdNET-Analyzer's append mode); the run names BirdNET's 6,522 species (or those of "
                        "--species-list) plus the added ones")
    p.add_argument("--species-list", type=Path, default=None,
                   help="with --baseline and no --data-dir: the run's species, one name per line (eBird code, "
                        "scientific or common name) or a CSV with an ebird_code or scientific_name column; no "
                        "recordings needed (thresholds then come from python -m birdcore.soundscapes calibrate). "
                        "With --append: the BirdNET species the run keeps (default all 6,522)")
    p.add_argument("--fine-tune", type=int, default=None, metavar="N",
                   help="--backbone birdnet: also train BirdNET's last N blocks (of 17; 0: the frozen head), at "
                        "model.backbone_lr_scale (0.1) times the head's learning rate; model.keras is then the "
                        "whole network (default 0)")
    p.add_argument("--reviews", default=None, metavar="DB",
                   help="--backbone birdnet: an existing review database (python -m birdcore.review; opened "
                        "read-only) whose verified clips join the training split, yes as positives and no as hard "
                        "negatives")
    p.add_argument("--pooling", choices=["max", "attention", "mean"], default=None,
                   help="pooling over time (default: max; attention with --backbone birdnet)")
    p.add_argument("--epochs", type=at_least(1), default=None, help="maximum epochs (default 40; demo 12)")
    p.add_argument("--batch-size", type=at_least(1), default=None, help="recordings per batch (default 8)")
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
    p.add_argument("--max-trials", type=at_least(1), default=None, help="tuning trials (default 10)")
    p.add_argument("--trial-epochs", type=at_least(1), default=None, help="epochs per tuning trial (default 10)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run --name NAME in --out, with its saved configuration and, "
                        "unless --data-dir is given, its saved data folder")
    p.add_argument("--batch-segments", type=at_least(1), default=32, help="segments per forward pass when scoring")
    p.add_argument("--devices", type=parse_devices, default="all", metavar="N|all",
                   help="devices that train the model together (default all: every visible GPU, 1 on a CPU); "
                        "--batch-size is the global batch, split evenly over them, and --lr applies to it "
                        "unchanged. JAX uses keras.distribution.DataParallel, TensorFlow MirroredStrategy")
    add_common_data_args(p)
    return p


def parse_devices(text: str) -> int | str:
    """``--devices`` value: a positive whole number, or "all" (every visible accelerator)."""
    if text.strip().lower() == "all":
        return "all"
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of devices or 'all', got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 device, got {n}")
    return n


BACKBONE_KINDS = {"birdnet": "birdnet_head"}  # --backbone values that are their own kind of model
APPEND_KINDS = {"birdnet": "birdnet_append"}  # --backbone values whose --append keeps the backbone's own species
FINE_TUNE_KINDS = {"birdnet": "birdnet_finetune"}  # --backbone values whose backbone --fine-tune N > 0 trains
BASELINES = {"birdnet": "birdnet_zero_shot"}  # --baseline values: kinds that are not trained


def config_from_args(args):
    from birdcore.config import RunConfig, demo_config
    from birdcore.models.base import kind_for

    if args.config:
        try:
            cfg = RunConfig.load(args.config)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"--config {args.config}: not a readable config.json ({' '.join(str(exc).split())})") \
                from None
    else:
        cfg = demo_config() if args.demo else RunConfig()
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
    if args.append:
        m.kind = APPEND_KINDS[args.backbone]
        if args.species_list:
            m.species_list = str(Path(args.species_list).resolve())
    given = {name for name, value in (("learning_rate", args.lr), ("pooling", args.pooling)) if value is not None}
    kind_for(m.kind).configure(cfg, given=given)
    if args.fine_tune:
        kind_for(m.kind).check_config(cfg)  # N too large: said now, before any data is read
    if args.noise_dir:
        cfg.augment.background_noise_dir = str(args.noise_dir)
    if args.reviews:
        from birdcore.review.store import open_existing

        open_existing(args.reviews).engine.dispose()  # said now, before any data is read: StoreError naming it
        cfg.train.review_db = str(args.reviews)
    if args.no_augment:
        a = cfg.augment
        a.start_removal = a.time_mask = a.freq_mask = a.db_floor = a.same_species_mix = a.background_noise = False
    cfg.tune.enabled = bool(args.tune)
    return cfg.override(args.set)


# options of this command that set a config field, for naming the option a bad value came from
OPTION_OF_FIELD = {
    "train.epochs": "--epochs", "train.batch_size": "--batch-size", "train.learning_rate": "--lr",
    "train.train_seconds": "--train-seconds", "train.secondary_weight": "--secondary-weight",
    "eval.target_fpr": "--target-fpr", "tune.max_trials": "--max-trials", "tune.epochs_per_trial": "--trial-epochs",
    "train.seed": "--seed", "split.seed": "--seed", "model.fine_tune": "--fine-tune",
}


def config_problem(exc, args) -> str:
    """A ``ConfigValueError`` as one line naming where the value came from: the last ``--set`` of the
    field, the option that sets it, or the --config file."""
    key = exc.key
    for item in reversed(args.set):
        if item.partition("=")[0].strip() == key:
            return f"--set {item}: {exc.reason}"
    option = OPTION_OF_FIELD.get(key)
    given = getattr(args, option[2:].replace("-", "_"), None) if option else None
    if given is not None:
        return f"{option} {format(given, 'g') if isinstance(given, float) else given}: {exc.reason}"
    if args.config:
        return f"{args.config}: {exc}"
    return str(exc)


def ignored_on_resume(args, prog: str | None = None, *, cfg=None) -> list[str]:
    """The settings given on this command line that a resumed run ignores, as "field: saved (given X)".

    A run resumed from ``out/.name.partial/config.json`` goes on with its saved configuration; an
    option that sets another value (``--epochs 32`` for a run saved with 300) would otherwise be dropped
    in silence.  Only fields this command line changes from the bare ``--resume --name NAME`` are named.
    Empty when the run has no saved configuration yet (nothing to ignore).  ``cfg``: this command line's
    configuration when already built (``config_from_args(args)``).
    """
    import json

    from birdcore.config import RunConfig

    try:
        saved = json.loads((args.out / f".{args.name}.partial" / "config.json").read_text())["config"]
        saved = RunConfig.from_dict(saved).to_dict()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    bare = ["--resume", "--name", args.name] + (["--demo"] if args.demo else [])
    given = _flat((cfg or config_from_args(args)).to_dict())
    default = _flat(config_from_args(build_parser(prog).parse_args(bare)).to_dict())
    saved = _flat(saved)
    return [f"{key}: {saved[key]!r} (given {value!r})" for key, value in given.items()
            if value != default.get(key) and key in saved and saved[key] != value]


def _flat(tree: dict, prefix: str = "") -> dict:
    """A nested config dict as {"section.field": value}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def saved_data_dir(out: Path, name: str) -> Path | None:
    """The data folder saved in the config.json of the interrupted run ``out/.name.partial`` (None if
    it stopped before its data was read)."""
    import json

    try:
        saved = json.loads((out / f".{name}.partial" / "config.json").read_text()).get("data_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(saved) if isinstance(saved, str) and saved else None


def check_args(args) -> Path | None:
    """The checks that need neither TensorFlow nor data, in the order a user would fix them; returns
    the data folder (--data-dir, or the one an interrupted run saved, for --resume) and raises
    ValueError with a one-line message."""
    data_dir = args.data_dir
    if args.resume:
        if not args.name:
            raise ValueError("--resume needs --name NAME (the run to continue)")
        partial, final = args.out / f".{args.name}.partial", args.out / args.name
        if (final / "run.json").is_file():
            return data_dir  # complete already: nothing to train, no data needed
        if not partial.is_dir():  # killed before its run folder existed: the same command starts it afresh
            if data_dir is None and not args.demo:
                raise ValueError(f"no run {args.name} to resume in {args.out} (no {partial.name} there); to start "
                                 "it, give --data-dir DIR (or --demo) too")
            return data_dir  # train_run says it starts the run
        if data_dir is None:
            data_dir = saved_data_dir(args.out, args.name)
            if data_dir is not None and not data_dir.is_dir():
                raise ValueError(f"{data_dir}: no such folder (the data folder run {args.name} was started with); "
                                 "give --data-dir DIR")
            if data_dir is None and not args.demo:
                raise ValueError(f"{partial} stopped before it had read its data, so it has no saved data folder: "
                                 f"give --data-dir DIR (or --demo) with --resume")
    elif not data_dir and not args.demo and not (args.baseline and args.species_list):
        raise ValueError("give --data-dir DIR (a Cornell-format dataset), or --demo for a synthetic one, or "
                         "--baseline with --species-list FILE")
    if args.append and (args.backbone not in APPEND_KINDS or args.baseline or args.fine_tune):
        raise ValueError(f"--append is for --backbone {' or '.join(APPEND_KINDS)} (without --baseline or --fine-tune)")
    if args.species_list and not (args.baseline or args.append):
        raise ValueError("--species-list makes a --baseline run for the listed species, or narrows BirdNET's species "
                         "of an --append run; other trained runs take their species from --data-dir")
    for option, path in (("--data-dir", args.data_dir), ("--noise-dir", args.noise_dir)):
        if path is not None and not path.is_dir():
            raise ValueError(f"{option} {path}: " + ("not a folder" if path.exists() else "no such folder"))
    for option, path in (("--config", args.config), ("--species-list", args.species_list)):
        if path is not None and not path.is_file():
            raise ValueError(f"{option} {path}: " + ("not a file" if path.exists() else "no such file"))
    return data_dir


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.verbose)
    try:
        data_dir = check_args(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    name = args.name
    import_keras_quietly()
    if args.engine:
        from birdcore.models.birdnet.engines import use_engine

        use_engine(args.engine)
    from birdcore.config import ConfigValueError

    try:
        try:
            cfg = config_from_args(args).check()
        except ConfigValueError as exc:
            log.error("%s", config_problem(exc, args))
            return 2
        if args.demo and data_dir is None:
            from birdcore.data.synthetic import make_synthetic_dataset

            data_dir = Path("demo_data")
            if not (data_dir / "train.csv").exists():
                log.info("generating a synthetic demo dataset in %s", data_dir)
                make_synthetic_dataset(data_dir, n_species=6, recordings_per_species=12, seconds=(4.0, 9.0),
                                       sample_rate=cfg.audio.sample_rate, seed=0)
        elif args.resume and args.data_dir is None and data_dir is not None:
            log.info("resuming with the run's saved data folder %s", data_dir)
        if args.resume and (ignored := ignored_on_resume(args, prog, cfg=cfg)):
            log.warning("--resume continues %s with its saved configuration; ignored: %s", args.name,
                        "; ".join(ignored))
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
                          cache_dir=args.cache_dir, workers=args.workers, batch_segments=args.batch_segments,
                          devices=args.devices)
    except KeyboardInterrupt:
        if name and (args.out / f".{name}.partial").is_dir():
            log.error("interrupted; continue later with --resume --name %s", name)
        else:
            log.error("interrupted before the run folder was made; nothing to resume")
        return 130
    except Exception as exc:
        if isinstance(exc, ConfigValueError):
            exc = ValueError(config_problem(exc, args))
        return fail(exc, args.verbose)
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
