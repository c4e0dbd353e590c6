"""Per-species test scores: table, score distributions, ROC / PR curves, confusions, ranked recordings."""

import streamlit as st

import ui
from birdcore.analysis.scores import confusions, positive_negative_scores, ranked_recordings, species_summary
from birdcore.data.metadata import audio_root
from birdcore.evaluation.metrics import pr_points
from birdcore.analysis.plots import pr_figure, roc_figure, score_distributions_figure

ui.inside_app(__file__)
run_dir = ui.run_page("Species")
ui.require_scores(run_dir)
table = ui.score_table(run_dir)
names = ui.species_names(run_dir)
summary = species_summary(table, metrics=ui.run_json(run_dir, "metrics.json"),
                          thresholds=ui.run_json(run_dir, "thresholds.json"), names=names)

query = st.text_input("Search species", placeholder="code, common or scientific name")
shown = summary
if query:
    q = query.lower()
    hay = (summary["ebird_code"] + " " + summary["common_name"] + " " + summary["sci_name"]).str.lower()
    shown = summary[hay.str.contains(q, regex=False)]
st.dataframe(shown, hide_index=True)
if shown.empty:
    st.info("No species matches the search.")
    st.stop()

labels = {r.ebird_code: f"{r.common_name} ({r.ebird_code})" for r in shown.itertuples()}
code = st.selectbox("Species", list(labels), format_func=labels.get)
row = summary.set_index("ebird_code").loc[code]
threshold = row["threshold"]
pos, neg = positive_negative_scores(table, code)
st.caption(f"{len(pos)} test recording{'' if len(pos) == 1 else 's'} of {row['common_name']} (*{row['sci_name']}*), "
           f"{len(neg)} others; " + (f"threshold {threshold:.4f}" if threshold == threshold else "no threshold"))

c1, c2 = st.columns(2)
c1.plotly_chart(score_distributions_figure(pos, neg, threshold=threshold))
points = ui.roc_points(run_dir, code)
op = None
if len(pos) and len(neg):
    op = (float((neg >= threshold).mean()), float((pos >= threshold).mean()))
c2.plotly_chart(roc_figure(points, operating_point=op, title=f"ROC: {code}"))
c3, c4 = st.columns(2)
if len(pos) and len(neg):
    precision, recall, _ = pr_points(pos, neg)
    c3.plotly_chart(pr_figure(precision, recall))
with c4:
    st.markdown("**Most confused with**")
    st.dataframe(confusions(table, code), hide_index=True)

st.subheader("Test recordings ranked by score")
ranked = ranked_recordings(table, code)
st.dataframe(ranked, hide_index=True, height=300)

data_dir = ui.run_json(run_dir, "data_report.json").get("data_dir")
audio_dir = audio_root(data_dir) if data_dir else None
if audio_dir is not None and audio_dir.is_dir():
    st.markdown("**Listen to the top-ranked recordings**")
    for rec in ranked.head(5).itertuples():
        files = sorted(audio_dir.glob(f"{rec.recording_id}.*"))
        if files:
            st.caption(f"#{rec.rank} {rec.recording_id} (score {rec.score:.3f}, "
                       f"{'positive' if rec.is_positive else 'negative'})")
            st.audio(str(files[0]))
else:
    st.caption("The recordings' audio is not on this machine, so they cannot be played.")
