"""The review store: detections to verify and what people said of them, in one database per project.

SQLite (a file path) is the embedded default; the same schema runs on PostgreSQL through a
connection URL (``postgresql+psycopg://user:pass@host/db``, with the driver installed), through
SQLAlchemy Core.  The schema is versioned (``meta.schema_version``); an older database is migrated
forward on open, step by step, in one transaction per step.

Opening: ``open_existing(db, write=False)`` opens a review database that must already exist
(read-only for SQLite unless ``write=True``) and refuses, untouched, anything else: a missing
path, a folder, an empty file, someone else's database.  ``open_store(db)`` also makes a new one
where there is none (``import``).

Tables:

- ``detections``: one per (file, start_s, end_s, species, run): ``score`` in [0, 1], ``common_name``,
  ``run`` (the run that produced it), ``site`` and ``recorded`` (optional), ``imported_at``.
- ``reviews``: append-only; each is a verdict (``yes``, ``no``, ``unsure``) on a detection, with an
  optional corrected species and note, the reviewer and the time.  Undo appends nothing: it marks
  the reviewer's last review ``undone``.  A detection's verdict is its latest review not undone.
  Reviews are only ever inserted, so two reviewers working on one database at once lose nothing.
- ``samples``: detections offered for review, with the sampling strategy, the score stratum, the
  stratum's weight (detections it stands for per sampled one) and the seed; a detection is offered
  once only.
"""
from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

SCHEMA_VERSION = 2
VERDICTS = ("yes", "no", "unsure")

metadata = sa.MetaData()
meta = sa.Table("meta", metadata, sa.Column("key", sa.String(64), primary_key=True),
                sa.Column("value", sa.String(256), nullable=False))
detections = sa.Table(
    "detections", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("file", sa.Text, nullable=False),
    sa.Column("start_s", sa.Float, nullable=False),
    sa.Column("end_s", sa.Float, nullable=False),
    sa.Column("species", sa.String(128), nullable=False),
    sa.Column("common_name", sa.String(256)),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("run", sa.String(256), nullable=False, server_default=""),
    sa.Column("site", sa.String(256)),  # schema 2
    sa.Column("recorded", sa.String(32)),  # schema 2: YYYY-MM-DD
    sa.Column("imported_at", sa.String(32), nullable=False),
    sa.UniqueConstraint("file", "start_s", "end_s", "species", "run", name="uq_detection"),
)
reviews = sa.Table(
    "reviews", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("detection_id", sa.Integer, sa.ForeignKey("detections.id"), nullable=False, index=True),
    sa.Column("verdict", sa.String(8), nullable=False),
    sa.Column("corrected_species", sa.String(128)),
    sa.Column("note", sa.Text),
    sa.Column("reviewer", sa.String(128), nullable=False),
    sa.Column("reviewed_at", sa.String(32), nullable=False),
    sa.Column("undone", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.CheckConstraint("verdict IN ('yes', 'no', 'unsure')", name="ck_verdict"),
)
samples = sa.Table(
    "samples", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("detection_id", sa.Integer, sa.ForeignKey("detections.id"), nullable=False, unique=True),
    sa.Column("species", sa.String(128), nullable=False),
    sa.Column("strategy", sa.String(16), nullable=False),
    sa.Column("stratum", sa.Integer, nullable=False),
    sa.Column("weight", sa.Float),
    sa.Column("seed", sa.Integer),
    sa.Column("created_at", sa.String(32), nullable=False),
)

# schema 1 → 2: detections gained site and recorded (the dashboard filters by them)
MIGRATIONS = {2: ["ALTER TABLE detections ADD COLUMN site VARCHAR(256)",
                  "ALTER TABLE detections ADD COLUMN recorded VARCHAR(32)"]}


class StoreError(RuntimeError):
    """A review database that cannot be opened or is newer than this software."""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def engine_for(db: str | Path, *, readonly: bool = False) -> sa.Engine:
    """An engine for a SQLite file path or a SQLAlchemy URL.  SQLite runs in WAL mode with a
    busy timeout, so several reviewers (processes) can write to one file.  ``readonly``: a SQLite
    file is opened with ``mode=ro`` (nothing can be written, not even the WAL switch) and its folder
    is not created."""
    text = str(db)
    if "://" in text:
        return sa.create_engine(text)
    path = Path(text).expanduser()
    if readonly:
        engine = sa.create_engine("sqlite://", poolclass=sa.pool.QueuePool, creator=lambda: _connect_readonly(path))
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(conn, _record):  # noqa: ANN001
        cur = conn.cursor()
        if not readonly:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to the SQLite file ``path``.  With no ``-wal`` file beside it no writer
    is active (WAL mode keeps one while any connection is open), so it is opened as immutable:
    SQLite then needs neither a ``-shm`` nor a ``-wal`` file, which a reader who cannot write the
    folder could not make, and leaves none behind.  With one, it reads through the WAL as usual."""
    path = path.resolve()
    quiet = not Path(f"{path}-wal").exists()
    uri = f"{path.as_uri()}?mode=ro" + ("&immutable=1" if quiet else "")
    return sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)


@dataclass
class Store:
    """An open review database (see the module docstring)."""

    engine: sa.Engine
    name: str

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        return int(value) if value is not None else 0

    # ---------------------------------------------------------------- detections
    def import_detections(self, table: pd.DataFrame, *, run: str = "") -> tuple[int, int]:
        """Add detections (columns file, start_s, end_s, species, score; optional common_name, site,
        recorded); returns (added, already there).  Re-importing the same CSV adds nothing."""
        rows = table.to_dict("records")
        added = 0
        stamp = now()
        with self.engine.begin() as conn:
            existing = {(r.file, r.start_s, r.end_s, r.species) for r in conn.execute(
                sa.select(detections.c.file, detections.c.start_s, detections.c.end_s, detections.c.species)
                .where(detections.c.run == run))}
            new = []
            for r in rows:
                key = (str(r["file"]), float(r["start_s"]), float(r["end_s"]), str(r["species"]))
                if key in existing:
                    continue
                existing.add(key)
                new.append({"file": key[0], "start_s": key[1], "end_s": key[2], "species": key[3],
                            "common_name": _text(r.get("common_name")), "score": float(r["score"]), "run": run,
                            "site": _text(r.get("site")), "recorded": _text(r.get("recorded")),
                            "imported_at": stamp})
            for start in range(0, len(new), 5000):
                conn.execute(detections.insert(), new[start:start + 5000])
            added = len(new)
        return added, len(rows) - added

    def detections(self, *, species: str | None = None) -> pd.DataFrame:
        """Every detection (id, file, start_s, end_s, species, common_name, score, run, site, recorded)."""
        query = sa.select(detections)
        if species is not None:
            query = query.where(detections.c.species == species)
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(query.order_by(detections.c.id)).mappings().all(),
                                columns=[c.name for c in detections.columns])

    # ---------------------------------------------------------------- reviews
    def add_review(self, detection_id: int, verdict: str, *, reviewer: str, corrected_species: str | None = None,
                   note: str | None = None) -> int:
        """Record a verdict; returns the review's id.  ValueError for an unknown verdict or detection."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r}: expected one of {', '.join(VERDICTS)}")
        if not reviewer or not reviewer.strip():
            raise ValueError("a review needs the reviewer's name")
        with self.engine.begin() as conn:
            if conn.execute(sa.select(detections.c.id).where(detections.c.id == int(detection_id))).first() is None:
                raise ValueError(f"no detection {detection_id} in {self.name}")
            result = conn.execute(reviews.insert().values(
                detection_id=int(detection_id), verdict=verdict, corrected_species=_text(corrected_species),
                note=_text(note), reviewer=reviewer.strip(), reviewed_at=now()))
            return int(result.inserted_primary_key[0])

    def undo(self, *, reviewer: str) -> int | None:
        """Mark ``reviewer``'s latest review (not yet undone) undone; returns its detection id or None."""
        with self.engine.begin() as conn:
            last = conn.execute(sa.select(reviews.c.id, reviews.c.detection_id)
                                .where(reviews.c.reviewer == reviewer.strip(), reviews.c.undone == sa.false())
                                .order_by(reviews.c.id.desc()).limit(1)).first()
            if last is None:
                return None
            conn.execute(reviews.update().where(reviews.c.id == last.id).values(undone=True))
            return int(last.detection_id)

    def verdicts(self) -> pd.DataFrame:
        """The current verdict of every reviewed detection: the detection's columns plus verdict,
        corrected_species, note, reviewer, reviewed_at, and the sample's stratum and weight."""
        latest = (sa.select(reviews.c.detection_id, sa.func.max(reviews.c.id).label("review_id"))
                  .where(reviews.c.undone == sa.false()).group_by(reviews.c.detection_id).subquery())
        query = (sa.select(detections, reviews.c.verdict, reviews.c.corrected_species, reviews.c.note,
                           reviews.c.reviewer, reviews.c.reviewed_at, samples.c.stratum, samples.c.weight,
                           samples.c.strategy)
                 .join(latest, latest.c.detection_id == detections.c.id)
                 .join(reviews, reviews.c.id == latest.c.review_id)
                 .outerjoin(samples, samples.c.detection_id == detections.c.id)
                 .order_by(detections.c.id))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        columns = [c.name for c in detections.columns] + ["verdict", "corrected_species", "note", "reviewer",
                                                           "reviewed_at", "stratum", "weight", "strategy"]
        return pd.DataFrame(rows, columns=columns)

    # ---------------------------------------------------------------- samples
    def add_samples(self, rows: list[dict]) -> int:
        """Record offered detections (detection_id, species, strategy, stratum, weight, seed)."""
        stamp = now()
        with self.engine.begin() as conn:
            if rows:
                conn.execute(samples.insert(), [{**r, "created_at": stamp} for r in rows])
        return len(rows)

    def samples(self) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(sa.select(samples).order_by(samples.c.id)).mappings().all(),
                                columns=[c.name for c in samples.columns])

    def queue(self, *, species: str | None = None) -> pd.DataFrame:
        """Sampled detections with no current verdict, in the order they were sampled."""
        reviewed = sa.select(reviews.c.detection_id).where(reviews.c.undone == sa.false())
        query = (sa.select(detections, samples.c.stratum, samples.c.weight, samples.c.strategy)
                 .join(samples, samples.c.detection_id == detections.c.id)
                 .where(detections.c.id.not_in(reviewed)).order_by(samples.c.id))
        if species is not None:
            query = query.where(detections.c.species == species)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return pd.DataFrame(rows, columns=[c.name for c in detections.columns] + ["stratum", "weight", "strategy"])


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


REVIEW_TABLES = frozenset({"meta", "detections", "reviews", "samples"})
MAKE_ONE = "make one with python -m birdcore.review import DETECTIONS.csv --db {db}"


def sqlite_path(db: str | Path) -> Path | None:
    """The file of a SQLite database given as a path or a ``sqlite:///`` URL; None for other URLs
    (and in-memory SQLite).  StoreError for text that is not a database URL."""
    text = str(db).strip()
    if "://" not in text:
        return Path(text).expanduser()
    try:
        url = sa.engine.make_url(text)
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"{text}: not a database path or URL ({exc})") from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).expanduser()
    return None


def _tables(db: str, engine_db: str | Path) -> set[str]:
    """The table names of an existing database, read without writing anything."""
    try:
        engine = engine_for(engine_db, readonly=True)
        try:
            with engine.connect() as conn:
                return set(sa.inspect(conn).get_table_names())
        finally:
            engine.dispose()
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise StoreError(f"{db}: not a database path or URL ({exc})") from None
    except ImportError as exc:
        raise StoreError(f"{db}: the database driver is not installed ({exc})") from None
    except sa.exc.DBAPIError as exc:
        raise StoreError(f"{db}: cannot open the review database ({exc.orig or exc})") from None


def _check_schema(db: str, tables: set[str]) -> None:
    if not tables:
        raise StoreError(f"{db}: not a review database (an empty file or database)")
    if not REVIEW_TABLES <= tables:
        raise StoreError(f"{db}: not a review database (no birdclef review tables: it has "
                         f"{', '.join(sorted(tables)[:5])}{', ...' if len(tables) > 5 else ''})")


def _version(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar() or 0)


def _migrate(db: str, engine: sa.Engine, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(f"{db}: review schema {version} is newer than this software understands "
                         f"({SCHEMA_VERSION}); upgrade birdclef")
    for step in range(version + 1, SCHEMA_VERSION + 1):
        with engine.begin() as conn:
            for statement in MIGRATIONS.get(step, []):
                conn.execute(sa.text(statement))
            conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(step)))


def open_existing(db: str | Path, *, write: bool = False) -> Store:
    """The existing review database at a SQLite path or a SQLAlchemy URL; nothing is ever created.

    ``write=False`` (report, thresholds, export, training on reviews): a SQLite file is opened
    read-only.  ``write=True`` (sample, import-labels, the Review page): opened for writing.
    Either way an older schema is migrated first.  A missing file, a folder, an empty file or a
    database without the review tables is refused, untouched, with a one-line ``StoreError``
    naming ``db``."""
    text = str(db).strip()
    if not text:
        raise StoreError("no review database given")
    path = sqlite_path(text)
    if path is not None and "://" not in text:
        text = str(path)
    if path is not None:
        if path.is_dir():
            raise StoreError(f"{text}: is a folder, not a review database")
        if not path.is_file():
            raise StoreError(f"{text}: no such review database ({MAKE_ONE.format(db=text)})")
    _check_schema(text, _tables(text, path if path is not None else text))
    target = path if path is not None else text
    engine = None
    try:
        engine = engine_for(target, readonly=not write)
        version = _version(engine)
        if version != SCHEMA_VERSION:
            if write:
                _migrate(text, engine, version)
            else:
                writer = engine_for(target)
                try:
                    _migrate(text, writer, version)
                finally:
                    writer.dispose()
                engine.dispose()  # a reader opened before the migration: open it afresh
                engine = engine_for(target, readonly=True)
    except BaseException as exc:
        if engine is not None:
            engine.dispose()
        if isinstance(exc, sa.exc.DBAPIError):
            raise StoreError(f"{text}: cannot open the review database ({exc.orig or exc})") from None
        raise
    return Store(engine, text)


def open_store(db: str | Path) -> Store:
    """The review database at a path or URL for writing, made when there is none yet (a SQLite
    path that does not exist, or a server database with no tables): what ``import`` uses.  An
    existing one is ``open_existing(db, write=True)`` (migrated; StoreError when it is newer than
    this software or not a review database)."""
    text = str(db).strip()
    path = sqlite_path(text)
    if path is not None:
        if path.exists() or path.is_symlink():
            return open_existing(db, write=True)
        engine = engine_for(path)
    else:
        if _tables(text, text):
            return open_existing(db, write=True)
        engine = engine_for(text)
    try:
        with engine.begin() as conn:
            metadata.create_all(conn)
            conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
    except sa.exc.DatabaseError as exc:
        raise StoreError(f"{db}: cannot make the review database ({exc.orig or exc})") from None
    return Store(engine, str(db))
