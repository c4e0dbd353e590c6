"""A place per folder or file for batch scoring: the sites CSV and ``predict --sites``."""
import json

import pytest

from birdcore.cli import predict
from birdcore.serving.birdnet_range import ANY_WEEK, Place, week_of
from birdcore.serving.sites import SitesError, SiteTable, read_sites

from test_birdnet_range import ITHACA, PUERTO_RICO, chirp_wav


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_file_takes_the_place_of_the_deepest_site_holding_it(tmp_path):
    import datetime as dt

    sites = write(tmp_path / "meta" / "sites.csv",
                  "path,lat,lon,date,week\n"
                  "../north,42.48,-76.45,2026-05-01,\n"
                  "../north/late,42.48,-76.45,,40\n"
                  "../north/late/odd.wav,18.2,-66.5,,\n")
    table = SiteTable(read_sites(sites))
    may = Place(42.48, -76.45, week_of(dt.date(2026, 5, 1)))
    assert table.place_for(tmp_path / "north" / "a.wav") == may
    assert table.place_for(tmp_path / "north" / "late" / "deeper" / "b.wav") == Place(42.48, -76.45, 40)
    assert table.place_for(tmp_path / "north" / "late" / "odd.wav") == Place(18.2, -66.5, ANY_WEEK)
    assert table.place_for(tmp_path / "south" / "c.wav") is None
    assert len(table.places) == 3


def test_linked_recordings_take_the_place_of_the_folder_they_are_linked_into(tmp_path):
    """Recorder folders often hold links to files kept elsewhere: the site is the link's folder
    (a link whose target lies inside a site also counts there)."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.wav").write_bytes(b"x")
    (store / "b.wav").write_bytes(b"x")
    north = tmp_path / "north"
    north.mkdir()
    (north / "a.wav").symlink_to(store / "a.wav")
    sites = write(tmp_path / "sites.csv", "path,lat,lon\nnorth,42.48,-76.45\nstore/b.wav,18.2,-66.5\n")
    table = SiteTable(read_sites(sites))
    assert table.place_for(north / "a.wav") == Place(42.48, -76.45, ANY_WEEK)
    assert table.place_for(store / "a.wav") is None
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.wav").symlink_to(store / "b.wav")
    assert table.place_for(tmp_path / "elsewhere" / "b.wav") == Place(18.2, -66.5, ANY_WEEK)


@pytest.mark.parametrize("text,message", [
    ("file,lat,lon\na,1,2\n", "missing column path"),
    ("path,lat\na,1\n", "missing column lon"),
    ("path,lat,lon\na,north,2\n", "line 2: lat and lon must be numbers"),
    ("path,lat,lon\na,1,2\nb,95,2\n", "line 3: latitude must be between -90 and 90"),
    ("path,lat,lon,date,week\na,1,2,2026-05-01,3\n", "line 2: give a date or a week, not both"),
    ("path,lat,lon,date\na,1,2,May 1st\n", "line 2: Invalid isoformat"),
    ("path,lat,lon,week\na,1,2,49\n", "line 2: week must be 1..48"),
    ("path,lat,lon\na,1,2\na/,3,4\n", "line 3: a/ is already given on line 2"),
    ("path,lat,lon\n,1,2\n", "line 2: empty path"),
    ("path,lat,lon\n", "no sites listed"),
])
def test_a_bad_sites_csv_names_the_file_line_and_reason(tmp_path, text, message):
    sites = write(tmp_path / "sites.csv", text)
    with pytest.raises(SitesError) as err:
        read_sites(sites)
    assert str(err.value).startswith(str(sites)) and message in str(err.value)


def test_predict_filters_each_folder_by_its_own_site(tmp_path, capsys):
    """One clip under three folders: Ithaca in June, Puerto Rico, and a folder with no site."""
    from birdcore.runs.loading import birdnet_run as global_birdnet_run
    from birdcore.serving.birdnet_range import species_filter
    from birdcore.serving.species_mask import from_names

    listed = ["Coereba flaveola", "Turdus migratorius", "Setophaga petechia"]
    listing = write(tmp_path / "list.txt", "\n".join(listed) + "\n")
    (tmp_path / "batch" / "ithaca").mkdir(parents=True)
    clip = chirp_wav(tmp_path / "batch" / "ithaca" / "c.wav")
    for folder in ("pr", "nowhere"):
        (tmp_path / "batch" / folder).mkdir()
        (tmp_path / "batch" / folder / "c.wav").write_bytes(clip.read_bytes())
    sites = write(tmp_path / "batch" / "sites.csv",
                  f"path,lat,lon,week\nithaca,{ITHACA[0]},{ITHACA[1]},24\npr,{PUERTO_RICO[0]},{PUERTO_RICO[1]},\n")
    assert predict.main(["birdnet", str(tmp_path / "batch"), "--json", "--top", "3", "--species-list", str(listing),
                         "--sites", str(sites)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    shown = {r["file"].split("/")[-2]: {p["sci_name"] for p in r["top"] if p["score"] > 0} for r in lines}
    places = {r["file"].split("/")[-2]: r.get("place") for r in lines}
    assert places == {"ithaca": {"lat": ITHACA[0], "lon": ITHACA[1], "week": 24},
                      "pr": {"lat": PUERTO_RICO[0], "lon": PUERTO_RICO[1], "week": -1}, "nowhere": None}
    run = global_birdnet_run()
    mask = from_names(run.species, listed)
    for folder, place in (("ithaca", Place(*ITHACA, 24)), ("pr", Place(*PUERTO_RICO))):
        kept = mask & species_filter(run.species, place)
        expected = set(run.species["sci_name"][kept.keep])
        assert shown[folder] <= expected and shown[folder], (folder, shown[folder], expected)
    assert shown["ithaca"] != shown["pr"]
    assert "Coereba flaveola" not in shown["ithaca"] and "Turdus migratorius" not in shown["pr"]
    assert "Coereba flaveola" in shown["nowhere"] and "Turdus migratorius" in shown["nowhere"]


def test_an_unreadable_sites_file_is_named_with_the_reason(tmp_path):
    binary = tmp_path / "sites.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SitesError, match=f"^{binary}: cannot read the sites table \\(not a UTF-8 text file\\)"):
        read_sites(binary)
    with pytest.raises(SitesError, match="missing.csv: cannot read the sites table \\(No such file"):
        read_sites(tmp_path / "missing.csv")


def test_predict_reports_a_bad_sites_csv_in_one_line(tmp_path, capsys):
    clip = chirp_wav(tmp_path / "c.wav", seconds=1.0)
    sites = write(tmp_path / "sites.csv", "path,lat,lon\n.,north,2\n")
    assert predict.main(["birdnet", str(clip), "--sites", str(sites)]) == 2
    err = capsys.readouterr().err
    assert f"{sites}, line 2: lat and lon must be numbers" in err and "Traceback" not in err
