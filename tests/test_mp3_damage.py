"""Damaged mp3 frames: libmpg123's complaints become one log line naming the file, not raw stderr."""
from __future__ import annotations

import logging
import os
import re

import numpy as np
import pytest
import soundfile as sf

from birdcore.data.cache import DecodeCache
from birdcore.io.audio import AudioError, decode_audio, decode_bytes
from birdcore.io.stream import stream_audio

RATE = 22050
DAMAGED = (20, 23, 26, 29)  # frames whose side information is spoiled


def mp3_frames(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each MPEG-1/2 layer III frame, walking the headers from the start."""
    kbps = {3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
            2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
    rates = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000)}
    frames, i = [], 0
    while i + 4 <= len(data):
        if data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0:
            version = (data[i + 1] >> 3) & 3
            bitrate = kbps[version][data[i + 2] >> 4] * 1000
            rate = rates[version][(data[i + 2] >> 2) & 3]
            n = (144 if version == 3 else 72) * bitrate // rate + ((data[i + 2] >> 1) & 1)
            frames.append((i, n))
            i += n
        else:
            i += 1
    return frames


def damaged_mp3(path):
    """A 3 s mono MPEG-2 layer III file (22.05 kHz) whose frames DAMAGED claim a main-data length
    (part2_3_length) larger than the frame holds: libmpg123 reports each one, and decodes the rest."""
    t = np.arange(3 * RATE) / RATE
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(path, wave.astype(np.float32), RATE, format="MP3")
    data = bytearray(path.read_bytes())
    for offset, _ in (mp3_frames(data)[k] for k in DAMAGED):
        data[offset + 5] |= 0x7F  # side info after the 4-byte header: part2_3_length's high bits
        data[offset + 6] |= 0xF0
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def birdcore_log(caplog):
    """Records of the ``birdcore`` logger (attached directly: the CLI's setup stops its propagation)."""
    logger = logging.getLogger("birdcore")
    saved = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.level, logger.propagate = saved


def assert_reported_once(capfd, records, name) -> int:
    """Nothing raw on fd 2 and one warning naming the file; returns the damaged frames it counts."""
    err = capfd.readouterr().err
    assert "libmpg123" not in err and "part2_3_length" not in err, err
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    found = re.fullmatch(re.escape(name) + r": the mp3 decoder reported (\d+) damaged frames \(decoded anyway\)",
                         warnings[0])
    assert found, warnings[0]
    return int(found.group(1))


def test_decode_audio_logs_damaged_frames_with_the_file_name(tmp_path, capfd, birdcore_log):
    path = damaged_mp3(tmp_path / "XC1234.mp3")
    wave = decode_audio(path, sample_rate=RATE)
    assert abs(wave.size - 3 * RATE) < RATE // 10
    assert assert_reported_once(capfd, birdcore_log.records, str(path)) == len(DAMAGED)
    details = [r.getMessage() for r in birdcore_log.records if r.levelno == logging.DEBUG]
    assert len(details) == len(DAMAGED) and all(d.startswith(f"{path}: ") for d in details)


def test_decode_bytes_names_the_upload(tmp_path, capfd, birdcore_log):
    data = damaged_mp3(tmp_path / "x.mp3").read_bytes()
    decode_bytes(data, sample_rate=RATE, name="upload.mp3")
    assert assert_reported_once(capfd, birdcore_log.records, "upload.mp3") == len(DAMAGED)


def test_streaming_reports_the_file_once_over_all_chunks(tmp_path, capfd, birdcore_log):
    path = damaged_mp3(tmp_path / "XC1234.mp3")
    chunks = list(stream_audio(path, sample_rate=RATE, chunk_seconds=0.5))
    assert len(chunks) > 4
    # read in blocks, libmpg123 also trips over frames whose bit reservoir lies in a damaged one
    assert assert_reported_once(capfd, birdcore_log.records, str(path)) >= len(DAMAGED)


def test_cache_workers_keep_the_raw_lines_off_the_terminal(tmp_path, capfd):
    path = damaged_mp3(tmp_path / "XC1234.mp3")
    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(RATE, np.float32), RATE)
    report = DecodeCache(tmp_path / "cache", sample_rate=RATE).build([path, good], workers=2)
    assert report.ok == [str(path), str(good)]
    err = capfd.readouterr().err
    assert "libmpg123" not in err and "part2_3_length" not in err, err


def test_undecodable_mp3_is_still_one_audio_error(tmp_path, capfd, birdcore_log):
    data = damaged_mp3(tmp_path / "x.mp3").read_bytes()
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(data[:300] + bytes(range(256)) * 8)  # one frame, then noise that is no mp3
    with pytest.raises(AudioError) as info:
        decode_audio(junk, sample_rate=RATE)
    assert str(info.value).startswith(f"{junk}: ") and "\n" not in str(info.value)
    assert "libmpg123" not in capfd.readouterr().err
    assert not [r for r in birdcore_log.records if r.levelno >= logging.WARNING]


def test_overlapping_captures_each_get_their_own_text_and_fd2_comes_back(capfd):
    from birdcore.io.native_stderr import NativeStderr

    outer, inner, later = NativeStderr(), NativeStderr(), NativeStderr()
    with outer:
        os.write(2, b"a\n")
        with inner:
            os.write(2, b"b\n")
        os.write(2, b"c\n")
        later.__enter__()  # a second thread's block, ending after the first one's
        os.write(2, b"d\n")
    os.write(2, b"e\n")  # still captured: ``later`` has not ended
    later.__exit__(None, None, None)
    os.write(2, b"f\n")
    assert (outer.text, inner.text, later.text) == ("a\nc\nd\n", "b\n", "e\n")
    assert capfd.readouterr().err == "f\n"
