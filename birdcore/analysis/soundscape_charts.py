"""Altair charts of the dashboard's Soundscapes page (no Streamlit here).

Inputs are the frames of :mod:`birdcore.analysis.soundscapes` (``SoundscapeView.timeline``,
``label_marks``, ``curve``).  The timeline is two linked views of one file:

- *scores*: each shown species' post-processed score per 5 s row (a point at the row's middle),
  the labelled (row, species) pairs as large diamonds on their line, the threshold as a dashed rule
  (and a coloured rule for a species whose own threshold differs); clicking a point selects its row
  (selection ``pick``, field ``row``), which the page plays, and the selected row is shaded;
- *labels*: the labelled rows of each species as bars (outlined where the species was detected);
  dragging across it zooms the scores to that time span (selection ``zoom``).

Clicking a species in the legend highlights it in both views (selection ``species``).
"""
from __future__ import annotations

import altair as alt
import pandas as pd

ROW_SELECTION = "pick"  # the timeline's clickable-row selection (field "row": the view's row index)
THRESHOLD_COLOUR, SELECTED_COLOUR = "#444444", "#f2b705"
RATE_COLUMNS = {"row_f1": "row-wise F1", "precision": "precision", "recall": "recall", "macro_f1": "macro F1"}


def timeline_chart(lines: pd.DataFrame, marks: pd.DataFrame, *, threshold: float, selected_row: int | None = None,
                   title: str = "", width: int = 900) -> alt.VConcatChart:
    """The linked scores and labels views of one file (see the module docstring).

    ``lines``: ``SoundscapeView.timeline`` (row, n, row_id, start_s, end_s, mid_s, species, name, score,
    threshold, detected, labelled); ``marks``: ``label_marks``; ``threshold``: the global threshold;
    ``selected_row``: the row (``row`` value) selected at first.
    """
    rows = lines.drop_duplicates("row")[["row", "n", "row_id", "start_s", "end_s"]]
    if not len(rows):
        rows = marks.drop_duplicates("row")[["row", "n", "row_id", "start_s", "end_s"]]
    end = float(rows["end_s"].max()) if len(rows) else 5.0
    labels_of = marks.groupby("row")["species"].agg(" ".join) if len(marks) else pd.Series(dtype=str)
    rows = rows.assign(labels=rows["row"].map(labels_of).fillna("nocall"))

    species = alt.selection_point(name="species", fields=["species"], bind="legend")
    picked = alt.selection_point(name=ROW_SELECTION, fields=["row"], on="click", clear=False, empty=False,
                                 **({"value": [{"row": int(selected_row)}]} if selected_row is not None else {}))
    zoom = alt.selection_interval(name="zoom", encodings=["x"])
    x_zoomed = alt.Scale(domain={"param": "zoom", "encoding": "x"}, nice=False)
    colour = alt.Color("species:N", title="species", legend=alt.Legend(orient="top"))

    bands = alt.Chart(rows).mark_rect(color=SELECTED_COLOUR, cursor="pointer").encode(
        x=alt.X("start_s:Q", title="time (s)", scale=x_zoomed), x2="end_s:Q",
        opacity=alt.condition(picked, alt.value(0.35), alt.value(0.0)),
        tooltip=[alt.Tooltip("row_id:N", title="row"), alt.Tooltip("start_s:Q", title="from (s)"),
                 alt.Tooltip("end_s:Q", title="to (s)"), alt.Tooltip("labels:N", title="labelled")],
    )
    tips = [alt.Tooltip("row_id:N", title="row"), alt.Tooltip("name:N", title="species"),
            alt.Tooltip("score:Q", format=".3f"), alt.Tooltip("threshold:Q", format=".3f"),
            alt.Tooltip("labelled:N"), alt.Tooltip("detected:N")]
    base = alt.Chart(lines).encode(
        x=alt.X("mid_s:Q", title="time (s)", scale=x_zoomed),
        y=alt.Y("score:Q", title="score", scale=alt.Scale(domain=[0, 1])),
        color=colour, opacity=alt.condition(species, alt.value(1.0), alt.value(0.15)), tooltip=tips)
    score_lines = base.mark_line(point=alt.OverlayMarkDef(size=60, cursor="pointer"), clip=True).add_params(
        species, picked)  # one layer holds both: Altair 6 lifts the params of a layer to all its views
    labelled = base.transform_filter(alt.datum.labelled).mark_point(shape="diamond", size=160, filled=True,
                                                                     stroke="black", strokeWidth=1, clip=True)
    rules = [alt.Chart(pd.DataFrame({"threshold": [float(threshold)]})).mark_rule(
        strokeDash=[6, 4], color=THRESHOLD_COLOUR).encode(y="threshold:Q",
                                                          tooltip=[alt.Tooltip("threshold:Q", format=".3f")])]
    own = lines.drop_duplicates("species")
    own = own[(own["threshold"] - float(threshold)).abs() > 1e-6][["species", "name", "threshold"]]
    if len(own):
        rules.append(alt.Chart(own).mark_rule(strokeDash=[2, 2]).encode(
            y="threshold:Q", color=colour, tooltip=["name:N", alt.Tooltip("threshold:Q", format=".3f")]))
    scores = alt.layer(bands, score_lines, labelled, *rules).properties(width=width, height=260)
    if title:
        scores = scores.properties(title=title)

    span = alt.Chart(rows).mark_rect(color="#dddddd", opacity=0.25).encode(
        x=alt.X("start_s:Q", title="labels: drag to zoom the scores", scale=alt.Scale(domain=[0, end], nice=False)),
        x2="end_s:Q").add_params(zoom)
    label_view = [span]
    if len(marks):
        label_view.append(alt.Chart(marks).mark_rect(strokeWidth=2).encode(
            x="start_s:Q", x2="end_s:Q", y=alt.Y("species:N", title=None), color=colour,
            stroke=alt.condition(alt.datum.detected, alt.value("black"), alt.value(None)),
            opacity=alt.condition(species, alt.value(0.9), alt.value(0.15)),
            tooltip=[alt.Tooltip("row_id:N", title="row"), alt.Tooltip("species:N"),
                     alt.Tooltip("score:Q", format=".3f"), alt.Tooltip("detected:N")]))
    n_species = max(1, marks["species"].nunique()) if len(marks) else 1
    label_band = alt.layer(*label_view).properties(width=width, height=max(40, 18 * n_species))
    return alt.vconcat(scores, label_band).resolve_scale(color="shared")


def threshold_curve_chart(curve: pd.DataFrame, *, threshold: float, width: int = 520) -> alt.VConcatChart:
    """Row-wise F1, macro F1, precision and recall (above) and false positives per hour (below)
    against one global threshold, with the current ``threshold`` as a vertical rule.
    ``curve``: ``SoundscapeView.curve()``."""
    rates = curve.melt(id_vars="threshold", value_vars=list(RATE_COLUMNS), var_name="metric", value_name="value")
    rates["metric"] = rates["metric"].map(RATE_COLUMNS)
    rates = rates.dropna(subset=["value"])
    x = alt.X("threshold:Q", title="global threshold", scale=alt.Scale(domain=[0, 1]))
    rule = alt.Chart(pd.DataFrame({"threshold": [float(threshold)]})).mark_rule(
        strokeDash=[6, 4], color=THRESHOLD_COLOUR).encode(x="threshold:Q")
    top = alt.layer(alt.Chart(rates).mark_line().encode(
        x=x, y=alt.Y("value:Q", title="on 5 s rows", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("metric:N", title=None, legend=alt.Legend(orient="top")),
        tooltip=["metric:N", alt.Tooltip("threshold:Q", format=".2f"), alt.Tooltip("value:Q", format=".3f")]),
        rule).properties(width=width, height=200)
    fph = curve.dropna(subset=["fp_per_hour"])
    bottom = alt.layer(alt.Chart(fph).mark_line(color=THRESHOLD_COLOUR).encode(
        x=x, y=alt.Y("fp_per_hour:Q", title="false positives / hour", scale=alt.Scale(type="symlog")),
        tooltip=[alt.Tooltip("threshold:Q", format=".2f"), alt.Tooltip("fp_per_hour:Q", format=".1f")]),
        rule).properties(width=width, height=120)
    return alt.vconcat(top, bottom)


def picked_rows(state) -> list[int]:
    """The rows (``row`` values) selected in a timeline by clicks, from the chart's state as Streamlit
    returns it (``{"selection": {"pick": [{"row": 12}, ...]}}``; empty or missing: none)."""
    try:
        points = (state or {}).get("selection", {}).get(ROW_SELECTION) or []
    except AttributeError:
        return []
    points = points if isinstance(points, list) else [points]
    out = []
    for p in points:
        value = p.get("row") if isinstance(p, dict) else None
        if isinstance(value, (int, float)) and float(value).is_integer():
            out.append(int(value))
    return out
