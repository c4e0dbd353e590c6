"""birdcore.io.inputs: listing local folders, list files, globs and URIs; local copies of URIs."""
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdcore.io import inputs
from birdcore.io.audio import AudioError, decode_audio
from birdcore.io.inputs import is_uri, list_inputs, open_audio_source

pytest.importorskip("pyarrow.fs")


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


@pytest.fixture
def archive(tmp_path):
    """Two recorders (one nested by day), a folder with a space, and non-audio files to ignore."""
    root = tmp_path / "archive"
    touch(root, "r1/day2/b.wav", "r1/day1/a.WAV", "r1/day1/notes.txt", "r1/a.flac",
          "r1-b/c.ogg", "Site A/x 1%.mp3", "readme.md", "r2/data.csv")
    (root / "empty").mkdir()
    return root


def uri(path: Path) -> str:
    return path.as_uri()  # file:///... percent-encoded


def test_folder_recursive_audio_only_in_folder_order(archive):
    listing = list_inputs([str(archive)])
    rel = [os.path.relpath(f, archive) for f in listing.files]
    assert rel == ["Site A/x 1%.mp3", "r1/a.flac", "r1/day1/a.WAV", "r1/day2/b.wav", "r1-b/c.ogg"]
    assert listing.problems == []
    assert all(isinstance(f, str) for f in listing.files)


def test_list_file_relative_comments_missing_entry(archive, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    other = tmp_path / "elsewhere.wav"
    other.write_bytes(b"")
    (lists / "batch.txt").write_text(
        "\ufeff# recorders to score\n"
        "\n"
        "../archive/r1/day2/b.wav\n"
        "  ../archive/r1-b  \n"
        "../archive/r1/gone.wav\n"
        f"{other}\n"
        "# ../archive/Site A/x 1%.mp3\n", encoding="utf-8")
    listing = list_inputs([str(lists / "batch.txt")])
    assert listing.files == [str(archive / "r1/day2/b.wav"), str(archive / "r1-b/c.ogg"), str(other)]
    assert listing.problems == [f"{lists / 'batch.txt'}:5: ../archive/r1/gone.wav: no such file or folder"]


def test_list_file_names_relative_to_its_folder_not_cwd(archive, tmp_path, monkeypatch):
    (archive / "r1" / "one.list").write_text("a.flac\nday1\n")
    monkeypatch.chdir(tmp_path)
    listing = list_inputs(["archive/r1/one.list"])
    assert listing.files == ["archive/r1/a.flac", "archive/r1/day1/a.WAV"]
    assert listing.problems == []


def test_empty_and_unreadable_list_files(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    (tmp_path / "binary.list").write_bytes(b"\xff\xfe\x00bad")
    listing = list_inputs([str(tmp_path / "empty.txt"), str(tmp_path / "binary.list")])
    assert listing.files == []
    assert listing.problems == [f"{tmp_path / 'empty.txt'}: no entries in this list file",
                                f"{tmp_path / 'binary.list'}: cannot read this list file (not UTF-8 text)"]


def test_local_globs(archive):
    one_level = list_inputs([f"{archive}/*/a*"])
    assert [os.path.relpath(f, archive) for f in one_level.files] == ["r1/a.flac"]
    deep = list_inputs([f"{archive}/r1/*/[ab].*"])
    assert [os.path.relpath(f, archive) for f in deep.files] == ["r1/day1/a.WAV", "r1/day2/b.wav"]
    recursive = list_inputs([f"{archive}/**/*.wav"])
    assert [os.path.relpath(f, archive) for f in recursive.files] == ["r1/day2/b.wav"]
    folders = list_inputs([f"{archive}/r1*"])  # matching folders are searched
    assert [os.path.relpath(f, archive) for f in folders.files] == [
        "r1/a.flac", "r1/day1/a.WAV", "r1/day2/b.wav", "r1-b/c.ogg"]
    everything = list_inputs([f"{archive}/**"])
    assert everything.files == list_inputs([str(archive)]).files
    assert not (one_level.problems or deep.problems or recursive.problems or everything.problems)


def test_existing_path_with_wildcard_characters_is_taken_literally(tmp_path):
    touch(tmp_path, "take[1]/a.wav", "take1/b.wav")
    listing = list_inputs([str(tmp_path / "take[1]")])
    assert listing.files == [str(tmp_path / "take[1]/a.wav")]


def test_file_uri_folder_file_glob_and_list(archive, tmp_path):
    folder = list_inputs([uri(archive) + "/"])
    assert folder.problems == []
    assert folder.files == [uri(archive / name) for name in
                            ["Site A/x 1%.mp3", "r1/a.flac", "r1/day1/a.WAV", "r1/day2/b.wav", "r1-b/c.ogg"]]
    assert all(f.startswith("file:///") for f in folder.files)

    single = list_inputs([uri(archive / "r1" / "a.flac")])
    assert single.files == [uri(archive / "r1" / "a.flac")] and single.problems == []
    raw = list_inputs([f"file://{archive}/Site A/x 1%.mp3"])  # unencoded, as typed
    assert raw.files == [uri(archive / "Site A" / "x 1%.mp3")]

    pattern = list_inputs([uri(archive) + "/r1/*/*.wav"])
    assert pattern.files == [uri(archive / "r1/day2/b.wav")]
    deep = list_inputs([uri(archive) + "/**/a.*"])
    assert deep.files == [uri(archive / "r1/a.flac"), uri(archive / "r1/day1/a.WAV")]
    assert pattern.problems == deep.problems == []

    (archive / "todo.list").write_text("# one per line\nr1/day1/a.WAV\nSite A/\n")
    listed = list_inputs([uri(archive / "todo.list")])
    assert listed.files == [uri(archive / "Site A/x 1%.mp3"), uri(archive / "r1/day1/a.WAV")]
    assert listed.problems == []


def test_uri_problems(tmp_path):
    (tmp_path / "quiet").mkdir()
    listing = list_inputs([uri(tmp_path / "nothing"), uri(tmp_path / "quiet"), uri(tmp_path) + "/*.flac",
                           "nosuchscheme://bucket/x/"])
    assert listing.files == []
    assert [p.split(": ", 1)[0] for p in listing.problems] == [
        uri(tmp_path / "nothing"), uri(tmp_path / "quiet"), uri(tmp_path) + "/*.flac", "nosuchscheme://bucket/x/"]
    assert "no such file or folder" in listing.problems[0]
    assert "no audio files in this folder" in listing.problems[1]
    assert "no audio files match this pattern" in listing.problems[2]
    assert "cannot list" in listing.problems[3]


def test_problems_for_missing_path_empty_folder_and_unmatched_glob(archive, tmp_path):
    listing = list_inputs([str(tmp_path / "nope"), str(archive / "empty"), f"{archive}/*/*.opus",
                           str(archive / "r1")])
    assert len(listing.files) == 3
    assert listing.problems == [
        f"{tmp_path / 'nope'}: no such file or folder",
        f"{archive / 'empty'}: no audio files in this folder (looked for .flac, .mp3, .ogg, .wav)",
        f"{archive}/*/*.opus: no audio files match this pattern (looked for .flac, .mp3, .ogg, .wav)",
    ]


def test_order_of_specs_and_deduplication(archive, monkeypatch):
    monkeypatch.chdir(archive.parent)
    listing = list_inputs(["archive/r1-b", "archive/r1", "./archive/r1/a.flac", str(archive / "r1/a.flac"),
                           "archive/r1/day1/../a.flac", "archive/r1-b/c.ogg"])
    assert listing.files == ["archive/r1-b/c.ogg", "archive/r1/a.flac", "archive/r1/day1/a.WAV",
                             "archive/r1/day2/b.wav"]
    assert listing.problems == []
    twice = list_inputs([uri(archive / "r1"), uri(archive / "r1") + "/", uri(archive / "r1/a.flac")])
    assert twice.files == [uri(archive / "r1/a.flac"), uri(archive / "r1/day1/a.WAV"), uri(archive / "r1/day2/b.wav")]


def test_explicit_file_is_kept_whatever_its_extension(archive):
    assert list_inputs([str(archive / "readme.md")]).files == [str(archive / "readme.md")]


def test_is_uri():
    assert is_uri("s3://bucket/site/") and is_uri("gs://b/x.wav") and is_uri("file:///tmp/x.wav")
    assert not is_uri("/tmp/x.wav") and not is_uri("C:\\data\\x.wav")
    assert not is_uri("relative/s3:/x") and not is_uri(Path("a/b"))


def write_wav(path: Path, seconds: float = 0.5, rate: int = 16000) -> np.ndarray:
    wave = (0.3 * np.sin(np.linspace(0, 2 * np.pi * 440 * seconds, int(seconds * rate)))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate)
    return wave


def test_open_audio_source_copies_uri_and_removes_the_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "COPY_CHUNK_BYTES", 1000)  # many chunks
    source = tmp_path / "Site A" / "rec 1.wav"
    write_wav(source)
    [listed] = list_inputs([uri(tmp_path)]).files
    with open_audio_source(listed) as local:
        assert local != str(source) and os.path.isfile(local)
        assert Path(local).read_bytes() == source.read_bytes()
        assert local.endswith(".wav")
        decoded = decode_audio(local, sample_rate=16000)
    assert not os.path.exists(local) and not os.path.exists(os.path.dirname(local))
    assert decoded.shape == (8000,)


def test_open_audio_source_removes_the_copy_when_the_block_fails(tmp_path):
    write_wav(tmp_path / "a.wav")
    with pytest.raises(RuntimeError):
        with open_audio_source(uri(tmp_path / "a.wav")) as local:
            raise RuntimeError("scoring failed")
    assert not os.path.exists(local)


def test_open_audio_source_errors_name_the_uri(tmp_path):
    missing = uri(tmp_path / "gone.wav")
    with pytest.raises(AudioError) as err:
        with open_audio_source(missing):
            pytest.fail("the block must not run")
    assert err.value.path == missing and err.value.reason == "file not found"
    assert str(err.value) == f"{missing}: file not found"

    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(AudioError, match="is a directory"):
        with open_audio_source(uri(tmp_path / "folder.wav")):
            pass

    (tmp_path / "bad.wav").write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioError) as err:  # a decoder's error about the copy names the URI
        with open_audio_source(uri(tmp_path / "bad.wav")) as local:
            decode_audio(local, sample_rate=16000)
    assert err.value.path == uri(tmp_path / "bad.wav")


def test_open_audio_source_gives_local_paths_as_they_are(tmp_path):
    write_wav(tmp_path / "a.wav")
    with open_audio_source(tmp_path / "a.wav") as local:
        assert local == str(tmp_path / "a.wav")
    assert (tmp_path / "a.wav").exists()
