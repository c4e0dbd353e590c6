"""The usable recordings of a run, with their split and labels in the model's species order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from birdcore.data.cache import DecodeCache
from birdcore.data.labels import label_indices


@dataclass
class Dataset:
    """Usable recordings of a run.

    ``df``: ``read_metadata`` rows that decoded, plus column ``split`` (train/val/test/unused);
    ``species``: ebird_code, common_name, sci_name in model output order; ``cache``: the decode
    cache holding each recording's waveform.  A kind whose model consumes something else than
    waveforms (BirdNET embeddings) sets ``item`` (and ``train_item`` for training crops).
    """

    df: pd.DataFrame
    species: pd.DataFrame
    cache: DecodeCache
    item: Callable[[int], np.ndarray] | None = None  # model input of recording i, if not its waveform
    train_item: Callable[[int], np.ndarray] | None = None  # training input of recording i, if not ``load(i)``

    @property
    def codes(self) -> list[str]:
        return self.species["ebird_code"].tolist()

    def waveform(self, i: int) -> np.ndarray:
        """Recording i's cached waveform (n_samples,) at the cache's rate (memory-mapped float16)."""
        return self.cache.load(self.df["path"].iat[i])

    def load(self, i: int) -> np.ndarray:
        """Recording i as the model consumes it: cached waveform, or what the kind set ``item`` to."""
        return self.item(i) if self.item is not None else self.waveform(i)

    def load_train(self, i: int) -> np.ndarray:
        """Recording i as training batches draw from it (``train_item``, else ``load``)."""
        return self.train_item(i) if self.train_item is not None else self.load(i)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.df["split"].to_numpy() == split)

    def labels(self) -> tuple[np.ndarray, list[list[int]]]:
        """Primary species index (N,) and secondary species indices per recording."""
        return label_indices(self.df["primary"], self.df["secondary"], self.codes)
