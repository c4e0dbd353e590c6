"""The dashboard in public mode (``BIRDCLEF_PUBLIC=1``) and with allowed folders (``BIRDCLEF_DATA_ROOTS``):
no page takes a server path or saves anything; typed paths and URLs outside the allowed folders are refused
in one line before anything is opened."""
from __future__ import annotations

import pytest

from test_app import PAGES, app_at, runs, texts  # noqa: F401  (the runs fixture)

PATH_LABELS = ("Labels", "Audio folder", "Review database")


def path_fields(at) -> list[str]:
    return [t.label for t in at.text_input if t.label in PATH_LABELS]


def save_buttons(at) -> list[str]:
    return [b.label for b in at.button if "Save" in b.label]


def test_public_pages_take_no_server_path_and_save_nothing(runs, monkeypatch):
    monkeypatch.setenv("BIRDCLEF_PUBLIC", "1")
    for page in PAGES:
        at = app_at(page)
        assert not path_fields(at) and not save_buttons(at), page
        assert "Runs folder" not in texts(at)
    at = app_at("pages/thresholds.py")
    assert "Saving is off on this public dashboard" in texts(at)


def test_the_analysts_dashboard_still_saves(runs, monkeypatch):
    monkeypatch.delenv("BIRDCLEF_PUBLIC", raising=False)
    assert save_buttons(app_at("pages/thresholds.py")) == ["Save thresholds into the run"]


@pytest.mark.parametrize("page,field", [("pages/soundscapes.py", 0), ("pages/review.py", 0)])
def test_typed_paths_outside_the_allowed_folders_are_refused_before_opening(page, field, runs, tmp_path,
                                                                           monkeypatch):
    allowed = tmp_path / "data"
    allowed.mkdir()
    monkeypatch.setenv("BIRDCLEF_DATA_ROOTS", str(allowed))
    monkeypatch.delenv("BIRDCLEF_PUBLIC", raising=False)
    monkeypatch.delenv("BIRDCLEF_REVIEW_DB", raising=False)
    monkeypatch.delenv("BIRDCLEF_SOUNDSCAPES", raising=False)
    opened = []
    import builtins

    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1])
    at = app_at(page)
    typed = "/etc/passwd" if page.endswith("soundscapes.py") else "postgresql://10.0.0.1:5432/x"
    at.text_input[field].input(typed).run()
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    assert str(allowed) in at.error[0].value and "BIRDCLEF_DATA_ROOTS" in at.error[0].value
    assert "/etc/passwd" not in opened
