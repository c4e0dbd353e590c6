"""BirdNET embeddings as the head's input: computed once per recording, cached beside the decode cache.

A recording's head input is (W, F) float32: per 3 s window BirdNET's 1,024-d embedding, then
(with the prior) one BirdNET logit per dataset species (``features``).
"""
from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import numpy as np

from birdcore.data.cache import load_npy_mmap
from birdcore.io.atomic import atomic_write_json, write_npy
from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet.engines import birdnet_engine, current_engine
from birdcore.models.birdnet.scoring import SPECIES_MAPPING_FILE

log = logging.getLogger("birdcore")
EMBEDDING_FORMAT = 1


def prior_sources(columns: list[int | None], relatives: list[list[int]] | None = None) -> list[list[int]]:
    """BirdNET columns whose max is each species' prior logit: its own column, else (when
    ``relatives`` is given) its genus relatives, else none (prior 0)."""
    relatives = relatives or [[] for _ in columns]
    return [[c] if c is not None else list(rel) for c, rel in zip(columns, relatives)]


def features(out: bn.BirdNETOutput, sources: list[list[int]] | None) -> np.ndarray:
    """Per-window head input (W, 1024 [+ C]): the embedding, then (with ``sources``, see
    ``prior_sources``) a prior logit per dataset species: the max of BirdNET's logits over its
    source columns, 0 when it has none."""
    if sources is None:
        return np.asarray(out.embeddings, np.float32)
    prior = np.zeros((len(out.logits), len(sources)), np.float32)
    for j, cols in enumerate(sources):
        if cols:
            prior[:, j] = out.logits[:, cols].max(axis=1)
    return np.concatenate([out.embeddings, prior], axis=1).astype(np.float32)


class EmbeddingStore:
    """Head inputs per recording (``features``), (W, F) float16 in ``root/<2 hex>/<key>.npy``, keyed by
    the decoded-audio cache entry (so source changes invalidate it), the overlap, the species mapping
    and the BirdNET engine that computed them (``engines``: their embeddings differ slightly)."""

    def __init__(self, root: Path, *, overlap: float = 0.0, sources: list[list[int]] | None = None,
                 engine: str | None = None):
        self.root = Path(root)
        self.engine = engine or current_engine()
        self.overlap = float(overlap)
        self.sources = sources
        self.width = bn.EMBEDDING_SIZE + (len(sources) if sources is not None else 0)

    def _mapping_key(self) -> str:
        if self.sources is None:
            return "None"
        if all(len(c) <= 1 for c in self.sources):  # own columns only: the key of format-1 stores
            return str([c[0] if c else None for c in self.sources])
        return str(self.sources)

    def path(self, audio_entry: Path) -> Path:
        engine = "" if self.engine == "litert" else f"|{self.engine}"  # LiteRT: the key of earlier stores
        key = hashlib.sha1(f"{Path(audio_entry).name}|{self.overlap}|{self._mapping_key()}|{bn.MODEL_FILE}|"
                           f"{EMBEDDING_FORMAT}{engine}".encode()).hexdigest()
        return self.root / key[:2] / f"{key}.npy"

    def load(self, audio_entry: Path) -> np.ndarray | None:
        p = self.path(audio_entry)
        try:
            arr = load_npy_mmap(p)  # not np.load: its header parser is not thread-safe on 3.11
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # a partial or foreign file: drop it, it is recomputed
            p.unlink(missing_ok=True)
            return None
        if arr.ndim != 2 or arr.shape[1] != self.width:
            p.unlink(missing_ok=True)
            return None
        return arr

    def save(self, audio_entry: Path, embeddings: np.ndarray) -> None:
        write_npy(self.path(audio_entry), np.asarray(embeddings, dtype="<f2"))


def compute_embeddings(data, *, cache_root: Path, overlap: float = 0.0,
                       sources: list[list[int]] | None = None, rows=None) -> EmbeddingStore:
    """Fill the store with head inputs for the recordings ``rows`` (default: all usable ones) of
    ``data`` (a ``train.Dataset`` whose decode cache is at 48 kHz); returns the store, and with
    ``overlap`` 0 points ``data.item`` at it."""
    engine = current_engine()
    store = EmbeddingStore(Path(cache_root) / "birdnet-embeddings", overlap=overlap, sources=sources, engine=engine)
    entries = [data.cache.entry_path(p) for p in data.df["path"]]
    wanted = range(len(entries)) if rows is None else [int(i) for i in rows]
    todo = [i for i in wanted if store.load(entries[i]) is None]
    if todo:
        from tqdm import tqdm

        model = birdnet_engine(engine, embeddings=True)
        log.info("BirdNET embeddings%s: computing %d recordings (%d cached)",
                 f" (windows every {bn.WINDOW_SECONDS - overlap:g} s)" if overlap else "", len(todo),
                 len(wanted) - len(todo))
        for i in tqdm(todo, desc="birdnet", unit="rec", file=sys.stderr,
                      mininterval=0.5 if sys.stderr.isatty() else 30):
            wave = np.asarray(data.cache.load(data.df["path"].iat[i]), dtype=np.float32)
            store.save(entries[i], features(model.analyze(wave, overlap=overlap), sources))
    if not overlap:
        data.item = lambda i: np.asarray(store.load(entries[i]), dtype=np.float32)
    return store


def species_mapping(run, cfg, data) -> dict:
    """Map a run's species to BirdNET's columns (and, with the prior, each species' prior sources);
    saved in the run as ``birdnet_species.json`` with the licence, and returned."""
    labels = bn.load_labels()
    columns, missing = bn.map_species(data.species, labels)
    related = bn.relatives(data.species, labels, columns) if cfg.model.birdnet_relatives else None
    sources = prior_sources(columns, related) if cfg.model.birdnet_prior else None
    if missing:
        with_rel = [c for c, cols in zip(data.codes, sources or []) if c in missing and cols]
        log.info("BirdNET does not know %d species; the head learns them from their embeddings%s: %s",
                 len(missing), f" (prior from BirdNET's same-genus species for {', '.join(with_rel)})"
                 if with_rel else "", ", ".join(missing))
    mapping = {"columns": columns, "missing": missing, "prior": cfg.model.birdnet_prior, "prior_sources": sources,
               "license": bn.LICENSE_NOTE}
    atomic_write_json(run.file(SPECIES_MAPPING_FILE), mapping)
    return mapping


def prepare_birdnet_inputs(run, cfg, data, *, cache_root: Path) -> dict:
    """For a ``--backbone birdnet`` run: the species mapping (``species_mapping``), then fill the
    embedding store; returns the mapping."""
    mapping = species_mapping(run, cfg, data)
    sources = mapping["prior_sources"]
    compute_embeddings(data, cache_root=cache_root, sources=sources)
    if cfg.augment.birdnet_shifted_windows:  # windows every 1.5 s: even ones unshifted, odd ones shifted
        half = bn.WINDOW_SECONDS / 2
        shifted = compute_embeddings(data, cache_root=cache_root, overlap=half, sources=sources,
                                     rows=data.rows("train"))
        entries = [data.cache.entry_path(p) for p in data.df["path"]]
        data.train_item = lambda i: np.asarray(shifted.load(entries[i]), dtype=np.float32)
    return mapping


def review_examples(db: str, codes: list[str], sources: list[list[int]] | None, *,
                    held_out: set[str] = frozenset()) -> list[tuple[np.ndarray, np.ndarray]]:
    """Training examples from the verified clips of a review database: (head input (W, F), target
    (C,)) per clip whose species (or corrected species) is one of ``codes``: a ``yes`` is a positive
    of its species, a corrected species a positive of that one, a ``no`` a hard negative (all 0).
    Each file is decoded once at 48 kHz; a file that cannot be read is logged and skipped, and so are
    the clips of ``held_out`` files (resolved paths of the validation and test recordings).  The
    database must exist (``review.store.open_existing``: StoreError otherwise); it is only read."""
    from birdcore.io.audio import AudioError, decode_audio
    from birdcore.review.store import open_existing

    store = open_existing(db)  # read-only; StoreError naming ``db`` when it is not a review database
    try:
        verdicts = store.verdicts()
    finally:
        store.engine.dispose()
    verdicts = verdicts[verdicts["verdict"].isin(["yes", "no"]) | verdicts["corrected_species"].notna()]
    index = {c: i for i, c in enumerate(codes)}
    model, out, skipped = birdnet_engine(embeddings=True), [], 0
    for file, clips in verdicts.groupby("file", sort=False):
        if str(Path(file).resolve()) in held_out:
            log.warning("reviewed clips of %s skipped: the file is a validation or test recording", file)
            continue
        try:
            wave = decode_audio(file, sample_rate=bn.SAMPLE_RATE)
        except AudioError as exc:
            log.warning("reviewed clips of %s skipped: %s", file, exc)
            continue
        for clip in clips.itertuples(index=False):
            positive = clip.corrected_species if isinstance(clip.corrected_species, str) else (
                clip.species if clip.verdict == "yes" else None)
            if clip.species not in index and positive not in index:
                skipped += 1
                continue
            target = np.zeros(len(codes), np.float32)
            if positive in index:
                target[index[positive]] = 1.0
            piece = wave[int(clip.start_s * bn.SAMPLE_RATE):int(np.ceil(clip.end_s * bn.SAMPLE_RATE))]
            out.append((features(model.analyze(piece), sources), target))
    log.info("%s: %d reviewed clips join the training split (%d positive, %d hard negatives)%s", db, len(out),
             sum(int(t.any()) for _, t in out), sum(int(not t.any()) for _, t in out),
             f"; {skipped} of species outside this run skipped" if skipped else "")
    return out
