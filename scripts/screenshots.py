#!/usr/bin/env python
"""Screenshots of every dashboard page for the user guide (docs/images/*.png), taken in real Chromium.

Refresh them after a change to a page (from the repository's root, with the venv):

    .venv/bin/python scripts/screenshots.py --data-dir ../shared/data/xc-pr20

then look at docs/images/ and commit the PNGs. It takes about 5 minutes on 2 CPU cores. What it does,
in a work folder (``--work DIR`` keeps it, and a second call reuses the runs made there):

1. the runs: ``train_job.py --demo`` (the demo run), ``train_job.py --baseline birdnet --data-dir DIR``
   (BirdNET V2.4 zero-shot on a real Cornell-format set: the committed images used xc-pr20, 20 Puerto
   Rico species) and ``--backbone birdnet`` on the same set (a head on BirdNET, for Compare runs: about
   3 minutes, most of it BirdNET's embeddings);
2. synthetic field soundscapes (``birdcore.data.synthetic``) for the Soundscapes page, and a review
   database made from the demo run's detections on them with ``python -m birdcore.review`` for the
   Review page;
3. the dashboard (``streamlit run app.py``, as tests/test_browser.py starts it) in headless Chromium, a
   1280 × 1000 window: Classify (a recording of the set uploaded), Run overview, Species and Thresholds
   on the BirdNET zero-shot run; Compare runs on it and the BirdNET head; Soundscapes and Review
   detections on the demo run. Each page is saved once it has finished running, scrolled to its main
   part, as a 256-colour PNG (each well under 200 KB).

Needs Debian's chromium and chromium-driver (``make browser-deps``). Nothing here is part of the tests.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_browser import CHROMEDRIVER, CHROMIUM, dashboard  # noqa: E402  the tests' own server start

WIDTH, HEIGHT = 1280, 1000  # the page's viewport, in CSS pixels
IMAGES = ROOT / "docs" / "images"
DEMO = "demo"


def birdnet_name(data_dir: Path) -> str:
    """The BirdNET zero-shot run's name: birdnet-<the set's folder name>."""
    return f"birdnet-{data_dir.name}"


def head_name(data_dir: Path) -> str:
    """The BirdNET head's run name (trained on the same split as the zero-shot run, for Compare runs)."""
    return f"birdnet-head-{data_dir.name}"


def run(cmd: list[str], cwd: Path) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def make_runs(work: Path, data_dir: Path) -> None:
    """The three runs in work/runs, each made only when missing."""
    runs, py = work / "runs", sys.executable
    if not (runs / DEMO / "run.json").is_file():
        run([py, str(ROOT / "train_job.py"), "--demo", "--out", str(runs), "--name", DEMO], work)
    if not (runs / birdnet_name(data_dir) / "run.json").is_file():
        run([py, str(ROOT / "train_job.py"), "--baseline", "birdnet", "--data-dir", str(data_dir), "--out",
             str(runs), "--name", birdnet_name(data_dir)], work)
    if not (runs / head_name(data_dir) / "run.json").is_file():
        run([py, str(ROOT / "train_job.py"), "--backbone", "birdnet", "--data-dir", str(data_dir), "--out",
             str(runs), "--name", head_name(data_dir)], work)


def make_soundscapes_and_reviews(work: Path) -> tuple[Path, Path]:
    """Synthetic labelled soundscapes of the demo species, and a review database sampled from the demo
    run's detections on them; (labels file, review database)."""
    from birdcore.data.synthetic import SYNTHETIC_SPECIES, make_synthetic_soundscapes

    sc = work / "soundscapes"
    if not (sc / "summary.csv").is_file():
        make_synthetic_soundscapes(sc, species=[s.code for s in SYNTHETIC_SPECIES[:6]], n_files=3, seconds=60.0,
                                   seed=3)
    db = work / "review" / "review.sqlite"
    if not db.is_file():
        db.parent.mkdir(parents=True, exist_ok=True)
        detections = work / "review" / "detections.csv"
        py, run_dir = sys.executable, str(work / "runs" / DEMO)
        run([py, "-m", "birdcore.predict", run_dir, str(sc / "audio"), "--out", str(detections), "--min-score",
             "0.1", "--overwrite"], ROOT)
        run([py, "-m", "birdcore.review", "import", str(detections), "--db", str(db), "--run", run_dir], ROOT)
        run([py, "-m", "birdcore.review", "sample", "--db", str(db), "--per-species", "8", "--seed", "1"], ROOT)
    return sc / "summary.csv", db


@contextlib.contextmanager
def chromium(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def settled(browser, text: str, *, css: str | None = None, timeout: float = 300.0) -> None:
    """Wait until ``text`` (and an element matching ``css``) is on the page and the app has stopped
    running for a second: Streamlit's status widget gone, no spinner."""
    from selenium.webdriver.common.by import By

    deadline, quiet_since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        body = browser.find_element(By.TAG_NAME, "body").text
        busy = browser.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget'], [data-testid='stSpinner']")
        ready = text in body and (css is None or browser.find_elements(By.CSS_SELECTOR, css))
        if "Traceback" in body:
            raise RuntimeError(f"the page shows a traceback: {body[:2000]}")
        if ready and not busy:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 1.5:  # charts draw after the script ends
                return
        else:
            quiet_since = None
        time.sleep(0.3)  # polling the page, bounded by the deadline
    raise TimeoutError(f"{text!r} did not settle within {timeout} s")


def save(browser, name: str) -> Path:
    """The window as docs/images/<name>.png, reduced to 256 colours."""
    from PIL import Image

    IMAGES.mkdir(parents=True, exist_ok=True)
    raw = IMAGES / f"{name}.raw.png"
    browser.save_screenshot(str(raw))
    out = IMAGES / f"{name}.png"
    with Image.open(raw) as img:
        img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            out, optimize=True)
    raw.unlink()
    print(f"{out.relative_to(ROOT)}: {out.stat().st_size // 1024} KB", flush=True)
    return out


def pick_clip(data_dir: Path) -> Path:
    """A recording of the set (the middle one by name, so the same set gives the same image)."""
    files = sorted((data_dir / "train_audio").rglob("*.mp3"))
    if not files:
        raise SystemExit(f"{data_dir}/train_audio: no mp3 recordings")
    return files[len(files) // 2]


def scroll_to(browser, *, text: str | None = None, css: str | None = None, above: int = 16) -> None:
    """Scroll the page so the first element showing ``text`` (or matching ``css``) is ``above`` pixels below
    the top of the window."""
    from selenium.webdriver.common.by import By

    el = (browser.find_element(By.XPATH, f"//*[text()[contains(., {text!r})]]") if text is not None
          else browser.find_element(By.CSS_SELECTOR, css))
    browser.execute_script("""
        const el = arguments[0], above = arguments[1];
        el.scrollIntoView({block: 'start'});
        for (let p = el.parentElement; p; p = p.parentElement) {
            if (p.scrollHeight > p.clientHeight && getComputedStyle(p).overflowY.match(/auto|scroll/)) {
                p.scrollTop = Math.max(0, p.scrollTop - above); break;
            }
        }""", el, above)


def shoot(work: Path, data_dir: Path, clip: Path | None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    labels, db = make_soundscapes_and_reviews(work)
    real, compare, demo = work / "runs-real", work / "runs-compare", work / "runs-demo"
    for folder, names in ((real, [birdnet_name(data_dir)]), (compare, [birdnet_name(data_dir), head_name(data_dir)]),
                          (demo, [DEMO])):
        folder.mkdir(exist_ok=True)
        for n in names:
            if not (folder / n).exists():
                (folder / n).symlink_to(work / "runs" / n)
    clip = clip or pick_clip(data_dir)
    plain = {"STREAMLIT_CLIENT_TOOLBAR_MODE": "viewer"}  # no Deploy button in the pictures
    with chromium(work / "chrome") as browser:
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        with dashboard({**plain, "BIRDCLEF_RUNS": str(real)}) as url:
            browser.get(url)
            settled(browser, "Which bird is singing?", css="input[type='file']")
            browser.find_element(By.CSS_SELECTOR, "input[type='file']").send_keys(str(clip))
            settled(browser, "Top species", css=".js-plotly-plot")
            scroll_to(browser, css="[data-testid='stAudio'], audio", above=80)
            save(browser, "classify")
            for page, text, css, target in (("overview", "Misclassified test recordings", None, None),
                                            ("species", "others; ", ".js-plotly-plot", "others; "),
                                            ("thresholds", "Thresholds", ".js-plotly-plot", None)):
                browser.get(url + page)
                settled(browser, text, css=css)
                if target:
                    scroll_to(browser, text=target, above=330)
                save(browser, page)
        with dashboard({**plain, "BIRDCLEF_RUNS": str(compare)}) as url:
            browser.get(url + "compare")
            settled(browser, "McNemar")
            scroll_to(browser, text="A: ", above=110)
            save(browser, "compare")
        with dashboard({**plain, "BIRDCLEF_RUNS": str(demo), "BIRDCLEF_SOUNDSCAPES": str(labels),
                        "BIRDCLEF_REVIEW_DB": str(db)}) as url:
            browser.get(url + "soundscapes")
            settled(browser, "Timeline", css=".vega-embed")
            scroll_to(browser, text="Timeline", above=16)
            save(browser, "soundscapes")
            browser.get(url + "review")
            settled(browser, "Review detections", css="audio")
            name = browser.find_element(By.XPATH, "//input[@aria-label='Your name']")
            name.send_keys("ana", Keys.ENTER)
            settled(browser, "Keyboard:", css="audio")
            browser.execute_script("document.activeElement.blur()")
            scroll_to(browser, text="Score ", above=150)
            save(browser, "review")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="a Cornell-format set for the BirdNET run and the classified clip (e.g. xc-pr20)")
    parser.add_argument("--clip", type=Path, help="the clip the Classify page shows (default: one of the set's)")
    parser.add_argument("--work", type=Path, help="work folder, kept (default: a temporary one, removed)")
    args = parser.parse_args()
    if not (CHROMIUM and CHROMEDRIVER):
        print("needs chromium and chromedriver (make browser-deps)", file=sys.stderr)
        return 2
    if not (args.data_dir / "train_audio").is_dir():
        print(f"{args.data_dir}: not a Cornell-format set (no train_audio/)", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="birdclef-shots-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        make_runs(work.resolve(), args.data_dir.resolve())
        shoot(work.resolve(), args.data_dir.resolve(), args.clip)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
