"""BirdNET with added species (``--backbone birdnet --append``) against BirdNET zero-shot, on the repeated splits.

    python bench/bench_birdnet_append.py --data-dir ../shared/data/xc-pr20 --seeds 1 2 3 4 5 1234 \
        [--out runs] [--tag NAME --set model.append_margin=2 ...]          # runs: exact test figures
    python bench/bench_birdnet_append.py --data-dir ../shared/data/xc-pr20 --seeds 1 2 3 4 5 \
        --fast --grid model.append_margin=0.5,1,2 model.append_l2=1e-3,1e-2   # settings, validation only
    python bench/bench_birdnet_append.py --data-dir ../shared/data/xc-pr20 --fast --shots 1 2 3 5   # few-shot

Runs mode: for each seed, ``train_job.py --seed S`` writes ``--backbone birdnet --append --species-list
<the data's species>`` (run ``splits-seedS-append-TAG``) and ``--baseline birdnet`` (run
``splits-seedS-birdnet-zero-shot``, shared with bench_birdnet_splits.py); both on the same split,
restricted to the data's species.  Existing runs are reused.  From their test scores: known-species
recordings right (append and zero-shot), added-species recordings right at top-1, false takes (a
known species' recording whose top-1 became an added species), every miss by name, and the
validation figures the run recorded (``run.json`` ``append.validation``).

Fast mode (``--fast``): no run folders.  The same split, species table and fit as a run
(``birdnet_append.training``), from the embedding cache, with BirdNET's known logits recomputed from
the float16 embeddings (``KnownLogits``, within ~1e-2 of the interpreter's): for choosing settings on
validation (``--grid``, test not computed) and for the few-shot curve (``--shots``: each added species
keeps N training recordings, drawn with the split's seed; test figures, approximate in the logits).
Output: one JSON object.
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def species_list_file(data_dir: Path, out: Path) -> Path:
    """The data's species as a species list (eBird codes), written into ``out``."""
    from birdcore.data.metadata import read_metadata

    codes = sorted(read_metadata(data_dir)["primary"].unique())
    path = out / f"append-species-{data_dir.name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(codes) + "\n")
    return path


def ensure_run(out: Path, name: str, extra: list[str], args) -> Path:
    run = out / name
    if not (run / "metrics.json").exists():
        cmd = [sys.executable, str(ROOT / "train_job.py"), "--data-dir", str(args.data_dir), "--out", str(out),
               "--name", name, *extra] + (["--cache-dir", str(args.cache_dir)] if args.cache_dir else [])
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, stdout=sys.stderr)
    return run


def test_figures(app: Path, zero: Path) -> dict:
    """Test figures of an append run against the zero-shot run of its split (``scores.npz`` of both)."""
    a, z = np.load(app / "scores.npz"), np.load(zero / "scores.npz")
    assert a["recording_id"].tolist() == z["recording_id"].tolist(), "both runs of a seed share one split"
    species = pd.read_csv(app / "species.csv", keep_default_na=False)
    added = species["added"].astype(str).str.lower().eq("true").to_numpy()
    codes = species["ebird_code"].tolist()
    top, prim = a["scores"].argmax(axis=1), a["primary"]
    ztop, zprim = z["scores"].argmax(axis=1), z["primary"]
    known = ~added[prim]
    misses = [{"recording": str(r), "species": codes[p], "top1": codes[t]}
              for r, p, t in zip(a["recording_id"], prim, top) if added[p] and p != t]
    takes = [{"recording": str(r), "species": codes[p], "top1": codes[t]}
             for r, p, t in zip(a["recording_id"], prim, top) if not added[p] and added[t]]
    return {"known": int(known.sum()), "known_right": int((known & (top == prim)).sum()),
            "zero_shot_known_right": int((known & (ztop == zprim)).sum()),
            "added": int((~known).sum()), "added_right": int((~known & (top == prim)).sum()),
            "false_takes": len(takes), "added_misses": misses, "false_take_list": takes,
            "zero_shot_right": int((ztop == zprim).sum()), "n": int(len(prim))}


class FastSplit:
    """One split of the data, its append species and cached embeddings (no run folder)."""

    def __init__(self, data_dir: Path, seed: int, species_list: Path, cache_dir: Path | None):
        from birdcore.config import RunConfig
        from birdcore.data.cache import DecodeCache, default_cache_dir
        from birdcore.data.metadata import read_metadata, species_table
        from birdcore.data.split import split_recordings
        from birdcore.models.birdnet_append.species import append_species
        from birdcore.models.birdnet_append.training import KnownLogits
        from birdcore.models.birdnet_head.embeddings import EmbeddingStore

        cfg = RunConfig()
        root = Path(cache_dir) if cache_dir else default_cache_dir()
        df = read_metadata(data_dir)
        s = cfg.split
        df["split"] = split_recordings(df, method=s.method, val_fraction=s.val_fraction,
                                       test_fraction=s.test_fraction, seed=seed).to_numpy()
        self.table, columns, rename = append_species(species_table(df), str(species_list))
        self.added = self.table.loc[self.table["added"], "ebird_code"].tolist()
        codes = self.table["ebird_code"].tolist()
        self.primary = np.array([codes.index(rename[p]) for p in df["primary"]])
        self.labels = np.array([self.added.index(rename[p]) if rename[p] in self.added else -1 for p in df["primary"]])
        self.n_known = len(codes) - len(self.added)
        self.split, self.seed, self.ids = df["split"].to_numpy(), seed, df["recording_id"].tolist()
        cache = DecodeCache(root, sample_rate=48000, max_seconds=None)
        store = EmbeddingStore(root / "birdnet-embeddings")
        self.emb = [np.asarray(store.load(cache.entry_path(p)), np.float32) for p in df["path"]]
        known = KnownLogits([c for c in columns if c is not None])
        self.known = [known(e) for e in self.emb]

    def fit(self, *, margin: float, l2: float, shots: int | None, temperature: float = 0.0):
        from birdcore.models.birdnet_append.head import fit_added
        from birdcore.models.birdnet_append.training import shot_rows

        rows = shot_rows(np.flatnonzero(self.split == "train"), self.labels, shots, self.seed)
        return fit_added([self.emb[i] for i in rows], [self.known[i].max(axis=1) for i in rows], self.labels[rows],
                         len(self.added), margin=margin, l2=l2, temperature=temperature)

    def figures(self, head, part: str) -> dict:
        from birdcore.models.birdnet_append.training import top1_figures

        rows = np.flatnonzero(self.split == part)
        logits = [np.concatenate([self.known[i], head.logits(self.emb[i])], axis=1).max(axis=0) for i in rows]
        out = top1_figures(logits, self.labels[rows], self.primary[rows], self.n_known)
        out["added_misses"] = [self.ids[i] for i, x in zip(rows, logits)
                               if self.labels[i] >= 0 and int(np.argmax(x)) != self.primary[i]]
        return out


def add_up(rows: list[dict]) -> dict:
    keys = [k for k, v in rows[0].items() if isinstance(v, int)]
    return {k: sum(r[k] for r in rows) for k in keys}


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 1234])
    p.add_argument("--out", type=Path, default=Path("runs"))
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--tag", default="default", help="names the append runs: splits-seedS-append-TAG")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--fast", action="store_true", help="from the embedding cache, no run folders")
    p.add_argument("--grid", nargs="*", default=[], metavar="FIELD=V1,V2",
                   help="--fast: settings to compare on validation (model.append_margin, model.append_l2, "
                        "model.append_temperature)")
    p.add_argument("--shots", type=int, nargs="*", default=[], help="--fast: training recordings per added species")
    args = p.parse_args()
    listing = species_list_file(args.data_dir, args.out)
    if args.fast:
        from birdcore.config import ModelConfig

        base = {"margin": ModelConfig.append_margin, "l2": ModelConfig.append_l2,
                "temperature": ModelConfig.append_temperature}
        for item in args.set:
            k, _, v = item.partition("=")
            base[k.split(".")[-1].replace("append_", "")] = float(v)
        splits = [FastSplit(args.data_dir, s, listing, args.cache_dir) for s in args.seeds]
        result = {"data_dir": str(args.data_dir), "seeds": args.seeds, "base": base}
        if args.grid:
            names = [g.partition("=")[0].split(".")[-1].replace("append_", "") for g in args.grid]
            values = [[float(v) for v in g.partition("=")[2].split(",")] for g in args.grid]
            result["validation"] = []
            for combo in itertools.product(*values):
                setting = {**base, **dict(zip(names, combo))}
                per = [sp.figures(sp.fit(margin=setting["margin"], l2=setting["l2"], shots=None,
                                         temperature=setting["temperature"]), "val")
                       for sp in splits]
                result["validation"].append({"setting": setting, **add_up(per)})
                print(json.dumps(result["validation"][-1]), file=sys.stderr, flush=True)
        if args.shots:
            result["shots"] = []
            for n in args.shots:
                per = [sp.figures(sp.fit(margin=base["margin"], l2=base["l2"], shots=n, temperature=base["temperature"]),
                                  "test") for sp in splits]
                result["shots"].append({"shots": n, **add_up(per),
                                        "added_misses": [m for r in per for m in r["added_misses"]]})
                print(json.dumps(result["shots"][-1]), file=sys.stderr, flush=True)
        print(json.dumps(result, indent=1))
        return
    sets = [x for item in args.set for x in ("--set", item)]
    rows = []
    for seed in args.seeds:
        app = ensure_run(args.out, f"splits-seed{seed}-append-{args.tag}",
                         ["--backbone", "birdnet", "--append", "--species-list", str(listing), "--seed", str(seed),
                          *sets], args)
        zero = ensure_run(args.out, f"splits-seed{seed}-birdnet-zero-shot", ["--baseline", "birdnet", "--seed",
                                                                             str(seed)], args)
        validation = json.loads((app / "run.json").read_text())["append"]["validation"]
        rows.append({"seed": seed, **test_figures(app, zero), "validation": validation})
    total = add_up(rows)
    print(json.dumps({"data_dir": str(args.data_dir), "seeds": args.seeds, "tag": args.tag, "settings": args.set,
                      "per_seed": rows, "total": total, "validation_total": add_up([r["validation"] for r in rows]),
                      "append_right": f"{total['known_right'] + total['added_right']}/{total['n']}",
                      "zero_shot_right": f"{total['zero_shot_right']}/{total['n']}"}, indent=1))


if __name__ == "__main__":
    main()
