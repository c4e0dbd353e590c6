"""BirdNET's activations at the fine-tuning cut: computed once per recording, cached beside the decode cache.

The frozen front of BirdNET (``network.split_birdnet``) gives the same activations every epoch (no
waveform augmentation reaches BirdNET kinds), so they are computed once, like the head's embeddings,
and the tail and head train on them: on 2 CPU cores an epoch of xc-pr20 then costs seconds instead of
a full BirdNET pass (BENCHMARKS.md, "Fine-tuning BirdNET").  A recording's entry is (W, D) float32:
per 3 s window the activations at the cut, flattened (D = 4,608 for the last ≤ 5 blocks; 18 kB).
"""
from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import numpy as np

from birdcore.io.atomic import write_npy
from birdcore.models.birdnet import keras_model as bnk
from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet.engines import run_batched
from birdcore.models.birdnet_head.embeddings import EmbeddingStore

log = logging.getLogger("birdcore")
ACTIVATION_FORMAT = 1


class ActivationStore(EmbeddingStore):
    """Activations per recording, (W, D) float32 in ``root/<2 hex>/<key>.npy``, keyed by the decoded-audio
    cache entry, the cut (the first trained layer) and the converted BirdNET file (its hash and converter
    version: a new front end invalidates them)."""

    def __init__(self, root: Path, *, cut: str, width: int):
        super().__init__(root, engine="keras")
        self.cut, self.width = cut, int(width)
        self.converted = bnk.cached_model_path().name

    def path(self, audio_entry: Path) -> Path:
        key = hashlib.sha1(f"{Path(audio_entry).name}|{self.cut}|{self.converted}|{ACTIVATION_FORMAT}".encode())
        key = key.hexdigest()
        return self.root / key[:2] / f"{key}.npy"

    def save(self, audio_entry: Path, activations: np.ndarray) -> None:
        write_npy(self.path(audio_entry), np.asarray(activations, dtype="<f4"))


def compute_activations(data, front, *, cut: str, cache_root: Path) -> ActivationStore:
    """Fill the store with ``front``'s activations for every usable recording of ``data`` (decode cache at
    48 kHz) and point ``data.item`` at it; returns the store."""
    store = ActivationStore(Path(cache_root) / "birdnet-activations", cut=cut, width=front.output.shape[-1])
    entries = [data.cache.entry_path(p) for p in data.df["path"]]
    todo = [i for i in range(len(entries)) if store.load(entries[i]) is None]
    if todo:
        from tqdm import tqdm

        log.info("BirdNET activations before %s: computing %d recordings (%d cached)", cut, len(todo),
                 len(entries) - len(todo))
        for i in tqdm(todo, desc="birdnet front", unit="rec", file=sys.stderr,
                      mininterval=0.5 if sys.stderr.isatty() else 30):
            wave = np.asarray(data.cache.load(data.df["path"].iat[i]), dtype=np.float32)
            store.save(entries[i], run_batched(front, bn.windows(wave)))
    data.item = lambda i: np.asarray(store.load(entries[i]), dtype=np.float32)
    return store
