"""Which species to expect at a place and time: BirdNET V2.4's species-range ("meta") model.

BirdNET ships, beside its sound model, a small model that maps latitude,
longitude and week of the year to an occurrence probability for each of its
6,522 species.  BirdNET's own tools keep the
species whose occurrence is at least 0.03 and drop the others; this module
does the same for any run whose species have scientific names.

- weeks are BirdNET's: 48 per year (4 per month), ``week_of(date)`` in 1..48;
  -1 means "any time of year";
- a run species BirdNET does not know is always kept (there is nothing to
  judge it by), and reported as such;
- the result is a ``species_mask.SpeciesMask``: a dropped species keeps its
  place in score arrays with a score of 0, so arrays keep their shape.

Licensed with the BirdNET model: CC BY-NC-SA 4.0 (``birdnet.LICENSE_NOTE``).
"""
from __future__ import annotations

import calendar
import datetime as dt
import math
import threading
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from birdcore.io.native_stderr import quiet_native_stderr
from birdcore.models.birdnet import runtime as bn
from birdcore.serving.species_mask import SpeciesMask

RANGE_MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"
DEFAULT_THRESHOLD = 0.03  # BirdNET-Analyzer's default location-filter threshold
ANY_WEEK = -1


@dataclass(frozen=True)
class Place:
    """Where and when a clip was recorded: ``lat`` / ``lon`` in degrees, ``week`` 1..48 or -1 (any)."""

    lat: float
    lon: float
    week: int = ANY_WEEK

    def __post_init__(self) -> None:
        lat, lon, week = float(self.lat), float(self.lon), int(self.week)
        if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
            raise ValueError(f"latitude must be between -90 and 90 degrees, got {self.lat}")
        if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
            raise ValueError(f"longitude must be between -180 and 180 degrees, got {self.lon}")
        if week != ANY_WEEK and not 1 <= week <= 48:
            raise ValueError(f"week must be 1..48 (BirdNET weeks, 4 per month) or -1 for any, got {self.week}")
        object.__setattr__(self, "lat", lat)
        object.__setattr__(self, "lon", lon)
        object.__setattr__(self, "week", week)

    def describe(self) -> str:
        when = "any time of year" if self.week == ANY_WEEK else f"week {self.week} of 48"
        return f"{self.lat:.3f}, {self.lon:.3f}, {when}"


def week_of(day: dt.date) -> int:
    """BirdNET's week (1..48) of a date: the fraction of the year elapsed, times 48, rounded up."""
    days = 366 if calendar.isleap(day.year) else 365
    return max(1, min(48, math.ceil(day.timetuple().tm_yday / days * 48)))


def place_on(lat: float, lon: float, day: dt.date | None = None) -> Place:
    """The ``Place`` of a latitude, longitude and date (``None``: any time of year); ValueError
    naming the coordinate that is out of range."""
    return Place(lat, lon, ANY_WEEK if day is None else week_of(day))


class RangeModel:
    """BirdNET's species-range model; thread-safe.  One call takes about 3 ms on one core."""

    def __init__(self, *, threads: int = 1):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise bn.BirdNETUnavailable("BirdNET needs ai-edge-litert: pip install ai-edge-litert") from exc
        path = bn.model_dir() / RANGE_MODEL_FILE
        if not path.is_file():
            raise bn.BirdNETUnavailable(f"{path}: BirdNET range model file missing")
        with quiet_native_stderr():  # LiteRT's start-up line (shown with -v)
            self._it = Interpreter(model_path=str(path), num_threads=threads)
            self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]["index"]
        self._out = self._it.get_output_details()[0]["index"]
        self._lock = threading.Lock()
        self.labels = bn.load_labels()

    def occurrence(self, place: Place) -> np.ndarray:
        """(6522,) float32 occurrence probabilities in [0, 1], in BirdNET's label order."""
        with self._lock:
            self._it.set_tensor(self._in, np.array([[place.lat, place.lon, place.week]], np.float32))
            self._it.invoke()
            return self._it.get_tensor(self._out)[0].copy()


@lru_cache(maxsize=1)
def shared_range_model() -> RangeModel:
    """One range model per process (it is small; loading takes about 20 ms)."""
    return RangeModel()


@dataclass
class RangeFilter(SpeciesMask):
    """A ``SpeciesMask`` from the range model at a place.

    ``occurrence`` (C,) float: BirdNET's occurrence probability of each run species (NaN for
    species BirdNET does not know, which are kept); ``unknown``: their codes.
    """

    place: Place = None
    threshold: float = DEFAULT_THRESHOLD
    occurrence: np.ndarray = None
    unknown: list[str] = field(default_factory=list)

    def occurrence_by_code(self, codes: list[str], *, digits: int = 3) -> dict[str, float | None]:
        """Each run species' occurrence here, rounded, by code (``codes``: the run's, in order);
        None for species BirdNET does not know."""
        return {code: None if math.isnan(v) else round(float(v), digits) for code, v in zip(codes, self.occurrence)}

    def summary(self) -> str:
        text = (f"{self.n_kept} of {len(self.keep)} species expected at {self.place.describe()} "
                f"(BirdNET occurrence >= {self.threshold:g})")
        if self.unknown:
            text += f"; {len(self.unknown)} species unknown to BirdNET kept"
        return text


def species_filter(species: pd.DataFrame, place: Place, *, threshold: float = DEFAULT_THRESHOLD,
                   model: RangeModel | None = None) -> RangeFilter:
    """Filter for a run's species table (``ebird_code``, ``sci_name``; C rows) at ``place``.

    A species is kept when BirdNET's occurrence probability there and then is >= ``threshold``,
    or when BirdNET does not know it (matched by scientific name, as in ``birdnet.map_species``).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"range threshold must be between 0 and 1, got {threshold}")
    model = model or shared_range_model()
    columns, unknown = bn.map_species(species, model.labels)
    probs = model.occurrence(place)
    occurrence = np.array([np.nan if c is None else probs[c] for c in columns], dtype=np.float32)
    keep = np.isnan(occurrence) | (occurrence >= threshold)
    return RangeFilter(keep=keep, description=f"range model at {place.describe()}", place=place,
                       threshold=float(threshold), occurrence=occurrence, unknown=list(unknown))
