"""Run overview: headline metrics, configuration, data report and training curves."""
import pandas as pd
import streamlit as st

import ui
from birdcore.models.base import kind_for, kind_name
from birdcore.analysis.scores import confusion_matrix, load_history, run_summary, top1_errors
from birdcore.analysis.plots import confusion_figure, training_curves_figure

ui.inside_app(__file__)
run_dir = ui.run_page("Run overview")
manifest = ui.run_json(run_dir, "run.json")
metrics = ui.run_json(run_dir, "metrics.json")
st.caption(f"`{run_dir}` · format v{manifest.get('format_version')} · finished {manifest.get('finished', '?')}")

cols = st.columns(5)
for col, (label, key) in zip(cols, [("Top-1", "top1"), ("Top-5", "top5"), ("Macro ROC-AUC", "macro_auc"),
                                     ("Macro AP", "macro_ap"), ("Test recordings", "n_recordings")]):
    value = metrics.get(key)
    col.metric(label, "n/a" if value is None else (value if isinstance(value, int) else f"{value:.3f}"))

st.markdown(f"**Model** {run_summary(manifest)}")

ui.require_scores(run_dir)
table = ui.score_table(run_dir)
errors = top1_errors(table)
st.subheader("Misclassified test recordings")
if errors.empty:
    st.caption("Every test recording's primary species is the model's top-1.")
else:
    st.caption(f"{len(errors)} of {table.n_recordings} test recordings, worst first. In "
               f"{int(errors['predicted_is_background'].sum())} of them the predicted species is one the "
               "recordist named as a background species: the model may have heard a bird that is there.")
    st.dataframe(errors, hide_index=True, column_config={
        "primary_score": st.column_config.NumberColumn(format="%.3f"),
        "predicted_score": st.column_config.NumberColumn(format="%.3f")})
    show_all = st.toggle("Confusion matrix over all species", value=table.n_species <= 30,
                         help="Off: only the species involved in an error (readable for large runs).")
    st.plotly_chart(confusion_figure(confusion_matrix(table, only_confused=not show_all)))

history = load_history(run_dir)
st.subheader("Training")
if history.empty:
    kind = kind_for(kind_name(manifest))
    st.caption("No training curves: " + (f"{kind.description} is used as it is, with no training on this data."
                                         if not kind.trains else "this run has no history.csv."))
else:
    st.plotly_chart(training_curves_figure(history))

report = ui.run_json(run_dir, "data_report.json")
st.subheader("Data")
c1, c2, c3 = st.columns(3)
c1.metric("Recordings in metadata", report.get("n_metadata_rows", "?"))
c2.metric("Usable", report.get("n_usable", "?"))
c3.metric("Unreadable (skipped)", report.get("n_failed", 0))
if report.get("failed"):
    st.dataframe(pd.DataFrame(report["failed"]), hide_index=True)
st.caption(f"Data folder: `{report.get('data_dir', '?')}`")

with st.expander("Configuration"):
    st.json(ui.run_json(run_dir, "config.json"))
