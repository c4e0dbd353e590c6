"""The classification API (birdcore.serving.api) through real HTTP requests to a uvicorn server on a free
localhost port, with BirdNET (installed in the venv) as the model and clips made here."""
import io
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 1024 ** 2  # the test server's upload limit: 1 MB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clip(seconds: float = 7.0, *, seed: int = 3, fmt: str = "WAV", sr: int = 48000) -> bytes:
    from birdcore.data.synthetic import make_call

    wave = make_call("syntri1", seconds=seconds, sample_rate=sr, rng=np.random.default_rng(seed))
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt)
    return buf.getvalue()


@contextmanager
def serving(app):
    """``app`` served by uvicorn in a thread on a free localhost port; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def api():
    """One BirdNET classifier behind a uvicorn server (the API's own app factory)."""
    from birdcore.runs.loading import load_run_ref
    from birdcore.serving.api import create_app
    from birdcore.serving.classify import ClipClassifier

    clf = ClipClassifier(load_run_ref("birdnet"))
    app = create_app(clf, max_upload_bytes=LIMIT, max_concurrent=2)
    with serving(app) as url:
        yield SimpleNamespace(url=url, clf=clf, app=app)


def classify(api, data: bytes | None = b"", *, name="clip.wav", fields=None) -> requests.Response:
    """POST /v1/classify as multipart/form-data: the text ``fields``, then ``data`` as the file (None: no file)."""
    parts = [(key, (None, value)) for key, value in (fields or {}).items()]
    if data is not None:
        parts.append(("file", (name, data, "application/octet-stream")))
    return requests.post(f"{api.url}/v1/classify", files=parts, timeout=60)


def test_health_species_and_docs(api):
    health = requests.get(f"{api.url}/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["species"] == 6522
    assert "CC BY-NC-SA" in health.json()["license"]
    species = requests.get(f"{api.url}/v1/species", timeout=10).json()
    assert species["count"] == len(species["species"]) == 6522
    assert {"code": "Turdus migratorius", "common_name": "American Robin", "sci_name": "Turdus migratorius",
            "threshold": 0.5} in species["species"]
    spec = requests.get(f"{api.url}/openapi.json", timeout=10).json()
    form = spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"] and {"species", "lat", "lon", "date"} <= set(form["properties"])
    assert {"400", "413", "415", "422"} <= set(spec["paths"]["/v1/classify"]["post"]["responses"])
    docs = requests.get(f"{api.url}/docs", timeout=10)
    assert docs.status_code == 200 and "openapi.json" in docs.text


def page_assets(html: str) -> list[str]:
    """The URLs a page loads: every ``<script src>`` and ``<link href>``."""
    tags = re.findall(r"<(?:script|link)\b[^>]*>", html, flags=re.IGNORECASE)
    return [m.group(2) for tag in tags for m in [re.search(r"\b(src|href)\s*=\s*[\"']([^\"']+)", tag)] if m]


@pytest.mark.parametrize("root_path", ["", "/api"])
def test_docs_pages_load_their_assets_from_the_api_not_a_cdn(api, root_path):
    """/docs and /redoc work offline: their scripts and styles are served by the API itself, under the
    root path a proxy serves it at (README, "API under a prefix": the proxy strips the prefix)."""
    from birdcore.serving.api import create_app

    app = create_app(api.clf, max_upload_bytes=LIMIT, root_path=root_path) if root_path else api.app
    with serving(app) if root_path else nullcontext(api.url) as url:
        for page in ("/docs", "/redoc"):
            html = requests.get(f"{url}{page}", timeout=10)
            assert html.status_code == 200, (page, html.status_code)
            assert f"{root_path}/openapi.json" in html.text
            assets = page_assets(html.text)
            assert any(a.endswith(".js") for a in assets), (page, assets)
            for asset in assets:
                parts = urlsplit(asset)
                assert not parts.netloc and not parts.scheme, f"{page} loads {asset} from another host"
                assert asset.startswith(f"{root_path}/"), f"{page}: {asset} misses the root path {root_path!r}"
                served = requests.get(f"{url}{asset[len(root_path):]}", timeout=10)  # as the proxy forwards it
                assert served.status_code == 200 and served.content, (page, asset, served.status_code)


def test_classify_returns_the_classify_pages_answer(api):
    data = clip()
    response = classify(api, data, fields={"min_score": "0.01"})
    assert response.status_code == 200, response.text
    body = response.json()
    direct, _ = api.clf.classify_upload(data, name="clip.wav", top=5)  # the classify page's call
    assert [s["code"] for s in body["top"]] == [p.ebird_code for p in direct.top]
    assert [s["score"] for s in body["top"]] == pytest.approx([p.score for p in direct.top], abs=1e-5)
    first = body["top"][0]
    assert first["threshold"] == 0.5 and first["decision"] in ("detected", "below threshold")
    assert "occurrence" not in first  # only with a location
    assert (body["file"], body["seconds"], body["segment_seconds"], body["hop_seconds"]) == ("clip.wav", 7.0, 3.0, 3.0)
    assert body["detections"] and {d["start_s"] for d in body["detections"]} <= {0.0, 3.0, 6.0}
    assert all(d["score"] >= 0.01 for d in body["detections"])
    assert body["filters"] == [] and body["removed_by_filter"] == []


def test_classify_other_formats_and_overlap(api):
    flac = classify(api, clip(fmt="FLAC"), name="field.flac")
    assert flac.status_code == 200 and flac.json()["file"] == "field.flac"
    dense = classify(api, clip(), fields={"overlap": "1.5", "min_score": "0.0"}).json()
    assert dense["hop_seconds"] == 1.5
    assert sorted({d["start_s"] for d in dense["detections"]}) == [0.0, 1.5, 3.0, 4.5]


def test_species_list_and_location_narrow_the_answer(api):
    names = {"species": "Coereba flaveola  # Bananaquit\nnorcar\n", "top": "10"}
    listed = classify(api, clip(), fields=names)
    assert listed.status_code == 200, listed.text
    assert sorted(s["sci_name"] for s in listed.json()["top"]) == ["Cardinalis cardinalis", "Coereba flaveola"]
    assert listed.json()["filters"] == ["2 of 6522 species kept (species: 2 species)"]
    place = classify(api, clip(), fields={"lat": "42.48", "lon": "-76.45", "date": "2026-05-20"}).json()
    assert "species expected at 42.480, -76.450, week 19 of 48" in place["filters"][0]
    assert all(s["occurrence"] >= 0.03 for s in place["top"])
    unfiltered = classify(api, clip()).json()["top"][0]
    assert place["removed_by_filter"][0]["code"] == unfiltered["code"]  # the filter's loss is named


@pytest.mark.parametrize("data,name,fields,status,words", [
    (b"", "empty.wav", {}, 422, "empty.wav: empty file"),
    (b"just some text, not audio", "notes.wav", {}, 422, "notes.wav: not a readable audio file"),
    (np.random.default_rng(1).bytes(5000), "noise.mp3", {}, 422, "noise.mp3: not a readable audio file"),
    (None, "", {"species": "Coereba flaveola"}, 400, "no 'file' field"),
    ("clip", "clip.wav", {"species": "Coereba flaveola\nDodo"}, 400, "match no species of this model: Dodo"),
    ("clip", "clip.wav", {"species": "# nothing but a comment"}, 400, "species: the list names no species"),
    ("clip", "clip.wav", {"lat": "95", "lon": "10"}, 400, "lat: must be between -90 and 90"),
    ("clip", "clip.wav", {"lat": "north", "lon": "10"}, 400, "lat: expected a number, got 'north'"),
    ("clip", "clip.wav", {"lat": "42.5"}, 400, "lon: missing"),
    ("clip", "clip.wav", {"date": "2026-05-20"}, 400, "date: needs a location"),
    ("clip", "clip.wav", {"lat": "42.5", "lon": "-76", "date": "20/05/2026"}, 400, "date: expected YYYY-MM-DD"),
    ("clip", "clip.wav", {"lat": "42.5", "lon": "-76", "week": "49"}, 400, "week: must be between 1 and 48"),
    ("clip", "clip.wav", {"top": "0"}, 400, "top: must be between 1 and 50"),
    ("clip", "clip.wav", {"overlap": "3"}, 400, "overlap: must be between 0 and 2.9"),
    ("clip", "clip.wav", {"colour": "blue"}, 400, "unknown field 'colour'"),
])
def test_bad_input_gets_a_4xx_with_a_one_line_reason(api, data, name, fields, status, words):
    response = classify(api, clip() if data == "clip" else data, name=name, fields=fields)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert words in detail and "\n" not in detail


def test_not_multipart_and_two_files_are_refused(api):
    plain = requests.post(f"{api.url}/v1/classify", data=clip(), headers={"Content-Type": "audio/wav"}, timeout=30)
    assert plain.status_code == 415 and "multipart/form-data" in plain.json()["detail"]
    two_files = [("file", ("a.wav", clip(2.0))), ("file", ("b.wav", clip(2.0)))]
    two = requests.post(f"{api.url}/v1/classify", files=two_files, timeout=30)
    assert two.status_code == 400 and "more than one 'file'" in two.json()["detail"]
    broken = requests.post(f"{api.url}/v1/classify", data=b"--xyz\r\nContent-Disposition: form-data; name=\"top\"",
                           headers={"Content-Type": "multipart/form-data; boundary=xyz"}, timeout=30)
    assert broken.status_code == 400 and "multipart body" in broken.json()["detail"]


def test_oversized_upload_gets_413_whether_declared_or_streamed(api):
    big = np.random.default_rng(2).bytes(LIMIT + LIMIT // 2)
    declared = classify(api, big, name="long.wav")
    assert declared.status_code == 413 and "limit of 1 MB" in declared.json()["detail"]

    def chunks():  # no Content-Length: the server counts while it reads
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="long.wav"\r\n\r\n'
        for start in range(0, len(big), 64 * 1024):
            yield big[start:start + 64 * 1024]
        yield b"\r\n--b--\r\n"

    streamed = requests.post(f"{api.url}/v1/classify", data=chunks(), timeout=30,
                             headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert streamed.status_code == 413
    assert requests.get(f"{api.url}/healthz", timeout=10).status_code == 200


def test_uploads_never_touch_the_disk(api, monkeypatch):
    """A temporary file of any kind during a request fails it: the body and the audio stay in memory."""
    def refuse(*args, **kwargs):
        raise AssertionError("an upload was about to be written to disk")

    for name in ("NamedTemporaryFile", "SpooledTemporaryFile", "TemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    for data, name in ((clip(), "clip.wav"), (clip(fmt="FLAC"), "clip.flac"), (clip(fmt="MP3"), "clip.mp3")):
        response = classify(api, data, name=name)
        assert response.status_code == 200, response.text


def test_concurrent_clients_share_one_model_and_get_the_same_answer(api):
    data = clip(seed=11)
    alone = classify(api, data).json()
    barrier = threading.Barrier(8)

    def post(_):
        barrier.wait(timeout=30)  # all eight at once
        return classify(api, data)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(post, range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert all(a.json() == alone for a in answers)
    assert api.app.state.classifier is api.clf


def test_cli_refuses_bad_options_in_one_line():
    for args, words in ((["--run", "birdnet", "--max-upload-mb", "0"], "--max-upload-mb must be positive"),
                        (["--run", "birdnet", "--port", "70000"], "--port must be 0..65535"),
                        (["--run", "birdnet", "--root-path", "api"], "--root-path must start with '/'")):
        done = subprocess.run([sys.executable, "-m", "birdcore.serve", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2 and words in done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_missing_run_is_one_line_not_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "birdcore.serve", "--run", str(tmp_path / "nope")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "nope: not a complete run" in done.stderr and "Traceback" not in done.stderr


def test_api_serves_a_trained_run_and_refuses_overlap_there(trained_run):
    from birdcore.runs.loading import load_run
    from birdcore.serving.api import create_app
    from birdcore.serving.classify import ClipClassifier

    run = SimpleNamespace(clf=None)
    with serving(create_app(ClipClassifier(load_run(trained_run)), max_upload_bytes=LIMIT)) as run.url:
        data = clip(seconds=3.0, sr=16000)
        ok = classify(run, data, name="c.wav")
        assert ok.status_code == 200, ok.text
        assert len(ok.json()["top"]) == 3 and ok.json()["segment_seconds"] == 1.0
        refused = classify(run, data, name="c.wav", fields={"overlap": "0.5"})
        assert refused.status_code == 400 and "BirdNET models only" in refused.json()["detail"]
        assert requests.get(f"{run.url}/healthz", timeout=10).json()["synthetic"] is True


def test_cors_is_off_by_default_and_allows_only_the_configured_origins(api):
    """A browser page of another site gets no Access-Control-Allow-Origin unless the server names its origin."""
    from birdcore.serving.api import create_app

    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    answer = requests.options(f"{api.url}/v1/classify", headers=preflight, timeout=30)
    assert "access-control-allow-origin" not in answer.headers
    assert "access-control-allow-origin" not in requests.get(f"{api.url}/healthz", headers=preflight,
                                                             timeout=30).headers
    with serving(create_app(api.clf, cors_origins=("https://birds.example.org",))) as url:
        mine = requests.options(f"{url}/v1/classify", timeout=30,
                                headers={**preflight, "Origin": "https://birds.example.org"})
        assert mine.headers.get("access-control-allow-origin") == "https://birds.example.org"
        other = requests.options(f"{url}/v1/classify", headers=preflight, timeout=30)
        assert "access-control-allow-origin" not in other.headers
