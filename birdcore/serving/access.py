"""What a dashboard visitor may reach on the server: public mode and the allowed data folders.

- ``BIRDCLEF_PUBLIC=1`` (``public_mode``): the dashboard for demo visitors. Its navigation holds only
  the pages that take no server path (classify, and the read-only pages over the configured runs), and
  nothing can be saved.
- ``BIRDCLEF_DATA_ROOTS=DIR[:DIR...]`` (``allowed_roots``): outside public mode, every path typed into
  a page (labels, audio folder, review database) must resolve, symlinks and ``..`` followed, inside one
  of these folders; ``check_path`` refuses any other in one line naming the allowed folders, before
  anything is opened.  Database URLs other than ``BIRDCLEF_REVIEW_DB`` (``check_database``) are refused
  the same way, before any connection is made; a ``sqlite:///`` URL counts as its file's path.
  Unset, typed paths are not restricted (a dashboard on 127.0.0.1 for its own user).

Raises ``AccessError`` (a ValueError) with the one-line reason.
"""
from __future__ import annotations

import os
from pathlib import Path

PUBLIC_ENV = "BIRDCLEF_PUBLIC"
ROOTS_ENV = "BIRDCLEF_DATA_ROOTS"
REVIEW_DB_ENV = "BIRDCLEF_REVIEW_DB"


class AccessError(ValueError):
    """A typed path or URL the server refuses to open."""


def public_mode() -> bool:
    """Whether ``BIRDCLEF_PUBLIC`` asks for the visitors' dashboard (1, true, yes, on)."""
    return os.environ.get(PUBLIC_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def allowed_roots() -> list[Path] | None:
    """The folders of ``BIRDCLEF_DATA_ROOTS`` (resolved), or None when it is unset or empty."""
    text = os.environ.get(ROOTS_ENV, "").strip()
    if not text:
        return None
    return [Path(part).expanduser().resolve() for part in text.split(os.pathsep) if part.strip()]


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _roots_text(roots: list[Path]) -> str:
    return ", ".join(str(r) for r in roots)


def check_path(text: str, *, what: str) -> Path:
    """The typed path ``text`` (``what``: "labels", "audio folder", ...), resolved, if the server may open
    it; AccessError otherwise.  Nothing is opened or read here beyond resolving symlinks."""
    if public_mode():
        raise AccessError(f"{what}: this dashboard is public; it opens no path typed into it")
    path = Path(str(text).strip()).expanduser()
    roots = allowed_roots()
    if roots is None:
        return path
    resolved = path.resolve()  # follows symlinks and '..', whether or not the path exists
    if not _inside(resolved, roots):
        raise AccessError(f"{what}: {text} is outside the folders this dashboard may open ({_roots_text(roots)}; "
                          f"{ROOTS_ENV})")
    return resolved


def is_url(text: str) -> bool:
    """Whether a database reference is a SQLAlchemy URL (``dialect[+driver]://...``) rather than a path."""
    head = str(text).split("://", 1)
    return len(head) == 2 and head[0].replace("+", "").replace("_", "").isalnum()


def check_database(text: str) -> str:
    """The typed review database (a path or a SQLAlchemy URL) if the server may open it; AccessError
    otherwise.  The configured ``BIRDCLEF_REVIEW_DB`` is always allowed; with allowed roots, a path or a
    ``sqlite:///`` URL must lie inside them and any other URL is refused, before any connection."""
    text = str(text).strip()
    configured = os.environ.get(REVIEW_DB_ENV, "").strip()
    if public_mode():
        raise AccessError("review database: this dashboard is public; it opens no database")
    if configured and text == configured:
        return text
    roots = allowed_roots()
    if roots is None:
        return text
    if is_url(text):
        scheme, rest = text.split("://", 1)
        if scheme.split("+", 1)[0].lower() == "sqlite" and rest.startswith("/"):
            check_path(rest[1:] or "/", what="review database")  # sqlite:///relative, sqlite:////absolute
            return text
        allowed = f"{REVIEW_DB_ENV}" + (f" ({configured})" if configured else " (unset)")
        raise AccessError(f"review database: {scheme}:// URLs other than {allowed} are refused here; files must "
                          f"lie in the folders this dashboard may open ({_roots_text(roots)}; {ROOTS_ENV})")
    check_path(text, what="review database")
    return text
