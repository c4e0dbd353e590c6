"""BirdNET as a peer and as a frozen bird-specific backbone.

- ``--backbone birdnet``: BirdNET's 1,024-d embeddings of 3 s windows are
  computed once per recording (cached), and a small trainable head turns each
  window's embedding into species logits, pooled over windows with the same
  weak-label pooling as the audio models.  The head can learn species that
  BirdNET lacks.
- ``--baseline birdnet``: BirdNET used zero-shot, its scores restricted to the
  dataset's species (matched by scientific name), recording score = max over
  windows.  Written as a run folder in the same format, on the same split.

Scorers here follow ``inference.Scorer``'s interface: ``score(wave)`` and
``score_many(items)`` yield ``inference.Scores``.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import math
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

import keras
import numpy as np

from birdcore.models.birdnet import runtime as bn
from birdcore.features import layers as L
from birdcore.config import RunConfig
from birdcore.models.keras_audio.scorer import Scores, sigmoid
from birdcore.data.batches import EpochBatches
from birdcore.features.windows import pool_segments

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
    the decoded-audio cache entry (so source changes invalidate it), the overlap and the species mapping."""

    def __init__(self, root: Path, *, overlap: float = 0.0, sources: list[list[int]] | None = None):
        self.root = Path(root)
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
        key = hashlib.sha1(f"{Path(audio_entry).name}|{self.overlap}|{self._mapping_key()}|{bn.MODEL_FILE}|"
                           f"{EMBEDDING_FORMAT}".encode()).hexdigest()
        return self.root / key[:2] / f"{key}.npy"

    def load(self, audio_entry: Path) -> np.ndarray | None:
        p = self.path(audio_entry)
        try:
            arr = np.load(p, mmap_mode="r")
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
        from birdcore.data.cache import _write_atomic

        _write_atomic(self.path(audio_entry), np.asarray(embeddings, dtype="<f2"))


def compute_embeddings(data, *, cache_root: Path, overlap: float = 0.0,
                       sources: list[list[int]] | None = None, rows=None) -> EmbeddingStore:
    """Fill the store with head inputs for the recordings ``rows`` (default: all usable ones) of
    ``data`` (a ``train.Dataset`` whose decode cache is at 48 kHz); returns the store, and with
    ``overlap`` 0 points ``data.item`` at it."""
    store = EmbeddingStore(Path(cache_root) / "birdnet-embeddings", overlap=overlap, sources=sources)
    entries = [data.cache.entry_path(p) for p in data.df["path"]]
    wanted = range(len(entries)) if rows is None else [int(i) for i in rows]
    todo = [i for i in wanted if store.load(entries[i]) is None]
    if todo:
        from tqdm import tqdm

        model = bn.BirdNET(embeddings=True)
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


def prepare_birdnet_inputs(run, cfg: RunConfig, data, *, cache_root: Path) -> None:
    """For a ``--backbone birdnet`` run: map the species to BirdNET (saved in the run as
    ``birdnet_species.json``, with the licence) and fill the embedding store."""
    from birdcore.runs.folder import atomic_write_json

    labels = bn.load_labels()
    columns, missing = bn.map_species(data.species, labels)
    related = bn.relatives(data.species, labels, columns) if cfg.model.birdnet_relatives else None
    sources = prior_sources(columns, related) if cfg.model.birdnet_prior else None
    if missing:
        with_rel = [c for c, cols in zip(data.codes, sources or []) if c in missing and cols]
        log.info("BirdNET does not know %d species; the head learns them from their embeddings%s: %s",
                 len(missing), f" (prior from BirdNET's same-genus species for {', '.join(with_rel)})"
                 if with_rel else "", ", ".join(missing))
    atomic_write_json(run.file("birdnet_species.json"), {"columns": columns, "missing": missing,
                                                        "prior": cfg.model.birdnet_prior,
                                                        "prior_sources": sources,
                                                        "license": bn.LICENSE_NOTE})
    compute_embeddings(data, cache_root=cache_root, sources=sources)
    if cfg.augment.birdnet_shifted_windows:  # windows every 1.5 s: even ones unshifted, odd ones shifted
        half = bn.WINDOW_SECONDS / 2
        shifted = compute_embeddings(data, cache_root=cache_root, overlap=half, sources=sources,
                                     rows=data.rows("train"))
        entries = [data.cache.entry_path(p) for p in data.df["path"]]
        data.train_item = lambda i: np.asarray(shifted.load(entries[i]), dtype=np.float32)


def build_head(cfg: RunConfig, n_species: int) -> keras.Model:
    """{"embeddings": (B, W, F), "mask": (B, W)} → {"recording": (B, C), "segments": (B, W, C)}.

    Dropout → dense ``cfg.model.head_units`` (ReLU) → dropout → dense C species logits.

    F = 1024 (BirdNET embedding), + C BirdNET logits used as a prior when ``cfg.model.birdnet_prior``:
    species logit = head(embedding) + learned weight × BirdNET's logit.
    """
    use_prior = cfg.model.birdnet_prior
    width = bn.EMBEDDING_SIZE + (n_species if use_prior else 0)
    feats = keras.Input((None, width), name="embeddings")
    mask = keras.Input((None,), name="mask")
    emb = L.SliceFeatures(start=0, stop=bn.EMBEDDING_SIZE, name="embedding")(feats) if use_prior else feats
    x = keras.layers.Dropout(cfg.model.dropout, name="input_dropout")(emb)
    x = keras.layers.Dense(cfg.model.head_units, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(cfg.model.dropout, name="head_dropout")(x)
    bias = keras.initializers.Constant(-math.log(max(n_species - 1, 1)))
    logits = keras.layers.Dense(n_species, dtype="float32", bias_initializer=bias, name="species_logits")(x)
    if use_prior:
        prior = L.SliceFeatures(start=bn.EMBEDDING_SIZE, stop=width, name="birdnet_logits")(feats)
        logits = keras.layers.Add(name="with_prior")([logits, L.PriorScale(name="prior_scale")(prior)])
    att = None
    if cfg.model.pooling == "attention":
        att = keras.layers.Dense(n_species, dtype="float32", name="attention_logits")(x)
    recording = L.RecordingPooling(mode=cfg.model.pooling, name="recording")(logits, mask, att)
    segments = L.Sigmoid(name="segments")(logits)
    return keras.Model({"embeddings": feats, "mask": mask}, {"recording": recording, "segments": segments},
                       name="birdnet_head")


class EmbeddingBatches(EpochBatches):
    """Batches of random crops of ``windows`` consecutive embeddings (zero-padded, masked) and targets.

    ``interleaved`` = 2: each loaded sequence holds two interleaved window grids (windows every 1.5 s:
    even ones at 0, 3, 6 s..., odd ones shifted by 1.5 s); each example uses one grid, drawn at random.
    """

    def __init__(self, *, load, targets: np.ndarray, windows: int, batch_size: int, seed: int,
                 steps_per_epoch: int | None = None, workers: int = 1, interleaved: int = 1):
        super().__init__(targets=targets, batch_size=batch_size, seed=seed, steps_per_epoch=steps_per_epoch,
                         workers=workers)
        self.load, self.windows, self.interleaved = load, int(windows), int(interleaved)

    def __getitem__(self, idx: int):
        rows, rng = self.rows_of(idx)
        items = [self.load(int(i)) for i in rows]
        if self.interleaved > 1:
            items = [e[int(rng.integers(0, min(self.interleaved, len(e)))):][::self.interleaved] for e in items]
        x = np.zeros((len(rows), self.windows, items[0].shape[1]), np.float32)
        m = np.zeros((len(rows), self.windows), np.float32)
        for k, e in enumerate(items):
            start = int(rng.integers(0, max(1, len(e) - self.windows + 1)))
            part = e[start:start + self.windows]
            x[k, :len(part)], m[k, :len(part)] = part, 1.0
        return {"embeddings": x, "mask": m}, {"recording": self.targets[rows]}


class EmbeddingScorer:
    """Scores embedding sequences (W, 1024) with a head model, one recording per call."""

    def __init__(self, model: keras.Model, *, batch_segments: int = 32):
        import tensorflow as tf

        self.model = model
        spec = {"embeddings": tf.TensorSpec((1, None, model.input["embeddings"].shape[-1]), tf.float32),
                "mask": tf.TensorSpec((1, None), tf.float32)}
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def score_many(self, items: Iterable[np.ndarray]) -> Iterator[Scores]:
        for e in items:
            e = np.asarray(e, np.float32)
            out = self._forward({"embeddings": e[None], "mask": np.ones((1, len(e)), np.float32)})
            yield Scores(segments=np.asarray(out["segments"])[0], recording=np.asarray(out["recording"])[0])

    def score(self, embeddings: np.ndarray) -> Scores:
        return next(self.score_many([embeddings]))


def _reporting(chunks: Iterable[np.ndarray], progress: Callable[[float], None] | None) -> Iterator[np.ndarray]:
    """The chunks, calling ``progress`` with the seconds of 48 kHz audio consumed after each."""
    done = 0
    for chunk in chunks:
        done += len(chunk)
        yield chunk
        if progress is not None:
            progress(done / bn.SAMPLE_RATE)


class BirdNETHeadScorer:
    """Waveforms at 48 kHz → BirdNET embeddings (+ prior logits) → trained head (a ``--backbone birdnet`` run)."""

    def __init__(self, model: keras.Model, *, sources: list[list[int]] | None = None, overlap: float = 0.0,
                 birdnet: bn.BirdNET | None = None):
        self.birdnet = birdnet or bn.BirdNET(embeddings=True)
        self.head = EmbeddingScorer(model)
        self.sources, self.overlap = sources, overlap

    def with_overlap(self, overlap: float):
        """This scorer with BirdNET's windows overlapping by ``overlap`` seconds (0 to <3), sharing
        its interpreter and head: cheap, and safe to use beside the original from other threads."""
        bn.hop_samples(overlap)  # validates
        twin = copy.copy(self)
        twin.overlap = float(overlap)
        return twin

    def score_stream(self, chunks: Iterable[np.ndarray], *,
                     progress: Callable[[float], None] | None = None) -> Scores:
        """Scores of one recording given as consecutive 48 kHz chunks (e.g. ``stream.stream_audio``),
        equal to ``score(np.concatenate(chunks))``; ``progress`` gets the seconds consumed so far."""
        out = self.birdnet.analyze_stream(_reporting(chunks, progress), overlap=self.overlap)
        return self.head.score(features(out, self.sources))

    def score_many(self, waves: Iterable[np.ndarray]) -> Iterator[Scores]:
        for wave in waves:
            yield self.score_stream([wave])

    def score(self, wave: np.ndarray) -> Scores:
        return self.score_stream([wave])


class ZeroShotScorer:
    """BirdNET's own scores for the given BirdNET columns (None: a species BirdNET lacks, scored 0),
    recording score = max over 3 s windows (``segments.pool_segments``)."""

    def __init__(self, columns: list[int | None], *, overlap: float = 0.0, birdnet: bn.BirdNET | None = None):
        self.birdnet = birdnet or bn.BirdNET()
        self.columns = columns
        self.overlap = overlap
        self._known = np.array([c is not None for c in columns])
        self._index = np.array([c if c is not None else 0 for c in columns])

    def with_overlap(self, overlap: float):
        """This scorer with BirdNET's windows overlapping by ``overlap`` seconds (0 to <3), sharing
        its interpreter: cheap, and safe to use beside the original from other threads."""
        bn.hop_samples(overlap)  # validates
        twin = copy.copy(self)
        twin.overlap = float(overlap)
        return twin

    def _restrict(self, raw: np.ndarray) -> np.ndarray:
        out = raw[:, self._index]
        out[:, ~self._known] = -30.0
        return out

    def score_stream(self, chunks: Iterable[np.ndarray], *,
                     progress: Callable[[float], None] | None = None) -> Scores:
        """Scores of one recording given as consecutive 48 kHz chunks, equal to ``score(np.concatenate(chunks))``."""
        raw = self.birdnet.analyze_stream(_reporting(chunks, progress), overlap=self.overlap).logits
        logits = self._restrict(raw)
        rec = np.asarray(pool_segments(logits[None], np.ones((1, len(logits)), np.float32), mode="max"))[0]
        return Scores(segments=sigmoid(logits).astype(np.float32), recording=rec.astype(np.float32))

    def score_many(self, waves: Iterable[np.ndarray]) -> Iterator[Scores]:
        for wave in waves:
            yield self.score_stream([wave])

    def score(self, wave: np.ndarray) -> Scores:
        return self.score_stream([wave])


def birdnet_config(cfg: RunConfig) -> RunConfig:
    """Audio settings BirdNET requires: 48 kHz and 3 s windows."""
    cfg.audio.sample_rate = bn.SAMPLE_RATE
    cfg.audio.segment_seconds = bn.WINDOW_SECONDS
    cfg.model.weights = "none"
    return cfg


def baseline_run(*, data_dir: Path, out_dir: Path, name: str, cfg: RunConfig, cache_dir: Path | None = None,
                 workers: int | None = None) -> Path:
    """Write a BirdNET zero-shot run folder on the same split as trained runs (no training)."""
    import time

    from birdcore.evaluation.scoring import format_summary, score_arrays, score_recordings, write_evaluation
    from birdcore.runs.folder import RunBuilder, atomic_write_json, library_versions
    from birdcore.training.train import prepare_data

    cfg = birdnet_config(cfg)
    cfg.model.backbone, cfg.model.pooling = "birdnet_zero_shot", "max"
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run = RunBuilder.open(Path(out_dir), name, resume=False)
    try:
        atomic_write_json(run.file("config.json"), {"config": cfg.to_dict(), "versions": library_versions(),
                                                    "data_dir": str(Path(data_dir).resolve())})
        data = prepare_data(run, cfg, data_dir=data_dir, cache_dir=cache_dir, workers=workers)
        columns, missing = bn.map_species(data.species, bn.load_labels())
        if missing:
            log.warning("BirdNET does not know %d of %d species (scored 0): %s", len(missing), len(columns),
                        ", ".join(missing))
        scorer = ZeroShotScorer(columns)
        arrays = {}
        for split in ("val", "test"):
            rows = data.rows(split)
            scores, segs = score_recordings(None, data.load, rows, scorer=scorer, progress=split == "test")
            arrays[split] = score_arrays(data.df.iloc[rows], data.codes, scores, segs,
                                         segment_seconds=bn.WINDOW_SECONDS)
        metrics = write_evaluation(run.path, arrays["test"], arrays["val"], target_fpr=cfg.eval.target_fpr)
        atomic_write_json(run.file("birdnet_species.json"), {"columns": columns, "missing": missing,
                                                            "license": bn.LICENSE_NOTE})
        log.info("test: %s", format_summary(metrics))
        counts = {s: int(len(data.rows(s))) for s in ("train", "val", "test")}
        return run.finish({
            "created": started, "synthetic": cfg.synthetic, "model_kind": "birdnet_zero_shot",
            "backbone": "birdnet_zero_shot", "weights": "BirdNET V2.4", "pooling": "max",
            "n_species": len(columns), "sample_rate": bn.SAMPLE_RATE, "segment_seconds": bn.WINDOW_SECONDS,
            "split": counts, "epochs_trained": 0, "best_epoch": 0, "license": bn.LICENSE_NOTE,
            "birdnet_missing_species": missing,
            "test": {k: metrics[k] for k in ("top1", "top5", "macro_auc", "macro_ap", "n_recordings")},
            "tuned": False,
        })
    finally:
        run.release()


def scorer_for(model: keras.Model | None, cfg: RunConfig, *, batch_segments: int = 32):
    """The scorer of a model's own inputs during training (waveforms or embeddings)."""
    if cfg.model.backbone == "birdnet":
        return EmbeddingScorer(model, batch_segments=batch_segments)
    from birdcore.models.keras_audio.scorer import Scorer

    return Scorer(model, batch_segments=batch_segments)



def birdnet_available() -> bool:
    """True when the BirdNET model files and the LiteRT runtime are installed."""
    try:
        bn.model_dir()
        import ai_edge_litert  # noqa: F401
    except (bn.BirdNETUnavailable, ImportError):
        return False
    return True


def global_birdnet_run():
    """BirdNET V2.4 zero-shot over all its 6,522 classes, as a ``LoadedRun`` for classifying clips.

    Species codes are BirdNET's scientific names (its label file has no eBird codes); the
    decision threshold is BirdNET's customary 0.5 confidence for every species.
    """
    import pandas as pd

    from birdcore.runs.loading import LoadedRun

    labels = bn.load_labels()
    sci = [lab.split("_", 1)[0] for lab in labels]
    common = [lab.split("_", 1)[1] if "_" in lab else lab for lab in labels]
    species = pd.DataFrame({"index": range(len(labels)), "ebird_code": sci, "common_name": common, "sci_name": sci})
    manifest = {"model_kind": "birdnet_zero_shot", "name": "BirdNET V2.4", "license": bn.LICENSE_NOTE,
                "synthetic": False, "global_birdnet": True}
    return LoadedRun(path=Path("."), manifest=manifest, config=birdnet_config(RunConfig()), species=species,
                     thresholds={"global": {"threshold": 0.5}, "species": {}}, model=None,
                     birdnet_columns=list(range(len(labels))))
