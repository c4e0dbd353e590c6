"""The public dashboard under load: many visitors classifying a clip at once, in real browser tabs.

    python bench/bench_dashboard_load.py [--sessions 20] [--max-concurrent 2] [--clip FILE | --seconds 21]
                                         [--distinct] [--settle 5]

Starts the dashboard with ``scripts/start-dashboard.sh`` on a free port (``BIRDCLEF_PUBLIC=1``, an empty
runs folder, so BirdNET is the model; ``BIRDCLEF_MAX_CONCURRENT=--max-concurrent``), opens ``--sessions``
tabs of one headless Chromium (selenium; each tab is its own Streamlit session) on the classify page,
lets one more tab classify the clip first (the model loads on the first classification; that tab is
closed), then uploads the clip in every tab, one right after the other, and waits until each tab shows
its answer ("Most likely" or "Best guess").  The time to answer is measured inside each page
(``Date.now()`` when the file is handed to the upload field, and a ``MutationObserver`` noting when the
answer appears), so the order in which the tabs are polled does not count.  The clip is ``--clip`` or a generated 48 kHz
chirp WAV of ``--seconds``; with ``--distinct`` every tab uploads a clip of its own (the same chirps over
other noise), as real visitors do: Streamlit stores identical media bytes once for all sessions.

Records: tabs answered and failed (an error on the page, or no answer within ``--timeout``), time to
answer per session (min, median, max), whether a tab showed the "server is busy" message, the CPU
time the Streamlit process used meanwhile (the browser shares the machine: the rest is mostly its),
and the Streamlit process's resident memory (``VmRSS`` polled every 0.1 s, and ``VmHWM``): with every
tab loaded (the baseline), its peak while the classifications run, and ``--settle`` s after the last
answer: what every session still holds after its answer (``residue``: end minus baseline, per session;
it includes memory the C allocator keeps for reuse), and what Streamlit itself counts then
(``/_stcore/metrics``: session state, uploaded files, media files, caches).
Prints a table and one JSON line;
exits 1 when a session failed.  Run it with ``--max-concurrent 2`` and ``20`` to see what the limiter
bounds.  Needs Debian's chromium and chromium-driver (as tests/test_browser.py).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from load_common import chirp_wav, free_port, proc_mb, report

ROOT = Path(__file__).resolve().parents[1]

# In each tab: note when the answer (or an error) first appears, and whether the busy message showed.
OBSERVE = r"""
window.__bench = {t0: null, answered: null, failed: null, busy: false};
const seen = () => {
  const b = window.__bench, text = document.body ? document.body.textContent : "";
  if (text.includes("The server is busy")) b.busy = true;
  if (b.t0 === null || b.answered !== null || b.failed !== null) return;
  if (text.includes("Most likely") || text.includes("Best guess")) { b.answered = Date.now(); return; }
  const err = document.querySelector("[data-testid='stException']");
  if (err || text.includes("Could not read")) b.failed = (err ? err.textContent : text).slice(0, 300);
};
new MutationObserver(seen).observe(document.body, {subtree: true, childList: true, characterData: true});
"""


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (all its threads) so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class MemoryPoller:
    """``VmRSS`` of a process every ``interval`` seconds, in a thread: ``peak`` since the last ``reset``."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, proc_mb(self.pid, "VmRSS"))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def reset(self) -> float:
        self.peak = now = proc_mb(self.pid, "VmRSS")
        return now

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)


def held_by_streamlit(url: str) -> dict[str, float]:
    """Bytes Streamlit counts in memory, by kind (``cache_memory_bytes`` of ``/_stcore/metrics`` summed by
    ``cache_type``: st_session_state, the uploaded files, the media files of st.audio and downloads, the
    caches), with ``server.enableExpensiveMemoryStats`` (sizes of the objects, not item counts)."""
    import re

    with urllib.request.urlopen(url + "?families=cache_memory_bytes", timeout=60) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'cache_memory_bytes\{cache_type="([^"]*)".*\}\s+([0-9.eE+]+)$', line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s")


def chromium(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # every tab is a visitor in the foreground: no throttled timers or deferred rendering
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--disable-backgrounding-occluded-windows", "--disable-features=CalculateNativeWinOcclusion",
                 f"--user-data-dir={profile}", "--window-size=1400,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=opts)
    driver.set_script_timeout(60)
    return driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20, help="browser tabs, one visitor each")
    parser.add_argument("--max-concurrent", type=int, default=2, help="BIRDCLEF_MAX_CONCURRENT of the dashboard")
    parser.add_argument("--clip", type=Path, help="an audio file to upload (default: a generated chirp WAV)")
    parser.add_argument("--seconds", type=float, default=21.0, help="length of the generated clip")
    parser.add_argument("--distinct", action="store_true", help="a different generated clip in every tab")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the last answer before RSS 'end'")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a tab may wait for its answer")
    args = parser.parse_args()
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        print("needs Debian's chromium and chromium-driver", file=sys.stderr)
        return 2

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    tmp = Path(tempfile.mkdtemp(prefix="bench_dashboard_load_"))
    if args.clip:
        clip = args.clip.resolve()
    else:
        clip = tmp / f"chirp{args.seconds:g}s.wav"
        clip.write_bytes(chirp_wav(args.seconds))
    clips = [clip] * args.sessions
    if args.distinct and not args.clip:
        clips = [tmp / f"chirp{args.seconds:g}s-{k}.wav" for k in range(args.sessions)]
        for k, path in enumerate(clips):
            path.write_bytes(chirp_wav(args.seconds, seed=k + 1))
    (tmp / "runs").mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "BIRDCLEF_PUBLIC": "1",
           "BIRDCLEF_RUNS": str(tmp / "runs"), "BIRDCLEF_MAX_CONCURRENT": str(args.max_concurrent),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = open(tmp / "dashboard.log", "w+")
    cmd = [str(ROOT / "scripts" / "start-dashboard.sh"), "--server.port", str(port), "--server.headless", "true",
           "--server.enableExpensiveMemoryStats", "true"]  # /_stcore/metrics in bytes (``held_by_streamlit``)
    print(f"$ BIRDCLEF_PUBLIC=1 BIRDCLEF_MAX_CONCURRENT={args.max_concurrent} scripts/start-dashboard.sh "
          f"--server.port {port}  ({args.sessions} tabs, clip {clip.name})", flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    driver = poller = None
    results: dict[str, dict] = {}
    try:
        wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc)
        poller = MemoryPoller(proc.pid)  # start-dashboard.sh execs python: its pid is Streamlit's
        rss_started = proc_mb(proc.pid, "VmRSS")
        driver = chromium(tmp / "chrome")
        t_open = time.perf_counter()
        tabs = []
        for k in range(args.sessions):
            if k:
                driver.switch_to.new_window("tab")
            driver.get(url)
            WebDriverWait(driver, 300).until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type='file']")))
            driver.execute_script(OBSERVE)
            tabs.append(driver.current_window_handle)
        open_s = time.perf_counter() - t_open
        # one visitor first, in a tab of its own: the model loads on the first classification
        driver.switch_to.new_window("tab")
        driver.get(url)
        WebDriverWait(driver, 300).until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type='file']")))
        t_warm = time.perf_counter()
        driver.find_element(By.CSS_SELECTOR, "input[type='file']").send_keys(str(clip))
        WebDriverWait(driver, 300).until(EC.presence_of_element_located(
            (By.XPATH, "//*[contains(text(), 'Most likely') or contains(text(), 'Best guess')]")))
        warm_s = time.perf_counter() - t_warm
        driver.close()
        time.sleep(2)  # let the last sessions settle
        rss_base = poller.reset()
        print(f"{len(tabs)} tabs on the classify page in {open_s:.1f} s; a first classification (model "
              f"loading) {warm_s:.1f} s; server RSS {rss_base:.0f} MB", flush=True)

        t_up, cpu_up = time.perf_counter(), cpu_seconds(proc.pid)
        for handle, path in zip(tabs, clips):
            driver.switch_to.window(handle)
            field = driver.find_element(By.CSS_SELECTOR, "input[type='file']")
            driver.execute_script("window.__bench.t0 = Date.now();")
            field.send_keys(str(path))
        upload_s = time.perf_counter() - t_up

        deadline = time.monotonic() + args.timeout
        pending = list(tabs)
        while pending and time.monotonic() < deadline:
            for handle in list(pending):
                driver.switch_to.window(handle)
                state = driver.execute_script("return window.__bench || null;") or {
                    "t0": None, "answered": None, "failed": "the page reloaded", "busy": False}
                if state["answered"] is not None or state["failed"] is not None:
                    results[handle] = state
                    pending.remove(handle)
            time.sleep(0.5)
        for handle in pending:
            driver.switch_to.window(handle)
            state = driver.execute_script("return window.__bench || null;") or {"t0": None, "busy": False}
            shown = " ".join(driver.find_element(By.TAG_NAME, "body").text.split())
            results[handle] = {**state, "answered": None,
                               "failed": f"no answer in {args.timeout:g} s; the page ends: ...{shown[-300:]}"}
        all_s, server_cpu = time.perf_counter() - t_up, cpu_seconds(proc.pid) - cpu_up
        time.sleep(args.settle)
        rss_peak, hwm, rss_end = poller.peak, proc_mb(proc.pid, "VmHWM"), proc_mb(proc.pid, "VmRSS")
        held = held_by_streamlit(f"http://127.0.0.1:{port}/_stcore/metrics")
        alive = proc.poll() is None
        # the answer is a whole page: species table and verdict, no traceback
        driver.switch_to.window(tabs[-1])
        body = driver.find_element(By.TAG_NAME, "body").text
        page_ok = "Top species" in body and "Traceback" not in body
    finally:
        if poller:
            poller.stop()
        if driver:
            driver.quit()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    times = sorted((r["answered"] - r["t0"]) / 1000 for r in results.values() if r["answered"] is not None)
    failed = [r["failed"] for r in results.values() if r["answered"] is None]
    problems = []
    if failed:
        problems.append(f"{len(failed)} of {args.sessions} sessions failed: {failed[:3]}")
    if not page_ok:
        problems.append("the last tab's page lacks 'Top species' or shows a traceback")
    if not alive:
        problems.append("the dashboard process died")
    summary = {
        "bench": "dashboard_load", "sessions": args.sessions, "max_concurrent": args.max_concurrent,
        "clip": clip.name, "clip_bytes": clip.stat().st_size, "distinct_clips": len(set(clips)), "cpus": os.cpu_count(),
        "answered": len(times), "failed": len(failed),
        "answer_s": {"min": round(times[0], 2) if times else None,
                     "median": round(statistics.median(times), 2) if times else None,
                     "max": round(times[-1], 2) if times else None},
        "all_answered_s": round(all_s, 1), "uploads_sent_s": round(upload_s, 1), "tabs_open_s": round(open_s, 1),
        "first_classification_s": round(warm_s, 1),
        "server_cpu_s": round(server_cpu, 1), "server_cpu_share": round(server_cpu / all_s / os.cpu_count(), 2),
        "saw_busy_message": sum(bool(r["busy"]) for r in results.values()),
        "rss_mb": {"started": round(rss_started, 1), "tabs_loaded": round(rss_base, 1), "peak": round(rss_peak, 1),
                   "end": round(rss_end, 1), "hwm": round(hwm, 1)},
        "peak_over_loaded_mb": round(rss_peak - rss_base, 1),
        "residue_per_session_mb": round((rss_end - rss_base) / args.sessions, 1),
        "held_by_streamlit_mb": {k: round(v / 2**20, 2) for k, v in held.items()},
        "ok": not problems, "problems": problems,
    }
    out = [
        ("dashboard", f"BIRDCLEF_PUBLIC=1, BIRDCLEF_MAX_CONCURRENT={args.max_concurrent}, BirdNET, "
                      f"{os.cpu_count()} CPUs"),
        ("sessions", f"{args.sessions} Chromium tabs, each uploading {clip.name}"
                     f"{' (its own)' if args.distinct else ''} "
                     f"({clip.stat().st_size / 1024:.0f} KB); uploads sent within {upload_s:.1f} s"),
        ("answered", f"{len(times)} of {args.sessions} ({len(failed)} failed); all within {all_s:.1f} s; "
                     f"{summary['saw_busy_message']} tabs showed the busy message"),
        ("time to answer (s)", "min {min}, median {median}, max {max}".format(**summary["answer_s"])),
        ("server CPU", f"{server_cpu:.0f} s of the {all_s:.0f} s x {os.cpu_count()} CPUs "
                       f"({100 * server_cpu / all_s / os.cpu_count():.0f} %; the browser had the rest)"),
        ("server RSS (MB)", f"started {rss_started:.0f}, tabs loaded {rss_base:.0f}, peak {rss_peak:.0f} "
                            f"(+{rss_peak - rss_base:.0f}), end {rss_end:.0f}, VmHWM {hwm:.0f}"),
        ("held (MB)", ", ".join(f"{k} {v / 2**20:.1f}" for k, v in held.items()) + " (Streamlit's own count, "
                      "all sessions)"),
        ("kept per session (MB)", f"{(rss_end - rss_base) / args.sessions:.1f} ({args.settle:g} s after the last "
                                  f"answer; {len(set(clips))} distinct clip{'s' if len(set(clips)) > 1 else ''})"),
        ("result", "all answered" if not problems else "FAILED: " + "; ".join(problems)),
    ]
    report(out, summary)
    if problems:
        log.seek(0)
        print("dashboard log (tail):\n" + log.read()[-3000:], file=sys.stderr)
    log.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
