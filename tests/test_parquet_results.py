"""Batch detections as a Parquet dataset (``serving.parquet_results``), the species × site × day summary
(``serving.site_day_summary``) and review's reading of Parquet detections."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.dataset as ds  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from birdcore.review.exchange import read_detections  # noqa: E402
from birdcore.serving.detections import CSV_HEADER, Detection, ResultsCsv, read_journal  # noqa: E402
from birdcore.serving.parquet_results import (ResultsParquet, journal_of_output, open_results,  # noqa: E402
                                              producer_of_output, read_detections_table)
from birdcore.serving.site_day_summary import (SITE_DAY_HEADER, day_of_file, site_day_summary,  # noqa: E402
                                               site_of_file, write_site_day_summary)

PRODUCER = {"run": "/runs/a", "min_score": 0.1, "overlap": 0.0}
REPO = Path(__file__).resolve().parents[1]


def _dets(i: int) -> list[Detection]:
    """File i's detections: none for every third file, else i % 4 + 1 rows."""
    if i % 3 == 2:
        return []
    return [Detection(round(3.0 * k, 3), round(3.0 * k + 3.0, 3), f"sp{(i + k) % 3}", f"Species {(i + k) % 3}",
                      0.1 + 0.8 * ((i * 7 + k * 3) % 10) / 10 + 1e-5) for k in range(i % 4 + 1)]


FILES = [f"/rec/S{i % 2}/S{i % 2}_201906{11 + i % 3:02d}_0930{i:02d}.wav" for i in range(10)]


def _expected(files=FILES) -> pd.DataFrame:
    """The rows a complete run writes, as the CSV output reads back."""
    rows = [[f, f"{d.start_s:.3f}", f"{d.end_s:.3f}", d.ebird_code, d.common_name, f"{d.score:.4f}"]
            for f in files for d in _dets(FILES.index(f))]
    table = pd.DataFrame(rows, columns=list(CSV_HEADER))
    for c in ("start_s", "end_s", "score"):
        table[c] = table[c].astype(float)
    return table


def _canon(table: pd.DataFrame) -> pd.DataFrame:
    out = table[list(CSV_HEADER)].copy()
    for c in ("file", "species", "common_name"):
        out[c] = out[c].astype(object).astype(str)
    for c in ("start_s", "end_s", "score"):
        out[c] = out[c].astype(float)
    return out.sort_values(["file", "start_s", "species"]).reset_index(drop=True)


def _write_all(results, files=FILES) -> None:
    done = results.open()
    for f in files:
        if f not in done:
            results.add(f, _dets(FILES.index(f)))
    results.close()


def test_round_trip_equals_the_csv(tmp_path):
    csv_path, pq_path = tmp_path / "d.csv", tmp_path / "d.parquet"
    _write_all(ResultsCsv(csv_path, producer=PRODUCER))
    _write_all(ResultsParquet(pq_path, producer=PRODUCER, max_files=3))
    parts = sorted(p.name for p in pq_path.iterdir())
    assert parts == ["_journal", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet",
                     "part-00003.parquet"]
    from_csv = read_detections_table(csv_path)
    from_pq = read_detections_table(pq_path)
    assert len(from_pq) == len(_expected()) > 0
    pd.testing.assert_frame_equal(_canon(from_pq), _canon(from_csv))
    pd.testing.assert_frame_equal(_canon(from_pq), _canon(_expected()))
    assert list(from_pq["file"].drop_duplicates()) == [f for f in FILES if _dets(FILES.index(f))]  # file order kept
    # readers of the folder skip the journal
    assert len(pd.read_parquet(pq_path)) == len(from_csv)
    assert ds.dataset(pq_path, format="parquet").to_table().num_rows == len(from_csv)
    assert ds.dataset(pq_path, format="parquet").schema.names == list(CSV_HEADER)
    assert pq.read_schema(pq_path / "part-00000.parquet").field("score").type == pa.float64()
    producer, done = read_journal(journal_of_output(pq_path))
    assert producer == PRODUCER and done == FILES  # zero-row files are done too
    assert producer_of_output(pq_path) == PRODUCER == producer_of_output(csv_path)
    again = ResultsParquet(pq_path, producer=PRODUCER)
    assert again.open() == set(FILES)
    again.close()
    assert len(read_detections_table(pq_path)) == len(from_csv)


def test_files_are_done_only_when_their_part_is_written(tmp_path):
    out = tmp_path / "d.parquet"
    results = ResultsParquet(out, producer=PRODUCER, max_files=4, max_rows=10**6)
    assert results.open() == set()
    for i in range(3):
        results.add(FILES[i], _dets(i))
    assert read_journal(out / "_journal")[1] == []  # buffered: not durable yet
    assert not list(out.glob("part-*"))
    results.add(FILES[3], _dets(3))  # the 4th file fills a part
    assert read_journal(out / "_journal")[1] == FILES[:4]
    results.add(FILES[4], _dets(4))
    # killed here (never closed): a rerun sees the first part only, and redoes file 4
    rerun = ResultsParquet(out, producer=PRODUCER)
    assert rerun.open() == set(FILES[:4])
    rerun.close()
    results._done_handle.close()


def test_row_limit_flushes(tmp_path):
    out = tmp_path / "d.parquet"
    results = ResultsParquet(out, producer=PRODUCER, max_files=100, max_rows=3)
    results.open()
    results.add(FILES[0], _dets(0))  # 1 row
    results.add(FILES[1], _dets(1))  # 2 rows: 3 in all, a part
    assert read_journal(out / "_journal")[1] == FILES[:2]
    assert results._columns["file"] == []
    results.close()


def _fake_part(path: Path, file: str) -> None:
    rows = _expected([file])
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path)


def test_resume_after_a_kill_left_parts_temp_files_and_a_half_line(tmp_path):
    out = tmp_path / "d.parquet"
    results = ResultsParquet(out, producer=PRODUCER, max_files=2)
    results.open()
    for i in range(4):
        results.add(FILES[i], _dets(i))
    results._done_handle.close()  # killed: files 0-3 are in parts 0 and 1 and journaled
    # what a kill at other moments leaves behind:
    _fake_part(out / "part-00002.parquet", FILES[4])  # a part renamed but not journaled
    _fake_part(out / ".part-00003.parquet.ready", FILES[7])  # a written part not journaled
    _fake_part(out / ".part-00004.parquet.ready", FILES[6])  # journaled, not yet made visible
    (out / ".part-00005.parquet.k2j3.tmp").write_bytes(b"PAR1 half a part")  # cut off mid-write
    with open(out / "_journal", "a", encoding="utf-8") as fh:
        fh.write(f"{FILES[6]}\n{FILES[8][:12]}")  # ... and a half-written line
    assert len(pd.read_parquet(out)) > len(_expected(FILES[:4]))  # before repair, readers see the orphan

    rerun = ResultsParquet(out, producer=PRODUCER, max_files=2)
    done = rerun.open()
    assert done == set(FILES[:4]) | {FILES[6]}
    names = sorted(p.name for p in out.iterdir())
    assert names == ["_journal", "part-00000.parquet", "part-00001.parquet", "part-00004.parquet"]
    assert read_journal(out / "_journal")[1] == FILES[:4] + [FILES[6]]
    for f in FILES:
        if f not in done:
            rerun.add(f, _dets(FILES.index(f)))
    rerun.close()
    pd.testing.assert_frame_equal(_canon(read_detections_table(out)), _canon(_expected()))
    assert sorted(read_journal(out / "_journal")[1]) == sorted(FILES)


def test_a_part_whose_files_are_partly_journaled_is_redone(tmp_path):
    out = tmp_path / "d.parquet"
    results = ResultsParquet(out, producer=PRODUCER, max_files=3)
    results.open()
    for i in range(3):
        results.add(FILES[i], _dets(i))
    results.close()
    journal = (out / "_journal").read_text()
    (out / "_journal").write_text(journal.replace(f"{FILES[1]}\n", ""))  # as if the append was cut short
    rerun = ResultsParquet(out, producer=PRODUCER)
    done = rerun.open()
    assert done == {FILES[2]}  # file 2 has no rows: done is true; 0 and 1 go with their part
    assert not list(out.glob("part-*"))
    for f in FILES[:3]:
        if f not in done:
            rerun.add(f, _dets(FILES.index(f)))
    rerun.close()
    pd.testing.assert_frame_equal(_canon(read_detections_table(out)), _canon(_expected(FILES[:3])))


CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import pyarrow.parquet as pq
    import birdcore.serving.parquet_results as pr
    sys.path.insert(0, sys.argv[3])
    from test_parquet_results import FILES, PRODUCER, _dets

    out, point = Path(sys.argv[1]), sys.argv[2]
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    state = {"flushes": 0}
    real_write, real_replace = pq.write_table, os.replace

    def write_table(table, where, **kw):
        state["flushes"] += 1
        real_write(table, where, **kw)
        if point == "write" and state["flushes"] == 2:
            with open(where, "r+b") as fh:
                fh.truncate(os.path.getsize(where) // 2)
            die()

    def replace(src, dst):
        name_src, name_dst = Path(src).name, Path(dst).name
        if point == "visible" and state["flushes"] == 2 and name_src.endswith(".ready"):
            die()
        real_replace(src, dst)
        if point == "ready" and state["flushes"] == 2 and name_dst.endswith(".ready"):
            die()

    class Journal:
        def __init__(self, fh):
            self.fh, self.writes = fh, 0
        def write(self, text):
            self.writes += 1
            if point == "journal" and self.writes == 2:
                self.fh.write(text[: len(text) // 2 + 3]); self.fh.flush(); die()
            return self.fh.write(text)
        def __getattr__(self, name):
            return getattr(self.fh, name)

    pq.write_table, os.replace = write_table, replace
    results = pr.ResultsParquet(out, producer=PRODUCER, max_files=3)
    results.open()
    results._done_handle = Journal(results._done_handle)
    for i, f in enumerate(FILES):
        results.add(f, _dets(i))
    results.close()
    print("not killed")
""")


@pytest.mark.parametrize("point", ["write", "ready", "journal", "visible"])
def test_kill_9_at_any_step_then_rerun_gives_each_file_once(tmp_path, point):
    out = tmp_path / "d.parquet"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out), point, str(Path(__file__).parent)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    rerun = ResultsParquet(out, producer=PRODUCER, max_files=3)
    done = rerun.open()
    assert set(FILES[:3]) <= done < set(FILES)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp or ready part left
    for f in FILES:
        if f not in done:
            rerun.add(f, _dets(FILES.index(f)))
    rerun.close()
    pd.testing.assert_frame_equal(_canon(read_detections_table(out)), _canon(_expected()))
    assert sorted(read_journal(out / "_journal")[1]) == sorted(FILES)


def test_another_producer_is_refused_and_overwrite_replaces(tmp_path):
    out = tmp_path / "d.parquet"
    _write_all(ResultsParquet(out, producer=PRODUCER), FILES[:4])
    other = {**PRODUCER, "min_score": 0.2}
    with pytest.raises(ValueError, match=r"d\.parquet: holds detections made with other settings "
                                         r"\(min_score: 0\.1 → 0\.2\)"):
        ResultsParquet(out, producer=other).open()
    assert len(read_detections_table(out)) == len(_expected(FILES[:4]))  # untouched
    results = ResultsParquet(out, producer=other, overwrite=True)
    assert results.open() == set()
    results.add(FILES[5], _dets(5))
    results.close()
    pd.testing.assert_frame_equal(_canon(read_detections_table(out)), _canon(_expected([FILES[5]])))
    assert producer_of_output(out) == other


def test_unrecorded_producer_and_foreign_folders_are_refused(tmp_path):
    out = tmp_path / "d.parquet"
    _write_all(ResultsParquet(out), FILES[:2])
    with pytest.raises(ValueError, match="settings were not recorded"):
        ResultsParquet(out, producer=PRODUCER).open()
    foreign = tmp_path / "x.parquet"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"x\.parquet: exists and is not a detections Parquet folder .*notes\.txt"):
        ResultsParquet(foreign, producer=PRODUCER, overwrite=True).open()
    assert (foreign / "notes.txt").exists()
    single = tmp_path / "one.parquet"
    single.write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="is not a detections Parquet folder"):
        ResultsParquet(single, producer=PRODUCER).open()


def test_open_results_picks_by_suffix(tmp_path):
    assert isinstance(open_results(tmp_path / "a.parquet", producer=PRODUCER), ResultsParquet)
    assert isinstance(open_results(tmp_path / "a.PARQUET"), ResultsParquet)
    assert isinstance(open_results(tmp_path / "a.csv", producer=PRODUCER), ResultsCsv)
    csv_results = open_results(tmp_path / "a.csv", producer=PRODUCER, overwrite=True)
    assert csv_results.overwrite and csv_results.producer == PRODUCER
    assert journal_of_output(tmp_path / "a.csv") == tmp_path / "a.csv.done"
    assert journal_of_output(tmp_path / "a.parquet") == tmp_path / "a.parquet" / "_journal"
    assert producer_of_output(tmp_path / "missing.parquet") is None


# species × site × day ---------------------------------------------------------------------------------
SUMMARY_FILES = ["/data/SITE1/SITE1_20190611_093000.wav", "/data/SITE1/SITE1_20190611_103000.wav",
                 "/data/SITE1/20190612T000000.wav", "/data/SITE2/2024-05-01_dawn.flac", "/data/SITE2/noday.wav"]
SUMMARY_DETS = {
    SUMMARY_FILES[0]: [("amerob", 0.9), ("amerob", 0.3), ("norcar", 0.8)],
    SUMMARY_FILES[1]: [("amerob", 0.5), ("amerob", 0.49)],
    SUMMARY_FILES[2]: [("amerob", 0.7)],
    SUMMARY_FILES[3]: [("norcar", 0.95), ("amerob", 0.6)],
    SUMMARY_FILES[4]: [("norcar", 0.2)],
}
THRESHOLDS = {"amerob": 0.5, "blujay": 0.9}  # norcar has none


def _summary_outputs(tmp_path) -> tuple[Path, Path]:
    outs = tmp_path / "d.csv", tmp_path / "d.parquet"
    for results in (ResultsCsv(outs[0], producer=PRODUCER), ResultsParquet(outs[1], producer=PRODUCER, max_files=2)):
        results.open()
        for f in SUMMARY_FILES:
            results.add(f, [Detection(3.0 * k, 3.0 * k + 3, sp, sp.upper(), s)
                            for k, (sp, s) in enumerate(SUMMARY_DETS[f])])
        results.close()
    return outs


EXPECTED_SUMMARY = [  # species, site, day, detections, at threshold
    ("amerob", "SITE1", "2019-06-11", 4, 2),
    ("amerob", "SITE1", "2019-06-12", 1, 1),
    ("amerob", "SITE2", "2024-05-01", 1, 1),
    ("norcar", "SITE1", "2019-06-11", 1, None),
    ("norcar", "SITE2", "", 1, None),
    ("norcar", "SITE2", "2024-05-01", 1, None),
]


@pytest.mark.parametrize("which", [0, 1], ids=["csv", "parquet"])
def test_site_day_summary(tmp_path, which):
    path = _summary_outputs(tmp_path)[which]
    table = site_day_summary(path, thresholds=THRESHOLDS, site_of=site_of_file, day_of=day_of_file, chunk_rows=2)
    assert list(table.columns) == list(SITE_DAY_HEADER)
    got = [(r.species, r.site, r.day, int(r.detections),
            None if pd.isna(r.detections_at_threshold) else int(r.detections_at_threshold))
           for r in table.itertuples(index=False)]
    assert got == EXPECTED_SUMMARY
    plain = site_day_summary(path, thresholds=None, site_of=site_of_file, day_of=day_of_file)
    assert [tuple(r)[:4] for r in plain.itertuples(index=False)] == [e[:4] for e in EXPECTED_SUMMARY]
    assert plain["detections_at_threshold"].isna().all()
    by_hour = site_day_summary(path, thresholds=None, site_of=lambda f: "all", day_of=lambda f: Path(f).stem[-6:-4])
    assert by_hour[by_hour["species"] == "amerob"]["detections"].sum() == 6


def test_site_day_summary_csv_and_parquet_agree_and_write(tmp_path):
    csv_path, pq_path = _summary_outputs(tmp_path)
    a = write_site_day_summary(csv_path, tmp_path / "a.csv", thresholds=THRESHOLDS)
    b = write_site_day_summary(pq_path, tmp_path / "b.csv", thresholds=THRESHOLDS)
    pd.testing.assert_frame_equal(a, b)
    text = (tmp_path / "b.csv").read_text()
    assert text.splitlines()[0] == ",".join(SITE_DAY_HEADER)
    assert "amerob,SITE1,2019-06-11,4,2" in text.splitlines()
    assert "norcar,SITE2,,1," in text.splitlines()
    back = pd.read_csv(tmp_path / "b.csv", keep_default_na=False)
    assert len(back) == len(EXPECTED_SUMMARY)


def test_site_day_summary_refuses_other_tables(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"bad\.csv: .*missing file, species, score"):
        site_day_summary(bad, thresholds=None, site_of=site_of_file, day_of=day_of_file)


@pytest.mark.parametrize("name, day", [
    ("/x/SITE_20190611_093000.wav", "2019-06-11"),      # Song Meter / AudioMoth with a prefix
    ("20190611_093000.WAV", "2019-06-11"),              # AudioMoth
    ("S4A12345_20231231_235959.wav", "2023-12-31"),     # Song Meter SM4
    ("20240501T053000.flac", "2024-05-01"),             # ISO basic
    ("site_20240501T053000Z.wav", "2024-05-01"),
    ("2024-05-01.wav", "2024-05-01"),                   # ISO date
    ("rec_2024-05-01_05-30-00.mp3", "2024-05-01"),
    ("C:\\audio\\SITE\\SITE_20190611_093000.wav", "2019-06-11"),
    ("201906110930.wav", "2019-06-11"),                 # date and HHMM
    ("/2019-06-11/noday.wav", ""),                      # only the name counts
    ("XC123456.mp3", ""),
    ("20191341_093000.wav", ""),                        # month 13: not a date
    ("id_1234567890123.wav", ""),                       # a long number, not a date
])
def test_day_of_file(name, day):
    assert day_of_file(name) == day


def test_site_of_file():
    assert site_of_file("/data/SITE7/a.wav") == "SITE7"
    assert site_of_file("C:\\data\\SITE7\\a.wav") == "SITE7"
    assert site_of_file("a.wav") == ""


# review's reading ---------------------------------------------------------------------------------------
def test_review_reads_a_parquet_dataset(tmp_path):
    csv_path, pq_path = tmp_path / "d.csv", tmp_path / "d.parquet"
    _write_all(ResultsCsv(csv_path, producer=PRODUCER))
    _write_all(ResultsParquet(pq_path, producer=PRODUCER, max_files=4))
    from_csv, from_pq = read_detections(csv_path), read_detections(pq_path)
    pd.testing.assert_frame_equal(_canon(from_pq), _canon(from_csv))
    assert from_pq["score"].dtype == float
    single = tmp_path / "one.parquet"  # one Parquet file, not a folder
    pq.write_table(pa.Table.from_pandas(_expected(FILES[:2]), preserve_index=False), single)
    pd.testing.assert_frame_equal(_canon(read_detections(single)), _canon(_expected(FILES[:2])))


def test_review_refuses_a_parquet_folder_missing_a_column(tmp_path):
    folder = tmp_path / "bad.parquet"
    folder.mkdir()
    pq.write_table(pa.Table.from_pandas(_expected(FILES[:2]).drop(columns=["score"]), preserve_index=False),
                   folder / "part-00000.parquet")
    with pytest.raises(ValueError) as info:
        read_detections(folder)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{folder}: not a detections Parquet dataset") and message.endswith("missing score")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty: not a readable detections Parquet dataset"):
        read_detections(empty)
    with pytest.raises(ValueError, match=r"nothere\.parquet: not a readable detections Parquet dataset"):
        read_detections(tmp_path / "nothere.parquet")
