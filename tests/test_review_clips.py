"""birdcore.review.clips: the Review page's clip with context, spectrogram in kHz and seconds, queue,
filters and progress."""
import datetime as dt
import importlib.util
import io

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import sqlalchemy as sa

from birdcore.io.audio import AudioError
from birdcore.review import clips as C
from birdcore.review.store import StoreError, engine_for, open_store


def tone_file(path, *, seconds=10.0, rate=48000, freq=3000.0, at=(4.0, 5.0)):
    """Quiet noise with a loud ``freq`` tone between ``at`` seconds."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.001 * np.random.default_rng(0).standard_normal(len(t))
    on = (t >= at[0]) & (t < at[1])
    wave[on] += 0.5 * np.sin(2 * np.pi * freq * t[on])
    sf.write(path, wave.astype(np.float32), rate)
    return path


def test_the_clip_has_context_clipped_to_the_file_at_the_display_rate(tmp_path):
    path = tone_file(tmp_path / "tone.wav")
    clip = C.detection_clip(path, 4.0, 5.0, context_s=2.0)
    assert clip.sample_rate == C.DISPLAY_RATE  # 48 kHz brought down to 32 kHz
    assert (clip.start_s, clip.detection_start_s, clip.detection_end_s) == (2.0, 4.0, 5.0)
    assert clip.end_s == pytest.approx(7.0, abs=1e-3)
    start = C.detection_clip(path, 0.5, 2.0, context_s=2.0)  # clipped at the start of the file
    assert start.start_s == 0.0 and start.end_s == pytest.approx(4.0, abs=1e-3)
    end = C.detection_clip(path, 8.0, 12.0, context_s=2.0)  # and at its end
    assert end.start_s == pytest.approx(6.0) and end.end_s == pytest.approx(10.0, abs=1e-3)
    assert end.detection_end_s == pytest.approx(10.0, abs=1e-3)
    low = tone_file(tmp_path / "low.wav", rate=16000)
    assert C.detection_clip(low, 4.0, 5.0).sample_rate == 16000  # never upsampled

    wav = clip.wav_bytes()
    back, rate = sf.read(io.BytesIO(wav))
    assert rate == clip.sample_rate and len(back) == len(clip.wave) and wav[:4] == b"RIFF"
    with pytest.raises(AudioError, match="missing.wav"):
        C.detection_clip(tmp_path / "missing.wav", 0.0, 1.0)
    with pytest.raises(AudioError, match="shorter"):
        C.detection_clip(path, 30.0, 33.0, context_s=0.0)


def test_the_spectrogram_is_in_khz_and_file_seconds_and_finds_the_tone(tmp_path):
    clip = C.detection_clip(tone_file(tmp_path / "tone.wav", freq=3000.0, at=(4.0, 5.0)), 4.0, 5.0, context_s=2.0)
    spec = C.spectrogram(clip)
    assert spec.db.shape == (len(spec.khz), len(spec.seconds))
    assert spec.khz[0] == 0.0 and spec.khz[-1] == pytest.approx(clip.sample_rate / 2000)
    assert spec.db.max() == 0.0 and spec.db.min() >= -C.TOP_DB
    assert 2.0 <= spec.seconds[0] < 2.1 and 6.9 < spec.seconds[-1] <= 7.0
    peak_f, peak_t = np.unravel_index(np.argmax(spec.db), spec.db.shape)
    assert spec.khz[peak_f] == pytest.approx(3.0, abs=0.07)
    assert 4.0 <= spec.seconds[peak_t] <= 5.0
    loud = spec.seconds[spec.db.max(axis=0) > -20]
    assert loud.min() >= 3.9 and loud.max() <= 5.1
    long = C.detection_clip(tone_file(tmp_path / "long.wav", seconds=60.0, rate=32000), 10.0, 40.0)
    assert C.spectrogram(long).db.shape[1] <= C.MAX_FRAMES

    fig = C.clip_figure(spec, clip, title="t")
    assert fig.layout.yaxis.title.text == "frequency (kHz)" and "(s)" in fig.layout.xaxis.title.text
    assert sorted(s.x0 for s in fig.layout.shapes) == [4.0, 5.0]


def sampled_store(tmp_path):
    store = open_store(tmp_path / "review.sqlite")
    rows = []
    for i in range(6):
        for sp, name in (("aaa", "Alpha"), ("bbb", "Beta")):
            rows.append({"file": "rec.wav", "start_s": 3.0 * i, "end_s": 3.0 * i + 3, "species": sp,
                         "common_name": name, "score": 0.1 + 0.15 * i, "site": "north" if i < 3 else "south",
                         "recorded": f"2024-05-0{i + 1}" if i < 5 else None})
    store.import_detections(pd.DataFrame(rows), run="r")
    ids = store.detections()[["id", "species"]]
    store.add_samples([{"detection_id": int(i), "species": s, "strategy": "random", "stratum": 0, "weight": 1.0,
                        "seed": 0} for i, s in zip(ids["id"], ids["species"]) if int(i) != 12])
    return store


def test_queue_filters_undo_pin_and_progress(tmp_path):
    store = sampled_store(tmp_path)
    table = C.sampled_table(store)
    assert len(table) == 11 and table["verdict"].isna().all()
    assert C.queue(table)["id"].tolist() == store.queue()["id"].tolist()
    first = C.next_detection(table)
    assert first["id"] == int(store.queue()["id"].iat[0]) and first["site"] == "north"

    beta = C.Filters(species=("bbb",))
    south = C.Filters(sites=("south",))
    may = C.Filters(start=dt.date(2024, 5, 2), end=dt.date(2024, 5, 4))
    assert set(C.queue(table, beta)["species"]) == {"bbb"}
    assert set(C.queue(table, south)["site"]) == {"south"}
    assert sorted(set(C.queue(table, may)["recorded"])) == ["2024-05-02", "2024-05-03", "2024-05-04"]
    assert C.queue(table, C.Filters(start=dt.date(2024, 5, 5)))["recorded"].notna().all()  # undated rows left out
    options = C.filter_options(table)
    assert options["species"] == {"aaa": "Alpha", "bbb": "Beta"} and options["sites"] == ["north", "south"]
    assert options["dates"] == (dt.date(2024, 5, 1), dt.date(2024, 5, 5))

    d1, d2 = (int(i) for i in C.queue(table, beta)["id"].iloc[:2])
    store.add_review(d1, "yes", reviewer="ana")
    store.add_review(d2, "no", reviewer="ana", corrected_species="aaa")
    store.add_review(first["id"], "unsure", reviewer="bo")
    table = C.sampled_table(store)
    assert C.next_detection(table, beta)["id"] not in (d1, d2)
    assert table.set_index("id").loc[d2, "corrected_species"] == "aaa"
    report = C.progress(table).set_index("species")
    assert report.loc["bbb", ["sampled", "yes", "no", "unsure", "corrected", "reviewed", "left"]].tolist() == \
        [5, 1, 1, 0, 1, 2, 3]
    assert report.loc["aaa", "unsure"] == 1 and report.loc["aaa", "done"] == pytest.approx(1 / 6)
    assert report["common_name"].tolist() == ["Alpha", "Beta"]
    assert C.progress(table, C.Filters(species=("bbb",), sites=("north",)))["sampled"].tolist() == [3, 3]

    assert store.undo(reviewer="ana") == d2  # Undo brings the detection back first, whatever the filters
    table = C.sampled_table(store)
    assert C.next_detection(table, south, pinned=d2)["id"] == d2
    assert C.next_detection(table, beta, pinned=d1)["id"] != d1  # still reviewed: not shown again
    assert C.progress(C.sampled_table(open_store(tmp_path / "empty.sqlite"))).empty


def test_opening_a_database_never_creates_one(tmp_path):
    store = sampled_store(tmp_path)
    assert len(C.sampled_table(C.open_review_store(store.name))) == 11
    assert C.species_names(store) == {"aaa": "Alpha", "bbb": "Beta"}
    with pytest.raises(StoreError, match="nope.sqlite: no such review database"):
        C.open_review_store(tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()
    with pytest.raises(StoreError, match="is a folder"):
        C.open_review_store(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just a few words of text\n" * 20)
    with pytest.raises(StoreError, match="notes.txt: cannot open"):
        C.open_review_store(text)
    other = tmp_path / "other.sqlite"
    with engine_for(other).begin() as conn:
        conn.execute(sa.text("CREATE TABLE birds (x INTEGER)"))
    with pytest.raises(StoreError, match="other.sqlite: not a review database"):
        C.open_review_store(other)
    with engine_for(other).connect() as conn:
        assert sa.inspect(conn).get_table_names() == ["birds"]  # left as it was
    with pytest.raises(StoreError, match="nosuch://x"):
        C.open_review_store("nosuch://x")
    with pytest.raises(StoreError, match="no such review database"):
        C.open_review_store(f"sqlite:///{tmp_path / 'nope.sqlite'}")
    assert not (tmp_path / "nope.sqlite").exists()
    assert len(C.sampled_table(C.open_review_store(f"sqlite:///{store.name}"))) == 11
    if importlib.util.find_spec("MySQLdb") is None:
        with pytest.raises(StoreError, match="mysql://u@localhost/birds: the database driver is not installed"):
            C.open_review_store("mysql://u@localhost/birds")


def test_resolve_audio_tries_the_audio_folder_and_the_database_folder(tmp_path):
    (tmp_path / "audio").mkdir()
    wav = tone_file(tmp_path / "audio" / "rec.wav", seconds=1.0)
    assert C.resolve_audio(str(wav)) == wav
    assert C.resolve_audio("rec.wav", audio_dir=tmp_path / "audio") == wav
    assert C.resolve_audio("audio/rec.wav", base=tmp_path) == wav
    assert C.resolve_audio("/elsewhere/audio/rec.wav", audio_dir=tmp_path / "audio") == wav
    assert C.resolve_audio("gone.wav", audio_dir=tmp_path / "audio", base=tmp_path) is None
