"""MkDocs hooks of the user guide (mkdocs.yml ``hooks:``): two pages made at build time.

- ``reference/cli.md``: the command-line reference, rendered from the parsers themselves
  (``birdcore.cli.reference.markdown()``), so it cannot drift from ``-h``.
- ``reference/benchmarks.md``: BENCHMARKS.md as it is at the repository's root (its one copy; the
  guide's pages link to it here, as links outside docs/ are not allowed in a strict build).

Neither is written into docs/: both live only in the built site.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent


def on_files(files, config):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from birdcore.cli.reference import markdown

    for uri, content in (("reference/cli.md", markdown()),
                         ("reference/benchmarks.md", (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8"))):
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=content))
    return files


def on_serve(server, config, builder):
    """``mkdocs serve`` (make docs) rebuilds when BENCHMARKS.md or a command's parser changes."""
    server.watch(str(ROOT / "BENCHMARKS.md"))
    server.watch(str(ROOT / "birdcore" / "cli"))
    return server
