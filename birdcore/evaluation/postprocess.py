"""Post-processing of soundscape row scores: named steps, each switchable, applied in order.

``scores`` (R, C) in [0, 1], rows of one or more files in time order within each file (``files``
(R,) gives each row's file).  The steps, in order:

1. ``smoothing`` w: each row takes (1 − w) of its own score and w of the mean of its neighbours
   in the same file (edges use themselves): calls often span a row boundary.
2. ``file_boost`` b: a species whose best row in the file scores at least ``boost_min`` has its
   scores in that file raised to the power (1 − b): where a bird is confidently heard once, its
   quieter calls count too (the Cornell 2020 second place did this).
3. ``location``: species the place's species mask drops score 0 (``masks``: a (C,) bool per file;
   only when places are known).
4. ``top_k`` k: at most the k best species of a row keep their scores, the others score 0.

Settings are saved with a run (``soundscape.json``) so scoring applies what calibration chose.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PostProcessing:
    smoothing: float = 0.0  # weight of the neighbouring rows' mean, 0 = off
    file_boost: float = 0.0  # exponent reduction for species confidently detected in the file, 0 = off
    boost_min: float = 0.5  # a file's best row score that counts as a confident detection
    location: bool = False  # apply the location filter (when places are known)
    top_k: int = 0  # species kept per row, 0 = all

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "PostProcessing":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def describe(self) -> str:
        parts = [f"smoothing {self.smoothing:g}" if self.smoothing else None,
                 f"file boost {self.file_boost:g} (from {self.boost_min:g})" if self.file_boost else None,
                 "location filter" if self.location else None,
                 f"top {self.top_k} per row" if self.top_k else None]
        return ", ".join(p for p in parts if p) or "none"


def _by_file(files: np.ndarray):
    """Row index arrays of each file, in order of first appearance."""
    _, first = np.unique(files, return_index=True)
    for key in files[np.sort(first)]:
        yield key, np.flatnonzero(files == key)


def smooth(scores: np.ndarray, files: np.ndarray, weight: float) -> np.ndarray:
    out = scores.copy()
    for _, idx in _by_file(files):
        s = scores[idx]
        prev = np.concatenate([s[:1], s[:-1]])
        nxt = np.concatenate([s[1:], s[-1:]])
        out[idx] = (1.0 - weight) * s + weight * 0.5 * (prev + nxt)
    return out


def boost(scores: np.ndarray, files: np.ndarray, amount: float, minimum: float) -> np.ndarray:
    out = scores.copy()
    for _, idx in _by_file(files):
        s = scores[idx]
        confident = s.max(axis=0) >= minimum
        out[np.ix_(idx, np.flatnonzero(confident))] = np.power(s[:, confident], 1.0 - amount)
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    if k <= 0 or k >= scores.shape[1]:
        return scores
    out = np.zeros_like(scores)
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    rows = np.arange(len(scores))[:, None]
    out[rows, best] = scores[rows, best]
    return out


def apply(post: PostProcessing, scores: np.ndarray, files: np.ndarray, masks: dict | None = None) -> np.ndarray:
    """The post-processed scores (a new array); ``masks``: file key → (C,) bool kept species."""
    out = np.asarray(scores, np.float32)
    if post.smoothing:
        out = smooth(out, files, post.smoothing)
    if post.file_boost:
        out = boost(out, files, post.file_boost, post.boost_min)
    if post.location and masks:
        out = out.copy()
        for key, idx in _by_file(files):
            keep = masks.get(key)
            if keep is not None:
                out[np.ix_(idx, np.flatnonzero(~keep))] = 0.0
    if post.top_k:
        out = top_k(out, post.top_k)
    return out.astype(np.float32)
