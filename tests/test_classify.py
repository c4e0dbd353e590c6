"""Classifying uploads: streamed scoring equals whole-clip scoring; errors name the upload."""
import io

import numpy as np
import pytest
import soundfile as sf

from birdcore.io.audio import AudioError, decode_bytes
from birdcore.serving.classify import ClipClassifier
from birdcore.runs.loading import load_run
from birdcore.data.synthetic import make_call


@pytest.fixture(scope="module")
def clf(trained_run):
    return ClipClassifier(load_run(trained_run))


def flac_bytes(seconds: float) -> tuple[bytes, np.ndarray]:
    wave = make_call("syntri1", seconds=seconds, sample_rate=16000, rng=np.random.default_rng(7))
    buf = io.BytesIO()
    sf.write(buf, wave, 16000, format="FLAC")
    return buf.getvalue(), wave


def test_streamed_upload_matches_whole_clip(clf):
    data, _ = flac_bytes(7.3)
    fractions = []
    result, head = clf.classify_upload(data, name="field.flac", progress=fractions.append)
    whole = clf.classify_wave(decode_bytes(data, sample_rate=clf.run.sample_rate, name="field.flac"), name="field.flac")
    np.testing.assert_allclose(result.recording, whole.recording, atol=1e-5)
    np.testing.assert_allclose(result.segments, whole.segments, atol=1e-5)
    assert result.seconds == pytest.approx(7.3, abs=0.01)
    assert len(head) == len(decode_bytes(data, sample_rate=clf.run.sample_rate, name="x.flac"))
    assert fractions and fractions[-1] == pytest.approx(1.0) and fractions == sorted(fractions)
    assert [p.ebird_code for p in result.top] == [p.ebird_code for p in whole.top]


def test_a_truncated_upload_reports_the_length_that_decoded_and_says_why(clf):
    """An mp3 cut short keeps its header's length (20 s here); libsndfile decodes the 6 s that are
    there without a word.  The result gives the decoded length and a warning naming the upload."""
    wave = make_call("syntri1", seconds=20.0, sample_rate=16000, rng=np.random.default_rng(7))
    buf = io.BytesIO()
    sf.write(buf, wave, 16000, format="MP3", subtype="MPEG_LAYER_III")
    whole = buf.getvalue()
    cut, _ = clf.classify_upload(whole[: len(whole) // 3], name="cut.mp3")
    assert 4.0 < cut.seconds < 9.0
    assert len(cut.warnings) == 1 and cut.warnings[0].startswith("cut.mp3: decoded ")
    assert "of the 20.0 s its header gives" in cut.warnings[0]
    full, _ = clf.classify_upload(whole, name="whole.mp3")
    assert full.seconds == pytest.approx(20.0, abs=0.1) and full.warnings == []


@pytest.mark.parametrize("data", [b"", b"not audio at all", np.random.default_rng(0).bytes(3000)])
def test_bad_upload_names_the_upload(clf, data):
    with pytest.raises(AudioError) as err:
        clf.classify_upload(data, name="visitor clip.mp3")
    assert str(err.value).startswith("visitor clip.mp3: ")


def test_one_shared_classifier_serves_concurrent_visitors(clf):
    """The dashboard keeps one classifier per process (st.cache_resource); sessions call it from threads."""
    from concurrent.futures import ThreadPoolExecutor

    uploads = [flac_bytes(s)[0] for s in (2.0, 3.5, 5.0, 6.5)]
    alone = [clf.classify_upload(d, name=f"c{i}.flac")[0].recording for i, d in enumerate(uploads)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda a: clf.classify_upload(a[1], name=f"c{a[0]}.flac")[0].recording,
                                 enumerate(uploads * 2)))
    for i, rec in enumerate(together):
        np.testing.assert_allclose(rec, alone[i % 4], atol=1e-5)


def wav48(seconds: float, seed: int = 3) -> bytes:
    wave = make_call("syntri1", seconds=seconds, sample_rate=48000, rng=np.random.default_rng(seed))
    buf = io.BytesIO()
    sf.write(buf, wave, 48000, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def birdnet_clf():
    from birdcore.runs.loading import birdnet_run as global_birdnet_run

    return ClipClassifier(global_birdnet_run())


def test_overlapping_windows_score_the_clip_every_hop(birdnet_clf):
    data = wav48(7.0)
    plain, _ = birdnet_clf.classify_upload(data, name="a.wav")
    dense, _ = birdnet_clf.classify_upload(data, name="a.wav", overlap=1.5)
    assert birdnet_clf.supports_overlap
    assert (plain.hop_seconds, dense.hop_seconds, dense.segment_seconds) == (3.0, 1.5, 3.0)
    assert len(plain.segments) == 3 and len(dense.segments) == 4  # windows at 0, 1.5, 3, 4.5 s
    # the windows both grids share (0 s and 3 s) get the same scores
    np.testing.assert_allclose(dense.segments[[0, 2]], plain.segments[[0, 1]], atol=1e-5)
    # the shared classifier's own scorer is left as it was (other visitors keep 3 s windows)
    assert birdnet_clf.scorer.overlap == 0.0
    again, _ = birdnet_clf.classify_upload(data, name="a.wav")
    np.testing.assert_allclose(again.segments, plain.segments, atol=1e-6)


def test_a_fixed_segment_run_refuses_overlap(clf):
    data, _ = flac_bytes(3.0)
    assert not clf.supports_overlap
    with pytest.raises(ValueError, match="BirdNET runs"):
        clf.classify_upload(data, name="x.flac", overlap=1.0)
