"""BirdNET's species-range model as a location filter: weeks, places, filtering a run's species."""
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdcore.serving import birdnet_range as br
from birdcore.serving.classify import ClipResult, restrict

ITHACA = (42.48, -76.45)
PUERTO_RICO = (18.2, -66.5)
SPECIES = pd.DataFrame({"ebird_code": ["amerob", "banana", "nosuch"],
                        "sci_name": ["Turdus migratorius", "Coereba flaveola", "Avis imaginaria"]})


@pytest.mark.parametrize("day,week", [(dt.date(2023, 1, 1), 1), (dt.date(2023, 12, 31), 48),
                                      (dt.date(2023, 7, 1), 24), (dt.date(2024, 7, 1), 24), (dt.date(2024, 7, 2), 25),
                                      (dt.date(2014, 3, 3), 9)])
def test_week_of_follows_birdnets_48_week_year(day, week):
    assert br.week_of(day) == week


@pytest.mark.parametrize("lat,lon,week", [(91, 0, -1), (0, -181, -1), (float("nan"), 0, -1), (0, 0, 0), (0, 0, 49)])
def test_a_place_out_of_range_is_refused_with_the_reason(lat, lon, week):
    with pytest.raises(ValueError, match="latitude|longitude|week"):
        br.Place(lat, lon, week)


def test_species_expected_depend_on_place_and_season():
    ithaca_june = br.species_filter(SPECIES, br.Place(*ITHACA, 24))
    puerto_rico = br.species_filter(SPECIES, br.Place(*PUERTO_RICO))
    assert ithaca_june.keep.tolist() == [True, False, True]
    assert puerto_rico.keep.tolist() == [False, True, True]
    assert ithaca_june.unknown == puerto_rico.unknown == ["nosuch"]
    assert np.isnan(ithaca_june.occurrence[2]) and ithaca_june.occurrence[0] > 0.5
    # a robin is commoner around Ithaca in June than in early January
    january = br.species_filter(SPECIES, br.Place(*ITHACA, 1))
    assert january.occurrence[0] < ithaca_june.occurrence[0]


def test_threshold_bounds_keep_everything_or_only_the_unknown():
    place = br.Place(*ITHACA, 24)
    assert br.species_filter(SPECIES, place, threshold=0.0).keep.all()
    assert br.species_filter(SPECIES, place, threshold=1.0).keep.tolist() == [False, False, True]
    with pytest.raises(ValueError, match="threshold"):
        br.species_filter(SPECIES, place, threshold=1.5)


def test_apply_zeroes_dropped_species_and_keeps_shapes():
    keep = br.species_filter(SPECIES, br.Place(*PUERTO_RICO))
    segments = np.full((4, 3), 0.7, np.float32)
    out = keep.apply(segments)
    assert out.shape == (4, 3) and (out[:, 0] == 0).all() and (out[:, 1:] == 0.7).all()
    assert (segments == 0.7).all()  # the input is untouched
    assert keep.apply(segments[0]).tolist() == pytest.approx([0.0, 0.7, 0.7])


def test_restrict_reranks_and_names_what_the_filter_dropped():
    from birdcore.runs.loading import birdnet_run as global_birdnet_run

    run = global_birdnet_run()
    codes = run.codes
    robin, bananaquit = codes.index("Turdus migratorius"), codes.index("Coereba flaveola")
    recording = np.zeros(len(codes), np.float32)
    recording[robin], recording[bananaquit] = 0.9, 0.4
    result = ClipResult(name="clip", seconds=3.0, recording=recording, segments=recording[None].copy(), top=[],
                        segment_seconds=3.0)
    keep = br.species_filter(run.species, br.Place(*PUERTO_RICO, 9))
    filtered, dropped = restrict(result, run, keep, top=3)
    assert filtered.top[0].sci_name == "Coereba flaveola"
    assert [p.sci_name for p in dropped] == ["Turdus migratorius"]
    assert filtered.segments[0, robin] == 0 and result.recording[robin] == pytest.approx(0.9)


def chirp_wav(path, *, seconds=4.0, sr=48000, seed=3):
    from birdcore.data.synthetic import make_call

    wave = make_call("synchi1", seconds=seconds, sample_rate=sr, rng=np.random.default_rng(seed))
    sf.write(path, wave, sr)
    return path


def test_predict_cli_filters_birdnet_by_place_and_date(tmp_path, capsys):
    from birdcore.cli import predict

    clip = chirp_wav(tmp_path / "chirp.wav")
    assert predict.main(["birdnet", str(clip), "--json", "--top", "10"]) == 0
    unfiltered = [p["sci_name"] for p in json.loads(capsys.readouterr().out)["top"]]
    assert predict.main(["birdnet", str(clip), "--json", "--top", "10", "--lat", str(PUERTO_RICO[0]),
                         "--lon", str(PUERTO_RICO[1]), "--date", "2014-03-03"]) == 0
    top = json.loads(capsys.readouterr().out)["top"]
    run_species = pd.DataFrame({"ebird_code": [p["sci_name"] for p in top], "sci_name": [p["sci_name"] for p in top]})
    expected = br.species_filter(run_species, br.Place(*PUERTO_RICO, 9))
    positive = [p["score"] > 0 for p in top]
    assert all(k for k, pos in zip(expected.keep, positive) if pos)  # every species scoring > 0 is expected there
    assert [p["sci_name"] for p in top] != unfiltered


@pytest.mark.parametrize("args,message", [(["--lat", "95", "--lon", "0"], "latitude"),
                                          (["--lat", "10"], "both --lat and --lon"),
                                          (["--week", "5"], "need --lat and --lon")])
def test_predict_cli_rejects_a_bad_place_in_one_line(tmp_path, capsys, args, message):
    from birdcore.cli import predict

    clip = chirp_wav(tmp_path / "chirp.wav", seconds=1.0)
    assert predict.main(["birdnet", str(clip), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_species_list_keeps_named_species_in_any_naming(tmp_path):
    from birdcore.serving.species_mask import from_names, read_species_list

    species = SPECIES.assign(common_name=["American Robin", "Bananaquit", "Imaginary Bird"])
    listing = tmp_path / "list.txt"
    listing.write_text("# my patch\nCoereba flaveola_Bananaquit\n\nnosuch  # a code\n", encoding="utf-8")
    mask = from_names(species, read_species_list(listing))
    assert mask.keep.tolist() == [False, True, True]
    assert from_names(species, ["american robin"]).keep.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="1 name.*Turdus merula"):
        from_names(species, ["Turdus merula", "amerob"])
    (tmp_path / "empty.txt").write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt: the species list is empty"):
        read_species_list(tmp_path / "empty.txt")


def test_predict_cli_species_list_and_place_combine(tmp_path, capsys):
    from birdcore.cli import predict

    clip = chirp_wav(tmp_path / "chirp.wav")
    listing = tmp_path / "list.txt"
    listing.write_text("Coereba flaveola\nTurdus migratorius\nVireo latimeri\n", encoding="utf-8")
    assert predict.main(["birdnet", str(clip), "--json", "--top", "3", "--species-list", str(listing)]) == 0
    top = json.loads(capsys.readouterr().out)["top"]
    assert {p["sci_name"] for p in top} == {"Coereba flaveola", "Turdus migratorius", "Vireo latimeri"}
    assert predict.main(["birdnet", str(clip), "--json", "--top", "3", "--species-list", str(listing),
                         "--lat", str(ITHACA[0]), "--lon", str(ITHACA[1]), "--week", "24"]) == 0
    top = json.loads(capsys.readouterr().out)["top"]
    assert [p["sci_name"] for p in top] == ["Turdus migratorius"]  # the only listed species expected there
    listing.write_text("Turdus migratorius\nDodo\n", encoding="utf-8")
    assert predict.main(["birdnet", str(clip), "--species-list", str(listing)]) == 2
    err = capsys.readouterr().err
    assert "Dodo" in err and "Traceback" not in err


def test_restrict_with_nothing_kept_has_an_empty_top():
    from birdcore.runs.loading import birdnet_run as global_birdnet_run
    from birdcore.serving.species_mask import SpeciesMask

    run = global_birdnet_run()
    scores = np.linspace(0, 1, len(run.codes), dtype=np.float32)
    result = ClipResult(name="c", seconds=3.0, recording=scores, segments=scores[None], top=[], segment_seconds=3.0)
    filtered, dropped = restrict(result, run, SpeciesMask(np.zeros(len(run.codes), bool), "none"), top=5)
    assert filtered.top == [] and len(dropped) == 5 and not filtered.recording.any()


def test_predict_overlap_gives_detections_every_hop(tmp_path):
    import csv

    from birdcore.cli import predict

    clip = chirp_wav(tmp_path / "chirp.wav", seconds=7.0)
    listing = tmp_path / "list.txt"
    listing.write_text("Coereba flaveola\nTurdus migratorius\n", encoding="utf-8")
    out = tmp_path / "det.csv"
    assert predict.main(["birdnet", str(clip), "--overlap", "1.5", "--species-list", str(listing),
                         "--min-score", "0", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    # windows start every 1.5 s: 0, 1.5, 3, 4.5 (the last padded, ending with the file); only listed species
    assert sorted({(float(r["start_s"]), float(r["end_s"])) for r in rows}) == [(0, 3), (1.5, 4.5), (3, 6), (4.5, 7)]
    assert {r["species"] for r in rows} == {"Coereba flaveola", "Turdus migratorius"} and len(rows) == 8


def test_overlap_is_refused_for_a_run_with_fixed_segments(trained_run, tmp_path, capsys):
    from birdcore.cli import predict

    clip = chirp_wav(tmp_path / "chirp.wav", seconds=1.0, sr=16000)
    assert predict.main([str(trained_run), str(clip), "--overlap", "1"]) == 2
    assert "overlapping windows are for BirdNET runs" in capsys.readouterr().err
    assert predict.main(["birdnet", str(clip), "--overlap", "3"]) == 2
    assert "overlap must be in [0, 3)" in capsys.readouterr().err
