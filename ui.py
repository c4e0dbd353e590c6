"""Streamlit helpers shared by the pages: the runs folder, the run picker and cached loaders.

UI glue only; the computations live in ``birdcore``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import streamlit as st

from birdcore.cli.common import quiet_native_stderr

NAV_KEY = "birdclef_navigation"  # set by app.py: the page runs inside its navigation
DEEP_LINK_KEY = "birdclef_deep_link"
NO_RUNS = "No trained runs yet: make one with `python train_job.py --demo` (about a minute on a laptop)."
RUN_KEY = "run_dir"
PICKED_KEY = "run_picked"  # True once the visitor has chosen a run in the sidebar


def inside_app(page_file: str) -> None:
    """First call of every page.  A fresh server that is first asked for a page's URL (a bookmark)
    runs that ``pages/`` file alone, Streamlit's legacy multipage mode, without ``app.py``'s
    navigation and run picker.  Such a page hands over to ``app.py`` and asks it to open the page."""
    if st.session_state.get(NAV_KEY):
        return
    root = Path(__file__).resolve().parent
    st.session_state[DEEP_LINK_KEY] = Path(page_file).resolve().relative_to(root).as_posix()
    st.switch_page("app.py")


def follow_deep_link() -> None:
    """In ``app.py``, once the navigation exists: open the page a bare page run asked for."""
    target = st.session_state.pop(DEEP_LINK_KEY, None)
    if target:
        st.switch_page(target)


def runs_dir() -> Path:
    """``$BIRDCLEF_RUNS`` if set, else ``runs/``."""
    return Path(os.environ.get("BIRDCLEF_RUNS", "runs"))


def available_runs() -> list[Path]:
    from birdcore.runs.folder import list_runs

    return list_runs(runs_dir())


def _manifest(path: Path) -> dict:
    try:
        return json.loads((path / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def is_synthetic(path: Path) -> bool:
    """The run was trained on generated calls (``"synthetic": true`` in its run.json)."""
    return bool(_manifest(path).get("synthetic"))


def run_label(path: Path) -> str:
    manifest = _manifest(path)
    tags = []
    if manifest.get("synthetic"):
        tags.append("synthetic")
    top1 = (manifest.get("test") or {}).get("top1")
    if top1 is not None:
        tags.append(f"top-1 {top1:.3f}")
    return f"{path.name} ({', '.join(tags)})" if tags else path.name


def run_picker(*, prefer_real: bool = False) -> Path | None:
    """Sidebar select box of complete runs, newest first; the choice is shared by all pages.

    Until one is chosen the newest run is selected or, with ``prefer_real`` (the classify page,
    where visitors land), the newest one trained on real recordings when there is one."""
    runs = available_runs()
    if not runs:
        st.sidebar.info("No runs yet.")
        st.session_state.pop(RUN_KEY, None)
        return None
    names = [str(p) for p in runs]
    current = st.session_state.get(RUN_KEY)
    if current in names:
        index = names.index(current)
    else:
        index = next((i for i, p in enumerate(runs) if not is_synthetic(p)), 0) if prefer_real else 0
    choice = st.sidebar.selectbox("Run", names, index=index, format_func=lambda s: run_label(Path(s)),
                                  key="run_picker", on_change=lambda: st.session_state.update({PICKED_KEY: True}))
    st.session_state[RUN_KEY] = choice
    return Path(choice)


def selected_run(*, hint: bool = True) -> Path | None:
    """The run chosen in the sidebar; on a fresh machine, a one-sentence hint and None."""
    value = st.session_state.get(RUN_KEY)
    if value and Path(value, "run.json").is_file():
        return Path(value)
    if hint:
        st.info(NO_RUNS)
    return None


NO_SCORES = ("This run has no recording-level test scores: it was made from a species list, without "
             "recordings (`train_job.py --baseline birdnet --species-list FILE`). Score it on soundscapes "
             "(the Soundscapes page, `python -m birdcore.soundscapes`), or classify clips with it.")


def require_scores(run_dir: Path) -> None:
    """Stop the page with a one-line note when the run has no test scores (``scores.npz``)."""
    if not (Path(run_dir) / "scores.npz").is_file():
        st.info(NO_SCORES)
        st.stop()


def run_page(title: str) -> Path:
    """Title, the selected run (or the fresh-machine hint and a stop) and its synthetic banner."""
    st.title(title)
    run_dir = selected_run()
    if run_dir is None:
        st.stop()
    synthetic_banner(run_dir)
    return run_dir


def _stamp(run_dir: Path) -> float:
    """Changes whenever the run's files are rewritten (cache key)."""
    return max((p.stat().st_mtime for p in (run_dir / "run.json", run_dir / "thresholds.json") if p.exists()),
               default=0.0)


@st.cache_resource(show_spinner="Loading the model…")
def _classifier(path: str, stamp: float):
    with quiet_native_stderr():
        from birdcore.serving.classify import ClipClassifier
        from birdcore.runs.loading import load_run

        return ClipClassifier(load_run(Path(path)))


def classifier(run_dir: Path):
    """The run's model, loaded once per process and shared by every session."""
    return _classifier(str(run_dir), _stamp(run_dir))


@st.cache_resource(show_spinner="Loading BirdNET…")
def birdnet_classifier():
    """BirdNET V2.4 over all its classes (the model for visitors before any run is trained)."""
    with quiet_native_stderr():
        from birdcore.runs.loading import birdnet_run as global_birdnet_run
        from birdcore.serving.classify import ClipClassifier

        return ClipClassifier(global_birdnet_run())


CLIP_KEY = "last_clip"  # the session's KeptClip
UPLOAD_ROUND_KEY = "clip_upload_round"  # bumped after each answer: the upload fields start empty


def can_save(run_dir: Path) -> tuple[bool, str]:
    """Whether a page may write into the run (thresholds), and why not: a public dashboard saves nothing,
    and a read-only runs folder (a deployed dashboard's) cannot be written."""
    from birdcore.serving.access import public_mode

    if public_mode():
        return False, "Saving is off on this public dashboard."
    if not os.access(run_dir, os.W_OK):
        return False, ("Saving is off here: this dashboard's runs folder is read-only (as a deployed dashboard's "
                       "is). Save from a dashboard that can write the run.")
    return True, ""


@st.cache_resource(show_spinner=False)
def _work_slots():
    """The process's bound on classifications at once (``BIRDCLEF_MAX_CONCURRENT``), shared by all visitors."""
    from birdcore.serving.limits import WorkSlots, max_concurrent

    return WorkSlots(max_concurrent())


@st.cache_resource(show_spinner=False)
def _recent_uploads():
    """The answered uploads the process keeps for scoring them again (``BIRDCLEF_KEEP_UPLOADS_MB`` in all)."""
    from birdcore.serving.limits import RecentUploads, kept_uploads_bytes

    return RecentUploads(kept_uploads_bytes())


def _session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else ""


def upload_key(widget: str) -> str:
    """Key of an upload field (``widget``: "upload", "record"); it changes after each answer
    (``forget_upload``), which empties the field."""
    return f"clip_{widget}_{st.session_state.get(UPLOAD_ROUND_KEY, 0)}"


def forget_upload(clip) -> None:
    """Drop an answered (or unreadable) upload from Streamlit's per-session store, where it would stay
    as long as the session, and empty the upload fields from the next run on (``upload_key``)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    remove = getattr(getattr(ctx, "uploaded_file_mgr", None), "remove_file", None)
    if remove is not None and getattr(clip, "file_id", None):
        remove(ctx.session_id, clip.file_id)
    st.session_state[UPLOAD_ROUND_KEY] = st.session_state.get(UPLOAD_ROUND_KEY, 0) + 1


def clip_settings(run_dir: Path | None, overlap: float) -> tuple:
    """What scoring a clip depends on: the model (``run_dir``, as last written; None: BirdNET) and the
    window ``overlap`` (s)."""
    return ("birdnet" if run_dir is None else (str(run_dir), _stamp(run_dir)), float(overlap))


def kept_clip():
    """The session's last classified clip (``serving.kept_clip.KeptClip``), or None."""
    return st.session_state.get(CLIP_KEY)


def recent_upload(kept) -> bytes | None:
    """The upload of the session's ``kept`` clip, while the process still keeps it (``RecentUploads``)."""
    return _recent_uploads().get(_session_id(), kept.digest)


def classify_clip(clf, settings: tuple, data: bytes, name: str, progress, *, digest: str | None = None):
    """The session's clip ``data`` scored by ``clf`` with ``settings`` (``clip_settings``), as the session
    keeps it (``serving.kept_clip.KeptClip``: a few MB whatever the clip's length; never on disk).
    The same clip with the same settings is not scored again.  Scoring waits for one of the process's
    ``BIRDCLEF_MAX_CONCURRENT`` slots, and says so; the upload is then kept for scoring again among the
    process's recent uploads (``BIRDCLEF_KEEP_UPLOADS_MB`` in all).  ``digest``: the SHA-256 of ``data``
    when known (the kept clip's, scored again).  Raises ``AudioError``."""
    import hashlib

    digest = digest or hashlib.sha256(data).hexdigest()
    kept = kept_clip()
    if kept is not None and (kept.settings, kept.name, kept.digest) == (settings, name, digest):
        return kept
    from birdcore.serving.kept_clip import keep_clip
    from birdcore.serving.limits import max_upload_seconds

    slots, note = _work_slots(), st.empty()
    waiting = lambda n: note.info(f"The server is busy: {slots.size} clips are being classified and {n} "  # noqa: E731
                                  f"visitor{'s are' if n > 1 else ' is'} waiting. Yours starts as soon as one ends.")
    with slots.slot(waiting):
        note.empty()
        result, head = clf.classify_upload(data, name=name, top=5, overlap=settings[1], progress=progress,
                                           max_seconds=max_upload_seconds())
        kept = keep_clip(clf, result, head, name=name, digest=digest, settings=settings)
        del result, head
    st.session_state[CLIP_KEY] = kept
    _recent_uploads().put(_session_id(), digest, data)
    return kept


def species_filter(run_dir: Path | None, lat: float, lon: float, day):
    """The range-model filter of a run's species (or BirdNET's own, ``run_dir=None``) at a place and
    date (``None``: any time of year)."""
    from birdcore.serving.birdnet_range import place_on

    return _species_filter(None if run_dir is None else str(run_dir),
                           None if run_dir is None else _stamp(run_dir), place_on(lat, lon, day))


@st.cache_resource(show_spinner=False, max_entries=64)
def _species_filter(path: str | None, stamp: float | None, place):
    from birdcore.serving.birdnet_range import species_filter

    run = birdnet_classifier().run if path is None else _classifier(path, stamp).run
    return species_filter(run.species, place)


@st.cache_resource(show_spinner=False)
def birdnet_available() -> bool:
    from birdcore.models.birdnet.runtime import birdnet_available as available

    return available()


@st.cache_data(show_spinner=False)
def _table(path: str, stamp: float):
    from birdcore.analysis.scores import load_score_table

    return load_score_table(Path(path))


def score_table(run_dir: Path):
    return _table(str(run_dir), _stamp(run_dir))


@st.cache_resource(show_spinner=False)
def _explorer(path: str, stamp: float):
    from birdcore.analysis.thresholds import ThresholdExplorer

    return ThresholdExplorer(_table(path, stamp))


def explorer(run_dir: Path):
    return _explorer(str(run_dir), _stamp(run_dir))


@st.cache_data(show_spinner=False)
def _json(path: str, stamp: float) -> dict:
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else {}


def run_json(run_dir: Path, name: str) -> dict:
    return _json(str(run_dir / name), _stamp(run_dir))


def species_names(run_dir: Path):
    import pandas as pd

    return pd.read_csv(run_dir / "species.csv", keep_default_na=False)


@st.cache_data(show_spinner=False)
def _birdnet_species():
    from birdcore.runs.loading import birdnet_run as global_birdnet_run

    return global_birdnet_run().species


def model_species(run_dir: Path | None):
    """The species a model can name (``ebird_code``, ``common_name``, ``sci_name``): the run's, or
    BirdNET's 6,522 when ``run_dir`` is None; read from files, without loading the model."""
    table = _birdnet_species() if run_dir is None else species_names(run_dir)
    columns = ["common_name", "sci_name"] + ([] if table["ebird_code"].equals(table["sci_name"]) else ["ebird_code"])
    return table[columns]


def synthetic_banner(run_dir: Path) -> None:
    if run_json(run_dir, "run.json").get("synthetic"):
        st.warning("This run was trained on **synthetic** data (generated calls, not real birds).", icon=":material/science:")


@st.cache_data(show_spinner=False)
def _roc_points(path: str, stamp: float, species: str | None):
    from birdcore.analysis.scores import roc_det_points

    return roc_det_points(_table(path, stamp), species=species)


def roc_points(run_dir: Path, species: str | None):
    """ROC/DET points of the run's test scores (pooled when species is None), computed once."""
    return _roc_points(str(run_dir), _stamp(run_dir), species)


@st.cache_data(show_spinner=False)
def _curve(path: str, stamp: float, species: str | None):
    return _explorer(path, stamp).curve(species=species)


def threshold_curve(run_dir: Path, species: str | None):
    """Metrics against threshold, computed once per run and species (not on every slider move)."""
    return _curve(str(run_dir), _stamp(run_dir), species)


# ---- the Soundscapes page: labelled field recordings scored once per run, labels and overlap


def _path_stamp(path: Path) -> float:
    """Changes when a labels file, or a folder of Raven tables, is edited (cache key)."""
    try:
        paths = [path, *sorted(path.glob("*.txt"))] if path.is_dir() else [path]
        return max(p.stat().st_mtime for p in paths)
    except OSError:
        return 0.0


@st.cache_resource(show_spinner=False, max_entries=8)
def _soundscape_rows(labels: str, stamp: float, audio_dir: str | None):
    from birdcore.data.soundscapes import read_rows

    return read_rows(Path(labels), audio_dir=Path(audio_dir) if audio_dir else None)


def soundscape_rows(labels: Path, audio_dir: Path | None):
    """``data.soundscapes.read_rows`` once per labels file (as last edited) and audio folder;
    raises its ``SoundscapeError``."""
    return _soundscape_rows(str(labels), _path_stamp(Path(labels)), str(audio_dir) if audio_dir else None)


SOUNDSCAPE_SCORES_KEPT = 8  # row scores kept per process (each a few MB for hours of audio)


@st.cache_resource(show_spinner=False)
def _soundscape_store() -> dict:
    """Row scores per (run, labels, audio folder, overlap), shared by every session of the process.
    A plain store instead of a cached function: scoring reports its progress on the page, which a
    cached function cannot (Streamlit would replay those messages on every later hit)."""
    import threading
    from collections import OrderedDict

    return {"lock": threading.Lock(), "scores": OrderedDict()}


def _soundscape_scores(key: tuple, overlap: float, min_overlap: float, progress):
    from birdcore.evaluation.soundscape_scoring import score_rows

    store, full = _soundscape_store(), (*key, float(overlap), float(min_overlap))
    with store["lock"]:
        if full in store["scores"]:
            store["scores"].move_to_end(full)
            return store["scores"][full]
    path, _, labels, labels_stamp, audio_dir = key
    rows = _soundscape_rows(labels, labels_stamp, audio_dir)
    run = classifier(Path(path)).run
    with quiet_native_stderr():
        scored = score_rows(run, rows, overlap=overlap, min_overlap=min_overlap, on_file=progress)
    with store["lock"]:
        store["scores"][full] = scored
        while len(store["scores"]) > SOUNDSCAPE_SCORES_KEPT:
            store["scores"].popitem(last=False)
    return scored


@st.cache_resource(show_spinner=False, max_entries=16)
def _soundscape_view(key: tuple, settings_json: str, _scored):
    from birdcore.analysis.soundscapes import SoundscapeView
    from birdcore.evaluation.soundscapes import SoundscapeSettings

    settings = SoundscapeSettings.from_dict(json.loads(settings_json))
    return SoundscapeView.build(classifier(Path(key[0])).run, _scored, settings)


def soundscape_view(run_dir: Path, labels: Path, audio_dir: Path | None, settings, *, progress=None):
    """The run's ``analysis.soundscapes.SoundscapeView`` of the labelled rows, scored once per process
    for each (run, labels as last edited, audio folder, overlap): moving a slider or saving thresholds
    never scores again.  ``settings``: the ``SoundscapeSettings`` to score and post-process with;
    ``progress(file, done, total)`` is called while scoring.  Returns (key, view); the key names the
    view for ``soundscape_report`` and ``soundscape_curve``.  Raises ``ValueError`` when no file could
    be scored."""
    model_stamp = (run_dir / "run.json").stat().st_mtime
    key = (str(run_dir), model_stamp, str(labels), _path_stamp(Path(labels)), str(audio_dir) if audio_dir else None)
    settings_json = json.dumps(settings.to_dict(), sort_keys=True)
    scored = _soundscape_scores(key, settings.overlap, settings.min_overlap, progress)
    view_key = (key, settings_json)
    return view_key, _soundscape_view(key, settings_json, scored)


@st.cache_data(show_spinner="Computing the metrics…", max_entries=32)
def soundscape_report(view_key: tuple, thresholds_json: str, _view) -> dict:
    """``_view.report`` at a thresholds.json dict (JSON text), once per view and thresholds."""
    return _view.report(json.loads(thresholds_json))


@st.cache_data(show_spinner=False, max_entries=16)
def soundscape_curve(view_key: tuple, _view):
    """``_view.curve()``: the metrics against a global threshold, once per view."""
    return _view.curve()


STATE_LABELS = {"running": "training", "stopped": "stopped", "elsewhere": "on another machine"}


@st.fragment(run_every="30s")
def training_progress() -> None:
    """Runs still being built in the runs folder, one line each, refreshed every 30 s (read-only:
    ``birdcore.runs.progress``).  Call inside ``with st.sidebar:``."""
    from birdcore.runs.progress import runs_in_progress

    runs = runs_in_progress(runs_dir())
    if not runs:
        return
    st.markdown("**Unfinished runs**")
    for r in runs:
        st.caption(f"`{r.name}` · {STATE_LABELS.get(r.state, r.state)} · {r.describe()}")


# ---- the Review page: a review database (path or URL) and the clips of its detections


def review_store(db: str):
    """The existing review database at a path or URL (``review.clips.open_review_store``), opened
    once per process (again when the file is replaced); raises ``StoreError`` naming it."""
    from birdcore.review.clips import open_review_store

    text = str(db).strip()
    if "://" in text:
        return _review_store(text, None)
    try:
        info = Path(text).expanduser().stat()
    except OSError:
        return open_review_store(text)  # raises the one-line StoreError
    return _review_store(text, (info.st_dev, info.st_ino))


@st.cache_resource(show_spinner=False, max_entries=8)
def _review_store(db: str, stamp):
    from birdcore.review.clips import open_review_store

    return open_review_store(db)


def review_clip(path: Path, start_s: float, end_s: float, context_s: float):
    """``review.clips.detection_clip`` and its ``spectrogram``, computed once per file (as last
    written), span and context; raises ``AudioError`` / ValueError."""
    return _review_clip(str(path), _path_stamp(Path(path)), float(start_s), float(end_s), float(context_s))


@st.cache_data(show_spinner=False, max_entries=16)
def _review_clip(path: str, stamp: float, start_s: float, end_s: float, context_s: float):
    from birdcore.review.clips import detection_clip, spectrogram

    clip = detection_clip(path, start_s, end_s, context_s=context_s)
    return clip, spectrogram(clip)
