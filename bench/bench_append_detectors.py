"""Other models for the species an append run adds, on validation only (issue #27, session 13).

    python bench/bench_append_detectors.py --data-dir ../shared/data/xc-pr20 --seeds 1 2 3 4 5

Each candidate replaces the added species' layer of ``birdnet_append/head.py`` and is scored as an
append run scores (top-1 over BirdNET's known logits and the added ones, recording = max over 3 s
windows), from the embedding cache (``bench_birdnet_append.FastSplit``: BirdNET's known logits
recomputed from the float16 embeddings):

- ``detector``: a window-level logistic regression per added species (standardised embeddings,
  ``C``, classes balanced; the recording's windows all carry its label), put on BirdNET's scale by
  z = α·s + β per species.  α, β minimise, over the training recordings' *out-of-fold* detector
  scores (5 folds, stratified), mean softplus(t − z) over the species' own recordings plus ``negw`` ×
  mean softplus(z − t) over the others, t being the recording's top known BirdNET logit: calibration on
  scores of recordings the detector did not see, as a new recording's will be.
- ``explained``: the same, but windows of an added species' recordings that BirdNET already gives a
  known species with a logit above ``--explained`` are left out of its positives (multiple-instance
  learning: the windows BirdNET explains are not the new bird).
- ``relative``: z = t_w + α·s + β per window: the added species takes a window from BirdNET's top
  species when the detector says so, whatever BirdNET's confidence.
- ``knn``: no model, only a ranking figure: per window the cosine similarity to the nearest training
  window of the added species minus that to the nearest window of any other recording (centred
  embeddings); a recording scores its best window.  Reported: how many validation recordings of other
  species rank above the added species' own (per split and species).

``--features activations``: the detectors and the kNN read BirdNET's activations before its last block
(``POST``; 3 × 8 × 192 per window, the fine-tuning cut of ``--fine-tune 1``, cached in
``birdnet-activations/``), mean- and max-pooled over the 3 × 8 positions (384 values per window),
instead of the 1,024-d embedding; BirdNET's logits are unchanged.

Output: one JSON line per candidate (known right, added right, false takes, over the splits' validation
sets), then the kNN ranks.  No test set is read.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def detector(sp, rows, C: float, explained: float | None):
    """Window-level logistic regressions, one per added species: kernel (E, A), bias (A,)."""
    from sklearn.linear_model import LogisticRegression

    X = np.concatenate([sp.emb[i] for i in rows])
    rec = np.concatenate([[i] * len(sp.emb[i]) for i in rows])
    top = np.concatenate([sp.known[i].max(axis=1) for i in rows])
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Z = (X - mu) / sd
    kernel, bias = [], []
    for a in range(len(sp.added)):
        y = (sp.labels[rec] == a).astype(int)
        keep = np.ones(len(y), bool) if explained is None else ~((y == 1) & (top > explained))
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=3000).fit(Z[keep], y[keep])
        kernel.append(clf.coef_[0] / sd)
        bias.append(clf.intercept_[0] - (mu / sd) @ clf.coef_[0])
    return np.stack(kernel, 1), np.array(bias)


def out_of_fold(sp, rows, C, explained, folds=5):
    """Per training recording, its windows' detector scores (W, A) from a detector that did not see it."""
    rng = np.random.default_rng(sp.seed)
    fold = np.empty(len(rows), int)
    for a in sorted(set(sp.labels[rows])):
        idx = rng.permutation(np.flatnonzero(sp.labels[rows] == a))
        fold[idx] = np.arange(len(idx)) % folds
    scores = [None] * len(rows)
    for f in range(folds):
        kernel, bias = detector(sp, rows[fold != f], C, explained)
        for j in np.flatnonzero(fold == f):
            scores[j] = sp.emb[rows[j]] @ kernel + bias
    return scores


def window_logits(mode, s, top_w, alpha, beta):
    return alpha * s + beta + (top_w[:, None] if mode == "relative" else 0.0)


def calibrate(sp, mode, scores, rows, negw):
    """α, β per added species (see the module's docstring)."""
    top = np.array([sp.known[i].max() for i in rows])
    alphas, betas = np.zeros(len(sp.added)), np.zeros(len(sp.added))
    for a in range(len(sp.added)):
        pos, best = sp.labels[rows] == a, None
        for alpha in (0.25, 0.5, 1, 2, 4):
            for beta in np.linspace(-30, 30, 301):
                z = np.array([window_logits(mode, s, sp.known[i].max(axis=1), alpha, beta)[:, a].max()
                              for s, i in zip(scores, rows)])
                loss = np.logaddexp(0, top[pos] - z[pos]).mean() + negw * np.logaddexp(0, z[~pos] - top[~pos]).mean()
                if best is None or loss < best[0]:
                    best = (loss, alpha, beta)
        alphas[a], betas[a] = best[1:]
    return alphas, betas


def figures(sp, mode, kernel, bias, alphas, betas, rows) -> dict:
    from birdcore.models.birdnet_append.training import top1_figures

    logits = [np.concatenate([sp.known[i], window_logits(mode, sp.emb[i] @ kernel + bias, sp.known[i].max(axis=1),
                                                         alphas, betas)], axis=1).max(axis=0) for i in rows]
    return top1_figures(logits, sp.labels[rows], sp.primary[rows], sp.n_known)


def knn_ranks(sp) -> list[int]:
    """Per added species: validation recordings of other species whose kNN margin ≥ the species' own best."""
    tr, va = np.flatnonzero(sp.split == "train"), np.flatnonzero(sp.split == "val")
    X = np.concatenate([sp.emb[i] for i in tr])
    mu = X.mean(0)
    unit = lambda x: (x - mu) / (np.linalg.norm(x - mu, axis=1, keepdims=True) + 1e-9)  # noqa: E731
    Xn, rec = unit(X), np.concatenate([[i] * len(sp.emb[i]) for i in tr])
    out = []
    for a in range(len(sp.added)):
        own = sp.labels[rec] == a
        s = np.array([(lambda sim: (sim[:, own].max(1) - sim[:, ~own].max(1)).max())(unit(sp.emb[i]) @ Xn.T)
                      for i in va])
        mine = sp.labels[va] == a
        out.append(int((s[~mine] >= s[mine].max()).sum()))
    return out


def pooled_activations(sp, data_dir: Path, cache_dir: Path | None) -> list[np.ndarray]:
    """Per recording (W, 384): BirdNET's activations before ``POST``, mean and max over positions."""
    from birdcore.data.cache import DecodeCache, default_cache_dir
    from birdcore.data.metadata import read_metadata
    from birdcore.models.birdnet import runtime as bn
    from birdcore.models.birdnet_finetune.activations import ActivationStore, run_batched
    from birdcore.models.birdnet_finetune.network import load_birdnet, split_birdnet, trained_layer_names

    root = Path(cache_dir) if cache_dir else default_cache_dir()
    cache = DecodeCache(root, sample_rate=bn.SAMPLE_RATE, max_seconds=None)
    birdnet = load_birdnet()
    front, _ = split_birdnet(birdnet, 1, None)
    store = ActivationStore(root / "birdnet-activations", cut=trained_layer_names(birdnet, 1)[0],
                            width=front.output.shape[-1])
    out = []
    for path in read_metadata(data_dir)["path"]:
        entry = cache.entry_path(path)
        act = store.load(entry)
        if act is None:
            act = run_batched(front, bn.windows(np.asarray(cache.load(path), np.float32)))
            store.save(entry, act)
        x = np.asarray(act, np.float32).reshape(len(act), 3, 8, -1)
        out.append(np.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=1))
    return out


def main() -> None:
    from bench_birdnet_append import FastSplit, add_up, species_list_file

    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--out", type=Path, default=Path("runs"))
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--C", type=float, default=0.01)
    p.add_argument("--negw", type=float, nargs="+", default=[10.0, 30.0, 100.0])
    p.add_argument("--explained", type=float, default=2.0)
    p.add_argument("--features", choices=("embeddings", "activations"), default="embeddings")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    listing = species_list_file(args.data_dir, args.out)
    splits = [FastSplit(args.data_dir, s, listing, args.cache_dir) for s in args.seeds]
    if args.features == "activations":  # the same recordings in the same order for every split
        pooled = pooled_activations(splits[0], args.data_dir, args.cache_dir)
        for sp in splits:
            sp.emb = pooled
    for variant in ("detector", "explained", "relative"):
        explained = args.explained if variant == "explained" else None
        mode = "relative" if variant == "relative" else "absolute"
        prepared = []
        for sp in splits:
            tr = np.flatnonzero(sp.split == "train")
            prepared.append((tr, out_of_fold(sp, tr, args.C, explained), detector(sp, tr, args.C, explained)))
        for negw in args.negw:
            per = []
            for sp, (tr, scores, (kernel, bias)) in zip(splits, prepared):
                alphas, betas = calibrate(sp, mode, scores, tr, negw)
                per.append(figures(sp, mode, kernel, bias, alphas, betas, np.flatnonzero(sp.split == "val")))
            total = add_up(per)
            print(json.dumps({"candidate": variant, "features": args.features, "C": args.C, "negw": negw,
                              **({"explained": explained} if explained is not None else {}), **total,
                              "validation_right": total["known_right"] + total["added_right"]}), flush=True)
    print(json.dumps({"candidate": "knn", "others_ranked_above_own": {sp.seed: dict(zip(sp.added, knn_ranks(sp)))
                                                                       for sp in splits}}), flush=True)


if __name__ == "__main__":
    main()
