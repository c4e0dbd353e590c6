"""BirdNET head vs BirdNET zero-shot on several held-out test sets (repeated random splits).

    python bench/bench_birdnet_splits.py --data-dir ../shared/data/xc-pr20 --seeds 1 2 3 4 5 \
        --cache-dir /tmp/bench/cache [--epochs 60] [--tag NAME --set model.dropout=0.5 ...]

For each seed, ``train_job.py --seed S`` draws a different stratified train/val/test split and
writes two runs on it: ``--backbone birdnet`` (the head with its defaults, or with the ``--set``
settings under a ``--tag``) and ``--baseline birdnet`` (zero-shot); with ``--fine-tune N`` a third,
``--backbone birdnet --fine-tune N`` (BirdNET's last N blocks trained with the head, at
``--backbone-lr-scale`` times its learning rate; run ``splits-seedS-finetune-nN-sSCALE``).  Nothing is chosen on the test
sets.  Prints per-seed test top-1/top-5/macro-AUC of both and their difference, the pooled top-1 over
all test sets (the sets overlap across seeds; each run's test set is held out from its own training),
and the head's validation top-1 and loss at its chosen epoch, with their means over seeds: the figures
to compare head settings by.  Runs that already exist are reused.  Output: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def validation_at_best(run: Path) -> dict:
    """Validation top-1 and loss of the epoch whose checkpoint the run kept (from history.csv)."""
    import csv

    best = json.loads((run / "run.json").read_text())["best_epoch"]
    for row in csv.DictReader((run / "history.csv").open()):
        if int(row["epoch"]) == best:
            return {"epoch": best, "val_top1": round(float(row["val_top1"]), 4),
                    "val_loss": round(float(row["val_loss"]), 5)}
    raise ValueError(f"{run}: epoch {best} not in history.csv")


def ensure_run(out: Path, name: str, extra: list[str], args) -> dict:
    """metrics.json of run ``out/name``, training it with train_job.py first if it does not exist."""
    run = out / name
    if not (run / "metrics.json").exists():
        cmd = [sys.executable, str(ROOT / "train_job.py"), "--data-dir", str(args.data_dir), "--out", str(out),
               "--name", name, *extra]
        if args.cache_dir:
            cmd += ["--cache-dir", str(args.cache_dir)]
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, stdout=sys.stderr)  # keep stdout for the JSON
    return json.loads((run / "metrics.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("runs"))
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--tag", default="birdnet-head", help="names the head runs: splits-seedS-TAG")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="head setting passed to train_job.py --set (repeatable)")
    p.add_argument("--fine-tune", type=int, default=0, metavar="N",
                   help="also train and compare BirdNET fine-tuned in its last N blocks (0: not)")
    p.add_argument("--backbone-lr-scale", type=float, default=0.1, help="the fine-tuned blocks' learning rate "
                   "as a fraction of the head's")
    p.add_argument("--fine-tune-epochs", type=int, default=None, help="default: --epochs")
    args = p.parse_args()
    sets = [x for item in args.set for x in ("--set", item)]

    models = ("head", "zero_shot") + (("fine_tuned",) if args.fine_tune else ())
    rows, correct, total = [], {m: 0 for m in models}, 0
    for seed in args.seeds:
        head_name = f"splits-seed{seed}-{args.tag}"
        head = ensure_run(args.out, head_name,
                          ["--backbone", "birdnet", "--epochs", str(args.epochs), "--seed", str(seed), *sets], args)
        zero = ensure_run(args.out, f"splits-seed{seed}-birdnet-zero-shot",
                          ["--baseline", "birdnet", "--seed", str(seed)], args)
        n = head["n_recordings"]
        assert zero["n_recordings"] == n, "both runs of a seed share one split"
        total += n
        correct["head"] += round(head["top1"] * n)
        correct["zero_shot"] += round(zero["top1"] * n)
        rows.append({"seed": seed, "n_test": n,
                     "head": {k: round(head[k], 4) for k in ("top1", "top5", "macro_auc")},
                     "zero_shot": {k: round(zero[k], 4) for k in ("top1", "top5", "macro_auc")},
                     "top1_difference": round(head["top1"] - zero["top1"], 4),
                     "head_validation": validation_at_best(args.out / head_name)})
        if args.fine_tune:
            ft_name = f"splits-seed{seed}-finetune-n{args.fine_tune}-s{args.backbone_lr_scale:g}"
            ft = ensure_run(args.out, ft_name, [
                "--backbone", "birdnet", "--fine-tune", str(args.fine_tune), "--seed", str(seed),
                "--epochs", str(args.fine_tune_epochs or args.epochs),
                "--set", f"model.backbone_lr_scale={args.backbone_lr_scale}"], args)
            assert ft["n_recordings"] == n, "every run of a seed shares one split"
            correct["fine_tuned"] += round(ft["top1"] * n)
            rows[-1].update({"fine_tuned": {k: round(ft[k], 4) for k in ("top1", "top5", "macro_auc")},
                             "fine_tuned_minus_head_top1": round(ft["top1"] - head["top1"], 4),
                             "fine_tuned_validation": validation_at_best(args.out / ft_name)})
    mean = {m: {k: round(sum(r[m][k] for r in rows) / len(rows), 4) for k in ("top1", "top5", "macro_auc")}
            for m in models}
    for v in ("head_validation",) + (("fine_tuned_validation",) if args.fine_tune else ()):
        mean[v] = {k: round(sum(r[v][k] for r in rows) / len(rows), 5) for k in ("val_top1", "val_loss")}
    print(json.dumps({
        "data_dir": str(args.data_dir), "seeds": args.seeds, "tag": args.tag, "settings": args.set,
        "fine_tune": args.fine_tune and {"blocks": args.fine_tune, "backbone_lr_scale": args.backbone_lr_scale},
        "per_seed": rows, "mean": mean,
        "pooled_top1": {m: f"{c}/{total} = {c / total:.4f}" for m, c in correct.items()},
        "seeds_head_better": sum(r["top1_difference"] > 0 for r in rows),
        "seeds_equal": sum(r["top1_difference"] == 0 for r in rows),
    }, indent=1))


if __name__ == "__main__":
    main()
