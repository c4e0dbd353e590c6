"""The user guide (docs/, mkdocs.yml) builds with ``mkdocs build --strict``, offline: no broken internal
link or anchor, every option of every command in the generated CLI reference, a current screenshot of
every dashboard page, and a README of at most 200 lines whose links resolve."""
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("mkdocs")  # requirements-dev.txt: CI always has it


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The guide built once with --strict into a temporary folder (warnings are errors)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def page_text(site: Path, uri: str) -> str:
    return html.unescape((site / uri / "index.html").read_text(encoding="utf-8"))


def test_every_option_of_every_command_is_in_the_built_reference(site):
    from birdcore.cli.reference import commands, option_strings, subparsers

    text = page_text(site, "reference/cli")
    cmds = commands()
    assert {c.name for c in cmds} >= {"python train_job.py", "python -m birdcore.predict", "python -m birdcore.review"}
    missing = []
    for cmd in cmds:
        assert f"{cmd.name}" in text
        for name in subparsers(cmd.parser):
            assert f"{cmd.name} {name}" in text, f"{cmd.name} {name}"
        for opt in option_strings(cmd.parser):
            if f"<code>{opt}</code>" not in text:
                missing.append(f"{cmd.name} {opt}")
    assert not missing, missing


def test_benchmarks_is_included_from_its_one_copy(site):
    first_heading = next(line for line in (ROOT / "BENCHMARKS.md").read_text().splitlines() if line.startswith("## "))
    assert html.escape(first_heading[3:], quote=False) in (site / "reference/benchmarks/index.html").read_text()
    assert not (ROOT / "docs" / "reference" / "benchmarks.md").exists()  # generated at build time only


def test_every_dashboard_page_has_a_screenshot_in_the_guide(site):
    pages = re.findall(r'st\.Page\("pages/(\w+)\.py"', (ROOT / "app.py").read_text())
    assert len(pages) == 7, pages
    built = "".join(p.read_text(encoding="utf-8") for p in site.rglob("*.html"))
    for name in pages:
        image = ROOT / "docs" / "images" / f"{name}.png"
        assert image.is_file(), f"no screenshot of pages/{name}.py (scripts/screenshots.py makes them)"
        assert image.stat().st_size < 200_000, f"{image.name}: {image.stat().st_size} bytes"
        assert f"images/{name}.png" in built, f"{image.name} is not shown in the guide"


def test_the_site_fetches_nothing_from_other_hosts(site):
    """Fonts and scripts come from the site itself, so the guide reads offline (theme.font: false)."""
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r'<(?:link|script)[^>]+(?:href|src)="https?://', text), page


def test_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert "make run" in readme and "make test" in readme
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert len(images) == 1 and (ROOT / images[0]).is_file(), images
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not re.match(r"[a-z]+://", target):
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
