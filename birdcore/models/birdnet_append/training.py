"""Making an append run's model from its training data (``BirdNETAppend.prepare_inputs``).

The run's species (``species.append_species``) replace the data's: labels are renamed to the run's
codes (``evaluation.scoring.in_run_codes``), so validation and test are scored over the run's species
as any caller will score them.  The window embeddings come from the head's cache
(``birdnet_head.embeddings``: BirdNET embeddings only, so one cache serves every species list); the top
BirdNET logit of the known species per window is recomputed from them with BirdNET's class layer
(float16 embeddings: within ~1e-2 of the interpreter's logits, enough to train against; serving and
the run's scores use the interpreter's own logits).
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from birdcore.io.atomic import atomic_write_json, atomic_write_text
from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet.scoring import SPECIES_MAPPING_FILE
from birdcore.models.birdnet_append.head import HEAD_FILE, STEPS, AddedHead, fit_added
from birdcore.models.birdnet_append.species import append_species

log = logging.getLogger("birdcore")


def shot_rows(train_rows: np.ndarray, labels: np.ndarray, shots: int | None, seed: int) -> np.ndarray:
    """The training rows kept when each added species keeps at most ``shots`` recordings (drawn with
    ``seed``); known species' recordings are all kept.  ``labels``: added index per row, −1 known."""
    if shots is None:
        return train_rows
    rng = np.random.default_rng(seed)
    keep = [r for r, lab in zip(train_rows, labels[train_rows]) if lab < 0]
    for a in sorted(set(labels[train_rows][labels[train_rows] >= 0])):
        mine = [r for r in train_rows if labels[r] == a]
        keep += sorted(rng.permutation(mine)[:shots].tolist())
    return np.array(sorted(keep), dtype=int)


class KnownLogits:
    """Approximate BirdNET logits of the known species from window embeddings (E,) → (K,)."""

    def __init__(self, columns: list[int]):
        weights, bias = bn.BirdNET().class_layer()
        self.kernel = np.ascontiguousarray(weights[columns].T)  # (E, K)
        self.bias = bias[columns]

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        return np.asarray(embeddings, np.float32) @ self.kernel + self.bias


def prepare_append(run, cfg, data, *, cache_root: Path) -> dict:
    """Species table, mapping and added layer of an append run (written into it); returns the inputs
    (``columns``, ``head``, ``added``, ``training``, ``validation``).  ``data`` is switched to the run's
    species and left scoring waveforms (``data.item`` None)."""
    from birdcore.evaluation.scoring import in_run_codes
    from birdcore.models.birdnet_head.embeddings import compute_embeddings

    table, columns, rename = append_species(data.species, cfg.model.species_list)
    added = table.loc[table["added"], "ebird_code"].tolist()
    known_cols = [c for c in columns if c is not None]
    log.info("append run: %d BirdNET species%s + %d added (BirdNET lacks them): %s", len(known_cols),
             f" from {cfg.model.species_list}" if cfg.model.species_list else "", len(added), ", ".join(added))
    if not added:
        raise ValueError("BirdNET knows every species of the training data: nothing to add (a --baseline birdnet "
                         "run scores them as they are)")
    df = data.df.copy()  # labels by the run's codes: the training species by their BirdNET column, others by name
    df["primary"] = df["primary"].map(lambda c: rename.get(c, c))
    df["secondary"] = df["secondary"].map(lambda row: [rename.get(c, c) for c in row])
    df = in_run_codes(df, table)
    lost = sorted(set(df["primary"]) - set(table["ebird_code"]))
    if lost:  # cannot happen: every training species is known or added
        raise ValueError(f"training species not in the run's species: {', '.join(lost)}")
    data.df, data.species = df, table[["ebird_code", "common_name", "sci_name"]]
    atomic_write_text(run.file("species.csv"), table.to_csv(index=False))
    atomic_write_json(run.file(SPECIES_MAPPING_FILE), {"columns": columns, "added": added, "license": bn.LICENSE_NOTE})

    index = {c: i for i, c in enumerate(added)}
    labels = np.array([index.get(p, -1) for p in df["primary"]])
    rows = shot_rows(data.rows("train"), labels, cfg.model.append_shots, cfg.train.seed)
    val = data.rows("val")
    store = compute_embeddings(data, cache_root=cache_root, rows=np.concatenate([rows, val]))
    data.item = None  # validation and test are scored from waveforms: BirdNET's own logits, exactly
    entries = [data.cache.entry_path(p) for p in df["path"]]
    emb = lambda i: np.asarray(store.load(entries[i]), np.float32)  # noqa: E731
    known = KnownLogits(known_cols)
    train_emb = [emb(i) for i in rows]
    head = fit_added(train_emb, [known(e).max(axis=1) for e in train_emb], labels[rows], len(added),
                     margin=cfg.model.append_margin, l2=cfg.model.append_l2,
                     temperature=cfg.model.append_temperature)
    head.save(run.file(HEAD_FILE))
    training = {"recordings": int(len(rows)), "added_recordings": {c: int((labels[rows] == i).sum())
                                                                   for i, c in enumerate(added)}}
    codes = table["ebird_code"].tolist()
    pooled = lambda e: np.concatenate([known(e), head.logits(e)], axis=1).max(axis=0)  # noqa: E731 (C,)
    validation = top1_figures([pooled(emb(i)) for i in val], labels[val],
                              [codes.index(p) for p in df["primary"].iloc[val]], len(known_cols), codes=codes,
                              recordings=df["recording_id"].iloc[val].astype(str).tolist())
    log.info("added species trained on %s; validation (from cached embeddings): %s", training, validation)
    weak = validation_shortfall(validation)
    if weak:
        log.warning("%s; more recordings of them may help, or a head (--backbone birdnet without --append) "
                    "if BirdNET's own answers may move", weak)
    return {"columns": columns, "head": head, "added": added, "training": training, "validation": validation}


def top1_figures(recording_logits: list[np.ndarray], labels: np.ndarray, primary: list[int], n_known: int, *,
                 codes: list[str] | None = None, recordings: list[str] | None = None) -> dict:
    """The append figures of a set of recordings: known-species recordings right at top-1, added-species
    recordings right, and false takes (a known species' recording whose top-1 is an added species).
    ``recording_logits``: (C,) per recording, known species first; ``labels``: added index or −1.
    With the run's ``codes`` and the ``recordings``' ids, also ``missed``: each added-species recording
    not named, with the species that took it ({"recording", "species", "top1"})."""
    top = np.array([int(np.argmax(x)) for x in recording_logits], dtype=int)
    primary = np.asarray(primary, dtype=int)
    known = np.asarray(labels) < 0
    out = {"known": int(known.sum()), "known_right": int((known & (top == primary)).sum()),
           "added": int((~known).sum()), "added_right": int((~known & (top == primary)).sum()),
           "false_takes": int((known & (top >= n_known)).sum())}
    if codes is not None and recordings is not None:
        out["missed"] = [{"recording": r, "species": codes[p], "top1": codes[t]}
                         for r, p, t, k in zip(recordings, primary, top, known) if not k and p != t]
    return out


def validation_summary(validation: dict) -> str:
    """"added species right on 1 of 2 validation recordings, 0 false takes" (``top1_figures``'s dict)."""
    return (f"added species right on {validation.get('added_right', 0)} of {validation.get('added', 0)} validation "
            f"recordings, {validation.get('false_takes', 0)} false takes")


def validation_shortfall(validation: dict) -> str | None:
    """A warning when the added species were top-1 on under half of their validation recordings (the run
    then seldom names them), else None."""
    n, right = validation.get("added", 0), validation.get("added_right", 0)
    if not n or 2 * right >= n:
        return None
    takers = Counter(m["top1"] for m in validation.get("missed", []))
    named = f" ({', '.join(f'{c} took {k}' for c, k in takers.most_common(5))})" if takers else ""
    return (f"the added species were top-1 on only {right} of their {n} validation recordings{named}: this run "
            "will seldom name them, BirdNET's species winning instead")


def load_head(run_dir: Path) -> AddedHead:
    return AddedHead.load(Path(run_dir) / HEAD_FILE)


__all__ = ["prepare_append", "top1_figures", "load_head", "shot_rows", "validation_summary", "validation_shortfall",
           "STEPS"]
