"""Plotly figure builders for the dashboard (no Streamlit here).

Every builder is a plain function returning a ``plotly.graph_objects.Figure``;
empty input gives a figure with no traces and a "no data" annotation instead of
an error.  Threshold markers are layout shapes (not traces), operating points
are one extra marker trace.  Inputs are the DataFrames of :mod:`birdcore.analysis.scores`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from birdcore.analysis.scores import probit

POS_COLOUR, NEG_COLOUR, OP_COLOUR = "#1f77b4", "#d62728", "#2ca02c"
_DET_TICKS = [0.0001, 0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99]  # probit-spaced enough to stay readable at half width


def no_data_figure(title: str = "", *, message: str = "no data") -> go.Figure:
    """An empty figure (no traces) with ``message`` in the middle."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"size": 16})
    fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def _empty(df: pd.DataFrame | None, columns: Sequence[str]) -> bool:
    return df is None or len(df) == 0 or any(c not in df for c in columns)


def _operating_point(fig: go.Figure, x: float, y: float, *, name: str = "operating point") -> None:
    fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=name,
                             marker={"size": 12, "color": OP_COLOUR, "symbol": "x"}))


def _threshold_line(fig: go.Figure, threshold: float | None) -> None:
    if threshold is not None and np.isfinite(threshold):
        fig.add_vline(x=float(threshold), line_dash="dash", line_color="black",
                      annotation_text=f"threshold {threshold:.3g}")


def roc_figure(points_df: pd.DataFrame, *, operating_point: tuple[float, float] | None = None,
               title: str = "ROC curve") -> go.Figure:
    """ROC from ``points_df`` (columns fpr, tpr[, threshold]); ``operating_point`` is (fpr, tpr).

    Traces: the curve, the chance diagonal, and the operating point when given.
    """
    if _empty(points_df, ("fpr", "tpr")):
        return no_data_figure(title)
    thr = points_df["threshold"] if "threshold" in points_df else None
    fig = go.Figure(go.Scatter(x=points_df["fpr"], y=points_df["tpr"], mode="lines", name="ROC",
                               customdata=thr, line={"color": POS_COLOUR},
                               hovertemplate="FPR %{x:.4f}<br>TPR %{y:.4f}"
                               + ("<br>threshold %{customdata:.4f}" if thr is not None else "")
                               + "<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line={"dash": "dot", "color": "grey"}, hoverinfo="skip"))
    if operating_point is not None:
        _operating_point(fig, *operating_point)
    fig.update_layout(title=title, xaxis_title="false-positive rate", yaxis_title="true-positive rate (recall)",
                      xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return fig


def det_figure(points_df: pd.DataFrame, *, operating_point: tuple[float, float] | None = None,
               title: str = "DET curve") -> go.Figure:
    """DET: miss rate (fnr) against fpr on normal-deviate (probit) axes, ticks labelled in %.

    ``points_df`` has columns fpr, fnr; ``operating_point`` is (fpr, tpr), as for
    :func:`roc_figure`, and is drawn at fnr = 1 - tpr.  Traces: the curve, and
    the operating point when given.
    """
    if _empty(points_df, ("fpr", "fnr")):
        return no_data_figure(title)
    fig = go.Figure(go.Scatter(x=probit(points_df["fpr"].to_numpy()), y=probit(points_df["fnr"].to_numpy()),
                               customdata=np.stack([points_df["fpr"], points_df["fnr"]], axis=1),
                               mode="lines", name="DET", line={"color": POS_COLOUR},
                               hovertemplate="FPR %{customdata[0]:.3%}<br>FNR %{customdata[1]:.3%}<extra></extra>"))
    if operating_point is not None:
        fpr, tpr = operating_point
        _operating_point(fig, float(probit(fpr)), float(probit(1.0 - tpr)))
    ticks = {"tickvals": probit(np.array(_DET_TICKS)).tolist(), "ticktext": [f"{100 * p:g}%" for p in _DET_TICKS]}
    span = [float(probit(1e-4)) - 0.1, float(probit(0.995))]
    fig.update_layout(title=title, xaxis={"title": "false-positive rate", "range": span, **ticks},
                      yaxis={"title": "miss rate (false-negative rate)", "range": span, **ticks})
    return fig


def pr_figure(precision: np.ndarray, recall: np.ndarray, *, operating_point: tuple[float, float] | None = None,
              title: str = "Precision-recall curve") -> go.Figure:
    """Precision (K,) against recall (K,); ``operating_point`` is (recall, precision).

    Traces: the curve, and the operating point when given.
    """
    precision, recall = np.asarray(precision, dtype=float).ravel(), np.asarray(recall, dtype=float).ravel()
    if precision.size == 0 or precision.size != recall.size:
        return no_data_figure(title)
    fig = go.Figure(go.Scatter(x=recall, y=precision, mode="lines", name="PR", line={"color": POS_COLOUR}))
    if operating_point is not None and None not in operating_point:
        _operating_point(fig, *operating_point)
    fig.update_layout(title=title, xaxis_title="recall", yaxis_title="precision",
                      xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return fig


def score_distributions_figure(pos: np.ndarray, neg: np.ndarray, *, threshold: float | None = None,
                               log_y: bool = False, bins: int = 50, normalise: bool = True,
                               title: str = "Score distributions") -> go.Figure:
    """Overlaid histograms of positive (P,) and negative (M,) scores over [0, 1].

    Binned here with numpy (bars, so large negative sets stay small in the
    browser); ``normalise`` shows each set's fraction per bin.  Traces: one bar
    trace per non-empty set; the threshold is a dashed line.
    """
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    fig = go.Figure()
    for values, name, colour in ((pos, "positives", POS_COLOUR), (neg, "negatives", NEG_COLOUR)):
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            continue
        counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=edges)
        y = counts / values.size if normalise else counts
        fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=y, width=np.diff(edges), name=f"{name} ({values.size})",
                             marker_color=colour, opacity=0.6))
    if not fig.data:
        return no_data_figure(title)
    _threshold_line(fig, threshold)
    fig.update_layout(title=title, barmode="overlay", xaxis_title="score",
                      yaxis_title="fraction of pairs" if normalise else "pairs",
                      yaxis_type="log" if log_y else "linear", bargap=0)
    return fig


_CURVE_LINES = (("fpr", "false-positive rate"), ("tpr", "recall"), ("precision", "precision"),
                ("coverage", "coverage"), ("accuracy_covered", "accuracy (covered)"))


def metrics_vs_threshold_figure(curve_df: pd.DataFrame, *, threshold: float | None = None,
                                title: str = "Rates against threshold") -> go.Figure:
    """fpr, tpr, precision, coverage, accuracy_covered against threshold (``ThresholdExplorer.curve``).

    Traces: one line per one of those columns present (5 for a full curve).
    """
    if _empty(curve_df, ("threshold",)):
        return no_data_figure(title)
    fig = go.Figure()
    for column, label in _CURVE_LINES:
        if column in curve_df:
            fig.add_trace(go.Scatter(x=curve_df["threshold"], y=curve_df[column], mode="lines", name=label))
    _threshold_line(fig, threshold)
    fig.update_layout(title=title, xaxis_title="threshold", yaxis_title="rate", yaxis_range=[0, 1.02],
                      hovermode="x unified")
    return fig


def accuracy_coverage_figure(curve_df: pd.DataFrame, *, threshold: float | None = None,
                             title: str = "Accuracy against coverage") -> go.Figure:
    """Top-1 accuracy of the covered recordings against coverage, over the curve's thresholds.

    Traces: the curve, plus a marker at the row nearest ``threshold`` when given.
    """
    if _empty(curve_df, ("coverage", "accuracy_covered", "threshold")):
        return no_data_figure(title)
    fig = go.Figure(go.Scatter(x=curve_df["coverage"], y=curve_df["accuracy_covered"], mode="lines",
                               name="accuracy / coverage", customdata=curve_df["threshold"],
                               hovertemplate="coverage %{x:.3f}<br>accuracy %{y:.3f}"
                                             "<br>threshold %{customdata:.4f}<extra></extra>"))
    if threshold is not None:
        row = curve_df.iloc[int(np.argmin(np.abs(curve_df["threshold"].to_numpy() - threshold)))]
        _operating_point(fig, row["coverage"], row["accuracy_covered"], name=f"threshold {threshold:.3g}")
    fig.update_layout(title=title, xaxis_title="coverage (recordings with top score >= threshold)",
                      yaxis_title="top-1 accuracy of covered", xaxis_range=[0, 1.02], yaxis_range=[0, 1.02])
    return fig


def training_curves_figure(history_df: pd.DataFrame, *, title: str = "Training") -> go.Figure:
    """loss and val_loss (left axis) and val_top1 (right axis) against epoch (history.csv).

    Traces: one per column present among loss, val_loss, val_top1.
    """
    if _empty(history_df, ("epoch",)):
        return no_data_figure(title)
    fig = go.Figure()
    for column, dash in (("loss", None), ("val_loss", "dash")):
        if column in history_df:
            fig.add_trace(go.Scatter(x=history_df["epoch"], y=history_df[column], mode="lines+markers",
                                     name=column, line={"dash": dash}))
    if "val_top1" in history_df:
        fig.add_trace(go.Scatter(x=history_df["epoch"], y=history_df["val_top1"], mode="lines+markers",
                                 name="val_top1", yaxis="y2"))
    if not fig.data:
        return no_data_figure(title)
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="loss",
                      yaxis2={"title": "validation top-1", "overlaying": "y", "side": "right", "range": [0, 1]})
    return fig


def spectrogram_figure(image: np.ndarray, *, seconds: float, title: str = "Log-mel spectrogram") -> go.Figure:
    """Heatmap of ``image`` (n_mels, n_frames), row 0 the lowest mel bin, over ``seconds`` of audio.

    Traces: one heatmap.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or image.size == 0:
        return no_data_figure(title)
    n_mels, n_frames = image.shape
    times = (np.arange(n_frames) + 0.5) * (float(seconds) / n_frames)
    fig = go.Figure(go.Heatmap(z=image, x=times, y=np.arange(n_mels), colorscale="Viridis",
                               colorbar={"title": "dB"},
                               hovertemplate="%{x:.2f} s<br>mel bin %{y}<br>%{z:.1f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="time (s)", yaxis_title="mel bin")
    return fig


def segment_heatmap_figure(segment_scores: np.ndarray, *, species_labels: list[str], segment_seconds: float,
                           hop_seconds: float | None = None, title: str = "Segment scores") -> go.Figure:
    """Species × time heatmap of ``segment_scores`` (S, C_shown) with one label per column.

    Segment j covers [j × hop, j × hop + ``segment_seconds``), hop = ``hop_seconds`` (overlapping
    BirdNET windows) or ``segment_seconds``; it is drawn at its centre.  Traces: one heatmap.
    """
    scores = np.asarray(segment_scores, dtype=np.float32)
    if scores.ndim != 2 or scores.size == 0:
        return no_data_figure(title)
    if len(species_labels) != scores.shape[1]:
        raise ValueError(f"{len(species_labels)} labels for {scores.shape[1]} species columns")
    starts = np.arange(scores.shape[0]) * float(segment_seconds if hop_seconds is None else hop_seconds)
    fig = go.Figure(go.Heatmap(z=scores.T, x=starts + segment_seconds / 2, y=list(species_labels),
                               zmin=0.0, zmax=1.0, colorscale="Viridis", colorbar={"title": "score"},
                               hovertemplate="%{y}<br>%{x:.1f} s<br>score %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="time (s, segment centre)", yaxis_title="species",
                      yaxis={"type": "category"})
    return fig


def confusion_figure(matrix: pd.DataFrame, *, title: str = "Primary species vs top-1") -> go.Figure:
    """Heatmap of a ``analysis.confusion_matrix`` (rows: primary, columns: top-1), counts written
    in the non-zero cells.  Traces: one heatmap.

    The cell texts are one NumPy array, not nested lists: Plotly validates and copies lists element by
    element, which took 0.3-0.7 s for 264 × 264 species on every render of the run overview."""
    if matrix.empty:
        return no_data_figure(title, message="no misclassified recordings")
    z = matrix.to_numpy()
    text = np.where(z != 0, z.astype(str), "")
    fig = go.Figure(go.Heatmap(z=z, x=list(matrix.columns), y=list(matrix.index), text=text,
                               texttemplate="%{text}", colorscale="Blues", colorbar={"title": "recordings"},
                               hovertemplate="primary %{y}<br>top-1 %{x}<br>%{z} recordings<extra></extra>"))
    side = max(400, 22 * len(matrix) + 150)
    fig.update_layout(title=title, xaxis_title="top-1 (predicted)", yaxis_title="primary (true)", height=side,
                      xaxis={"type": "category"}, yaxis={"type": "category", "autorange": "reversed"})
    return fig
