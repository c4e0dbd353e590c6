"""The classification API (FastAPI): what the original's Lambda endpoint did, without its faults.

- ``POST /v1/classify``: one audio file (multipart field ``file``) and optional narrowing (a species
  list, a place and date), answered with the top species (scores, thresholds, decisions) and the
  per-segment detections, as JSON;
- ``GET /v1/species``: the species the model can name, with their thresholds;
- ``GET /healthz``: the model is loaded and the server answers;
- ``/docs`` (Swagger UI), ``/redoc`` and ``/openapi.json``: the OpenAPI description; the docs pages'
  scripts and styles are served by the API itself (``fastapi_offline``), so they work offline.

Scoring is the classify page's: one ``ClipClassifier`` (loaded once, shared by every request) and the
same narrowing (``classify.narrow``, ``species_mask.from_names``, ``birdnet_range.species_filter``).
The request body is read into memory as it arrives and parsed there (python-multipart's streaming
parser), never spooled to disk, and is refused with 413 as soon as it passes the size limit; the
audio is decoded from memory (``stream_bytes``) and dropped with the request.  Bad input gets a 4xx
with a one-line ``detail`` naming what was wrong, never a 200.  Start it with
``python -m birdcore.serve`` (``birdcore.cli.serve``).
"""
from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from birdcore.io.audio import AudioError
from birdcore.serving.birdnet_range import DEFAULT_THRESHOLD, ANY_WEEK, Place, species_filter, week_of
from birdcore.serving.classify import AUDIO_SUFFIXES, ClipClassifier, narrow
from birdcore.data.species_groups import group_of
from birdcore.serving.detections import MAX_TOP, Prediction, segment_detections, threshold_for
from birdcore.data.species_lists import names_from_text
from birdcore.serving.species_mask import birds_only, from_names
from birdcore.runs.folder import added_marks

log = logging.getLogger("birdcore")

API_VERSION = "1"
MAX_FIELD_BYTES = 64 * 1024  # a text field (a species list of a few thousand names fits)
DEFAULT_TOP = 5
DEFAULT_MIN_SCORE = 0.5  # the classify page's default for the detections download
MAX_OVERLAP = 2.9  # seconds; BirdNET's own tools accept 0 to 2.9
FILE_FIELD = "file"
TEXT_FIELDS = ("species", "lat", "lon", "date", "week", "range_threshold", "top", "overlap", "min_score",
               "birds_only")


class BadRequest(Exception):
    """A request the API refuses: ``status`` (4xx) and a one-line ``reason`` naming what was wrong."""

    def __init__(self, status: int, reason: str):
        self.status = status
        self.reason = " ".join(str(reason).split())
        super().__init__(self.reason)


# ---------------------------------------------------------------- the request body, in memory


@dataclass
class Upload:
    """The uploaded file: its name as the client gave it (only ever shown, never a path) and bytes."""

    name: str
    data: bytes


@dataclass
class Form:
    """A parsed multipart body: text fields (name -> values, in order) and the one uploaded file."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    upload: Upload | None = None


class _Part:
    def __init__(self):
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[str, bytes] = {}
        self.name = ""
        self.filename: str | None = None
        self.chunks: list[bytes] = []
        self.size = 0


class _FormCollector:
    """python-multipart callbacks that keep every part in memory, text fields within a limit."""

    def __init__(self):
        self.form = Form()
        self.part: _Part | None = None
        self.ended = False

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._data,
                "on_part_end": self._end, "on_end": self._finish}

    def _begin(self):
        self.part = _Part()

    def _header_field(self, data, start, end):
        self.part.header_field += data[start:end]

    def _header_value(self, data, start, end):
        self.part.header_value += data[start:end]

    def _header_end(self):
        key = bytes(self.part.header_field).decode("latin-1").strip().lower()
        self.part.headers[key] = bytes(self.part.header_value)
        self.part.header_field, self.part.header_value = bytearray(), bytearray()

    def _headers_finished(self):
        kind, options = parse_options_header(self.part.headers.get("content-disposition"))
        if kind != b"form-data" or options.get(b"name") is None:
            raise BadRequest(400, "a multipart part has no form-data name (Content-Disposition)")
        name = options[b"name"].decode("utf-8", errors="replace")
        if name != FILE_FIELD and name not in TEXT_FIELDS:
            raise BadRequest(400, f"unknown field '{name[:40]}' (fields: {FILE_FIELD}, {', '.join(TEXT_FIELDS)})")
        if name == FILE_FIELD and self.form.upload is not None:
            raise BadRequest(400, f"more than one '{FILE_FIELD}' field: send one audio file per request")
        filename = options.get(b"filename")
        self.part.name = name
        self.part.filename = None if filename is None else filename.decode("utf-8", errors="replace")

    def _data(self, data, start, end):
        part = self.part
        part.size += end - start
        if part.name != FILE_FIELD and part.size > MAX_FIELD_BYTES:
            raise BadRequest(400, f"{part.name}: longer than {MAX_FIELD_BYTES // 1024} KB")
        part.chunks.append(bytes(data[start:end]))

    def _end(self):
        part, self.part = self.part, None
        data = b"".join(part.chunks)
        if part.name == FILE_FIELD:
            name = " ".join((part.filename or "upload").split())[:200] or "upload"
            self.form.upload = Upload(name=name, data=data)
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(400, f"{part.name}: not UTF-8 text") from None
        self.form.fields.setdefault(part.name, []).append(text)

    def _finish(self):
        self.ended = True


async def read_form(request: Request, *, max_bytes: int) -> Form:
    """The request's multipart/form-data body, parsed in memory as it arrives.

    Raises ``BadRequest``: 415 for another content type, 413 as soon as the body passes
    ``max_bytes`` (at once when Content-Length says so), 400 for a malformed or incomplete body.
    """
    kind, options = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        shown = kind.decode("latin-1") or "none"
        raise BadRequest(415, f"content type {shown[:60]}: send multipart/form-data with the audio in a "
                              f"'{FILE_FIELD}' field")
    too_big = BadRequest(413, f"request body larger than the server's limit of {_megabytes(max_bytes)}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    collector = _FormCollector()
    try:
        parser = MultipartParser(options[b"boundary"], collector.callbacks())
    except (ValueError, MultipartParseError) as exc:
        raise BadRequest(400, f"malformed multipart body ({exc})") from None
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise too_big
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequest(400, f"malformed multipart body ({str(exc).splitlines()[0][:120]})") from None
    if not collector.ended:
        raise BadRequest(400, "incomplete multipart body (no closing boundary)")
    return collector.form


def _megabytes(n: int) -> str:
    return f"{n / 1024 ** 2:g} MB"


# ---------------------------------------------------------------- options of a classification


@dataclass(frozen=True)
class ClassifyOptions:
    """What a request asks besides the audio: the species list's names, the place (or None), the
    range threshold, how many top species, BirdNET's window overlap (s) and the lowest segment score
    reported as a detection."""

    names: tuple[str, ...] = ()
    place: Place | None = None
    range_threshold: float = DEFAULT_THRESHOLD
    top: int = DEFAULT_TOP
    overlap: float = 0.0
    min_score: float = DEFAULT_MIN_SCORE
    birds_only: bool = False


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(400, f"{name}: given {len(values)} times, expected once")
    value = values[0].strip()
    if not value:
        raise BadRequest(400, f"{name}: empty value")
    return value


def _number(fields, name: str, *, low: float, high: float, integer: bool = False) -> float | int | None:
    text = _one(fields, name)
    if text is None:
        return None
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        expected = "an integer" if integer else "a number"
        raise BadRequest(400, f"{name}: expected {expected}, got '{text[:40]}'") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise BadRequest(400, f"{name}: must be between {low:g} and {high:g}, got {text[:40]}")
    return value


def parse_options(fields: dict[str, list[str]], *, supports_overlap: bool) -> ClassifyOptions:
    """The request's text fields as ``ClassifyOptions``; ``BadRequest`` (400) naming the field that
    is wrong."""
    names = tuple(n for text in fields.get("species", []) for n in names_from_text(text))
    if fields.get("species") and not names:
        raise BadRequest(400, "species: the list names no species (one name per line; # starts a comment)")
    lat = _number(fields, "lat", low=-90.0, high=90.0)
    lon = _number(fields, "lon", low=-180.0, high=180.0)
    week = _number(fields, "week", low=1, high=48, integer=True)
    date_text = _one(fields, "date")
    if (lat is None) != (lon is None):
        raise BadRequest(400, f"{'lon' if lon is None else 'lat'}: missing; the location filter needs both lat and lon")
    if date_text is not None and week is not None:
        raise BadRequest(400, "date and week: give one of them, not both")
    if date_text is not None:
        try:
            week = week_of(dt.date.fromisoformat(date_text))
        except ValueError:
            raise BadRequest(400, f"date: expected YYYY-MM-DD, got '{date_text[:40]}'") from None
    threshold = _number(fields, "range_threshold", low=0.0, high=1.0)
    if lat is None and (week is not None or threshold is not None):
        given = "date" if date_text is not None else ("week" if week is not None else "range_threshold")
        raise BadRequest(400, f"{given}: needs a location (lat and lon)")
    place = None if lat is None else Place(lat, lon, ANY_WEEK if week is None else week)
    overlap = _number(fields, "overlap", low=0.0, high=MAX_OVERLAP) or 0.0
    if overlap and not supports_overlap:
        raise BadRequest(400, "overlap: this model scores fixed segments; window overlap is for BirdNET models only")
    top = _number(fields, "top", low=1, high=MAX_TOP, integer=True)
    min_score = _number(fields, "min_score", low=0.0, high=1.0)
    birds = _one(fields, "birds_only")
    if birds is not None and birds.lower() not in ("true", "false", "1", "0"):
        raise BadRequest(400, f"birds_only: expected true or false, got '{birds[:40]}'")
    return ClassifyOptions(birds_only=birds is not None and birds.lower() in ("true", "1"), names=names, place=place,
                           range_threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
                           top=DEFAULT_TOP if top is None else top, overlap=overlap,
                           min_score=DEFAULT_MIN_SCORE if min_score is None else min_score)


# ---------------------------------------------------------------- response documents


class Problem(BaseModel):
    detail: str = Field(description="one line naming what was wrong")


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    model: str = Field(description="the run's name, or BirdNET V2.4")
    species: int = Field(description="how many species the model can name")
    synthetic: bool = Field(description="trained on generated data, not real birds")
    license: str | None = Field(None, description="the model's licence, where it has its own (BirdNET)")


class SpeciesEntry(BaseModel):
    code: str = Field(description="the run's species code (eBird code; BirdNET: the scientific name)")
    common_name: str
    sci_name: str
    threshold: float | None = Field(description="the run's decision threshold for this species")
    added: bool | None = Field(default=None, description="runs made with --append only: true for a species "
                                                         "BirdNET lacks, which the run learnt")


class SpeciesList(BaseModel):
    model: str
    count: int
    species: list[SpeciesEntry]


class SpeciesScore(BaseModel):
    code: str
    common_name: str
    sci_name: str
    score: float = Field(description="the clip's score for this species, 0 to 1")
    threshold: float | None
    detected: bool | None = Field(description="score >= threshold; null without a threshold")
    decision: str = Field(examples=["detected", "below threshold", "no threshold"])
    group: str = Field(examples=["bird", "other animal", "sound"],
                       description="BirdNET also names sounds (Engine, Human vocal, Dog) and frogs, insects and "
                                   "mammals: these are not birds")
    occurrence: float | None = Field(None, description="with a location: BirdNET's occurrence probability "
                                                       "there and then (null: a species BirdNET does not know)")


class SegmentDetection(BaseModel):
    start_s: float
    end_s: float
    code: str
    common_name: str
    score: float
    group: str = Field(examples=["bird"], description="bird, other animal or sound")


class Classification(BaseModel):
    model: str
    file: str = Field(description="the uploaded file's name, as sent")
    seconds: float = Field(description="the clip's length")
    segment_seconds: float
    hop_seconds: float = Field(description="seconds between segment starts (less than segment_seconds with overlap)")
    filters: list[str] = Field(description="the species list and location filter applied, one line each")
    top: list[SpeciesScore] = Field(description="best species first (only species the filters keep)")
    removed_by_filter: list[SpeciesScore] = Field(description="species the filters removed that scored higher "
                                                              "than the best one kept")
    min_score: float
    detections: list[SegmentDetection] = Field(description="every segment and species scoring at least "
                                                           "min_score, by time then score")
    warnings: list[str] = Field(default_factory=list, description="problems with the file that did not stop "
                                "scoring, one line each (e.g. a file that decodes to less audio than its header gives)")
    license: str | None = None


CLASSIFY_FORM = {
    "type": "object",
    "required": [FILE_FIELD],
    "properties": {
        FILE_FIELD: {"type": "string", "format": "binary",
                     "description": f"the audio ({', '.join(s.lstrip('.') for s in AUDIO_SUFFIXES)}); decoded "
                                    "in memory, never stored"},
        "species": {"type": "array", "items": {"type": "string"},
                    "description": "only these species: scientific names, eBird codes or common names, one per "
                                   "line or one per field (# starts a comment); a name matching nothing is a 400"},
        "lat": {"type": "number", "minimum": -90, "maximum": 90,
                "description": "location filter (with lon): BirdNET's range model keeps the species expected there"},
        "lon": {"type": "number", "minimum": -180, "maximum": 180},
        "date": {"type": "string", "format": "date", "description": "recording date, YYYY-MM-DD (default: any time "
                                                                  "of year)"},
        "week": {"type": "integer", "minimum": 1, "maximum": 48, "description": "BirdNET week instead of a date"},
        "range_threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": DEFAULT_THRESHOLD,
                            "description": "lowest occurrence probability kept by the location filter"},
        "top": {"type": "integer", "minimum": 1, "maximum": MAX_TOP, "default": DEFAULT_TOP},
        "overlap": {"type": "number", "minimum": 0, "maximum": MAX_OVERLAP, "default": 0,
                    "description": "BirdNET models only: seconds by which the 3 s windows overlap"},
        "min_score": {"type": "number", "minimum": 0, "maximum": 1, "default": DEFAULT_MIN_SCORE,
                      "description": "lowest segment score reported in detections"},
        "birds_only": {"type": "boolean", "default": False,
                       "description": "leave out classes that are not birds (BirdNET's sounds such as Engine, and "
                                      "its frogs, insects and mammals)"},
    },
}

_ERRORS = {400: {"model": Problem, "description": "a field is wrong (named in detail)"},
           413: {"model": Problem, "description": "the request is larger than the server's limit"},
           415: {"model": Problem, "description": "not multipart/form-data"},
           422: {"model": Problem, "description": "the file is empty or not readable audio"}}


# ---------------------------------------------------------------- the app


def _score(p: Prediction, occurrence: dict | None) -> dict:
    return {"code": p.ebird_code, "common_name": p.common_name, "sci_name": p.sci_name, "score": round(p.score, 6),
            "threshold": p.threshold, "detected": p.detected, "decision": p.decision, "group": p.group,
            **({} if occurrence is None else {"occurrence": occurrence.get(p.ebird_code)})}


def model_name(clf: ClipClassifier) -> str:
    return str(clf.run.manifest.get("name") or clf.run.path.name)


class _RootPath:
    """ASGI middleware doing what uvicorn's ``--root-path`` does: a request the proxy forwarded without
    its prefix (``/api/docs`` -> ``/docs``) gets ``root_path`` set and the prefix put back in front of
    ``path``, as ASGI has it.  Starlette's mounts (the docs' static files) find their files only then;
    FastAPI's own ``root_path`` argument (deprecated) sets ``root_path`` alone."""

    def __init__(self, app, root_path: str):
        self.app, self.root_path = app, root_path

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            scope = dict(scope, root_path=self.root_path)
            path = scope["path"]
            if path != self.root_path and not path.startswith(self.root_path + "/"):
                scope["path"] = self.root_path + path
                if scope.get("raw_path") is not None:
                    scope["raw_path"] = quote(self.root_path).encode("ascii") + scope["raw_path"]
        await self.app(scope, receive, send)


def create_app(classifier: ClipClassifier, *, max_upload_bytes: int = 200 * 1024 ** 2, max_concurrent: int = 2,
               root_path: str = "", cors_origins: tuple[str, ...] = ()) -> FastAPI:
    """The API around one loaded classifier, shared by every request.

    ``max_upload_bytes``: the largest request body; ``max_concurrent``: classifications run at once
    (others wait; bounds the memory of decoded audio); ``root_path``: the path prefix a reverse proxy
    serves the API under, stripping it (for the links of ``/docs`` and its scripts: ``_RootPath``);
    ``cors_origins``: web origins whose pages may call the API from a browser (CORS; none by default,
    so a browser refuses other sites' pages the answer).
    """
    if max_upload_bytes <= 0 or max_concurrent < 1:
        raise ValueError("max_upload_bytes must be positive and max_concurrent at least 1")
    run = classifier.run
    name = model_name(classifier)
    marks = added_marks(run.species)  # an --append run's added species, for /v1/species
    licence = run.manifest.get("license")
    limiter = anyio.CapacityLimiter(max_concurrent)
    # FastAPIOffline: FastAPI with /docs and /redoc loading Swagger UI and ReDoc from the API itself
    # (/static-offline-docs/, under the root path), not from a CDN, so they work offline
    app = FastAPIOffline(title="birdclef classification API", version=API_VERSION,
                         description=f"Which birds are singing in a clip, by **{name}** "
                                     f"({len(run.species):,} species). Uploads are decoded in memory and never "
                                     "stored; requests over "
                                     f"{_megabytes(max_upload_bytes)} are refused (413)."
                                     + (f" {licence}" if licence else ""))
    if root_path:
        app.add_middleware(_RootPath, root_path=root_path)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"], allow_credentials=False)
    app.state.classifier = classifier

    @lru_cache(maxsize=256)
    def place_filter(place: Place, threshold: float):
        return species_filter(run.species, place, threshold=threshold)

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, exc: BadRequest):
        log.info("%s %s: %d %s", request.method, request.url.path, exc.status, exc.reason)
        return JSONResponse({"detail": exc.reason}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("body", "query"))
        return JSONResponse({"detail": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, status_code=400)

    @app.get("/healthz", response_model=Health, summary="The model is loaded and the server answers")
    def healthz() -> dict:
        return {"status": "ok", "model": name, "species": len(run.species),
                "synthetic": bool(run.manifest.get("synthetic")), "license": licence}

    @app.get("/v1/species", response_model=SpeciesList, response_model_exclude_unset=True,
             summary="The species the model can name")
    def species() -> dict:
        rows = run.species[["ebird_code", "common_name", "sci_name"]].itertuples(index=False)
        return {"model": name, "count": len(run.species),
                "species": [{"code": c, "common_name": n, "sci_name": s, "threshold": threshold_for(run, c),
                             **({"added": marks.get(c, False)} if marks is not None else {})}
                            for c, n, s in rows]}

    def answer(form: Form) -> dict:
        options = parse_options(form.fields, supports_overlap=classifier.supports_overlap)
        if form.upload is None:
            raise BadRequest(400, f"no '{FILE_FIELD}' field: send the audio as the multipart field '{FILE_FIELD}'")
        masks = []
        if options.names:
            try:
                masks.append(from_names(run.species, options.names, source="species"))
            except ValueError as exc:
                raise BadRequest(400, str(exc)) from None
        range_filter = None
        if options.place is not None:
            try:
                range_filter = place_filter(options.place, options.range_threshold)
            except (ImportError, RuntimeError) as exc:  # BirdNETUnavailable: no range model installed
                raise BadRequest(400, f"lat/lon: the location filter is unavailable on this server ({exc})") from None
            masks.append(range_filter)
        if options.birds_only:
            masks.append(birds_only(run.species))
        upload = form.upload
        try:
            result, _ = classifier.classify_upload(upload.data, name=upload.name, top=options.top,
                                                   overlap=options.overlap)
        except AudioError as exc:
            raise BadRequest(422, f"file {exc}") from None
        result, dropped, _ = narrow(result, run, masks, top=options.top)
        occurrence = None if range_filter is None else range_filter.occurrence_by_code(run.codes)
        detections = segment_detections(run, result.segments, seconds=result.seconds, min_score=options.min_score,
                                        hop_seconds=result.hop_seconds)
        return {"model": name, "file": upload.name, "seconds": round(result.seconds, 3),
                "segment_seconds": result.segment_seconds, "hop_seconds": result.hop_seconds,
                "filters": [m.summary() for m in masks],
                "top": [_score(p, occurrence) for p in result.top],
                "removed_by_filter": [_score(p, occurrence) for p in dropped],
                "min_score": options.min_score,
                "detections": [{"start_s": d.start_s, "end_s": round(d.end_s, 3), "code": d.ebird_code,
                                "common_name": d.common_name, "score": round(d.score, 6),
                                "group": group_of(d.ebird_code)} for d in detections],
                "warnings": result.warnings, "license": licence}

    @app.post("/v1/classify", response_model=Classification, response_model_exclude_unset=True, responses=_ERRORS,
              summary="Which birds are singing in an audio file",
              openapi_extra={"requestBody": {"required": True,
                                             "content": {"multipart/form-data": {"schema": CLASSIFY_FORM}}}})
    async def classify(request: Request) -> dict:
        form = await read_form(request, max_bytes=max_upload_bytes)
        return await anyio.to_thread.run_sync(answer, form, limiter=limiter)

    return app
