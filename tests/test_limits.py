"""One process-wide bound on classifications (``serving.limits``) and the longest upload scored."""
import threading

import numpy as np
import pytest
import soundfile as sf

from birdcore.serving.limits import WorkSlots, max_concurrent, max_upload_seconds


def test_a_caller_beyond_the_slots_waits_and_is_told_until_one_is_free():
    slots = WorkSlots(1)
    inside, release, told, done = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first():
        with slots.slot():
            inside.set()
            release.wait(10)

    def second():
        def waiting(n):
            seen.append(n)
            told.set()
        with slots.slot(waiting, poll_seconds=0.01):
            done.set()

    a = threading.Thread(target=first)
    a.start()
    assert inside.wait(10)
    b = threading.Thread(target=second)
    b.start()
    assert told.wait(10) and not done.is_set()  # waiting, and told so
    assert slots.waiting == 1 and seen[0] == 1
    release.set()
    assert done.wait(10)
    a.join(10), b.join(10)
    assert slots.waiting == 0
    with slots.slot():  # the slot came back
        pass


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.delenv("BIRDCLEF_MAX_CONCURRENT", raising=False)
    monkeypatch.delenv("BIRDCLEF_MAX_UPLOAD_MINUTES", raising=False)
    assert max_concurrent() == 2 and max_upload_seconds() == 1800.0
    monkeypatch.setenv("BIRDCLEF_MAX_CONCURRENT", "4")
    monkeypatch.setenv("BIRDCLEF_MAX_UPLOAD_MINUTES", "0.5")
    assert max_concurrent() == 4 and max_upload_seconds() == 30.0
    monkeypatch.setenv("BIRDCLEF_MAX_CONCURRENT", "0")
    with pytest.raises(ValueError, match="BIRDCLEF_MAX_CONCURRENT='0': must be at least 1"):
        max_concurrent()


def test_an_upload_longer_than_the_limit_is_cut_there_with_a_warning(trained_run, tmp_path):
    import io

    from birdcore.runs.loading import load_run
    from birdcore.serving.classify import ClipClassifier

    clf = ClipClassifier(load_run(trained_run))
    rate = clf.run.sample_rate
    t = np.arange(int(150 * rate)) / rate  # 2.5 minutes: three 60 s chunks
    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32), rate, format="WAV")
    whole, _ = clf.classify_upload(buf.getvalue(), name="long.wav")
    assert abs(whole.seconds - 150) < 0.01 and not whole.warnings
    cut, _ = clf.classify_upload(buf.getvalue(), name="long.wav", max_seconds=90)
    assert abs(cut.seconds - 90) < 0.01
    assert cut.warnings == ["long.wav: only the first 1.5 minutes were scored (this server's limit; the file is "
                            "2.5 minutes long)"]
    assert len(cut.segments) < len(whole.segments)
