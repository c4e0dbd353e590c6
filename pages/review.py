"""Review detections: yes / no / unsure / another species on the sampled detections of a review database."""
import os
from pathlib import Path

import sqlalchemy as sa
import streamlit as st

import ui
from birdcore.serving.access import AccessError, check_database, check_path
from birdcore.io.audio import AudioError
from birdcore.review.clips import (CONTEXT_SECONDS, Filters, clip_figure, filter_options, next_detection, progress,
                                   queue, resolve_audio, sampled_table, species_names)
from birdcore.review.store import StoreError

DB, REVIEWER, PIN, FLASH = "review_db", "review_reviewer", "review_pin", "review_flash"
NOTE, OTHER = "review_note", "review_other"
CONTEXTS = [0.0, 1.0, 2.0, 3.0, 5.0]
SHORTCUTS = {"yes": "Y", "no": "N", "unsure": "U", "other": "A", "undo": "Z"}


def kept_text_input(key: str, label: str, default: str, **kwargs) -> str:
    """A text input whose value outlives the page (a widget's own state is dropped when the visitor
    opens another page)."""
    widget = f"{key}_input"
    if widget not in st.session_state:
        st.session_state[widget] = st.session_state.get(key, default)
    value = st.text_input(label, key=widget, **kwargs).strip()
    st.session_state[key] = value
    return value


def flash(kind: str, text: str) -> None:
    st.session_state[FLASH] = (kind, text)


def record(db: str, detection_id: int, verdict: str, *, corrected: bool = False, species: str = "") -> None:
    """Button callback: store the verdict on the detection shown when the button was drawn."""
    reviewer = st.session_state.get(REVIEWER, "")
    other = None
    if corrected:
        other = (st.session_state.get(OTHER) or "").strip()
        if not other:
            flash("error", "Choose the species you hear first, then press Another species.")
            return
        if other == species:
            flash("error", f"{other} is the detected species: press Yes instead.")
            return
    try:
        ui.review_store(db).add_review(detection_id, verdict, reviewer=reviewer, corrected_species=other,
                                       note=st.session_state.get(NOTE) or None)
    except (StoreError, ValueError, sa.exc.SQLAlchemyError) as exc:
        flash("error", f"{db}: the review was not recorded ({getattr(exc, 'orig', None) or exc})")
        return
    st.session_state[NOTE] = ""
    st.session_state[OTHER] = None
    st.session_state.pop(PIN, None)
    said = f"another species ({other})" if other else verdict
    flash("success", f"Recorded **{said}** for detection {detection_id}.")


def undo(db: str) -> None:
    """Undo callback: mark this reviewer's last review undone and show its detection again."""
    try:
        detection_id = ui.review_store(db).undo(reviewer=st.session_state.get(REVIEWER, ""))
    except (StoreError, sa.exc.SQLAlchemyError) as exc:
        flash("error", f"{db}: nothing was undone ({getattr(exc, 'orig', None) or exc})")
        return
    if detection_id is None:
        flash("info", "You have no review left to undo.")
        return
    st.session_state[PIN] = detection_id
    flash("success", f"Undone: detection {detection_id} is back for review.")


ui.inside_app(__file__)
st.title("Review detections")
top_db, top_name = st.columns([3, 2])
with top_db:
    db = kept_text_input(DB, "Review database", os.environ.get("BIRDCLEF_REVIEW_DB", ""),
                         help="A SQLite file or a SQLAlchemy URL (postgresql+psycopg://user@host/birds), as given "
                              "to python -m birdcore.review --db. Start with BIRDCLEF_REVIEW_DB=... to fill it in.")
with top_name:
    reviewer = kept_text_input(REVIEWER, "Your name", "", help="Recorded with each review. Undo undoes your own "
                                                                "last review.")
if db:
    try:  # BIRDCLEF_DATA_ROOTS: other files and other database hosts are refused before any connection
        check_database(db)
    except AccessError as exc:
        st.error(str(exc))
        st.stop()
if not db:
    st.info("Type the path of a review database. Make one from a detections CSV (`python -m birdcore.predict ... "
            "--out detections.csv`): `python -m birdcore.review import detections.csv --db review.sqlite`, then "
            "`python -m birdcore.review sample --db review.sqlite --per-species 50`.")
    st.stop()
try:
    store = ui.review_store(db)
    table = sampled_table(store)
except StoreError as exc:
    st.error(str(exc))
    st.stop()
except sa.exc.SQLAlchemyError as exc:
    st.error(f"{db}: cannot read the review database ({getattr(exc, 'orig', None) or exc})")
    st.stop()

if st.session_state.get("review_filters_db") != db:  # another database: its own species, sites and dates
    for key in ("review_species", "review_sites", "review_dates", PIN):
        st.session_state.pop(key, None)
    st.session_state["review_filters_db"] = db
if message := st.session_state.pop(FLASH, None):
    kind, text = message
    {"success": st.toast, "info": st.info, "error": st.error}[kind](text)
if table.empty:
    st.info(f"Nothing sampled for review in {db} yet: `python -m birdcore.review sample --db {db} --per-species 50` "
            "chooses detections per species.")
    st.stop()

options = filter_options(table)
with st.sidebar:
    st.markdown("**Review filters**")
    chosen_species = st.multiselect("Species", list(options["species"]), format_func=options["species"].get,
                                    key="review_species", placeholder="All species")
    chosen_sites = st.multiselect("Site", options["sites"], key="review_sites", placeholder="All sites",
                                  disabled=not options["sites"])
    start = end = None
    if options["dates"]:
        first, last = options["dates"]
        days = st.date_input("Recorded between", value=(), min_value=first, max_value=last, key="review_dates",
                             help="Leave empty for every date; detections without a date are left out once set.")
        days = tuple(days) if isinstance(days, (tuple, list)) else (days,)
        start, end = (days + (None, None))[:2]
    else:
        st.caption("No recording dates in this database.")
    audio_dir = st.text_input("Audio folder", key="review_audio_dir",
                              help="Where the detections' audio files are, when their paths are relative or were "
                                   "made on another machine (the database's folder is tried too).").strip()
    if audio_dir:
        try:
            audio_dir = str(check_path(audio_dir, what="audio folder"))
        except AccessError as exc:
            st.error(str(exc))
            audio_dir = ""
    context = st.select_slider("Context (s)", options=CONTEXTS, value=CONTEXT_SECONDS, key="review_context",
                               format_func=lambda s: f"{s:g} s", help="Audio shown and played on each side.")
filters = Filters(species=tuple(chosen_species), sites=tuple(chosen_sites), start=start, end=end)

current = next_detection(table, filters, pinned=st.session_state.get(PIN))
if current is None:
    if table["verdict"].notna().all():
        st.success(f"Every sampled detection in {db} has a verdict. Sample more with `python -m birdcore.review "
                   f"sample --db {db} --per-species 50`, or see the precision with `python -m birdcore.review report "
                   f"--db {db}`.")
    else:
        st.info("Nothing left to review with these filters: widen them in the sidebar.")
else:
    left = len(queue(table, filters))
    code, name = current["species"], current["common_name"] or current["species"]
    st.subheader(f"{name} ({code})")
    st.markdown(f"Score **{current['score']:.3f}** · `{current['file']}` at **{current['start_s']:g}–"
                f"{current['end_s']:g} s**")
    details = [f"detection {current['id']}"]
    details += [f"site {current['site']}"] if current["site"] else []
    details += [f"recorded {current['recorded']}"] if current["recorded"] else []
    details += [f"run {Path(current['run']).name}"] if current["run"] else []
    details += [f"{left} left with these filters"]
    st.caption(" · ".join(details))

    base = None if "://" in db else Path(db).expanduser().resolve().parent
    path = resolve_audio(current["file"], audio_dir=audio_dir or None, base=base)
    if path is None:
        st.warning(f"Audio not found: {current['file']}. Set the audio folder in the sidebar.")
    else:
        try:
            with st.spinner("Reading the audio…"):
                clip, spec = ui.review_clip(path, current["start_s"], current["end_s"], context)
        except (AudioError, ValueError) as exc:
            st.warning(f"Could not read {exc}")
        else:
            st.plotly_chart(clip_figure(spec, clip), key="review_spectrogram")
            st.audio(clip.wav_bytes(), format="audio/wav")
            st.caption(f"Plays {clip.start_s:.1f}–{clip.end_s:.1f} s of {path.name}: the detection "
                       f"({clip.detection_start_s:g}–{clip.detection_end_s:g} s, between the dashed lines) with up "
                       f"to {context:g} s on each side.")

    if not reviewer:
        st.warning("Type your name at the top to review.")
    names = species_names(store)
    others = [c for c in names if c != code]
    buttons = st.columns([1, 1, 1, 3, 2, 1], vertical_alignment="bottom")
    off = not reviewer
    detection_id = current["id"]
    buttons[0].button("Yes", key="review_yes", type="primary", shortcut=SHORTCUTS["yes"], disabled=off,
                      on_click=record, args=(db, detection_id, "yes"), help="The species is calling in this clip.")
    buttons[1].button("No", key="review_no", shortcut=SHORTCUTS["no"], disabled=off, on_click=record,
                      args=(db, detection_id, "no"), help="Not this species (and no other one you can name).")
    buttons[2].button("Unsure", key="review_unsure", shortcut=SHORTCUTS["unsure"], disabled=off, on_click=record,
                      args=(db, detection_id, "unsure"), help="Left out of the precision estimates.")
    buttons[3].selectbox("Species you hear instead", others, index=None, key=OTHER, accept_new_options=True,
                         format_func=lambda c: f"{names[c]} ({c})" if c in names else c,
                         placeholder="Choose or type a species code", disabled=off)
    buttons[4].button("Another species", key="review_other_button", shortcut=SHORTCUTS["other"], disabled=off,
                      on_click=record, args=(db, detection_id, "no"), kwargs={"corrected": True, "species": code},
                      help="Not this species but the one chosen on the left (stored as no, with the correction).")
    buttons[5].button("Undo", key="review_undo", shortcut=SHORTCUTS["undo"], disabled=off, on_click=undo, args=(db,),
                      help="Undo your last review and show that detection again.")
    st.text_input("Note (optional)", key=NOTE, disabled=off, help="Saved with your next verdict.")
    st.caption("Keyboard: **Y** yes · **N** no · **U** unsure · **A** another species · **Z** undo (not while the "
               "cursor is in a field).")

st.subheader("Progress per species")
report = progress(table, filters)
total = int(report["sampled"].sum()) if len(report) else 0
done = int(report["reviewed"].sum()) if len(report) else 0
st.progress(done / total if total else 0.0, text=f"{done} of {total} sampled detections reviewed"
            + (" (sites and dates as filtered)" if filters.sites or filters.start or filters.end else ""))
st.dataframe(report.rename(columns={"common_name": "common name"}), hide_index=True,
             column_config={"done": st.column_config.ProgressColumn("done", min_value=0.0, max_value=1.0,
                                                                    format="percent")})
st.caption("Another species is stored as *no* with the corrected species (counted under no and corrected). "
           "Precision per species: `python -m birdcore.review report --db " + db + "`.")
