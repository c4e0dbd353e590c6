"""birdclef dashboard: ``streamlit run app.py``.

Pages: classify a clip, run overview, per-species test scores, thresholds, labelled soundscapes, run
comparison, and the review of detections.
The runs folder is ``runs/`` unless ``BIRDCLEF_RUNS`` names another.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import streamlit as st  # noqa: E402

import ui  # noqa: E402
from birdcore.serving.access import public_mode  # noqa: E402
from birdcore.serving.heap import settle_heap  # noqa: E402

st.set_page_config(page_title="birdclef", page_icon=":material/flutter_dash:", layout="wide")

PUBLIC = public_mode()  # BIRDCLEF_PUBLIC=1: visitors' pages only: no typed server path, nothing saved
classify = st.Page("pages/classify.py", title="Classify a clip", icon=":material/mic:", default=True)
pages = [
    classify,
    st.Page("pages/overview.py", title="Run overview", icon=":material/dashboard:"),
    st.Page("pages/species.py", title="Species", icon=":material/flutter_dash:"),
    st.Page("pages/thresholds.py", title="Thresholds", icon=":material/tune:"),
    *([] if PUBLIC else [st.Page("pages/soundscapes.py", title="Soundscapes", icon=":material/graphic_eq:")]),
    st.Page("pages/compare.py", title="Compare runs", icon=":material/compare_arrows:"),
    *([] if PUBLIC else [st.Page("pages/review.py", title="Review detections", icon=":material/fact_check:")]),
]
st.session_state[ui.NAV_KEY] = True
nav = st.navigation(pages)
ui.follow_deep_link()
if not PUBLIC:
    st.sidebar.caption(f"Runs folder: `{ui.runs_dir()}`")
ui.run_picker(prefer_real=nav is classify)  # a visitor's first model is not a synthetic demo run
with st.sidebar:
    ui.training_progress()
try:
    nav.run()
finally:  # a page may end the run early (st.stop)
    settle_heap()  # Streamlit's collection after the run then walks only what is new
