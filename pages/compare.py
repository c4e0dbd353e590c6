"""Compare two runs: headline metrics side by side and recording-by-recording on shared test recordings."""
import streamlit as st

import ui
from birdcore.analysis.scores import run_summary
from birdcore.analysis.comparison import compare_runs, compare_summary

ui.inside_app(__file__)
st.title("Compare runs")
run_a = ui.selected_run()
if run_a is None:
    st.stop()
others = [p for p in ui.available_runs() if p != run_a]
if not others:
    st.info("Only one run so far: train another (for example `python train_job.py --demo --epochs 3`) to compare.")
    st.stop()
run_b = st.selectbox("Compare with", others, format_func=ui.run_label)

cols = st.columns(2)
for col, letter, run in zip(cols, "AB", (run_a, run_b)):
    m = ui.run_json(run, "metrics.json")
    man = ui.run_json(run, "run.json")
    with col:
        st.subheader(f"{letter}: {run.name}")
        if man.get("synthetic"):
            st.caption("synthetic data")
        for label, key in (("Top-1", "top1"), ("Top-5", "top5")):
            st.metric(label, "n/a" if m.get(key) is None else f"{m[key]:.3f}")
        auc = m.get("macro_auc")
        st.metric("Macro ROC-AUC", "n/a" if auc is None else f"{auc:.3f}")
        st.caption(run_summary(man))

ui.require_scores(run_a)
ui.require_scores(run_b)
table_a, table_b = ui.score_table(run_a), ui.score_table(run_b)
per_rec = compare_runs(table_a, table_b)
summary = compare_summary(per_rec)
st.subheader("On the same test recordings")
if not summary["n_shared"]:
    st.info("The two runs share no test recordings (different data or split), so only the headline numbers compare.")
    st.stop()
c = st.columns(5)
c[0].metric("Shared recordings", summary["n_shared"])
c[1].metric("Top-1 of A", f"{summary['a_top1']:.3f}", help=run_a.name)
c[2].metric("Top-1 of B", f"{summary['b_top1']:.3f}", help=run_b.name)
c[3].metric("Only A right", summary["only_a"], help=f"recordings only {run_a.name} gets right")
c[4].metric("Only B right", summary["only_b"], help=f"recordings only {run_b.name} gets right")
p, n_split = summary["mcnemar_p"], summary["only_a"] + summary["only_b"]
st.caption(f"Paired test (exact McNemar) on the {n_split} recording{'' if n_split == 1 else 's'} only one run gets "
           f"right: p = {p:.3g}. "
           + ("A split this uneven would be rare if the runs were equally good." if p < 0.05 else
              "The difference could well be chance; more test recordings (or other splits) would tell."))
disagree = per_rec["a_top1_correct"] != per_rec["b_top1_correct"]
only_disagreements = st.toggle("Only the recordings where the runs disagree", value=bool(disagree.any()))
def _label(column: str) -> str:
    """"a_top1_correct" → "A top-1 correct"; other columns keep their names."""
    if column[:2] in ("a_", "b_"):
        return f"{column[0].upper()} " + column[2:].replace("top1", "top-1").replace("_", " ")
    return column


st.dataframe((per_rec[disagree] if only_disagreements else per_rec).rename(columns=_label), hide_index=True)
