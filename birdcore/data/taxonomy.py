"""The eBird/Clements bird taxonomy: eBird codes ↔ scientific and common names.

From the ``birdnames`` package (every eBird/Clements edition it carries, 2021 on, newest first, so a
code retired by a later split or rename still resolves).  Without the package installed every
lookup finds nothing, and callers fall back to the names a run carries itself.
"""
from __future__ import annotations

from functools import lru_cache

FIELDS = ("ebird_code", "scientific_name", "common_name")


@lru_cache(maxsize=None)
def _converters(from_type: str, to_type: str) -> tuple:
    try:
        import birdnames
    except ImportError:
        return ()
    editions = birdnames.TAXONOMIES[birdnames.TAXONOMIES["authority"] == "ebird"]["year"]
    return tuple(birdnames.Converter(from_type=from_type, to_type=to_type, from_authority="ebird",
                                     to_authority="ebird", from_year=int(year))
                 for year in sorted(editions.astype(int), reverse=True))


@lru_cache(maxsize=65536)
def convert(value: str, *, from_type: str, to_type: str) -> tuple[str, ...]:
    """Every ``to_type`` name the editions give ``value`` (a ``from_type`` name), newest edition
    first, without repeats; () when no edition knows it.  Types: ``FIELDS``."""
    out: list[str] = []
    for table in _converters(from_type, to_type):
        try:
            name = table(value.strip())
        except Exception:  # noqa: BLE001 - a lookup the package cannot do is a name it does not know
            continue
        if isinstance(name, str) and name and name not in out:
            out.append(name)
    return tuple(out)


def scientific_names(code: str) -> list[str]:
    """Scientific names the taxonomy gives an eBird code ([] if unknown)."""
    return list(convert(code, from_type="ebird_code", to_type="scientific_name"))


def ebird_code(name: str) -> str | None:
    """The eBird code of a scientific or common name (newest edition that knows it), or None."""
    for kind in ("scientific_name", "common_name"):
        codes = convert(name, from_type=kind, to_type="ebird_code")
        if codes:
            return codes[0]
    return None


def names_of(code: str) -> tuple[str | None, str | None]:
    """(common name, scientific name) of an eBird code, None where unknown."""
    common = convert(code, from_type="ebird_code", to_type="common_name")
    sci = convert(code, from_type="ebird_code", to_type="scientific_name")
    return (common[0] if common else None), (sci[0] if sci else None)


def ebird_page(code: str, sci_name: str | None = None) -> str | None:
    """eBird's species page of a species, or None when the taxonomy knows neither its code nor its
    scientific name (a synthetic species, BirdNET's non-bird classes).  BirdNET's species carry their
    scientific name as their code (``Megaceryle lugubris``): its eBird code (``crekin1``) is looked up."""
    found = code if code and scientific_names(code) else next(
        (c for c in (ebird_code(n) for n in (code, sci_name) if n) if c), None)
    return f"https://ebird.org/species/{found}" if found else None
