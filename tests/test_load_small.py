"""Small load checks (bench/bench_api_load.py and bench/bench_dashboard_load.py in miniature): many
clients at once, bad uploads mixed in, and every answer what it should be.

- the API (uvicorn in a thread, BirdNET): 40 requests from 8 clients, every 10th a bad upload (an empty
  file, bytes that are not audio, no ``file`` field, ``top`` out of range): no 5xx, every bad one a 4xx,
  every good one a 200 with species;
- the public dashboard (``streamlit run app.py``, ``BIRDCLEF_PUBLIC=1``, ``BIRDCLEF_MAX_CONCURRENT=1``)
  in 3 headless Chromium tabs uploading at once: every tab gets its answer, none an error.
"""
import io
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf

from test_api import free_port

ROOT = Path(__file__).resolve().parents[1]
BAD_KINDS = ("empty file", "not audio", "no file field", "top out of range")


def chirp_wav(seconds: float, rate: int = 48000) -> bytes:
    """Rising 2-6 kHz chirps (0.5 s every second) over faint noise, a 16-bit mono WAV."""
    t = np.arange(int(seconds * rate)) / rate
    phase = t % 1.0
    wave = 0.3 * np.sin(2 * np.pi * (2000 * phase + 4000 * phase ** 2)) * (phase < 0.5)
    wave += 0.01 * np.random.default_rng(0).standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def request_parts(i: int, clip: bytes, bad_every: int = 10) -> tuple[str, list]:
    """The kind of the ``i``-th request and its multipart parts: every ``bad_every``-th is bad, in turn."""
    if i % bad_every == bad_every - 1:
        kind = BAD_KINDS[(i // bad_every) % len(BAD_KINDS)]
        return kind, {"empty file": [("file", ("empty.wav", b"", "audio/wav"))],
                      "not audio": [("file", ("notes.wav", b"just some text, not audio " * 40, "audio/wav"))],
                      "no file field": [("top", (None, "3"))],
                      "top out of range": [("top", (None, "999")), ("file", ("clip.wav", clip, "audio/wav"))]}[kind]
    return "good", [("top", (None, "5")), ("file", ("clip.wav", clip, "audio/wav"))]


def drive(url: str, n: int, clients: int, clip: bytes) -> list[tuple[str, object]]:
    """``n`` POST /v1/classify from ``clients`` threads, a ``requests.Session`` each: (kind, status) per
    request; a 200 without species, or no answer, is reported as such instead of a status code."""
    local = threading.local()

    def one(i: int):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        session = local.session
        kind, parts = request_parts(i, clip)
        try:
            resp = session.post(f"{url}/v1/classify", files=parts, timeout=120)
        except requests.RequestException as exc:
            return kind, type(exc).__name__
        if resp.status_code == 200 and not resp.json().get("top"):
            return kind, "200 without species"
        return kind, resp.status_code

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(n)))


@pytest.fixture(scope="module")
def api_url():
    """BirdNET behind the API's own app, served by uvicorn in a thread (``test_api.serving``)."""
    from birdcore.runs.loading import load_run_ref
    from birdcore.serving.api import create_app
    from birdcore.serving.classify import ClipClassifier
    from test_api import serving

    app = create_app(ClipClassifier(load_run_ref("birdnet")), max_upload_bytes=4 * 1024 ** 2, max_concurrent=2)
    with serving(app) as url:
        yield url


def test_the_api_under_eight_clients_with_bad_uploads_mixed_in(api_url):
    clip = chirp_wav(6.0)
    rows = drive(api_url, 40, 8, clip)
    by_kind = {kind: Counter(str(s) for k, s in rows if k == kind) for kind in ("good", *BAD_KINDS)}
    assert by_kind["good"] == {"200": 36}, by_kind
    for kind in BAD_KINDS:  # each kind once in 40 requests
        assert sum(by_kind[kind].values()) == 1, by_kind
        (status,) = by_kind[kind]
        assert status.isdigit() and 400 <= int(status) < 500, by_kind
    assert not [s for _, s in rows if not isinstance(s, int) or s >= 500]
    assert requests.get(f"{api_url}/healthz", timeout=10).json()["status"] == "ok"  # still serving


# ---------------------------------------------------------------- the dashboard, a few visitors at once

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

OBSERVE = r"""
window.__load = {answered: false, failed: null};
new MutationObserver(() => {
  const b = window.__load, text = document.body.textContent;
  if (b.answered || b.failed !== null || !window.__uploaded) return;
  if (text.includes("Most likely") || text.includes("Best guess")) b.answered = true;
  const err = document.querySelector("[data-testid='stException']");
  if (err || text.includes("Could not read")) b.failed = (err ? err.textContent : text).slice(0, 300);
}).observe(document.body, {subtree: true, childList: true, characterData: true});
"""


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian packages chromium and chromium-driver")
def test_three_visitors_at_once_on_the_public_dashboard_all_get_their_answer(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    clip = tmp_path / "chirp.wav"
    clip.write_bytes(chirp_wav(9.0))
    (tmp_path / "runs").mkdir()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIRDCLEF_PUBLIC": "1", "BIRDCLEF_RUNS": str(tmp_path / "runs"),
           "BIRDCLEF_MAX_CONCURRENT": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = None
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                     "--disable-backgrounding-occluded-windows", f"--user-data-dir={tmp_path / 'chrome'}",
                     "--window-size=1400,1000"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        wait = WebDriverWait(driver, 120)
        tabs = []
        for k in range(3):
            if k:
                driver.switch_to.new_window("tab")
            driver.get(f"http://127.0.0.1:{port}/")
            wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type='file']")))
            driver.execute_script(OBSERVE)
            tabs.append(driver.current_window_handle)
        for handle in tabs:  # the three uploads go out together
            driver.switch_to.window(handle)
            driver.execute_script("window.__uploaded = true;")
            driver.find_element(By.CSS_SELECTOR, "input[type='file']").send_keys(str(clip))
        states, deadline = {}, time.monotonic() + 120
        while len(states) < len(tabs) and time.monotonic() < deadline:
            for handle in tabs:
                driver.switch_to.window(handle)
                state = driver.execute_script("return window.__load;")
                if state["answered"] or state["failed"] is not None:
                    states[handle] = state
            time.sleep(0.3)
        assert len(states) == 3, f"only {len(states)} of 3 tabs answered"
        assert all(s["answered"] and s["failed"] is None for s in states.values()), states
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Top species" in body and "Traceback" not in body
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
