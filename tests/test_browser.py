"""End to end in a real browser: `streamlit run app.py` on localhost, headless Chromium uploads a clip
and sees species with scores.  Needs Debian's chromium and chromium-driver (.ci/run installs them).

Where nginx is installed, the browser reaches the dashboard through it, with the Content-Security-Policy
of deploy/nginx-birdclef.conf, and each test asserts that the browser refused nothing under it."""
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NGINX = shutil.which("nginx")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian packages chromium and chromium-driver (see .ci/run)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)  # polling the health endpoint, bounded by the deadline
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def csp_proxy(upstream: int):
    """nginx on a free port in front of the dashboard at port ``upstream``, adding the dashboards'
    Content-Security-Policy of deploy/nginx-birdclef.conf (plain HTTP: the policy is what is tested);
    its URL.  Without nginx, the dashboard's own URL."""
    if NGINX is None:
        yield f"http://127.0.0.1:{upstream}/"
        return
    site = (ROOT / "deploy" / "nginx-birdclef.conf").read_text()
    maps = re.findall(r"^map \$\S+ \$birdclef_(?:connection|csp) \{.*?^\}", site, re.S | re.M)
    assert len(maps) == 2, "the websocket and CSP maps of deploy/nginx-birdclef.conf"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        user = "user root;" if os.geteuid() == 0 else ""
        conf = Path(tmp, "nginx.conf")
        conf.write_text(f"""{user}
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    {maps[0]}
    {maps[1]}
    server {{
        listen 127.0.0.1:{port};
        add_header Content-Security-Policy $birdclef_csp always;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $birdclef_connection;
            proxy_read_timeout 1h;
            client_max_body_size 200m;
        }}
    }}
}}
""")
        proc = subprocess.Popen([NGINX, "-p", tmp, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc, timeout=20)
            yield f"http://127.0.0.1:{port}/"
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def assert_no_csp_violation(browser) -> None:
    """Nothing the page did was refused under the Content-Security-Policy (Chromium logs each refusal)."""
    refused = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert not refused, refused


@contextlib.contextmanager
def dashboard(env_extra: dict):
    """The dashboard started as `streamlit run app.py` on a free port with ``env_extra``; its URL (through
    the CSP proxy where nginx is installed)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc)
        with csp_proxy(port) as url:
            yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def server(tmp_path, trained_run):
    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / trained_run.name)
    with dashboard({"BIRDCLEF_RUNS": str(runs)}) as url:
        yield url


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for CSP refusals
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_a_clip_and_see_species(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from birdcore.data.synthetic import make_call

    clip = tmp_path / "chirp.wav"
    sf.write(clip, make_call("synchi1", seconds=3.0, sample_rate=16000, rng=np.random.default_rng(5)), 16000)
    browser.get(server)
    wait = WebDriverWait(browser, 120)
    upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type='file']")))
    upload.send_keys(str(clip))
    verdict = wait.until(EC.presence_of_element_located(
        (By.XPATH, "//*[contains(text(), 'Most likely') or contains(text(), 'Best guess')]")))
    assert "score" in verdict.find_element(By.XPATH, "./ancestor::*[@data-testid='stAlert'][1]").text
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Top species" in body and "Traceback" not in body
    assert "Showing chirp.wav" in body  # the upload field emptied: the server keeps no copy of the upload
    player = browser.find_element(By.TAG_NAME, "audio").get_attribute("src")  # the kept listening copy
    assert browser.execute_async_script(
        "fetch(arguments[0]).then(r => arguments[1](r.headers.get('content-type')))", player) == "audio/mpeg"
    browser.save_screenshot(str(tmp_path / "classify.png"))
    assert_no_csp_violation(browser)


def test_a_deep_link_on_a_fresh_server_opens_that_page_in_the_app(server, browser):
    """The first request of a fresh server goes straight to /overview (a bookmark): the page must run
    inside app.py's navigation (run picker, the run's numbers), not as a bare legacy pages/ script."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "overview")
    wait = WebDriverWait(browser, 120)
    wait.until(EC.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Misclassified test recordings')]")))
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Run overview" in body and "Runs folder" in body and "Classify a clip" in body
    assert "No trained runs yet" not in body and "Traceback" not in body
    assert_no_csp_violation(browser)


@pytest.fixture
def review_server(tmp_path):
    """The dashboard with a review database (made by the CLI, as in test_app_review) and no run."""
    from test_app_review import make_review_db

    db = make_review_db(tmp_path / "review")
    with dashboard({"BIRDCLEF_RUNS": str(tmp_path / "no_runs"), "BIRDCLEF_REVIEW_DB": str(db)}) as url:
        yield url, db


def test_one_review_with_the_keyboard(review_server, browser, tmp_path):
    """The Review page by its URL: type a name, press Y (Streamlit's button shortcut), and the verdict
    is in the database while the next detection shows."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from birdcore.review.store import open_store

    url, db = review_server
    store = open_store(db)
    first, second = (int(i) for i in store.queue()["id"].iloc[:2])
    browser.get(url + "review")
    # Streamlit re-renders after each input: an element found a moment ago can be replaced (stale)
    wait = WebDriverWait(browser, 120, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(EC.presence_of_element_located((By.XPATH, f"//*[text()[contains(., 'detection {first} ·')]]")))
    name = wait.until(EC.element_to_be_clickable((By.XPATH, "//input[@aria-label='Your name']")))
    name.send_keys("ana", Keys.ENTER)
    wait.until(EC.element_to_be_clickable((By.XPATH, "//button[.//*[text()='Yes']]")))  # enabled once named
    wait.until_not(EC.presence_of_element_located((By.XPATH, "//*[text()[contains(., 'Type your name')]]")))
    browser.execute_script("document.activeElement.blur()")  # shortcuts are ignored while typing in a field
    ActionChains(browser).send_keys("y").perform()
    wait.until(EC.presence_of_element_located((By.XPATH, f"//*[text()[contains(., 'detection {second} ·')]]")))
    verdicts = store.verdicts()
    assert verdicts[["id", "verdict", "reviewer"]].values.tolist() == [[first, "yes", "ana"]]
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "1 of 6 sampled detections reviewed" in body and "Traceback" not in body
    assert browser.find_elements(By.CSS_SELECTOR, "audio") and browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
    browser.save_screenshot(str(tmp_path / "review.png"))
    assert_no_csp_violation(browser)


def test_the_public_dashboard_offers_no_server_path_and_no_save(tmp_path, trained_run, browser):
    """BIRDCLEF_PUBLIC=1 (compose's visitors' dashboard): the navigation has no Soundscapes or Review page,
    a bookmark to /review does not open it, and the thresholds page has no Save button."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / trained_run.name)
    with dashboard({"BIRDCLEF_RUNS": str(runs), "BIRDCLEF_PUBLIC": "1"}) as url:
        wait = WebDriverWait(browser, 120)
        browser.get(url + "thresholds")
        wait.until(EC.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Saving is off on this public')]")))
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Classify a clip" in body and "Thresholds" in body
        assert "Soundscapes" not in body and "Review detections" not in body and "Runs folder" not in body
        assert not [b for b in browser.find_elements(By.TAG_NAME, "button") if "Save" in b.text]
        browser.get(url + "review")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type='file']")))  # the classify page
        labels = [e.get_attribute("aria-label") or "" for e in browser.find_elements(By.TAG_NAME, "input")]
        assert not [a for a in labels if a in ("Labels", "Audio folder", "Review database")]
        assert_no_csp_violation(browser)
