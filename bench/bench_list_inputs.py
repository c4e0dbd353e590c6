"""How long does listing a large archive take?  ``birdcore.io.inputs.list_inputs`` on 100,000 empty
``.wav`` files (50 recorders x 20 days x 100 files, plus one non-audio file per day folder),
given as a folder, as a ``file://`` URI of it, and as a list file naming every file (local path
and ``file://`` URI); the old ``Path.rglob`` listing of ``predict.expand_paths`` for comparison.

    python bench/bench_list_inputs.py [--recorders 50 --days 20 --per-day 100] [--repeats 3]

The target: less time than scoring one hour of audio (about 26 s on 2 cores at ~140x real time).
Prints the machine, then one line per case (best / median of the repeats, seconds) and the
Python heap peak of one folder listing.  The temporary tree is deleted afterwards.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from birdcore.io.audio import is_audio_path  # noqa: E402
from birdcore.io.inputs import list_inputs  # noqa: E402


def make_tree(root: Path, recorders: int, days: int, per_day: int) -> list[str]:
    names = []
    for r in range(recorders):
        for d in range(days):
            folder = root / f"REC{r:03d}" / f"2024-05-{d + 1:02d}"
            folder.mkdir(parents=True)
            (folder / "log.csv").write_bytes(b"")
            for i in range(per_day):
                path = folder / f"REC{r:03d}_202405{d + 1:02d}_{i:04d}00.wav"
                path.write_bytes(b"")
                names.append(str(path))
    return names


def rglob_listing(folder: str) -> list[Path]:
    """What ``predict.expand_paths`` did: a Path per file from ``rglob``, then ``is_file``."""
    return sorted(q for q in Path(folder).rglob("*") if q.is_file() and is_audio_path(q))


def timed(label: str, fn, expected: int, repeats: int) -> None:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = len(fn())
        times.append(time.perf_counter() - t0)
        assert n == expected, f"{label}: {n} files, expected {expected}"
    print(f"{label:<38} {n:>7} files   best {min(times):6.2f} s   median {statistics.median(times):6.2f} s"
          f"   ({', '.join(f'{t:.2f}' for t in times)})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recorders", type=int, default=50)
    p.add_argument("--days", type=int, default=20)
    p.add_argument("--per-day", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-list-inputs-"))
    try:
        t0 = time.perf_counter()
        names = make_tree(tmp / "archive", args.recorders, args.days, args.per_day)
        n = len(names)
        print(f"made {n} files in {time.perf_counter() - t0:.1f} s under {tmp}", flush=True)
        (tmp / "all.txt").write_text("\n".join(os.path.relpath(f, tmp) for f in names) + "\n")
        folder, folder_uri, list_uri = str(tmp / "archive"), (tmp / "archive").as_uri(), (tmp / "all.txt").as_uri()

        def check(listing):
            assert not listing.problems, listing.problems[:3]
            return listing.files

        timed("folder (list_inputs)", lambda: check(list_inputs([folder])), n, args.repeats)
        timed("file:// URI of the folder", lambda: check(list_inputs([folder_uri])), n, args.repeats)
        timed("list file, local (each file stat'ed)", lambda: check(list_inputs([str(tmp / "all.txt")])), n,
              args.repeats)
        timed("list file as file:// URI", lambda: check(list_inputs([list_uri])), n, args.repeats)
        timed("glob archive/*/*/*.wav", lambda: check(list_inputs([f"{folder}/*/*/*.wav"])), n, args.repeats)
        timed("old expand_paths (Path.rglob)", lambda: rglob_listing(folder), n, args.repeats)

        tracemalloc.start()
        files = list_inputs([folder]).files
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"Python heap peak while listing the folder: {peak / 2**20:.0f} MiB "
              f"(the result itself: {sum(sys.getsizeof(f) for f in files) / 2**20:.0f} MiB of strings)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
