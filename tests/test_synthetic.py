import ast
import itertools

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdcore.data.synthetic import SYNTHETIC_SPECIES, make_call, make_synthetic_dataset, species_names

SR = 16000


def test_species_definitions():
    assert len(SYNTHETIC_SPECIES) >= 8
    codes = [s.code for s in SYNTHETIC_SPECIES]
    assert len(set(codes)) == len(codes) and all(c.startswith("syn") for c in codes)
    assert {s.call for s in SYNTHETIC_SPECIES} >= {"chirp", "trill", "harmonic", "two_note", "buzz", "warble"}
    names = species_names()
    assert set(names) == set(codes)
    for common, sci in names.values():
        genus, epithet = sci.split(" ")
        assert genus[0].isupper() and genus[1:].islower() and epithet.islower()
        assert common.startswith("Synthetic ")


def test_make_call_shape_level_and_determinism():
    a = make_call("synchi1", seconds=2.5, sample_rate=SR, rng=np.random.default_rng(5))
    b = make_call("synchi1", seconds=2.5, sample_rate=SR, rng=np.random.default_rng(5))
    c = make_call("synchi1", seconds=2.5, sample_rate=SR, rng=np.random.default_rng(6))
    assert a.dtype == np.float32 and a.shape == (int(2.5 * SR),)
    assert 0.1 < np.abs(a).max() <= 0.9
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="unknown synthetic species"):
        make_call("nosuch", seconds=1.0, sample_rate=SR, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="too low"):
        make_call("synbuz1", seconds=1.0, sample_rate=8000, rng=np.random.default_rng(0))


def spectral_centroid(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / SR)
    keep = freqs > 500  # above the pink noise's bulk
    return float((power[keep] * freqs[keep]).sum() / power[keep].sum())


def test_species_have_different_spectra():
    centroids = {}
    for sp in SYNTHETIC_SPECIES:
        values = [spectral_centroid(make_call(sp.code, seconds=2.0, sample_rate=SR, rng=np.random.default_rng(i)))
                  for i in range(6)]
        centroids[sp.code] = (min(values), max(values))
    pairs = list(itertools.combinations(centroids, 2))
    apart = [a for a in pairs if centroids[a[0]][1] < centroids[a[1]][0] or centroids[a[1]][1] < centroids[a[0]][0]]
    assert len(apart) >= 0.9 * len(pairs), centroids


def test_kaggle2020_dataset(tmp_path):
    out = make_synthetic_dataset(tmp_path / "d", n_species=3, recordings_per_species=3, seconds=(1.0, 2.0),
                                 sample_rate=SR, seed=3, secondary_prob=0.6)
    assert out == tmp_path / "d"
    assert "synthetic" in (out / "README.txt").read_text().lower()
    df = pd.read_csv(out / "train.csv", keep_default_na=False)
    for col in ("ebird_code", "filename", "duration", "rating", "channels", "sampling_rate", "secondary_labels",
                "species", "sci_name", "primary_label", "type", "xc_id", "author", "license"):
        assert col in df.columns, col
    assert len(df) == 9 and df["xc_id"].is_unique
    assert list(df["ebird_code"].unique()) == [s.code for s in SYNTHETIC_SPECIES[:3]]
    labels = {s.label for s in SYNTHETIC_SPECIES[:3]}
    assert set(df["primary_label"]) == labels
    n_secondary = 0
    for row in df.itertuples():
        path = out / "train_audio" / row.ebird_code / row.filename
        assert row.filename == f"XC{row.xc_id}.wav"
        wave, rate = sf.read(path)
        assert rate == SR and abs(len(wave) / SR - row.duration) < 1e-3
        secondary = ast.literal_eval(row.secondary_labels)
        assert row.primary_label not in secondary and set(secondary) <= labels
        n_secondary += len(secondary)
    assert n_secondary > 0
    # the package's reader understands it
    from birdcore.data.metadata import read_metadata

    meta = read_metadata(out)
    assert meta["exists"].all() and len(meta) == 9
    assert sum(len(s) for s in meta["secondary"]) == n_secondary


def test_dataset_is_deterministic(tmp_path):
    kwargs = dict(n_species=2, recordings_per_species=2, seconds=(1.0, 1.5), sample_rate=SR, seed=11)
    a = make_synthetic_dataset(tmp_path / "a", **kwargs)
    b = make_synthetic_dataset(tmp_path / "b", **kwargs)
    c = make_synthetic_dataset(tmp_path / "c", **{**kwargs, "seed": 12})
    assert (a / "train.csv").read_text() == (b / "train.csv").read_text()
    for path in sorted((a / "train_audio").rglob("*.wav")):
        rel = path.relative_to(a)
        np.testing.assert_array_equal(sf.read(path)[0], sf.read(b / rel)[0])
    first = sorted((a / "train_audio").rglob("*.wav"))[0].relative_to(a)
    assert not np.array_equal(sf.read(a / first)[0], sf.read(c / first)[0])


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
@pytest.mark.parametrize("layout", ["kaggle2020", "birdclef"])
def test_formats_and_layouts(tmp_path, fmt, layout):
    out = make_synthetic_dataset(tmp_path, n_species=2, recordings_per_species=1, seconds=(1.0, 1.0),
                                 sample_rate=SR, seed=0, audio_format=fmt, layout=layout, secondary_prob=1.0)
    files = sorted((out / "train_audio").rglob(f"*.{fmt}"))
    assert len(files) == 2
    for path in files:
        wave, rate = sf.read(path)
        assert rate == SR and wave.ndim == 1 and abs(len(wave) - SR) < 0.1 * SR and np.abs(wave).max() > 0.05
    if layout == "birdclef":
        df = pd.read_csv(out / "train_metadata.csv", keep_default_na=False)
        assert not (out / "train.csv").exists()
        for col in ("primary_label", "secondary_labels", "filename", "scientific_name", "common_name"):
            assert col in df.columns
        assert all((out / "train_audio" / f).is_file() for f in df["filename"])
        assert df["filename"].iloc[0] == f"{df['primary_label'].iloc[0]}/XC100000.{fmt}"
        assert ast.literal_eval(df["secondary_labels"].iloc[0]) == [df["primary_label"].iloc[1]]
    else:
        df = pd.read_csv(out / "train.csv", keep_default_na=False)
        assert all((out / "train_audio" / c / f).is_file() for c, f in zip(df["ebird_code"], df["filename"]))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="audio_format"):
        make_synthetic_dataset(tmp_path, audio_format="aac")
    with pytest.raises(ValueError, match="layout"):
        make_synthetic_dataset(tmp_path, layout="other")
    with pytest.raises(ValueError, match="n_species"):
        make_synthetic_dataset(tmp_path, n_species=len(SYNTHETIC_SPECIES) + 1)
