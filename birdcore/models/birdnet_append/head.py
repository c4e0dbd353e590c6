"""The added species' scores: a linear layer on BirdNET's window embedding, trained to compete with
BirdNET's own (fixed) logits.

BirdNET's logits are themselves a linear layer on the same 1,024-d embedding (``runtime.BirdNET``:
logits = e · Wᵀ + b), so an added species' logit e · k + c is on BirdNET's scale: its sigmoid is a
score like BirdNET's, and the recording score is the max over windows, as zero-shot's.

Training (``fit_added``), full batch, deterministic: for each added species a, over the training
recordings, with z_a the recording's logit of a pooled over its windows (a smooth max, τ·log Σ exp(l/τ),
so that every window of a few recordings teaches the layer, not only the top one; τ = 0: the max) and t
the recording's top BirdNET logit among the run's known species (max over windows and species):

- binary cross-entropy of sigmoid(z_a) (a's recordings positive, every other recording negative),
  positives and negatives weighted equally;
- a hinge that makes a recording of a known species stay with BirdNET: max(0, z_a − t + margin);
- a hinge that makes a recording of a beat BirdNET's top species and the other added ones:
  max(0, max(t, z_other) − z_a + margin); both hinges weigh every recording alike (``hinge_weight`` / N),
  so that the many known recordings are not outweighed by the few of an added species;
- L2 on the weights (``l2`` × Σk²).

The smooth max is at least the max that scoring takes (by at most τ·log W): a known species' recording
kept below BirdNET's top in training stays below it when scored, while an added species' own
recordings may score a little lower than in training (validation chose τ = 3 over the max:
BENCHMARKS.md).

Shapes: W windows, E = 1024 embedding features, A added species.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdcore.models.base import sigmoid

HEAD_FILE = "added_species.npz"  # in a run: the added species' layer (kernel (E, A), bias (A,))
STEPS = 400  # full-batch Adam steps
LEARNING_RATE = 0.01
HINGE_WEIGHT = 1.0  # weight of the hinges per recording, relative to the cross-entropy's total


@dataclass
class AddedHead:
    """kernel (E, A) and bias (A,) float32: window logits of the added species = embeddings · kernel + bias."""

    kernel: np.ndarray
    bias: np.ndarray

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """(W, A) float32 logits of the added species for (W, E) window embeddings."""
        return (np.asarray(embeddings, np.float32) @ self.kernel + self.bias).astype(np.float32)

    def save(self, path: Path) -> None:
        from birdcore.io.atomic import write_npz

        write_npz(Path(path), kernel=self.kernel.astype(np.float32), bias=self.bias.astype(np.float32))

    @classmethod
    def load(cls, path: Path) -> "AddedHead":
        """The layer saved in ``path``; ValueError naming the file when it is not one."""
        try:
            with np.load(Path(path)) as z:
                head = cls(np.asarray(z["kernel"], np.float32), np.asarray(z["bias"], np.float32))
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable added-species layer ({exc})") from None
        if head.kernel.ndim != 2 or head.bias.shape != head.kernel.shape[1:]:
            raise ValueError(f"{path}: kernel {head.kernel.shape} and bias {head.bias.shape} do not match")
        return head


def fit_added(embeddings: list[np.ndarray], top_known: list[np.ndarray], labels: np.ndarray, n_added: int, *,
              margin: float, l2: float, steps: int = STEPS, learning_rate: float = LEARNING_RATE,
              hinge_weight: float = HINGE_WEIGHT, temperature: float = 0.0) -> AddedHead:
    """Train the added species' layer.

    Args:
        embeddings: per recording, its windows' embeddings (W_r, E).
        top_known: per recording, its windows' top BirdNET logit among the known species (W_r,).
        labels: (N,) the added species of each recording (0..A−1), or −1 for a known species' recording.
        n_added: A.
        temperature: 0: a recording's z is the max over its windows (as scored); > 0: the smooth max
            τ·log Σ exp(l/τ) in training, whose gradient reaches every window by its softmax weight.
    """
    labels = np.asarray(labels)
    n, width = len(embeddings), embeddings[0].shape[1]
    top = np.array([float(np.max(t)) for t in top_known], np.float32)  # t per recording
    pos = labels[:, None] == np.arange(n_added)[None]  # (N, A)
    n_pos, n_neg = pos.sum(0), (~pos).sum(0)
    w = np.where(pos, 0.5 / np.maximum(n_pos, 1), 0.5 / np.maximum(n_neg, 1)).astype(np.float32)  # (N, A)
    known = labels < 0
    kernel = np.zeros((width, n_added), np.float32)
    bias = np.full(n_added, float(np.median(top)) - margin, np.float32)  # starts below BirdNET's usual top
    m_k, v_k, m_b, v_b = (np.zeros_like(kernel), np.zeros_like(kernel), np.zeros_like(bias), np.zeros_like(bias))
    embs = [np.asarray(e, np.float32) for e in embeddings]
    cols = np.arange(n_added)
    for step in range(1, steps + 1):
        z, picked = np.empty((n, n_added), np.float32), []
        for r, e in enumerate(embs):
            logits = e @ kernel + bias
            if temperature > 0:
                top_l = logits.max(axis=0)
                soft = np.exp((logits - top_l) / temperature)  # (W, A)
                z[r] = top_l + temperature * np.log(soft.sum(axis=0))
                picked.append((soft / soft.sum(axis=0)).T @ e)  # (A, E): dz/dkernel, softmax-weighted windows
                continue
            idx = logits.argmax(axis=0)
            z[r] = logits[idx, cols]
            picked.append(e[idx])  # (A, E): the window whose logit is each species' max
        grad = w * (sigmoid(z) - pos)  # cross-entropy
        over = known[:, None] & (z - top[:, None] + margin > 0)  # a known recording taken, or nearly
        grad += np.where(over, hinge_weight / n, 0.0)
        rival = np.where(pos, -np.inf, z)
        rival = np.maximum(top, rival.max(axis=1, initial=-np.inf))  # BirdNET's top, or another added one
        under = pos & (rival[:, None] - z + margin > 0)
        grad -= np.where(under, hinge_weight / n, 0.0)
        g_k = sum(p.T * g[None] for p, g in zip(picked, grad)) + 2 * l2 * kernel
        g_b = grad.sum(axis=0)
        for p, g, m, v in ((kernel, g_k, m_k, v_k), (bias, g_b, m_b, v_b)):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= learning_rate * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    return AddedHead(kernel, bias)
