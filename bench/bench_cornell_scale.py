"""A Cornell-size rehearsal: every stage of a run, and the dashboard, on a synthetic set of the real size.

    python bench/bench_cornell_scale.py [--recordings 21375] [--duration-factor 0.05] [--steps 5]
        [--work-dir DIR] [--kinds keras_audio birdnet_head birdnet_finetune] [--pages ...]

The set (``birdcore.data.cornell_scale``): 264 species (``../shared/data/cornell264_species.csv`` when
present, else made-up codes), 21,375 recordings with a stand-in for the real per-species counts (9 to
100), log-normal durations (median 40 s, mean 57 s, a few over 10 minutes) multiplied by
``--duration-factor`` so that the audio fits this machine, 16-bit WAV at 22,050 Hz, and the original
system's split (``xc_hundreds``) with 2,222 test recordings.  Generating it is timed apart and kept
out of the stages; with ``--work-dir`` it is kept and reused by the next run with the same settings.

Each stage runs in its own process (this script with ``--stage``), so its ``peak_mb`` is that
process's peak resident memory (``VmHWM``: imports and the metadata included; ``start_mb`` in the
details is the resident memory when the timed part begins, ``workers_peak_mb`` the largest decoding
worker's ``ru_maxrss``, an upper bound).  Stages: metadata and split; the free-space check; the decode cache (cold, then warm);
the decoding of real mp3 recordings (``--calibration-dir``, default xc-pr20) to scale the cache to
real audio; one epoch capped at ``--steps`` steps of each kind that trains (BirdNET kinds on
``--birdnet-recordings`` training recordings, whose 48 kHz cache and embeddings or activations are
timed per BirdNET window); test scoring of the test recordings with the keras_audio model; writing
the run folder (segment scores stretched to the real durations' segment counts, so the run folder
and the dashboard hold real-size arrays).  Dashboard pages are timed with Streamlit's AppTest on that
run (and a second run of perturbed scores for the compare page), each page in its own process: the
first render, then interactions (a slider move, another species, a toggle); ``pages`` reports the
median of those later renders.

Figures are scaled to the real durations (``projected_real_s``) by the unit of work each stage
scales with: hours of real mp3 audio for decoding (the calibration's rate), 5 s segments for
scoring, 3 s BirdNET windows for embeddings and activations, steps for an epoch
(``ceil(training recordings / batch)`` × the median step).  Prints the details, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SPECIES_CSV = ROOT.parent / "shared" / "data" / "cornell264_species.csv"
CALIBRATION_DIR = ROOT.parent / "shared" / "data" / "xc-pr20"
SPLIT = {"method": "xc_hundreds", "val_fraction": 0.1, "seed": 1234}
KINDS = ("keras_audio", "birdnet_head", "birdnet_finetune")
PAGES = ("overview", "species", "thresholds", "compare", "classify")
RUN_A, RUN_B = "cornell-rehearsal", "cornell-rehearsal-b"


# --------------------------------------------------------------------------- helpers

def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    """Resident memory of this process now (MB)."""
    return _status_mb("VmRSS")


def peak_mb() -> float:
    """Peak resident memory of this process (MB): VmHWM, not ru_maxrss, which Linux carries over from
    the parent's size at fork (the stage would report at least the orchestrator's memory)."""
    return _status_mb("VmHWM")


def workers_peak_mb() -> float:
    """ru_maxrss of the largest finished child (decoding workers), MB: an upper bound, since it counts
    the stage process's size when the worker was forked."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def species_list(n: int = 264) -> list[tuple[str, str, str]]:
    import pandas as pd

    if SPECIES_CSV.is_file():
        table = pd.read_csv(SPECIES_CSV, keep_default_na=False)
        return list(zip(table["ebird_code"], table["common_name"], table["scientific_name"]))[:n]
    return [(f"sp{j:03d}", f"Species {j}", f"Synthetica species{j}") for j in range(n)]


def load_data(work: Path, *, sample_rate: int = 22050, cache_name: str = "cache"):
    """(Dataset with its split, metadata with real durations): the metadata every stage starts from."""
    import pandas as pd

    from birdcore.data.cache import DecodeCache
    from birdcore.data.dataset import Dataset
    from birdcore.data.metadata import read_metadata, species_table
    from birdcore.data.split import split_recordings

    meta = read_metadata(work / "data")
    real = pd.read_csv(work / "data" / "train.csv", usecols=["filename", "ebird_code", "real_duration"])
    ids = real["ebird_code"] + "/" + real["filename"].str.rsplit(".", n=1).str[0]
    meta["real_duration"] = meta["recording_id"].map(dict(zip(ids, real["real_duration"])))
    meta["split"] = split_recordings(meta, method=SPLIT["method"], val_fraction=SPLIT["val_fraction"],
                                     seed=SPLIT["seed"]).to_numpy()
    cache = DecodeCache(work / cache_name, sample_rate=sample_rate)
    return Dataset(meta, species_table(meta), cache)


def segments(seconds, length: float) -> int:
    """Segments (or windows) of ``length`` s that cover recordings of ``seconds`` (each at least one)."""
    import numpy as np

    return int(np.maximum(1, np.ceil(np.asarray(seconds, dtype=float) / length - 1e-9)).sum())


class StepTimer:
    """Keras callback: wall time of each training batch."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times, self._t = [], 0.0

            def on_train_batch_begin(self, batch, logs=None):
                self._t = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter() - self._t)

        return _Timer()


def step_figures(times: list[float], *, n_train: int, batch: int) -> dict:
    """Median step after the first (which compiles) and the full epoch it projects."""
    later = times[1:] or times
    step = statistics.median(later)
    full_steps = math.ceil(n_train / batch)
    return {"steps": len(times), "first_step_s": round(times[0], 2), "step_median_s": round(step, 3),
            "full_epoch_steps": full_steps, "projected_epoch_s": round(step * full_steps, 1)}


# --------------------------------------------------------------------------- stages (each in its own process)

def stage_metadata_split(work: Path, args) -> dict:
    from birdcore.data.metadata import read_metadata, species_table
    from birdcore.data.split import split_recordings, split_summary

    t = time.perf_counter()
    meta = read_metadata(work / "data")
    split = split_recordings(meta, method=SPLIT["method"], val_fraction=SPLIT["val_fraction"], seed=SPLIT["seed"])
    summary = split_summary(split, meta)
    species_table(meta)
    return {"seconds": time.perf_counter() - t, "split": summary["counts"], "species": len(summary["per_species"])}


def stage_space_check(work: Path, args) -> dict:
    data = load_data(work)
    paths = data.df["path"].tolist()
    durations = dict(zip(data.df["path"], data.df["duration"]))
    start = rss_mb()
    t = time.perf_counter()
    need = data.cache.needed_bytes(paths, durations)
    data.cache._check_space(paths, durations)  # what build() runs before decoding
    return {"seconds": time.perf_counter() - t, "start_mb": start, "need_bytes": int(need)}


def _cache_build(work: Path, args, *, warm: bool) -> dict:
    data = load_data(work)
    if not warm:
        shutil.rmtree(data.cache.root, ignore_errors=True)
    paths = data.df["path"].tolist()
    start = rss_mb()
    t = time.perf_counter()
    report = data.cache.build(paths, workers=args.workers, durations=dict(zip(paths, data.df["duration"])))
    seconds = time.perf_counter() - t
    out = {"seconds": seconds, "start_mb": start, "workers_peak_mb": workers_peak_mb(),
           "decoded": report.n_decoded, "reused": report.n_reused, "failed": len(report.failed),
           "audio_hours": report.audio_seconds / 3600}
    if not warm:
        out["cache_bytes"] = sum(p.stat().st_size for p in data.cache.root.rglob("*.npy"))
        out["bytes_per_audio_hour"] = out["cache_bytes"] / out["audio_hours"]
    return out


def stage_decode_cache(work: Path, args) -> dict:
    return _cache_build(work, args, warm=False)


def stage_decode_cache_warm(work: Path, args) -> dict:
    return _cache_build(work, args, warm=True)


def stage_decode_real_mp3(work: Path, args) -> dict:
    """Seconds per hour of real mp3 audio into the cache at 22,050 Hz and at BirdNET's 48 kHz."""
    from birdcore.data.cache import DecodeCache
    from birdcore.data.metadata import read_metadata

    meta = read_metadata(args.calibration_dir)
    paths = sorted(meta.loc[meta["exists"], "path"])[:args.calibration_files]
    out = {"files": len(paths)}
    start = rss_mb()
    t0 = time.perf_counter()
    for rate in (22050, 48000):
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            t = time.perf_counter()
            report = DecodeCache(Path(tmp), sample_rate=rate).build(paths, workers=args.workers)
            seconds = time.perf_counter() - t
        out[f"s_per_audio_hour_{rate}"] = seconds / (report.audio_seconds / 3600)
        out["audio_hours"] = report.audio_seconds / 3600
    out.update(seconds=time.perf_counter() - t0, start_mb=start, workers_peak_mb=workers_peak_mb())
    return out


def _compile(kind, cfg, model) -> None:
    from birdcore.training.devices import compile_model

    compile_model(model, cfg.train.learning_rate, weight_decay=cfg.train.weight_decay, optimizer=kind.optimizer(cfg))


def stage_keras_audio(work: Path, args) -> dict:
    from birdcore.config import RunConfig
    from birdcore.data.labels import make_targets
    from birdcore.models.base import kind_for
    from birdcore.models.saving import save_keras

    data = load_data(work)
    cfg = RunConfig()
    cfg.model.weights = "none"  # no download; ImageNet's weights change nothing in the time of a step
    cfg.train.steps_per_epoch = args.steps
    kind = kind_for("keras_audio")
    primary, secondary = data.labels()
    targets = make_targets(primary, secondary, len(data.codes), secondary_weight=cfg.train.secondary_weight,
                           label_smoothing=cfg.train.label_smoothing)
    start = rss_mb()
    t = time.perf_counter()
    model = kind.build(cfg, len(data.codes))
    _compile(kind, cfg, model)
    build_s = time.perf_counter() - t
    batches = kind.training_batches(cfg, data, targets, primary)
    timer = StepTimer()
    t1 = time.perf_counter()
    model.fit(batches, epochs=1, verbose=0, callbacks=[timer])
    fit_s = time.perf_counter() - t1
    seconds = time.perf_counter() - t
    (work / "models").mkdir(exist_ok=True)
    save_keras(model, work / "models" / "keras_audio.keras")
    n_train = len(data.rows("train"))
    return {"seconds": seconds, "start_mb": start, "build_s": build_s, "fit_s": fit_s, "train_recordings": n_train,
            "batch": cfg.train.batch_size, "crop_s": cfg.train.train_seconds,
            **step_figures(timer.times, n_train=n_train, batch=cfg.train.batch_size)}


def _birdnet_kind(work: Path, args, name: str) -> dict:
    """A BirdNET kind on ``--birdnet-recordings`` training recordings: their 48 kHz cache, the kind's
    inputs (embeddings or activations), then one capped epoch; per-window rates for the projection."""
    import numpy as np

    from birdcore.config import RunConfig
    from birdcore.data.dataset import Dataset
    from birdcore.data.labels import make_targets
    from birdcore.models.base import kind_for
    from birdcore.runs.folder import RunBuilder

    full = load_data(work, sample_rate=48000, cache_name="cache48")
    train = full.rows("train")
    pick = np.sort(np.random.default_rng(0).choice(train, size=min(args.birdnet_recordings, len(train)),
                                                   replace=False))
    df = full.df.iloc[pick].reset_index(drop=True)
    data = Dataset(df, full.species, full.cache)
    cfg = RunConfig()
    cfg.model.kind = name
    if name == "birdnet_finetune":
        cfg.model.fine_tune = 2  # the setting chosen on validation (BENCHMARKS.md, "Fine-tuning BirdNET")
    kind = kind_for(name)
    kind.configure(cfg)
    cfg.train.steps_per_epoch = args.steps
    kind.check_config(cfg)
    primary, secondary = data.labels()
    targets = make_targets(primary, secondary, len(data.codes), secondary_weight=cfg.train.secondary_weight,
                           label_smoothing=cfg.train.label_smoothing)
    scratch = work / "scratch"
    shutil.rmtree(scratch / f".{name}.partial", ignore_errors=True)
    shutil.rmtree(work / "cache48", ignore_errors=True)  # cold: decoded and embedded now
    run = RunBuilder.open(scratch, name, resume=False)
    start = rss_mb()
    t = time.perf_counter()
    report = data.cache.build(df["path"].tolist(), workers=args.workers)
    cache_s = time.perf_counter() - t
    t1 = time.perf_counter()
    inputs = kind.prepare_inputs(run, cfg, data, cache_root=work / "cache48")
    inputs_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    model = kind.build(cfg, len(data.codes), inputs=inputs)
    _compile(kind, cfg, model)
    build_s = time.perf_counter() - t2
    batches = kind.training_batches(cfg, data, targets, primary, inputs=inputs)
    timer = StepTimer()
    t3 = time.perf_counter()
    model.fit(batches, epochs=1, verbose=0, callbacks=[timer])
    fit_s = time.perf_counter() - t3
    seconds = time.perf_counter() - t
    run.release()
    shutil.rmtree(run.path, ignore_errors=True)
    windows = segments(df["duration"], 3.0)
    real_windows = segments(full.df["real_duration"], 3.0)
    s_per_window = inputs_s / windows
    n_train = len(train)
    figures = step_figures(timer.times, n_train=n_train, batch=cfg.train.batch_size)
    return {"seconds": seconds, "start_mb": start, "workers_peak_mb": workers_peak_mb(),
            "recordings": len(df), "cache48_s": cache_s, "cache48_audio_s": report.audio_seconds,
            "inputs_s": inputs_s, "windows": windows, "s_per_window": s_per_window,
            "all_real_windows": real_windows, "projected_inputs_all_s": round(s_per_window * real_windows),
            "build_s": build_s, "fit_s": fit_s, "train_recordings": n_train, "batch": cfg.train.batch_size,
            **figures}


def stage_birdnet_head(work: Path, args) -> dict:
    return _birdnet_kind(work, args, "birdnet_head")


def stage_birdnet_finetune(work: Path, args) -> dict:
    return _birdnet_kind(work, args, "birdnet_finetune")


def stage_test_scoring(work: Path, args) -> dict:
    import numpy as np

    from birdcore.evaluation.scoring import score_arrays, score_recordings
    from birdcore.io.atomic import write_npz
    from birdcore.models.keras_audio.scorer import Scorer
    from birdcore.models.saving import load_keras

    data = load_data(work)
    rows = data.rows("test")
    model = load_keras(work / "models" / "keras_audio.keras")
    scorer = Scorer(model, batch_segments=32)
    scorer.score(np.zeros(22050 * 5, np.float32))  # trace once, outside the timing
    start = rss_mb()
    t = time.perf_counter()
    scores, segs = score_recordings(scorer, data.load, rows)
    seconds = time.perf_counter() - t
    arrays = score_arrays(data.df.iloc[rows], data.codes, scores, segs, segment_seconds=5.0)
    write_npz(work / "test_scores.npz", **arrays)
    n_segments = sum(len(s) for s in segs)
    test = data.df.iloc[rows]
    val = data.df[data.df["split"] == "val"]
    s_per_segment = seconds / n_segments
    return {"seconds": seconds, "start_mb": start, "recordings": len(rows), "segments": n_segments,
            "s_per_segment": s_per_segment, "real_segments": segments(test["real_duration"], 5.0),
            "projected_test_s": round(s_per_segment * segments(test["real_duration"], 5.0)),
            "projected_val_s": round(s_per_segment * segments(val["real_duration"], 5.0)),
            "longest_real_s": float(test["real_duration"].max())}


def real_size_arrays(arrays: dict, real_seconds, segment_seconds: float = 5.0) -> dict:
    """``arrays`` (scores.npz) with each recording's segment scores repeated to the segment count of its
    real duration, so that the run folder holds arrays of the real size."""
    import numpy as np

    offsets, seg = arrays["segment_offsets"], arrays["segment_scores"]
    parts = []
    for i, real in enumerate(real_seconds):
        own = seg[offsets[i]:offsets[i + 1]]
        parts.append(np.resize(own, (max(1, math.ceil(real / segment_seconds - 1e-9)), own.shape[1])))
    out = dict(arrays)
    out["segment_scores"] = np.concatenate(parts).astype(np.float16)
    out["segment_offsets"] = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    return out


def stage_run_folder(work: Path, args) -> dict:
    import numpy as np

    from birdcore.config import RunConfig
    from birdcore.evaluation.scoring import write_evaluation
    from birdcore.io.atomic import atomic_write_json, atomic_write_text
    from birdcore.runs.folder import RunBuilder, library_versions
    from birdcore.runs.history import HISTORY_FILE, append_epoch

    data = load_data(work)
    with np.load(work / "test_scores.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    real = data.df.set_index("recording_id").loc[arrays["recording_id"], "real_duration"].to_numpy()
    arrays = real_size_arrays(arrays, real)
    runs = work / "runs"
    for name in (RUN_A, RUN_B):
        shutil.rmtree(runs / name, ignore_errors=True)
        shutil.rmtree(runs / f".{name}.partial", ignore_errors=True)
    cfg = RunConfig()
    cfg.model.weights = "none"
    cfg.split.method, cfg.split.val_fraction, cfg.split.seed = SPLIT["method"], SPLIT["val_fraction"], SPLIT["seed"]
    start = rss_mb()
    t = time.perf_counter()
    run = RunBuilder.open(runs, RUN_A, resume=False)
    atomic_write_json(run.file("config.json"), {"config": cfg.to_dict(), "versions": library_versions(),
                                                "data_dir": str(work / "data")})
    atomic_write_text(run.file("species.csv"), data.species.rename_axis("index").reset_index().to_csv(index=False))
    atomic_write_text(run.file("split.csv"), data.df[["recording_id", "split", "primary"]].to_csv(index=False))
    atomic_write_json(run.file("data_report.json"), {"data_dir": str(work / "data"), "synthetic": True,
                                                     "n_metadata_rows": len(data.df), "n_usable": len(data.df),
                                                     "n_failed": 0, "failed": [], "n_species": len(data.codes)})
    append_epoch(run.file(HISTORY_FILE), {"epoch": 1, "loss": 1.0, "val_top1": 0.0, "val_loss": 1.0, "seconds": 1.0})
    metrics = write_evaluation(run.path, arrays, None, target_fpr=cfg.eval.target_fpr)
    shutil.copyfile(work / "models" / "keras_audio.keras", run.file("model.keras"))
    final = run.finish({"synthetic": True, "model_kind": "keras_audio", "backbone": cfg.model.backbone,
                        "weights": "none", "pooling": cfg.model.pooling, "n_species": len(data.codes),
                        "sample_rate": cfg.audio.sample_rate, "segment_seconds": cfg.audio.segment_seconds,
                        "split": {s: int((data.df["split"] == s).sum()) for s in ("train", "val", "test")},
                        "epochs_trained": 1, "best_epoch": 1, "tuned": False, "savedmodel": False,
                        "test": {k: metrics[k] for k in ("top1", "top5", "macro_auc", "macro_ap", "n_recordings")}})
    seconds = time.perf_counter() - t
    make_run_b(final, runs / RUN_B)
    return {"seconds": seconds, "start_mb": start, "segments": int(len(arrays["segment_scores"])),
            "scores_npz_bytes": (final / "scores.npz").stat().st_size}


def make_run_b(run_a: Path, run_b: Path) -> None:
    """A second run for the compare page: run A with seeded noise added to its scores (the page's cost
    depends on the shapes only); run A stays the newest, so the dashboard opens on it."""
    import numpy as np

    from birdcore.io.atomic import write_npz

    shutil.copytree(run_a, run_b, ignore=shutil.ignore_patterns("model.keras"))
    with np.load(run_b / "scores.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    rng = np.random.default_rng(1)
    arrays["scores"] = np.clip(arrays["scores"] + rng.normal(0, 0.05, arrays["scores"].shape), 0, 1).astype(np.float32)
    write_npz(run_b / "scores.npz", **arrays)
    manifest = json.loads((run_b / "run.json").read_text())
    (run_b / "run.json").write_text(json.dumps({**manifest, "name": run_b.name}))
    later = time.time() + 1
    os.utime(run_a / "run.json", (later, later))


def stage_page(work: Path, args, page: str) -> dict:
    """One dashboard page in AppTest: the first render, then interactions (their median is the page's figure)."""
    import numpy as np

    os.environ["BIRDCLEF_RUNS"] = str(work / "runs")
    from streamlit.testing.v1 import AppTest

    start = rss_mb()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    t = time.perf_counter()
    at.switch_page(f"pages/{page}.py").run()
    first = time.perf_counter() - t
    _check(at, page)
    moves = []

    def timed(action) -> None:
        t0 = time.perf_counter()
        action().run()
        moves.append(time.perf_counter() - t0)
        _check(at, page)

    if page == "overview":
        for value in (True, False, True):
            timed(lambda: at.toggle[0].set_value(value))
    elif page == "species":
        box = lambda: next(s for s in at.selectbox if s.label == "Species")  # noqa: E731
        codes = [o.rsplit("(", 1)[1].rstrip(")") for o in box().options]  # options are "Common name (code)"
        for code in np.random.default_rng(0).choice(codes, 3, replace=False):
            timed(lambda: box().set_value(code))
    elif page == "thresholds":
        for value in (0.3, 0.5, 0.7):
            timed(lambda: at.slider[0].set_value(value))
        at.radio[0].set_value("One species").run()
        box = lambda: next(s for s in at.selectbox if s.label == "Species")  # noqa: E731
        for code in box().options[:2]:
            timed(lambda: box().set_value(code))
        timed(lambda: at.slider[0].set_value(0.4))
    elif page == "compare":
        for value in (False, True, False):
            timed(lambda: at.toggle[0].set_value(value))
    else:  # classify: no test scores on it; a rerun, as any widget change gives
        for _ in range(3):
            timed(lambda: at)
    return {"seconds": first, "start_mb": start, "later_s": [round(m, 3) for m in moves],
            "later_median_s": statistics.median(moves)}


def _check(at, page: str) -> None:
    if at.exception:
        raise RuntimeError(f"page {page}: {[e.value for e in at.exception][:1]}")


STAGES = {"metadata_split": stage_metadata_split, "space_check": stage_space_check,
          "decode_cache": stage_decode_cache, "decode_cache_warm": stage_decode_cache_warm,
          "decode_real_mp3": stage_decode_real_mp3, "keras_audio": stage_keras_audio,
          "birdnet_head": stage_birdnet_head, "birdnet_finetune": stage_birdnet_finetune,
          "test_scoring": stage_test_scoring, "run_folder": stage_run_folder}


# --------------------------------------------------------------------------- orchestration

def run_stage(name: str, work: Path, args) -> dict:
    """``name`` in a fresh process; its result with peak_mb."""
    cmd = [sys.executable, __file__, "--stage", name, "--work-dir", str(work), "--steps", str(args.steps),
           "--workers", str(args.workers), "--birdnet-recordings", str(args.birdnet_recordings),
           "--calibration-dir", str(args.calibration_dir), "--calibration-files", str(args.calibration_files)]
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode or not lines:
        tail = (res.stderr or res.stdout).strip().splitlines()[-15:]
        print(f"stage {name} failed (exit {res.returncode}):\n  " + "\n  ".join(tail), file=sys.stderr)
        return {"error": tail[-1] if tail else f"exit {res.returncode}", "wall_s": round(wall, 1)}
    out = json.loads(lines[-1])
    out["wall_s"] = round(wall, 1)
    print(f"{name}: {json.dumps(out)}", file=sys.stderr, flush=True)
    return out


def dataset(work: Path, args) -> dict:
    """Generate the set, or reuse the one in ``work`` made with the same settings."""
    from birdcore.data.cornell_scale import make_cornell_scale_dataset

    settings = {"recordings": args.recordings, "duration_factor": args.duration_factor, "seed": 0,
                "species_csv": SPECIES_CSV.is_file(), "format": 1}
    stamp = work / "data" / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("settings") == settings:
        print("reusing the generated set in", work / "data", file=sys.stderr)
        return {**json.loads(stamp.read_text())["summary"], "reused": True}
    shutil.rmtree(work / "data", ignore_errors=True)
    shutil.rmtree(work / "cache", ignore_errors=True)
    print(f"generating {args.recordings} recordings in {work / 'data'} ...", file=sys.stderr, flush=True)
    summary = make_cornell_scale_dataset(work / "data", species=species_list(), recordings=args.recordings,
                                         duration_factor=args.duration_factor)
    stamp.write_text(json.dumps({"settings": settings, "summary": summary}))
    return summary


def projections(details: dict, gen: dict, factor: float) -> dict:
    """Seconds each stage would take at the real durations (see the module docstring)."""
    out = {}
    real_hours = gen["real_audio_seconds"] / 3600
    calib = details.get("decode_real_mp3", {})
    cold = details.get("decode_cache", {})
    if "s_per_audio_hour_22050" in calib:
        out["decode_cache"] = round(real_hours * calib["s_per_audio_hour_22050"])
        out["decode_cache_48k"] = round(real_hours * calib["s_per_audio_hour_48000"])
    elif "seconds" in cold:
        out["decode_cache"] = round(cold["seconds"] / factor)
    for name in ("metadata_split", "space_check", "decode_cache_warm", "run_folder"):
        if "seconds" in details.get(name, {}):
            out[name] = round(details[name]["seconds"], 2)  # per recording, or already at the real size
    if "projected_epoch_s" in details.get("keras_audio", {}):
        out["keras_audio_epoch"] = details["keras_audio"]["projected_epoch_s"]
    for name in ("birdnet_head", "birdnet_finetune"):
        d = details.get(name, {})
        if "projected_epoch_s" in d:
            out[f"{name}_epoch"] = d["projected_epoch_s"]
            out[f"{name}_inputs_all"] = d["projected_inputs_all_s"]
    if "projected_test_s" in details.get("test_scoring", {}):
        out["test_scoring"] = details["test_scoring"]["projected_test_s"]
        out["validation_scoring"] = details["test_scoring"]["projected_val_s"]
    if "bytes_per_audio_hour" in cold:
        out["cache_gb_22050"] = round(cold["bytes_per_audio_hour"] * real_hours / 1e9, 1)
        out["cache_gb_48000"] = round(cold["bytes_per_audio_hour"] * 48000 / 22050 * real_hours / 1e9, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recordings", type=int, default=21375, help="recordings in the set (264 species)")
    p.add_argument("--duration-factor", type=float, default=0.05, help="each recording's real duration × this")
    p.add_argument("--steps", type=int, default=5, help="training steps of each kind's capped epoch")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes")
    p.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    p.add_argument("--pages", nargs="*", default=list(PAGES), choices=PAGES)
    p.add_argument("--birdnet-recordings", type=int, default=256,
                   help="training recordings a BirdNET kind's capped epoch draws from (their inputs are timed)")
    p.add_argument("--calibration-dir", type=Path, default=CALIBRATION_DIR,
                   help="a Cornell-layout set of real mp3 recordings, to time decoding real audio")
    p.add_argument("--calibration-files", type=int, default=60)
    p.add_argument("--work-dir", type=Path, default=None, help="kept (and its generated set reused); default: a "
                   "temporary folder, removed at the end")
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.stage:
        work = args.work_dir
        if args.stage.startswith("page_"):
            out = stage_page(work, args, args.stage[5:])
        else:
            out = STAGES[args.stage](work, args)
        out["peak_mb"] = peak_mb()
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))
        return

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cornell-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        gen = dataset(work, args)
        generation_s = time.perf_counter() - t
        names = ["metadata_split", "space_check", "decode_cache", "decode_cache_warm"]
        if (args.calibration_dir / "train.csv").is_file() or (args.calibration_dir / "train_metadata.csv").is_file():
            names.append("decode_real_mp3")
        names += [k for k in KINDS if k in args.kinds]
        if "keras_audio" in args.kinds:
            names += ["test_scoring", "run_folder"] + [f"page_{p}" for p in args.pages]
        details = {name: run_stage(name, work, args) for name in names}
        stages = {n: {"seconds": round(d["seconds"], 2), "peak_mb": round(d["peak_mb"])}
                  for n, d in details.items() if "seconds" in d and not n.startswith("page_")}
        stages.update({f"first_render_{n[5:]}": {"seconds": round(d["seconds"], 2), "peak_mb": round(d["peak_mb"])}
                       for n, d in details.items() if "seconds" in d and n.startswith("page_")})
        pages = {n[5:]: round(d["later_median_s"], 3) for n, d in details.items() if "later_median_s" in d}
        errors = {n: d["error"] for n, d in details.items() if "error" in d}
        print(json.dumps({"generation": gen, "details": details}, indent=1))
        result = {"recordings": args.recordings, "species": gen["species"], "duration_factor": args.duration_factor,
                  "stages": stages, "pages": pages, "test_recordings": gen["test"],
                  "generation_s": round(generation_s, 1) if not gen.get("reused") else gen["seconds"],
                  "audio_hours": round(gen["audio_seconds"] / 3600, 2),
                  "real_audio_hours": round(gen["real_audio_seconds"] / 3600, 1),
                  "projected_real_s": projections(details, gen, args.duration_factor),
                  "peak_mb_how": "VmHWM (peak resident memory) of each stage's own process", **({"errors": errors} if errors else {})}
        print(json.dumps(result))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
