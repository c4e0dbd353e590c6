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


CLIP_KEY = "last_clip"


def classify_clip(clf, run_dir: Path | None, data: bytes, name: str, progress, *, overlap: float = 0.0):
    """``clf.classify_upload`` for this session's clip, remembered for the session's last clip only:
    moving a filter re-renders without scoring the audio again.  Only the scores
    and the first two minutes of decoded audio are kept (in memory, never on disk).  ``run_dir``:
    the run scoring the clip, None for BirdNET; rewriting the run's thresholds scores anew, and so
    does another ``overlap`` (seconds by which BirdNET's windows overlap)."""
    import hashlib

    model_key = "birdnet" if run_dir is None else (str(run_dir), _stamp(run_dir))
    key = (model_key, name, hashlib.sha256(data).hexdigest(), float(overlap))
    memo = st.session_state.get(CLIP_KEY)
    if memo is not None and memo[0] == key:
        return memo[1], memo[2]
    result, wave = clf.classify_upload(data, name=name, top=5, overlap=overlap, progress=progress)
    st.session_state[CLIP_KEY] = (key, result, wave)
    return result, wave


def species_filter(run_dir: Path | None, lat: float, lon: float, day):
    """The range-model filter of a run's species (or BirdNET's own, ``run_dir=None``) at a place and
    date (``None``: any time of year)."""
    from birdcore.serving.birdnet_range import ANY_WEEK, Place, week_of

    week = ANY_WEEK if day is None else week_of(day)
    return _species_filter(None if run_dir is None else str(run_dir),
                           None if run_dir is None else _stamp(run_dir), Place(lat, lon, week))


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
