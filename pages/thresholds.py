"""Thresholds: choose an operating point and see false positives, recall, precision and accuracy vs coverage."""

import numpy as np
import streamlit as st

import ui
from birdcore.runs.thresholds import save_thresholds
from birdcore.analysis.plots import accuracy_coverage_figure, det_figure, metrics_vs_threshold_figure, roc_figure

ui.inside_app(__file__)
run_dir = ui.run_page("Thresholds")
ui.require_scores(run_dir)
table = ui.score_table(run_dir)
exp = ui.explorer(run_dir)
saved = ui.run_json(run_dir, "thresholds.json")

c1, c2 = st.columns([1, 2])
target_pct = c1.number_input("Target false-positive rate (%)", min_value=0.0, max_value=100.0,
                             value=float(saved.get("target_fpr", 0.001)) * 100, step=0.05, format="%.3f")
target = target_pct / 100
scope = c2.radio("Threshold", ["Global (all species)", "One species"], horizontal=True)
species = None
if scope == "One species":
    species = c2.selectbox("Species", table.species)

suggested = float(np.clip(exp.threshold_for_fpr(target, species=species), 0.0, 1.0))
key = f"thr-{species or 'global'}-{target}"
threshold = st.slider("Threshold", min_value=0.0, max_value=1.0, value=suggested, step=0.001, format="%.3f",
                      key=key, help=f"Starts at the threshold giving {target_pct:.3f}% false positives on the test set.")
stats = exp.at(threshold) if species is None else exp.species_at(species, threshold)

def fmt(v, pct=False):
    if v is None:
        return "n/a"
    return f"{v * 100:.2f}%" if pct else f"{v:.3f}"

m = st.columns(6)
m[0].metric("False-positive rate", fmt(stats["fpr"], pct=True))
m[1].metric("Recall (TPR)", fmt(stats["tpr"], pct=True))
m[2].metric("Precision", fmt(stats["precision"], pct=True))
m[3].metric("False positives / 1,000 rec.", f"{stats['fp_per_1000']:.1f}")
m[4].metric("Coverage", fmt(stats["coverage"], pct=True))
m[5].metric("Accuracy when covered", fmt(stats["accuracy_covered"], pct=True))
st.caption("Coverage: share of test recordings whose top score reaches the threshold; accuracy when covered: "
           "top-1 accuracy on those (the others are rejected as unsure).")

points = ui.roc_points(run_dir, species)
op = (stats["fpr"], stats["tpr"]) if stats["fpr"] is not None and stats["tpr"] is not None else None
g1, g2 = st.columns(2)
g1.plotly_chart(roc_figure(points, operating_point=op, title="ROC"))
g2.plotly_chart(det_figure(points, operating_point=op))
curve = ui.threshold_curve(run_dir, species)
g3, g4 = st.columns(2)
g3.plotly_chart(metrics_vs_threshold_figure(curve, threshold=threshold))
g4.plotly_chart(accuracy_coverage_figure(curve, threshold=threshold))

st.subheader("Save for the classify page")
saved_global = (saved.get("global") or {}).get("threshold")
st.caption(f"Saved now: target FPR {saved.get('target_fpr')}, global threshold "
           f"{'none' if saved_global is None else f'{saved_global:.4f}'}, chosen on {saved.get('chosen_on')}.")
writable, why_not = ui.can_save(run_dir)
if not writable:
    st.caption(why_not)
if writable and st.button("Save thresholds into the run"):
    try:
        if species is None:
            per_species = {code: float(np.clip(exp.threshold_for_fpr(target, species=code), 0.0, 1.0))
                           for code in table.species}
            save_thresholds(run_dir, target_fpr=target, global_threshold=threshold, species_thresholds=per_species)
        else:
            current = {c: v["threshold"] for c, v in (saved.get("species") or {}).items()}
            current[species] = threshold
            save_thresholds(run_dir, target_fpr=target,
                            global_threshold=float((saved.get("global") or {}).get("threshold", threshold)),
                            species_thresholds=current)
    except OSError as exc:
        st.error(f"Could not save into {run_dir.name}: {exc.strerror or exc}.")
    else:
        st.success("Saved. The classify page now uses these thresholds.")
