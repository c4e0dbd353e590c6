"""The review store: detections to verify and what people said of them, in one database per project.

SQLite (a file path) is the embedded default; the same schema runs on PostgreSQL through a
connection URL (``postgresql+psycopg://user:pass@host/db``, with the driver installed), through
SQLAlchemy Core.  The schema is versioned (``meta.schema_version``) and ``open_store`` migrates
an older database forward, step by step, in one transaction per step.

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


def engine_for(db: str | Path) -> sa.Engine:
    """An engine for a SQLite file path or a SQLAlchemy URL.  SQLite runs in WAL mode with a
    busy timeout, so several reviewers (processes) can write to one file."""
    text = str(db)
    if "://" in text:
        return sa.create_engine(text)
    path = Path(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(conn, _record):  # noqa: ANN001
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


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


def open_store(db: str | Path) -> Store:
    """Open (creating or migrating) the review database at a path or URL; StoreError when it is
    newer than this software or not a review database."""
    engine = engine_for(db)
    try:
        with engine.begin() as conn:
            inspector = sa.inspect(conn)
            tables = set(inspector.get_table_names())
            if "detections" in tables and "meta" not in tables:
                raise StoreError(f"{db}: not a birdclef review database (a 'detections' table without 'meta')")
            if "meta" not in tables:
                metadata.create_all(conn)
                conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                return Store(engine, str(db))
            version = int(conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar() or 0)
        if version > SCHEMA_VERSION:
            raise StoreError(f"{db}: review schema {version} is newer than this software understands "
                             f"({SCHEMA_VERSION}); upgrade birdclef")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            with engine.begin() as conn:
                for statement in MIGRATIONS.get(step, []):
                    conn.execute(sa.text(statement))
                conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(step)))
    except sa.exc.DatabaseError as exc:
        raise StoreError(f"{db}: cannot open the review database ({exc.orig or exc})") from None
    return Store(engine, str(db))
