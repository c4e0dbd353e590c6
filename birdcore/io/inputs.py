"""Which recordings a batch scores, and a local copy of each one that lives elsewhere.

:func:`list_inputs` turns what a user names (local folders, files, list files,
glob patterns and URIs such as ``s3://bucket/site/`` or ``file:///abs/path``)
into one de-duplicated list of files, plus one line per name that gave nothing.
:func:`open_audio_source` gives the decoders a local path for any of those
files: the path itself, or a temporary copy of a URI's object.
:func:`is_uri` tells the two apart.

Kinds of name, in the order they are tried:

- a URI (``scheme://...``, any filesystem ``pyarrow.fs.FileSystem.from_uri``
  knows: ``s3``, ``gs``, ``file``, ...): a folder is listed recursively for audio
  files, an object ending ``.txt``/``.list`` is a list file, any other object is
  taken as it is; ``*``, ``?`` or ``[`` in the path make it a pattern (below);
- a local folder: searched recursively for audio files
  (:data:`birdcore.io.audio.AUDIO_EXTENSIONS`; symlinked sub-folders are not followed);
- a local file: a list file when its name ends ``.txt``/``.list``, else taken as it is;
- a glob pattern (``*``, ``?``, ``[`` and no such path): ``**`` matches any number
  of folders, other wildcards stay within one folder name; matching audio files
  are kept, matching folders are searched recursively.  A URI pattern lists the
  folder before the first wildcard once, recursively, and matches the paths found.

A list file holds one path or URI per line; blank lines and lines starting with
``#`` are skipped.  Relative paths are relative to the list file's folder (a URI
folder for a list file given as a URI).  Entries are files or folders, never
patterns or further lists.  Local entries are checked (a missing one is a
problem naming the list file and the line); URI entries with an audio extension
are trusted without a request per entry, so one that is missing fails when it is
opened, as an :class:`~birdcore.io.audio.AudioError` naming it.

Files come out as strings: local paths as written (normalised), URIs percent-encoded
so that ``pyarrow`` parses them back (``file:///data/Site%20A/x.wav``).  Each name's
files are sorted (folder by folder), names keep the order given, and a file named
twice is kept the first time only.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import os
import posixpath
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from birdcore.io.audio import AUDIO_EXTENSIONS, AudioError

LIST_EXTENSIONS = (".txt", ".list")
COPY_CHUNK_BYTES = 1 << 20  # URI objects are copied to local disk this much at a time

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
# ``?key=value&...`` at the end of a URI is a query (``?region=...``); any other ``?`` is a wildcard.
_QUERY = re.compile(r"\?([A-Za-z_][\w.-]*=[^/?#]*(?:&[A-Za-z_][\w.-]*=[^/?#]*)*)$")
_GLOB_CHARS = re.compile(r"[*?\[]")
_SAFE_IN = "/%:@!$&'()*+,;=~"  # user URIs: encode what pyarrow rejects, keep existing %XX escapes
_SAFE_OUT = "/:@!$&'()+,;=~"  # listed URIs: a literal %, *, ? or [ is encoded
_AUDIO = frozenset(AUDIO_EXTENSIONS)


@dataclass
class InputListing:
    """Files to score (local paths or URIs), and one line per name that gave nothing."""

    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def is_uri(text: str | os.PathLike) -> bool:
    """True for ``scheme://...`` (at least two letters, so ``C:\\x`` is a path)."""
    return bool(_URI.match(os.fspath(text)))


def list_inputs(specs: Iterable[str | os.PathLike]) -> InputListing:
    """Every file the names in ``specs`` stand for, de-duplicated; see the module docstring."""
    listing = InputListing()
    seen: set[str] = set()
    for spec in specs:
        found, problems = _expand_spec(os.fspath(spec))
        listing.problems.extend(problems)
        for path in found:
            key = path if is_uri(path) else os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                listing.files.append(path)
    return listing


@contextlib.contextmanager
def open_audio_source(path_or_uri: str | os.PathLike) -> Iterator[str]:
    """A local path the decoders can read: a local path as it is, a URI's object copied to a
    temporary file (removed on exit).  A failed copy, and an ``AudioError`` about the copy raised
    inside the block, become ``AudioError`` naming the URI.  Consume streams inside the block."""
    source = os.fspath(path_or_uri)
    if not is_uri(source):
        yield source
        return
    folder = tempfile.mkdtemp(prefix="birdcore-")
    local = os.path.join(folder, _local_name(source))
    try:
        _copy_to_local(source, local)
        try:
            yield local
        except AudioError as err:
            if err.path != local:
                raise
            raise AudioError(source, err.reason) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- one name

def _expand_spec(spec: str) -> tuple[list[str], list[str]]:
    if is_uri(spec):
        return _expand_uri(spec)
    if os.path.isdir(spec):
        return _local_folder(spec)
    if os.path.isfile(spec):
        return _local_list(spec) if _is_list_name(spec) else ([os.path.normpath(spec)], [])
    if _GLOB_CHARS.search(spec) and not os.path.lexists(spec):
        return _local_glob(spec)
    return [], [f"{spec}: no such file or folder"]


def _is_list_name(path: str) -> bool:
    return path.lower().endswith(LIST_EXTENSIONS)


def _is_audio_name(name: str) -> bool:
    """Same rule as ``birdcore.io.audio.is_audio_path``, on a plain string."""
    return os.path.splitext(name)[1].lower() in _AUDIO


def _no_audio(spec: str, what: str) -> str:
    return f"{spec}: no audio files {what} (looked for {', '.join(sorted(AUDIO_EXTENSIONS))})"


def _order_key(path: str) -> list[str]:
    """Folder-by-folder order (``a/x`` before ``a-b/x``), as ``sorted(Path...)`` gives."""
    return path.replace(os.sep, "/").split("/") if os.sep != "/" else path.split("/")


# ---------------------------------------------------------------- local

def _local_folder(spec: str) -> tuple[list[str], list[str]]:
    files: list[str] = []
    problems: list[str] = []
    _walk(os.path.normpath(spec), files, problems)
    if not files and not problems:
        problems.append(_no_audio(spec, "in this folder"))
    return files, problems


def _walk(folder: str, files: list[str], problems: list[str]) -> None:
    """Audio files under ``folder``, appended in sorted order (one ``scandir`` per folder)."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        problems.append(f"{folder}: cannot read this folder ({_os_reason(exc)})")
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                _walk(entry.path, files, problems)
            elif _is_audio_name(entry.name) and entry.is_file():
                files.append(entry.path)
        except OSError as exc:
            problems.append(f"{entry.path}: {_os_reason(exc)}")


def _local_glob(spec: str) -> tuple[list[str], list[str]]:
    files: list[str] = []
    problems: list[str] = []
    under = None  # the last folder searched: its matching sub-folders and files are in already
    for match in sorted({os.path.normpath(m) for m in glob.iglob(spec, recursive=True)}, key=_order_key):
        if under is not None and match.startswith(under):
            continue
        if os.path.isdir(match):
            _walk(match, files, problems)
            under = os.path.join(match, "")
        elif _is_audio_name(match) and os.path.isfile(match):
            files.append(match)
    if not files and not problems:
        problems.append(_no_audio(spec, "match this pattern"))
    return files, problems


def _local_list(spec: str) -> tuple[list[str], list[str]]:
    try:
        with open(spec, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{spec}: cannot read this list file ({_os_reason(exc)})"]
    base = os.path.dirname(spec)
    return _read_list(spec, text, lambda entry: os.path.normpath(os.path.join(base, entry)))


def _local_entry(path: str) -> tuple[list[str], str | None]:
    """A list file's local entry: ``(files, None)``, or ``(files, reason)`` when something is wrong."""
    if os.path.isfile(path):
        return [path], None
    if not os.path.isdir(path):
        return [], "no such file or folder"
    files: list[str] = []
    problems: list[str] = []
    _walk(path, files, problems)
    if problems:
        return files, problems[0]
    return files, (None if files else "no audio files in this folder")


# ---------------------------------------------------------------- list files

def _read_list(spec: str, text: str, relative) -> tuple[list[str], list[str]]:
    """Entries of a list file; ``relative(entry)`` places a relative entry beside the list."""
    files: list[str] = []
    problems: list[str] = []
    entries = 0
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        entries += 1
        if is_uri(entry):
            found, reason = _uri_entry(entry)
        else:
            path = entry if os.path.isabs(entry) else relative(entry)
            found, reason = _local_entry(path) if not is_uri(path) else _uri_entry(path)
        files.extend(found)
        if reason:
            problems.append(f"{spec}:{number}: {entry}: {reason}")
    if not entries:
        problems.append(f"{spec}: no entries in this list file")
    return sorted(set(files), key=_order_key), problems


# ---------------------------------------------------------------- URIs

class _Location:
    """A URI split for pyarrow: its filesystem, the path on it, and how to turn paths back into URIs."""

    def __init__(self, uri: str):
        base, self.query = _split_query(uri)
        self.fs, self.prefix = _filesystem(base, self.query)
        self.path = _strip_slash(unquote(_encode(base)[len(self.prefix):]))

    def uri(self, path: str) -> str:
        return self.prefix + quote(path, safe=_SAFE_OUT) + (f"?{self.query}" if self.query else "")


def _split_query(uri: str) -> tuple[str, str]:
    m = _QUERY.search(uri)
    return (uri[:m.start()], m.group(1)) if m else (uri, "")


def _encode(uri: str) -> str:
    """``uri`` with what pyarrow's parser rejects (spaces, non-ASCII, brackets) percent-encoded."""
    scheme = _URI.match(uri).group(0)
    return scheme + quote(uri[len(scheme):], safe=_SAFE_IN)


def _strip_slash(path: str) -> str:
    return path.rstrip("/") or path[:1]


_FILESYSTEMS: dict[tuple[str, str, str], tuple[object, str]] = {}
_FILESYSTEMS_LOCK = threading.Lock()


def _filesystem(base: str, query: str):
    """``(pyarrow filesystem, URI prefix of its paths)`` for a URI, made once per scheme, bucket and query."""
    scheme, rest = base.split("://", 1)
    authority = rest.split("/", 1)[0]
    key = (scheme.lower(), authority, query)
    with _FILESYSTEMS_LOCK:
        if key in _FILESYSTEMS:
            return _FILESYSTEMS[key]
    from pyarrow.fs import FileSystem

    encoded = _encode(base) + (f"?{query}" if query else "")
    fs, path = FileSystem.from_uri(encoded)
    # s3://bucket/key -> path "bucket/key"; file:///abs and hdfs://host/abs -> path "/abs"
    prefix = f"{scheme}://" if authority and path.startswith(authority) else f"{scheme}://{authority}"
    with _FILESYSTEMS_LOCK:
        _FILESYSTEMS[key] = (fs, prefix)
    return fs, prefix


def _expand_uri(spec: str) -> tuple[list[str], list[str]]:
    base, _ = _split_query(spec)
    if _GLOB_CHARS.search(base[len(_URI.match(base).group(0)):]):
        return _uri_glob(spec)
    from pyarrow.fs import FileType

    try:
        loc = _Location(spec)
        info = loc.fs.get_file_info(loc.path)
        if info.type == FileType.Directory:
            files = _uri_audio_under(loc, loc.path)
            return files, ([] if files else [_no_audio(spec, "in this folder")])
        if info.type == FileType.NotFound:
            return [], [f"{spec}: no such file or folder"]
        if _is_list_name(loc.path):
            return _uri_list(spec, loc)
        return [loc.uri(loc.path)], []
    except Exception as exc:  # pyarrow: ArrowInvalid (bad URI), OSError (network, credentials, ...)
        return [], [f"{spec}: cannot list ({_arrow_reason(exc)})"]


def _uri_audio_under(loc: _Location, folder: str) -> list[str]:
    from pyarrow.fs import FileSelector, FileType

    infos = loc.fs.get_file_info(FileSelector(folder, recursive=True))
    paths = [i.path for i in infos if i.type == FileType.File and _is_audio_name(i.base_name)]
    return [loc.uri(p) for p in sorted(paths, key=_order_key)]


def _uri_glob(spec: str) -> tuple[list[str], list[str]]:
    from pyarrow.fs import FileSelector, FileType

    base, query = _split_query(spec)
    scheme = _URI.match(base).group(0)
    wildcard = _GLOB_CHARS.search(base, len(scheme)).start()
    first_slash = base.find("/", len(scheme))
    if first_slash == -1 or wildcard < first_slash:
        return [], [f"{spec}: wildcards are only supported after the bucket or host"]
    fixed = base[:base.rfind("/", 0, wildcard) + 1]
    try:
        loc = _Location(fixed + (f"?{query}" if query else ""))
        pattern = _glob_regex(unquote(base[len(fixed):]))
        root = loc.path.rstrip("/") + "/"
        infos = loc.fs.get_file_info(FileSelector(loc.path, recursive=True, allow_not_found=True))
    except Exception as exc:
        return [], [f"{spec}: cannot list ({_arrow_reason(exc)})"]
    paths = [i.path for i in infos if i.type == FileType.File and _is_audio_name(i.base_name)
             and i.path.startswith(root) and pattern.fullmatch(i.path[len(root):])]
    if not paths:
        return [], [_no_audio(spec, "match this pattern")]
    return [loc.uri(p) for p in sorted(paths, key=_order_key)], []


@functools.lru_cache(maxsize=64)
def _glob_regex(pattern: str) -> re.Pattern:
    """A relative glob as a regex matching a path, or any path under a matching folder."""
    parts = pattern.split("/")
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_segment_regex(part) + ("" if last else "/"))
    return re.compile("".join(out) + "(?:/.*)?", re.DOTALL)


def _segment_regex(part: str) -> str:
    """One folder or file name of a glob: ``*``, ``?`` and ``[...]`` never match ``/``."""
    out, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := part.find("]", i + 2)) != -1:
            body = part[i + 1:end].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _uri_list(spec: str, loc: _Location) -> tuple[list[str], list[str]]:
    try:
        with loc.fs.open_input_stream(loc.path) as f:
            text = f.read().decode("utf-8-sig")
    except Exception as exc:
        return [], [f"{spec}: cannot read this list file ({_arrow_reason(exc)})"]
    folder = posixpath.dirname(loc.path)
    return _read_list(spec, text, lambda entry: loc.uri(posixpath.normpath(posixpath.join(folder, entry))))


def _uri_entry(uri: str) -> tuple[list[str], str | None]:
    """A list file's URI entry: an audio file is trusted (no request); anything else is looked up."""
    from pyarrow.fs import FileType

    try:
        loc = _Location(uri)
        if _is_audio_name(loc.path) and not uri.endswith("/"):
            return [loc.uri(loc.path)], None
        info = loc.fs.get_file_info(loc.path)
        if info.type == FileType.Directory:
            files = _uri_audio_under(loc, loc.path)
            return files, (None if files else "no audio files in this folder")
        if info.type == FileType.File:
            return [loc.uri(loc.path)], None
        return [], "no such file or folder"
    except Exception as exc:
        return [], f"cannot list ({_arrow_reason(exc)})"


# ---------------------------------------------------------------- local copies

def _local_name(uri: str) -> str:
    """The object's own name for its temporary copy (log lines then show a recognisable name)."""
    name = unquote(posixpath.basename(_split_query(uri)[0].rstrip("/")))
    return re.sub(r"[^\w.+-]", "_", name)[-120:] or "audio"


def _copy_to_local(uri: str, local: str) -> None:
    """Stream ``uri``'s object to ``local`` in :data:`COPY_CHUNK_BYTES` pieces; errors as ``AudioError``."""
    try:
        loc = _Location(uri)
        with loc.fs.open_input_stream(loc.path) as src, open(local, "wb") as dst:
            while chunk := src.read(COPY_CHUNK_BYTES):
                dst.write(chunk)
    except Exception as exc:
        raise AudioError(uri, _arrow_reason(exc)) from None


def _os_reason(exc: Exception) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _arrow_reason(exc: Exception) -> str:
    """pyarrow's error, short: ``file not found``, ``is a directory``, else its message."""
    text = str(exc)
    if isinstance(exc, FileNotFoundError) or "No such file" in text or "NoSuchKey" in text:
        return "file not found"
    if isinstance(exc, PermissionError) or "AccessDenied" in text:
        return "permission denied"
    if "is a directory" in text:
        return "is a directory, not a file"
    return text or type(exc).__name__
