"""Audio decoding: the one path used by training, evaluation, the CLI and the web app.

Every recording becomes a float32 mono array of shape ``(n_samples,)`` at the
requested sample rate (Hz), values roughly in [-1, 1].  Files are read with
``soundfile`` (libsndfile: WAV, FLAC, OGG, MP3, ...); formats it does not
recognise (m4a, webm, ...) fall back to ``audioread``, which only works where a
backend such as ffmpeg is installed.  Channels are averaged, and the signal is
resampled with ``soxr`` at high quality.

Every failure is raised as :class:`AudioError`, whose message is one line
naming the file and the reason.  What libsndfile's mp3 decoder (libmpg123)
prints about damaged frames of a file that still decodes becomes one warning on
the ``birdcore`` logger naming the file (:class:`DecoderMessages`), instead of
raw lines on the terminal.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from birdcore.io.native_stderr import NativeStderr

log = logging.getLogger("birdcore")

AUDIO_EXTENSIONS = (".mp3", ".ogg", ".flac", ".wav")

_NOT_AUDIO = "not a readable audio file (format not recognised)"


class AudioError(Exception):
    """A recording that cannot be decoded; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # keep picklable across process pools
        return (type(self), (self.path, self.reason))


class DecoderMessages:
    """What libmpg123 prints to stderr while one file is read, logged once instead.

    libmpg123 skips a damaged mp3 frame and says so on fd 2 (``[src/libmpg123/layer3.c:...]
    error: part2_3_length (1248) too large ...``) while the rest of the file decodes.  Wrap each
    libsndfile call in ``capture()``; ``report()`` then logs the lines at DEBUG and one WARNING
    counting the damaged frames, unless the read failed (its ``AudioError`` says so already).
    Other text that reached fd 2 meanwhile is passed on to stderr.
    """

    def __init__(self, label: str):
        self.label = label
        self.lines: list[str] = []

    @contextlib.contextmanager
    def capture(self):
        native = NativeStderr()
        try:
            with native:
                yield
        finally:
            other = []
            for line in native.text.splitlines():
                if "libmpg123" in line or line.startswith(("Note: ", "Warning: ")):
                    self.lines.append(line)
                elif line.strip():
                    other.append(line)
            if other and sys.stderr is not None:
                sys.stderr.write("\n".join(other) + "\n")

    def report(self, *, failed: bool = False) -> None:
        """Log the lines captured so far (then forgets them)."""
        lines, self.lines = self.lines, []
        for line in lines:
            log.debug("%s: %s", self.label, line)
        damaged = sum(("libmpg123" in line and "error:" in line) or "Illegal Audio-MPEG-Header" in line
                      for line in lines)
        if damaged and not failed:
            log.warning("%s: the mp3 decoder reported %d damaged frame%s (decoded anyway)",
                        self.label, damaged, "" if damaged == 1 else "s")


class _FormatNotRecognised(Exception):
    """soundfile could not identify the format: try the fallback decoder."""


def is_audio_path(path: str | os.PathLike) -> bool:
    """True when ``path`` has one of :data:`AUDIO_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def check_file(path, label: str) -> None:
    """Up-front checks shared by every reader: the path exists, is a file, and is not empty."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise AudioError(label, "file not found") from None
    except OSError as exc:
        raise AudioError(label, _os_reason(exc)) from None
    if os.path.isdir(path):
        raise AudioError(label, "is a directory, not a file")
    if size == 0:
        raise AudioError(label, "empty file")


def decode_audio(
    path: str | os.PathLike, *, sample_rate: int, max_seconds: float | None = None
) -> np.ndarray:
    """Decode a file to float32 mono of shape ``(n_samples,)`` at ``sample_rate`` Hz.

    ``max_seconds`` (seconds, optional) keeps only the start of the recording;
    only about that many frames are read from the file.
    """
    _check_options(sample_rate, max_seconds)
    label = str(path)
    check_file(path, label)
    try:
        data, rate = _read_soundfile(path, max_seconds, label)
    except _FormatNotRecognised:
        data, rate = _read_fallback(os.fspath(path), label, max_seconds)
    except OSError as exc:
        raise AudioError(label, _os_reason(exc)) from None
    except AudioError:
        raise
    except Exception as exc:  # libsndfile errors on open or mid-stream
        raise AudioError(label, _soundfile_reason(exc)) from None
    return _finish(data, rate, label, sample_rate=sample_rate, max_seconds=max_seconds)


def decode_bytes(
    data: bytes,
    *,
    sample_rate: int,
    name: str = "upload",
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode in-memory file bytes (an upload) like :func:`decode_audio`.

    Returns float32 mono of shape ``(n_samples,)`` at ``sample_rate`` Hz.
    Errors name ``name``; the name is never used to touch the filesystem.
    """
    _check_options(sample_rate, max_seconds)
    label = str(name)
    if not data:
        raise AudioError(label, "empty file")
    try:
        audio, rate = _read_soundfile(io.BytesIO(data), max_seconds, label)
    except _FormatNotRecognised:
        audio, rate = _read_bytes_fallback(data, label, max_seconds)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(label, _soundfile_reason(exc)) from None
    return _finish(audio, rate, label, sample_rate=sample_rate, max_seconds=max_seconds)


def _check_options(sample_rate: int, max_seconds: float | None) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if max_seconds is not None and not (max_seconds > 0 and math.isfinite(max_seconds)):
        raise ValueError(f"max_seconds must be positive or None, got {max_seconds!r}")


def _read_soundfile(source, max_seconds: float | None, label: str) -> tuple[np.ndarray, int]:
    """Read with libsndfile: float32 of shape (frames, channels) and its rate in Hz."""
    decoder = DecoderMessages(label)
    try:
        with decoder.capture():
            try:
                handle = sf.SoundFile(source)
            except sf.LibsndfileError as exc:
                if "not recognised" in (exc.error_string or "").lower():
                    raise _FormatNotRecognised() from None
                raise
            with handle:
                rate = int(handle.samplerate)
                frames = -1 if max_seconds is None else int(math.ceil(max_seconds * rate))
                data = handle.read(frames=frames, dtype="float32", always_2d=True)
                wanted = handle.frames if frames < 0 else min(frames, handle.frames)
                if not states_frame_count(source, handle.format):
                    wanted = 0  # a length libsndfile only estimated: nothing to compare with
    except BaseException:
        decoder.report(failed=True)
        raise
    decoder.report()
    warn_if_truncated(label, header_frames=wanted, decoded_frames=data.shape[0], rate=rate)
    return data, rate


def truncation(*, header_frames: int, decoded_frames: int, rate: int) -> str | None:
    """What to tell the user when a file decodes to less audio than its header gives (an mp3 cut
    short in a download or a copy: libsndfile decodes what is there and says nothing), else None.
    A shortfall counts from 1 s and 1 % of the header's length, so encoders' rounding of the frame
    count in the header never counts (all 306 recordings in ../shared decode to exactly their header's
    length)."""
    missing = int(header_frames) - int(decoded_frames)
    if rate <= 0 or not 0 < header_frames < 2 ** 62 or missing < rate or missing < 0.01 * header_frames:
        return None
    return (f"decoded {decoded_frames / rate:.1f} s of the {header_frames / rate:.1f} s its header gives "
            f"(truncated or damaged?); only that much is used")


def states_frame_count(source, fmt: str) -> bool:
    """Whether the frame count libsndfile gives for ``source`` (a path or a seekable file object;
    ``fmt``: ``SoundFile.format``) is stated by the file, so that decoding less means the file is
    cut short.  WAV, FLAC and OGG state it (a cut WAV or OGG file is read to its real end), and so
    does an mp3 with a Xing/Info (LAME) or VBRI tag in its first frame; an mp3 without one gets a
    length estimated from its first frame's bitrate, which a variable-bitrate file does not keep."""
    if fmt != "MP3":
        return True
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as fh:
                return _mp3_states_frame_count(fh)
        position = source.tell()
        try:
            source.seek(0)
            return _mp3_states_frame_count(source)
        finally:
            source.seek(position)
    except (OSError, ValueError, AttributeError):
        return False


def _mp3_states_frame_count(fh) -> bool:
    head = fh.read(10)
    start = 0
    if head[:3] == b"ID3" and len(head) == 10:  # skip an ID3v2 tag (syncsafe size; a footer adds 10 bytes)
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
        start = 10 + size + (10 if head[5] & 0x10 else 0)
    fh.seek(start)
    data = fh.read(4096)
    sync = next((i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0), None)
    if sync is None:
        return False
    frame = data[sync: sync + 200]  # the tags sit 13-40 bytes into the first frame
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


def warn_if_truncated(label: str, *, header_frames: int, decoded_frames: int, rate: int) -> str | None:
    """Log ``truncation``'s message as a warning naming ``label``; returns it (None when whole)."""
    note = truncation(header_frames=header_frames, decoded_frames=decoded_frames, rate=rate)
    if note:
        log.warning("%s: %s", label, note)
    return note


def _read_fallback(path: str, label: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Decode with audioread (ffmpeg etc. when installed): (frames, channels), rate."""
    try:
        with warnings.catch_warnings():  # audioread's raw backend imports aifc/audioop
            warnings.simplefilter("ignore", DeprecationWarning)
            import audioread

            with audioread.audio_open(path) as reader:
                rate, channels = int(reader.samplerate), int(reader.channels)
                limit = None if max_seconds is None else int(math.ceil(max_seconds * rate))
                chunks, n_frames = [], 0
                for buf in reader:
                    chunk = np.frombuffer(buf, dtype="<i2")
                    chunks.append(chunk)
                    n_frames += chunk.size // max(channels, 1)
                    if limit is not None and n_frames >= limit:
                        break
    except Exception:
        raise AudioError(label, _NOT_AUDIO) from None
    if channels < 1 or rate <= 0:
        raise AudioError(label, _NOT_AUDIO)
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype="<i2")
    pcm = pcm[: pcm.size - pcm.size % channels]
    data = (pcm.astype(np.float32) / 32768.0).reshape(-1, channels)
    return data, rate


def _read_bytes_fallback(data: bytes, label: str, max_seconds: float | None):
    """Fallback for bytes: a generated temp file (never the user's name), then deleted."""
    suffix = Path(label).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,5}", suffix):
        suffix = ""
    fd, tmp = tempfile.mkstemp(prefix="birdcore-upload-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return _read_fallback(tmp, label, max_seconds)
    finally:
        try:
            os.remove(tmp)
        except OSError:
            pass


def _finish(
    data: np.ndarray, rate: int, label: str, *, sample_rate: int, max_seconds: float | None
) -> np.ndarray:
    """(frames, channels) at ``rate`` -> checked float32 mono (n,) at ``sample_rate``."""
    if data.shape[0] == 0:
        raise AudioError(label, "no audio samples")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(label, "contains NaN or infinite samples")
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate != sample_rate:
        try:
            mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
        except Exception as exc:
            raise AudioError(label, f"cannot resample from {rate} Hz ({exc})") from None
    if max_seconds is not None:
        mono = mono[: int(round(max_seconds * sample_rate))]
    if mono.size == 0:
        raise AudioError(label, "no audio samples")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _soundfile_reason(exc: Exception) -> str:
    """A short reason from a libsndfile error (its message minus the file object)."""
    text = getattr(exc, "error_string", None) or str(exc)
    text = " ".join(str(text).split()).rstrip(".")
    text = re.sub(r"^error\s*:\s*", "", text, flags=re.IGNORECASE)
    lowered = text.lower()
    if "not recognised" in lowered:
        return _NOT_AUDIO
    if "malformed" in lowered:
        return "not a readable audio file (malformed or truncated)"
    if "does not exist" in lowered:  # libsndfile's message for short/garbage mp3 data
        return "not a readable audio file (corrupt or truncated data)"
    return f"not a readable audio file ({text[:200]})"


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    return exc.strerror or type(exc).__name__
