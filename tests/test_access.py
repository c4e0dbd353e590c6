"""Which typed paths and database URLs a dashboard may open (``serving.access``): public mode, and the
allowed folders of ``BIRDCLEF_DATA_ROOTS`` (traversal, symlinks, sqlite and postgresql URLs)."""
from __future__ import annotations

import os

import pytest

from birdcore.serving.access import AccessError, allowed_roots, check_database, check_path, public_mode


@pytest.fixture
def roots(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "scapes").mkdir(parents=True)
    (data / "scapes" / "labels.csv").write_text("x\n")
    other = tmp_path / "data2"
    other.mkdir()
    monkeypatch.setenv("BIRDCLEF_DATA_ROOTS", f"{data}{os.pathsep}{other}")
    monkeypatch.delenv("BIRDCLEF_PUBLIC", raising=False)
    monkeypatch.delenv("BIRDCLEF_REVIEW_DB", raising=False)
    return data, other


def test_paths_inside_the_roots_are_allowed(roots):
    data, other = roots
    assert allowed_roots() == [data.resolve(), other.resolve()]
    assert check_path(str(data / "scapes" / "labels.csv"), what="labels") == (data / "scapes" / "labels.csv").resolve()
    assert check_path(str(other), what="audio folder") == other.resolve()


@pytest.mark.parametrize("typed", ["/etc/passwd", "{data}/../../../etc/passwd", "{data}/scapes/../../secret.csv",
                                   "{data}2x/labels.csv"])
def test_paths_outside_the_roots_are_refused_naming_the_allowed_folders(roots, typed):
    data, other = roots
    text = typed.format(data=data)
    with pytest.raises(AccessError) as refused:
        check_path(text, what="labels")
    message = str(refused.value)
    assert message.startswith(f"labels: {text} is outside the folders this dashboard may open")
    assert str(data.resolve()) in message and str(other.resolve()) in message and "\n" not in message


def test_a_symlink_out_of_a_root_is_refused(roots, tmp_path):
    data, _ = roots
    (data / "passwd").symlink_to("/etc/passwd")
    (data / "outside").symlink_to(tmp_path)
    with pytest.raises(AccessError):
        check_path(str(data / "passwd"), what="labels")
    with pytest.raises(AccessError):
        check_path(str(data / "outside" / "anything.csv"), what="audio folder")


def test_database_urls_are_refused_before_any_connection(roots, monkeypatch):
    data, _ = roots
    import sqlalchemy

    made = []
    monkeypatch.setattr(sqlalchemy, "create_engine", lambda *a, **k: made.append(a))
    with pytest.raises(AccessError, match=r"postgresql:// URLs other than BIRDCLEF_REVIEW_DB \(unset\) are refused"):
        check_database("postgresql://10.0.0.1:5432/x")
    with pytest.raises(AccessError, match="outside the folders"):
        check_database("sqlite:////etc/passwd")
    with pytest.raises(AccessError, match="outside the folders"):
        check_database("/tmp/elsewhere/review.sqlite")
    assert check_database(f"sqlite:///{data}/review.sqlite") == f"sqlite:///{data}/review.sqlite"
    assert check_database(str(data / "review.sqlite")) == str(data / "review.sqlite")
    monkeypatch.setenv("BIRDCLEF_REVIEW_DB", "postgresql+psycopg://reviewers@db.internal/birds")
    assert check_database("postgresql+psycopg://reviewers@db.internal/birds").startswith("postgresql")
    with pytest.raises(AccessError, match=r"\(postgresql\+psycopg://reviewers@db.internal/birds\)"):
        check_database("postgresql+psycopg://reviewers@10.0.0.1/birds")
    assert made == []


def test_without_roots_typed_paths_are_not_restricted_and_public_mode_refuses_all(tmp_path, monkeypatch):
    monkeypatch.delenv("BIRDCLEF_DATA_ROOTS", raising=False)
    monkeypatch.delenv("BIRDCLEF_PUBLIC", raising=False)
    assert allowed_roots() is None and not public_mode()
    assert check_path("/etc/hosts", what="labels").name == "hosts"
    assert check_database("postgresql://10.0.0.1/x") == "postgresql://10.0.0.1/x"
    monkeypatch.setenv("BIRDCLEF_PUBLIC", "1")
    assert public_mode()
    with pytest.raises(AccessError, match="public"):
        check_path(str(tmp_path), what="labels")
    with pytest.raises(AccessError, match="public"):
        check_database(str(tmp_path / "r.sqlite"))
