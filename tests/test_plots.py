"""birdcore.analysis.plots: each builder returns a Figure with the expected traces and copes with empty input."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from birdcore.analysis import scores as A
from birdcore.analysis import plots as P
from birdcore.analysis import thresholds as T
from birdcore.evaluation.metrics import pr_points


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    n, c = 40, 5
    primary = rng.integers(0, c, n)
    scores = rng.random((n, c)).astype(np.float32) * 0.6
    scores[np.arange(n), primary] += 0.4
    return A.ScoreTable(recording_id=[f"r{i}" for i in range(n)], species=[f"s{j}" for j in range(c)],
                        primary=primary, scores=scores, secondary=np.zeros((n, c), bool))


def is_no_data(fig) -> bool:
    return isinstance(fig, go.Figure) and len(fig.data) == 0 and any(
        a.text == "no data" for a in fig.layout.annotations)


def test_roc_and_det(table):
    pts = A.roc_det_points(table)
    assert len(P.roc_figure(pts).data) == 2
    fig = P.roc_figure(pts, operating_point=(0.1, 0.8), title="pooled")
    assert len(fig.data) == 3 and fig.layout.title.text == "pooled"
    assert len(P.det_figure(pts).data) == 1
    det = P.det_figure(pts, operating_point=(0.0, 1.0))  # (fpr, tpr): drawn at fnr 0, clipped to finite
    assert len(det.data) == 2 and np.all(np.isfinite(det.data[1].x)) and np.all(np.isfinite(det.data[0].y))
    det = P.det_figure(pts, operating_point=(0.1, 0.8))
    assert det.data[1].x[0] == pytest.approx(A.probit(0.1)) and det.data[1].y[0] == pytest.approx(A.probit(0.2))
    assert "0.1%" in det.layout.xaxis.ticktext and "50%" in det.layout.xaxis.ticktext  # the default target FPR is marked
    empty = A.roc_det_points(table, species="s0").iloc[0:0]
    assert is_no_data(P.roc_figure(empty)) and is_no_data(P.det_figure(empty))
    assert is_no_data(P.roc_figure(pd.DataFrame()))


def test_pr(table):
    pos, neg = A.positive_negative_scores(table, None)
    precision, recall, _ = pr_points(pos, neg)
    assert len(P.pr_figure(precision, recall).data) == 1
    assert len(P.pr_figure(precision, recall, operating_point=(0.5, 0.9)).data) == 2
    assert is_no_data(P.pr_figure(np.array([]), np.array([])))


def test_score_distributions(table):
    pos, neg = A.positive_negative_scores(table, "s1")
    fig = P.score_distributions_figure(pos, neg, threshold=0.5, log_y=True)
    assert len(fig.data) == 2 and fig.layout.yaxis.type == "log" and len(fig.layout.shapes) == 1
    assert sum(fig.data[0].y) == pytest.approx(1.0)
    assert len(P.score_distributions_figure(pos, np.array([]), normalise=False).data) == 1
    assert is_no_data(P.score_distributions_figure(np.array([]), np.array([])))


def test_curve_figures(table):
    curve = T.ThresholdExplorer(table).curve(n_points=30)
    fig = P.metrics_vs_threshold_figure(curve, threshold=0.4)
    assert len(fig.data) == 5 and len(fig.layout.shapes) == 1
    assert len(P.accuracy_coverage_figure(curve).data) == 1
    assert len(P.accuracy_coverage_figure(curve, threshold=0.4).data) == 2
    assert is_no_data(P.metrics_vs_threshold_figure(curve.iloc[0:0]))
    assert is_no_data(P.accuracy_coverage_figure(pd.DataFrame()))


def test_training_curves(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.9, 0.5, 0.3], "val_top1": [0.3, 0.6, 0.8],
                            "val_loss": [0.8, 0.6, 0.5], "seconds": [4.5, 0.7, 0.8]})
    fig = P.training_curves_figure(history)
    assert len(fig.data) == 3 and fig.data[2].yaxis == "y2"
    assert is_no_data(P.training_curves_figure(A.load_history(tmp_path)))


def test_spectrogram_and_segments():
    fig = P.spectrogram_figure(np.random.default_rng(1).random((32, 100)), seconds=5.0)
    assert len(fig.data) == 1 and fig.data[0].x[-1] == pytest.approx(5.0 - 0.025)
    assert is_no_data(P.spectrogram_figure(np.zeros((32, 0)), seconds=0.0))
    seg = np.random.default_rng(2).random((4, 3)).astype(np.float16)
    fig = P.segment_heatmap_figure(seg, species_labels=["a", "b", "c"], segment_seconds=5.0)
    assert len(fig.data) == 1 and np.asarray(fig.data[0].z).shape == (3, 4)
    assert list(fig.data[0].x) == [2.5, 7.5, 12.5, 17.5]
    assert is_no_data(P.segment_heatmap_figure(np.zeros((0, 3)), species_labels=["a", "b", "c"],
                                               segment_seconds=5.0))


def test_confusion_figure(table):
    matrix = A.confusion_matrix(table, only_confused=False)
    fig = P.confusion_figure(matrix)
    assert isinstance(fig, go.Figure) and len(fig.data) == 1
    z = np.asarray(fig.data[0].z)
    assert z.sum() == table.n_recordings and list(fig.data[0].y) == list(matrix.index)
    zero = [(i, j) for i in range(len(z)) for j in range(len(z)) if z[i][j] == 0]
    assert all(fig.data[0].text[i][j] == "" for i, j in zero)  # zero cells stay blank
    assert isinstance(P.confusion_figure(matrix.iloc[:0, :0]), go.Figure)
