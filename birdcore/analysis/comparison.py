"""Two runs on the same test recordings: per-recording top-1 outcomes and an exact McNemar test."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from birdcore.analysis.scores import ScoreTable


def compare_runs(table_a: ScoreTable, table_b: ScoreTable) -> pd.DataFrame:
    """Per-recording comparison of two runs on the recordings and species they share.

    Recordings are joined on recording_id (in ``table_a``'s order) and kept when
    both runs give them the same primary species and that species is shared.
    Scores are restricted to the shared species codes, so top-1 is judged among
    those only (ties count against the recording).  Columns: recording_id,
    primary (code), a_top1_correct, b_top1_correct, a_score_primary, b_score_primary.
    """
    shared = [code for code in table_a.species if code in set(table_b.species)]
    cols_a = np.array([table_a.column(s) for s in shared], dtype=np.int64)
    cols_b = np.array([table_b.column(s) for s in shared], dtype=np.int64)
    where_b = {rid: i for i, rid in enumerate(table_b.recording_id)}
    rows_a = np.array([i for i, rid in enumerate(table_a.recording_id) if rid in where_b], dtype=np.int64)
    rows_b = np.array([where_b[table_a.recording_id[i]] for i in rows_a], dtype=np.int64)
    code_a = np.asarray(table_a.species, dtype=object)[table_a.primary[rows_a]] if len(rows_a) else np.array([])
    code_b = np.asarray(table_b.species, dtype=object)[table_b.primary[rows_b]] if len(rows_b) else np.array([])
    position = {code: j for j, code in enumerate(shared)}
    keep = np.array([a == b and a in position for a, b in zip(code_a, code_b)], dtype=bool)
    rows_a, rows_b, codes = rows_a[keep], rows_b[keep], code_a[keep]
    prim = np.array([position[c] for c in codes], dtype=np.int64)
    out = {"recording_id": table_a.recording_id[rows_a], "primary": codes.astype(str)}
    for tag, table, rows, cols in (("a", table_a, rows_a, cols_a), ("b", table_b, rows_b, cols_b)):
        scores = table.scores[np.ix_(rows, cols)].astype(np.float64)
        own = scores[np.arange(len(rows)), prim] if len(rows) else np.zeros(0)
        out[f"{tag}_top1_correct"] = (scores >= own[:, None]).sum(axis=1) == 1
        out[f"{tag}_score_primary"] = own
    columns = ["recording_id", "primary", "a_top1_correct", "b_top1_correct", "a_score_primary", "b_score_primary"]
    return pd.DataFrame(out, columns=columns)


def compare_summary(comparison: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers of :func:`compare_runs`: n_shared, a_top1, b_top1 (accuracies; None when
    n_shared is 0), both_right, only_a, only_b, both_wrong (recording counts), and mcnemar_p: the
    exact two-sided McNemar p-value of the top-1 difference (:func:`mcnemar_exact_p`)."""
    a = comparison["a_top1_correct"].to_numpy(dtype=bool)
    b = comparison["b_top1_correct"].to_numpy(dtype=bool)
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return {"n_shared": n, "a_top1": float(a.mean()) if n else None, "b_top1": float(b.mean()) if n else None,
            "both_right": int((a & b).sum()), "only_a": only_a, "only_b": only_b,
            "both_wrong": int((~a & ~b).sum()), "mcnemar_p": mcnemar_exact_p(only_a, only_b)}


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar test on paired outcomes: the chance, if both runs were equally good,
    of a split of the ``only_a + only_b`` discordant recordings at least this uneven
    (binomial, p = 1/2).  1.0 when there are none."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))
