"""Tests for birdcore.data.metadata on tiny fake datasets in both layouts."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdcore.data.metadata import DatasetError, load_species_names, read_metadata, species_table


def audio(path, seconds=0.2, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.1 * np.random.default_rng(len(path.name)).standard_normal(int(seconds * rate))
    fmt = "MP3" if path.suffix == ".mp3" else None
    sf.write(path, x.astype(np.float32), rate, format=fmt)


@pytest.fixture
def kaggle2020(tmp_path):
    rows = [
        dict(ebird_code="bananaq", filename="XC100.mp3", duration="12.5", xc_id="100",
             secondary_labels="['Vireo altiloquus_Black-whiskered Vireo', 'Nota bird_Unknown']",
             species="Bananaquit", sci_name="Coereba flaveola"),
        dict(ebird_code="blwvir", filename="XC200.wav", duration="", xc_id="",
             secondary_labels="['Coereba flaveola_Bananaquit', 'Vireo altiloquus_Black-whiskered Vireo']",
             species="Black-whiskered Vireo", sci_name="Vireo altiloquus"),
        dict(ebird_code="blwvir", filename="XC300.wav", duration="3", xc_id="300",
             secondary_labels="[]", species="Black-whiskered Vireo", sci_name="Vireo altiloquus"),
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    audio(tmp_path / "train_audio/bananaq/XC100.mp3")
    audio(tmp_path / "train_audio/blwvir/XC200.wav")  # XC300.wav is missing on purpose
    return tmp_path


def test_kaggle2020_layout(kaggle2020):
    df = read_metadata(kaggle2020)
    assert list(df.columns) == ["recording_id", "path", "primary", "secondary", "xc_id",
                                "duration", "sci_name", "common_name", "exists"]
    assert df["recording_id"].tolist() == ["bananaq/XC100", "blwvir/XC200", "blwvir/XC300"]
    first, second, third = (df.iloc[i] for i in range(3))
    assert first["path"] == str(kaggle2020.resolve() / "train_audio/bananaq/XC100.mp3")
    assert first["secondary"] == ["blwvir"]  # Sci_Common mapped, unknown dropped
    assert second["secondary"] == ["bananaq"]  # own species dropped
    assert third["secondary"] == []
    assert df["xc_id"].tolist() == [100, 200, 300]  # 200 derived from the filename
    assert first["duration"] == 12.5 and math.isnan(second["duration"])
    assert df["exists"].tolist() == [True, True, False]
    assert first["common_name"] == "Bananaquit" and first["sci_name"] == "Coereba flaveola"


def test_birdclef_layout(tmp_path):
    rows = [
        dict(primary_label="banana", filename="banana/XC11.ogg", secondary_labels="['comwax', 'zzz']",
             scientific_name="Coereba flaveola", common_name="Bananaquit"),
        dict(primary_label="comwax", filename="comwax/rec-7.ogg", secondary_labels="[]",
             scientific_name="Estrilda astrild", common_name="Common Waxbill"),
        dict(primary_label="comwax", filename="comwax/XC99.ogg", secondary_labels="not a list",
             scientific_name="Estrilda astrild", common_name="Common Waxbill"),
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "train_metadata.csv", index=False)
    audio(tmp_path / "train_audio/banana/XC11.ogg")
    df = read_metadata(tmp_path)
    assert df["recording_id"].tolist() == ["banana/XC11", "comwax/rec-7", "comwax/XC99"]
    assert df["secondary"].tolist() == [["comwax"], [], []]
    assert df["xc_id"].tolist() == [11, -1, 99]
    assert df["duration"].isna().all()
    assert df["exists"].tolist() == [True, False, False]
    assert df.loc[0, "path"] == str(tmp_path.resolve() / "train_audio/banana/XC11.ogg")

    table = species_table(df)
    assert table.columns.tolist() == ["ebird_code", "common_name", "sci_name"]
    assert table.values.tolist() == [["banana", "Bananaquit", "Coereba flaveola"],
                                     ["comwax", "Common Waxbill", "Estrilda astrild"]]


def test_missing_csv_and_columns(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path)):
        read_metadata(tmp_path)
    pd.DataFrame({"filename": ["a.mp3"]}).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DatasetError, match="ebird_code"):
        read_metadata(tmp_path)


def test_secondary_is_never_evaluated(tmp_path):
    pd.DataFrame({"primary_label": ["aaa"], "filename": ["aaa/XC1.ogg"],
                  "secondary_labels": ["__import__('os').getcwd()"]}).to_csv(
        tmp_path / "train_metadata.csv", index=False)
    assert read_metadata(tmp_path).loc[0, "secondary"] == []


def test_load_species_names(tmp_path):
    path = tmp_path / "species.csv"
    path.write_text("ebird_code,common_name,scientific_name\n"
                    "aldfly,Alder Flycatcher,Empidonax alnorum\n"
                    "ameavo,American Avocet,Recurvirostra americana\n")
    assert load_species_names(path) == {
        "aldfly": ("Alder Flycatcher", "Empidonax alnorum"),
        "ameavo": ("American Avocet", "Recurvirostra americana"),
    }
    (tmp_path / "bad.csv").write_text("code,name\nx,y\n")
    with pytest.raises(DatasetError):
        load_species_names(tmp_path / "bad.csv")
