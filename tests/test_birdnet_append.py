"""``--backbone birdnet --append``: BirdNET's own species and scores, plus the training species it lacks.

One small run is shared: 3 synthetic species at 48 kHz, the first renamed to a bird BirdNET knows
(*Coereba flaveola*), and a species list narrowing BirdNET to two species; a zero-shot run on the same
split is the reference for the known species' scores."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet_append.head import AddedHead, fit_added
from birdcore.runs.folder import read_manifest
from birdcore.runs.loading import birdnet_run, load_run
from tests.conftest import tiny_config

pytestmark = pytest.mark.skipif(not bn.birdnet_available(), reason="BirdNET model files not installed")

KNOWN = "Coereba flaveola"


@pytest.fixture(scope="module")
def append_data(tmp_path_factory):
    """Synthetic data: synchi1 renamed to the Bananaquit (BirdNET knows it), two species BirdNET lacks."""
    from birdcore.data.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path_factory.mktemp("append_data"), n_species=3, recordings_per_species=7,
                                  seconds=(3.0, 4.5), sample_rate=48000, seed=6)
    meta = pd.read_csv(root / "train.csv")
    mine = meta["ebird_code"] == "synchi1"
    meta.loc[mine, "sci_name"], meta.loc[mine, "species"] = KNOWN, "Bananaquit"
    meta.to_csv(root / "train.csv", index=False)
    return root


@pytest.fixture(scope="module")
def runs(append_data, tmp_path_factory):
    """(append run, zero-shot run) on the same data and split."""
    from birdcore.models.base import kind_for
    from birdcore.training.train import train_run

    tmp = tmp_path_factory.mktemp("append_runs")
    listing = tmp / "species.txt"
    listing.write_text(f"{KNOWN}\nTurdus migratorius\n")
    out = {}
    for name, kind in (("app", "birdnet_append"), ("zero", "birdnet_zero_shot")):
        cfg = tiny_config()
        cfg.model.kind = kind
        cfg.model.species_list = str(listing) if kind == "birdnet_append" else None
        kind_for(kind).configure(cfg)
        out[name] = train_run(data_dir=append_data, out_dir=tmp / "runs", name=name, cfg=cfg,
                              cache_dir=tmp / "cache", workers=1)
    return out["app"], out["zero"]


def test_append_run_names_the_listed_birdnet_species_then_the_added_ones(runs):
    app, _ = runs
    species = pd.read_csv(app / "species.csv", keep_default_na=False)
    assert species["sci_name"].tolist()[:2] == [KNOWN, "Turdus migratorius"]
    assert species["ebird_code"].tolist()[2:] == ["synhar1", "syntri1"]
    assert species["added"].tolist() == [False, False, True, True]
    manifest = read_manifest(app)
    assert manifest["model_kind"] == "birdnet_append" and manifest["n_species"] == 4
    assert manifest["added_species"] == ["synhar1", "syntri1"] and "CC BY-NC-SA" in manifest["license"]
    assert manifest["append"]["training"]["added_recordings"] == {"synhar1": 5, "syntri1": 5}
    from birdcore.analysis.scores import run_summary

    assert "2 added: synhar1, syntri1" in run_summary(manifest) and "epochs" in run_summary(manifest)
    assert "0 epochs" not in run_summary(manifest)
    assert "added species right on " in run_summary(manifest) and " of 2 validation recordings" in run_summary(manifest)


def test_a_run_whose_added_species_lose_on_validation_says_so():
    """A headless user reads the log: an append run whose added species seldom win on validation warns."""
    from birdcore.models.birdnet_append.training import validation_shortfall

    assert "only 0 of their 2 validation recordings" in validation_shortfall({"added": 2, "added_right": 0})
    assert "only 1 of their 3" in validation_shortfall({"added": 3, "added_right": 1})
    missed = [{"recording": "purpar1/XC1", "species": "purpar1", "top1": "graori4"},
              {"recording": "purpar1/XC2", "species": "purpar1", "top1": "graori4"}]
    assert "(graori4 took 2)" in validation_shortfall({"added": 2, "added_right": 0, "missed": missed})
    assert validation_shortfall({"added": 2, "added_right": 1}) is None
    assert validation_shortfall({"added": 0, "added_right": 0}) is None  # nothing to judge on


def test_known_species_scores_are_zero_shots_bit_for_bit(runs, append_data):
    app, zero = runs
    a, z = np.load(app / "scores.npz"), np.load(zero / "scores.npz")
    assert a["recording_id"].tolist() == z["recording_id"].tolist()  # the same test split
    col = z["species"].tolist().index("synchi1")  # the zero-shot run names it by the data's code
    assert np.array_equal(a["scores"][:, 0], z["scores"][:, col])
    assert np.array_equal(a["segment_scores"][:, 0], z["segment_scores"][:, col])
    # serving: the run's scorer against BirdNET's own scores of every species, on a real recording
    from birdcore.io.audio import decode_audio

    wave = decode_audio(sorted((append_data / "train_audio").rglob("*.wav"))[0], sample_rate=bn.SAMPLE_RATE)
    mine = load_run(app).scorer().score(wave)
    ref = birdnet_run().scorer().score(wave)
    cols = json.loads((app / "birdnet_species.json").read_text())["columns"][:2]
    assert np.array_equal(mine.recording[:2], ref.recording[cols])
    assert np.array_equal(mine.segments[:, :2], ref.segments[:, cols])
    assert mine.recording.shape == (4,) and mine.segments.shape == (len(ref.segments), 4)


def test_added_species_are_learnt_without_taking_known_recordings(runs):
    app, _ = runs
    s = np.load(app / "scores.npz")
    top = s["scores"].argmax(axis=1)
    added = s["primary"] >= 2
    assert (top[added] == s["primary"][added]).mean() >= 0.5  # BirdNET alone knows neither
    assert not (top[~added] >= 2).any()  # no known species' recording taken by an added one
    validation = read_manifest(app)["append"]["validation"]
    assert validation["false_takes"] == 0 and validation["added"] == 2
    assert len(validation["missed"]) == 2 - validation["added_right"]  # each miss named, with its taker
    assert all(m["species"] in ("synhar1", "syntri1") and m["top1"] != m["species"] for m in validation["missed"])


def test_evaluate_cli_scores_an_append_run(runs, tmp_path, capsys):
    from birdcore.cli.evaluate import main
    from birdcore.data.synthetic import make_synthetic_dataset

    other = make_synthetic_dataset(tmp_path / "other", n_species=3, recordings_per_species=1, seconds=(3.0, 3.5),
                                   sample_rate=48000, seed=41)
    assert main([str(runs[0]), "--data-dir", str(other), "--json", "--cache-dir", str(tmp_path / "c"),
                 "--workers", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # synchi1 is not renamed here, so it is not among the run's species: the two added ones are scored
    assert result["n_recordings"] == 2 and result["n_species"] == 4


def test_without_a_list_the_run_names_all_of_birdnets_species():
    from birdcore.models.birdnet_append.species import append_species

    data = pd.DataFrame({"ebird_code": ["bananaq", "purpar1"], "common_name": ["Bananaquit", "Puerto Rican Parrot"],
                         "sci_name": [KNOWN, "Amazona vittataX"]})
    table, columns, rename = append_species(data)
    assert len(table) == 6523 and table["added"].sum() == 1 and table["ebird_code"].iloc[-1] == "purpar1"
    assert columns[:6522] == list(range(6522)) and columns[-1] is None
    assert rename == {"bananaq": KNOWN, "purpar1": "purpar1"}  # BirdNET names its species by scientific name


@pytest.mark.parametrize("temperature", [0.0, 3.0])
def test_fitting_puts_added_species_above_birdnets_top_on_their_recordings_only(temperature):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16)).astype(np.float32)  # known, added 0, added 1
    labels = np.repeat([-1, 0, 1], [20, 3, 3])
    embs = [centres[lab + 1] + 0.3 * rng.standard_normal((4, 16)).astype(np.float32) for lab in labels]
    tops = [np.full(4, 2.0, np.float32) for _ in labels]
    head = fit_added(embs, tops, labels, 2, margin=1.0, l2=1e-3, steps=300, temperature=temperature)
    z = np.stack([head.logits(e).max(axis=0) for e in embs])
    assert (z[labels < 0] < 2.0).all()
    for a in (0, 1):
        assert (z[labels == a, a] > z[labels == a, 1 - a]).all()
        # the smooth max is above the max that scoring takes (by up to τ·log 4 here): its positives may
        # end a little below BirdNET's top when scored, its negatives stay safely below it
        assert (z[labels == a, a] > 2.0 - temperature * np.log(4)).all()


def test_added_layer_file_round_trips_and_bad_files_are_named(tmp_path):
    head = AddedHead(np.ones((1024, 2), np.float32), np.zeros(2, np.float32))
    head.save(tmp_path / "h.npz")
    back = AddedHead.load(tmp_path / "h.npz")
    assert np.array_equal(back.kernel, head.kernel) and np.array_equal(back.bias, head.bias)
    (tmp_path / "bad.npz").write_text("no")
    with pytest.raises(ValueError, match="bad.npz"):
        AddedHead.load(tmp_path / "bad.npz")


def test_cli_append_options():
    from birdcore.cli.train import build_parser, check_args, config_from_args

    args = build_parser().parse_args(["--data-dir", ".", "--backbone", "birdnet", "--append"])
    assert config_from_args(args).model.kind == "birdnet_append"
    for argv, message in ((["--data-dir", ".", "--append"], "--append is for --backbone birdnet"),
                          (["--data-dir", ".", "--backbone", "birdnet", "--species-list", "x.txt"],
                           "--species-list")):
        with pytest.raises(ValueError, match=message):
            check_args(build_parser().parse_args(argv))


def test_species_summary_marks_the_added_species(runs):
    from birdcore.analysis.scores import load_score_table, species_summary

    app = runs[0]
    names = pd.read_csv(app / "species.csv", keep_default_na=False)
    summary = species_summary(load_score_table(app), metrics=json.loads((app / "metrics.json").read_text()),
                              thresholds=json.loads((app / "thresholds.json").read_text()), names=names)
    assert dict(zip(summary["ebird_code"], summary["added"])) == {"banana": False, "amerob": False,
                                                                  "synhar1": True, "syntri1": True}


def test_append_run_serves_soundscapes_predict_and_review(runs, tmp_path, capsys):
    """Must-have 2 of issue #27 beyond evaluate: the soundscape commands, and detections from predict
    into review, each naming the added species."""
    from birdcore.cli.predict import main as predict
    from birdcore.cli.review import main as review
    from birdcore.cli.soundscapes import main as soundscapes
    from birdcore.data.synthetic import make_synthetic_soundscapes

    app = runs[0]
    scapes = make_synthetic_soundscapes(tmp_path / "scapes", species=["synhar1", "syntri1"], n_files=1,
                                        seconds=30.0, sample_rate=48000, seed=5)
    d = scapes["dir"]
    assert soundscapes(["evaluate", str(app), "--labels", str(d / "summary.csv"), "--audio-dir", str(d / "audio"),
                        "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_rows"] == 6 and result["macro_auc"] is not None  # the added species' rows are scored

    detections = tmp_path / "detections.csv"
    assert predict([str(app), str(d / "audio"), "--out", str(detections), "--min-score", "0"]) == 0
    found = pd.read_csv(detections)
    assert {"synhar1", "syntri1"} <= set(found["species"])
    db = tmp_path / "review.sqlite"
    assert review(["import", str(detections), "--db", str(db), "--run", str(app)]) == 0
    assert review(["sample", "--db", str(db), "--per-species", "2", "--seed", "1"]) == 0
    capsys.readouterr()
    assert review(["report", "--db", str(db), "--json"]) == 0
    report = capsys.readouterr().out
    assert "synhar1" in report and "syntri1" in report


def test_append_run_serves_the_api_as_the_classify_page_scores(runs, tmp_path):
    """The API (the classify page's classifier behind HTTP) names the added species after BirdNET's."""
    import requests

    from birdcore.data.synthetic import make_synthetic_soundscapes
    from birdcore.serving.api import create_app
    from birdcore.serving.classify import ClipClassifier
    from tests.test_api import serving

    scapes = make_synthetic_soundscapes(tmp_path / "scapes", species=["synhar1", "syntri1"], n_files=1,
                                        seconds=12.0, sample_rate=48000, seed=5)
    clf = ClipClassifier(load_run(runs[0]))
    with serving(create_app(clf)) as url:
        species = requests.get(f"{url}/v1/species", timeout=10).json()
        assert [s["code"] for s in species["species"]][2:] == ["synhar1", "syntri1"]
        assert [s["added"] for s in species["species"]] == [False, False, True, True]  # marked, as species.csv
        audio = sorted((scapes["dir"] / "audio").glob("*.wav"))[0].read_bytes()
        answer = requests.post(f"{url}/v1/classify", files=[("file", ("scape.wav", audio, "audio/wav"))], timeout=60)
        assert answer.status_code == 200, answer.text
        direct, _ = clf.classify_upload(audio, name="scape.wav", top=5)  # the classify page's call
        assert [s["code"] for s in answer.json()["top"]] == [p.ebird_code for p in direct.top]


def test_classify_page_marks_the_added_species(runs, tmp_path, monkeypatch):
    """The Classify page with an append run: its top species say which ones the run added to BirdNET."""
    import io
    import shutil

    import soundfile as sf
    from streamlit.testing.v1 import AppTest

    from birdcore.data.synthetic import make_call

    folder = tmp_path / "runs"
    shutil.copytree(runs[0], folder / runs[0].name)
    monkeypatch.setenv("BIRDCLEF_RUNS", str(folder))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.run()
    at.radio[0].set_value("run").run()  # a synthetic run: BirdNET is preselected
    buf = io.BytesIO()
    sf.write(buf, make_call("syntri1", seconds=4.0, sample_rate=48000, rng=np.random.default_rng(2)), 48000,
             format="WAV")
    at.file_uploader[0].set_value(("clip.wav", buf.getvalue(), "audio/wav")).run()
    assert not at.exception, [e.value for e in at.exception]
    table = [d.value for d in at.dataframe if "score" in d.value.columns][0]
    marks = dict(zip(table["code"].fillna(table["scientific name"]), table["added to BirdNET"]))
    assert marks.get("syntri1") is True or marks.get("synhar1") is True, marks
    assert not any(marks.get(name) for name in (KNOWN, "Turdus migratorius")), marks
