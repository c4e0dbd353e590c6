"""Soundscapes: the selected run on labelled field recordings, 5 s row by 5 s row."""
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

import ui
from birdcore.analysis.soundscape_charts import ROW_SELECTION, picked_rows, threshold_curve_chart, timeline_chart
from birdcore.analysis.soundscapes import CONTEXT_SECONDS, row_audio, supports_overlap
from birdcore.data.soundscapes import SoundscapeError
from birdcore.evaluation.soundscapes import read_settings
from birdcore.io.audio import AudioError
from birdcore.runs.thresholds import DEFAULT_THRESHOLD, save_thresholds
from birdcore.serving.access import AccessError, check_path

ENV = "BIRDCLEF_SOUNDSCAPES"
OVERLAPS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]  # seconds; BirdNET's own tools accept 0 to 2.9
SAVE_SOURCE = "dashboard (soundscapes)"
SAVED_KEY = "sc-saved"  # what was saved, shown once after the rerun that follows a save

ui.inside_app(__file__)
run_dir = ui.run_page("Soundscapes")
st.caption("Labelled field recordings (soundscapes) scored by the selected run in the competitions' 5 s rows: "
           "the metrics, a timeline of labels against scores, and a threshold chosen on the rows.")

c1, c2 = st.columns(2)
labels_text = c1.text_input(
    "Labels", value=os.environ.get(ENV, ""), placeholder="/data/birdclef-2021/train_soundscape_labels.csv",
    help="The 2020 example_test_audio_summary.csv, BirdCLEF 2021's train_soundscape_labels.csv, or Raven "
         f"selection tables (a .txt file or a folder of them). `{ENV}` sets the starting value.")
audio_text = c2.text_input("Audio folder", value="", placeholder="empty: beside the labels, or its audio/ subfolder")
if not labels_text.strip():
    st.info(f"Enter a labels file of annotated soundscapes (or set `{ENV}` before starting the dashboard) to "
            "score them with this run.")
    st.stop()
try:  # BIRDCLEF_DATA_ROOTS: nothing outside the allowed folders is opened, or even looked at
    labels_path = check_path(labels_text, what="labels")
    audio_dir = check_path(audio_text, what="audio folder") if audio_text.strip() else None
except AccessError as exc:
    st.error(str(exc))
    st.stop()

try:
    settings = read_settings(run_dir)[0]
except (OSError, ValueError) as exc:
    st.error(f"Could not read {run_dir.name}/soundscape.json: {exc}.")
    st.stop()
if supports_overlap(run_dir):
    options = sorted({*OVERLAPS, float(settings.overlap)})
    overlap = st.select_slider("BirdNET window overlap (s)", options=options, value=float(settings.overlap),
                               format_func=lambda s: f"{s:g} s",
                               help="BirdNET listens in 3 s windows; a row takes the best window overlapping it. "
                                    "More overlap scores more windows (up to 3 / (3 − overlap) times the work).")
    settings = dataclasses.replace(settings, overlap=float(overlap))

try:
    rows = ui.soundscape_rows(labels_path, audio_dir)
except SoundscapeError as exc:
    st.error(str(exc))
    st.stop()
if not rows.labelled:
    st.error(f"{labels_path}: these rows have no labels (a test.csv?); this page needs labelled soundscapes.")
    st.stop()
if len(rows.missing) == len(rows.files):
    where = audio_dir if audio_dir is not None else f"{labels_path.parent} (or its audio/ subfolder)"
    st.error(f"{labels_path}: no audio found for any of its {len(rows.files)} files in {where}.")
    st.stop()

bar = st.empty()  # scoring's progress, file by file (nothing when the scores are cached)
try:
    with st.spinner("Scoring the soundscapes with this run (once per labels file, audio folder and overlap)…"):
        view_key, view = ui.soundscape_view(
            run_dir, labels_path, audio_dir, settings,
            progress=lambda key, done, total: bar.progress(done / total, text=f"Scored {key} ({done} of {total} "
                                                                              "files)"))
except (ValueError, OSError) as exc:
    bar.empty()
    st.error(str(exc) if str(labels_path) in str(exc) else f"{labels_path}: {exc}")
    st.stop()
bar.empty()
if view.files_not_scored:
    skipped = list(view.files_not_scored.values())
    st.warning(f"{len(skipped)} file{'s' if len(skipped) > 1 else ''} left out: " + "; ".join(skipped[:3])
               + ("; …" if len(skipped) > 3 else ""))

saved = ui.run_json(run_dir, "thresholds.json")
saved_thr = view.thresholds(saved)


def fmt(v, digits=3):
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


# ---- metrics at the run's saved thresholds (what `python -m birdcore.soundscapes evaluate` prints)
st.subheader("Metrics at the run's saved thresholds")
report = ui.soundscape_report(view_key, json.dumps(saved, sort_keys=True), view)
m = st.columns(8)
m[0].metric("Row-wise F1", fmt(report["row_f1"]),
            help=f"Per 5 s row, F1 of the predicted and labelled species sets (nocall for none). Answering nocall "
                 f"everywhere scores {fmt(report['nocall_f1'])}.")
m[1].metric("Macro F1", fmt(report["macro_f1"]))
m[2].metric("cmAP", fmt(report["cmap"]))
m[3].metric("Padded cmAP", fmt(report["padded_cmap"]))
m[4].metric("Macro ROC-AUC", fmt(report["macro_auc"]))
m[5].metric("Precision", fmt(report["precision"]))
m[6].metric("Recall", fmt(report["recall"]))
m[7].metric("False positives / hour", fmt(report["fp_per_hour"], 1))
st.caption(f"{report['n_files']} files, {report['n_rows']} rows of 5 s ({report['n_rows_with_birds']} with birds), "
           f"{report['hours'] * 60:.1f} min; post-processing: {report['postprocessing']}"
           + (f"; BirdNET windows overlapping by {report['overlap']:g} s" if supports_overlap(run_dir) else "")
           + f"; thresholds chosen on: {saved.get('chosen_on', 'unknown')}.")
if report["species_not_in_run"]:
    missing = report["species_not_in_run"]
    st.caption("Labelled species this run cannot name (counted as misses): "
               + ", ".join(f"{k} ({v} row{'s' if v > 1 else ''})" for k, v in sorted(missing.items(), key=lambda kv: -kv[1])[:10])
               + (" …" if len(missing) > 10 else ""))
names = dict(zip(view.codes, view.names))
per_species = pd.DataFrame(report["per_species"])
if len(per_species):
    per_species.insert(1, "name", per_species["species"].map(names))
    st.dataframe(per_species.sort_values(["positives", "detections"], ascending=False), hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("ap", "auc", "threshold", "precision", "recall")}
                 | {"fp_per_hour": st.column_config.NumberColumn("fp / hour", format="%.1f")})

# ---- the threshold, explored on the rows
st.subheader("Threshold on 5 s rows")
saved_global = float((saved.get("global") or {}).get("threshold", DEFAULT_THRESHOLD))
g1, g2 = st.columns([2, 1])
threshold = g1.slider("Global threshold (every species)", min_value=0.0, max_value=1.0,
                      value=float(np.clip(saved_global, 0.0, 1.0)), step=0.001, format="%.3f",
                      key=f"sc-global-{run_dir}", help="Starts at the run's saved global threshold.")
overrides = {}
if g2.toggle("Own threshold for one species", key="sc-override"):
    code = g2.selectbox("Species", view.codes, format_func=lambda c: f"{names[c]} ({c})" if names[c] != c else c,
                        key="sc-override-species")
    own = float(np.clip(saved_thr[view.codes.index(code)], 0.0, 1.0))
    overrides[code] = g2.slider(f"Threshold of {code}", min_value=0.0, max_value=1.0, value=own, step=0.001,
                                format="%.3f", key=f"sc-own-{run_dir}-{code}",
                                help="Starts at its saved threshold.")
thresholds = view.with_override(threshold, overrides)
live, before = view.at(thresholds), view.at(saved_thr)


def delta(key, digits=3):
    a, b = live[key], before[key]
    return None if a is None or b is None or abs(a - b) < 10 ** -digits / 2 else f"{a - b:+.{digits}f}"


k = st.columns(5)
k[0].metric("Precision", fmt(live["precision"]), delta("precision"))
k[1].metric("Recall", fmt(live["recall"]), delta("recall"))
k[2].metric("False positives / hour", fmt(live["fp_per_hour"], 1), delta("fp_per_hour", 1), delta_color="inverse")
k[3].metric("Row-wise F1", fmt(live["row_f1"]), delta("row_f1"))
k[4].metric("Macro F1", fmt(live["macro_f1"]), delta("macro_f1"))
st.caption(f"{live['detections']} (row, species) detections: {live['true_positives']} labelled, "
           f"{live['false_positives']} not, of {live['positives']} labelled pairs, over {view.hours * 60:.1f} min. "
           "Changes against the run's saved thresholds.")
curve_col, table_col = st.columns([3, 2])
curve_col.altair_chart(threshold_curve_chart(ui.soundscape_curve(view_key, view), threshold=threshold))
table_col.dataframe(view.species_at(thresholds).drop(columns="species"), hide_index=True,
                    column_config={"threshold": st.column_config.NumberColumn(format="%.3f"),
                                   "precision": st.column_config.NumberColumn(format="%.3f"),
                                   "recall": st.column_config.NumberColumn(format="%.3f"),
                                   "fp_per_hour": st.column_config.NumberColumn("fp / hour", format="%.1f")})

writable, why_not = ui.can_save(run_dir)
if not writable:
    st.caption(why_not)
what = f"global {threshold:.3f}" + "".join(f", {c} {t:.3f}" for c, t in overrides.items())
if writable and st.button(f"Save these thresholds into the run ({what})"):
    try:
        save_thresholds(run_dir, target_fpr=None, global_threshold=threshold,
                        species_thresholds={c: float(overrides.get(c, threshold)) for c in view.codes},
                        source=SAVE_SOURCE)
    except (OSError, ValueError) as exc:
        st.error(f"Could not save into {run_dir.name}: {getattr(exc, 'strerror', None) or exc}.")
    else:
        st.session_state[SAVED_KEY] = what
        st.rerun()  # the metrics above now use the saved thresholds
if saved_what := st.session_state.pop(SAVED_KEY, None):
    st.success(f"Saved ({saved_what}; the previous thresholds are kept as thresholds.previous.json). The classify "
               "page, batch scoring and this page's metrics now use them.")

# ---- timeline of one file
st.subheader("Timeline")
t1, t2 = st.columns([3, 1])
file = t1.selectbox("File", view.files, key="sc-file",
                    format_func=lambda f: f"{f} ({len(view.rows_of(f))} rows, {view.seconds.get(f, 0) / 60:.1f} min)")
top = t2.number_input("Top species", min_value=1, max_value=max(1, len(view.codes)), value=min(5, len(view.codes)),
                      key="sc-top", help="The species with the highest scores in the file; labelled ones are "
                                         "always shown.")
file_rows = view.rows_of(file)
row_key = f"sc-row-{file}"
chart_key = f"sc-timeline-{file}"
n_of = dict(zip(file_rows["row"].tolist(), file_rows["n"].tolist()))


def picked_in_chart():
    """A row clicked in the timeline becomes the row to play."""
    rows_picked = [r for r in picked_rows(st.session_state.get(chart_key)) if r in n_of]
    if rows_picked:
        st.session_state[row_key] = int(n_of[rows_picked[-1]])


current = min(max(int(st.session_state.get(row_key, 1)), 1), len(file_rows))
st.session_state[row_key] = current
lines = view.timeline(file, thresholds, top=int(top))
marks = view.label_marks(file, thresholds)
st.altair_chart(timeline_chart(lines, marks, threshold=threshold,
                               selected_row=int(file_rows["row"].iloc[current - 1]), title=file),
                on_select=picked_in_chart, selection_mode=[ROW_SELECTION], key=chart_key)
st.caption("Lines: post-processed scores per 5 s row; diamonds: the labelled species of a row; dashed: the "
           "threshold. Click a point to play its row, click a species in the legend to highlight it, drag across "
           "the labels below to zoom.")

p1, p2 = st.columns([1, 3])
n = p1.number_input("Row to play", min_value=1, max_value=len(file_rows), key=row_key,
                    help="Its number in the file (the timeline's clicks set it too).")
row = view.row_summary(int(file_rows["row"].iloc[int(n) - 1]), thresholds)
detected = ", ".join(f"{c} {s:.2f}" for c, s in row["detected"].items()) or "nothing"
p2.markdown(f"**{row['row_id']}** · {row['start_s']:g}–{row['end_s']:g} s · labelled: "
            f"**{' '.join(row['labels']) or 'nocall'}** · detected at these thresholds: {detected}")
audio_path = rows.audio.get(file)
try:
    clip = row_audio(audio_path, row["start_s"], row["end_s"], context_s=CONTEXT_SECONDS)
except (AudioError, ValueError) as exc:
    p2.error(f"Could not play the row: {exc}")
else:
    p2.audio(clip.wave, sample_rate=clip.sample_rate)
    p2.caption(f"Plays {clip.start_s:.1f}–{clip.end_s:.1f} s of {audio_path.name}: the row "
               f"({clip.row_start_s:g}–{clip.row_end_s:g} s) with up to {CONTEXT_SECONDS:g} s on each side.")
