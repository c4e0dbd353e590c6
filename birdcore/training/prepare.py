"""A run's data before training: metadata → decode cache → split → data report; the noise bank."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from birdcore.config import RunConfig
from birdcore.data.cache import DecodeCache, default_cache_dir
from birdcore.data.dataset import Dataset
from birdcore.data.metadata import read_metadata, species_table
from birdcore.data.split import split_recordings, split_summary
from birdcore.io.atomic import atomic_write_json, atomic_write_text
from birdcore.io.audio import AudioError, decode_audio, is_audio_path

log = logging.getLogger("birdcore")


def prepare_data(run, cfg: RunConfig, *, data_dir: Path, cache_dir: Path | None,
                 workers: int | None) -> Dataset:
    """Read metadata, fill the decode cache, split (or reuse the run's split), write the data report."""
    meta = read_metadata(Path(data_dir))
    log.info("dataset %s: %d recordings of %d species", data_dir, len(meta), meta["primary"].nunique())
    cache = DecodeCache(Path(cache_dir) if cache_dir else default_cache_dir(), sample_rate=cfg.audio.sample_rate,
                        max_seconds=cfg.audio.max_decode_seconds)
    t0 = time.perf_counter()
    report = cache.build(meta["path"].tolist(), workers=workers, progress=True,
                         durations=dict(zip(meta["path"].astype(str), meta["duration"])))
    log.info("decode cache: %d decoded, %d reused, %d failed in %.1f s (%.2f h of audio)", report.n_decoded,
             report.n_reused, len(report.failed), time.perf_counter() - t0, report.audio_seconds / 3600)
    failed = [{"recording_id": r, "path": p, "reason": report.failed[p]}
              for r, p in zip(meta["recording_id"], meta["path"]) if p in report.failed]
    for item in failed[:20]:
        log.warning("skipped %s", item["reason"] if item["path"] in item["reason"] else f"{item['path']}: {item['reason']}")
    if len(failed) > 20:
        log.warning("... and %d more unreadable recordings (see data_report.json)", len(failed) - 20)
    df = meta[meta["path"].isin(set(report.ok))].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"{data_dir}: no recording could be decoded")
    species = species_table(df)
    split_path = run.file("split.csv")
    if split_path.exists():  # resuming: the split is part of the run
        saved = pd.read_csv(split_path, keep_default_na=False).set_index("recording_id")["split"]
        df["split"] = df["recording_id"].map(saved).fillna("unused")
    else:
        s = cfg.split
        df["split"] = split_recordings(df, method=s.method, val_fraction=s.val_fraction,
                                       test_fraction=s.test_fraction, seed=s.seed).to_numpy()
        atomic_write_text(split_path, df[["recording_id", "split", "primary"]].to_csv(index=False))
    data_report = {
        "data_dir": str(Path(data_dir).resolve()), "synthetic": cfg.synthetic,
        "n_metadata_rows": int(len(meta)), "n_usable": int(len(df)), "n_failed": len(failed),
        "failed": failed, "n_species": int(len(species)),
        "recordings_per_species": df["primary"].value_counts().sort_index().to_dict(),
        "split": split_summary(df["split"], df), "cache": report.to_dict(),
    }
    atomic_write_json(run.file("data_report.json"), data_report)
    atomic_write_text(run.file("species.csv"), species.rename_axis("index").reset_index().to_csv(index=False))
    return Dataset(df, species, cache)


def noise_folder(cfg: RunConfig) -> Path | None:
    """The background-noise folder the config asks for (None: none); ValueError when it is missing."""
    folder = cfg.augment.background_noise_dir
    if not (cfg.augment.background_noise and folder):
        return None
    if not Path(folder).is_dir():
        raise ValueError(f"{folder}: no such folder (the background-noise folder, --noise-dir or "
                         "augment.background_noise_dir)")
    return Path(folder)


def load_noise_bank(cfg: RunConfig) -> list[np.ndarray] | None:
    folder = noise_folder(cfg)
    if folder is None:
        return None
    bank, n_files = [], 0
    for path in sorted(Path(folder).rglob("*")):
        if is_audio_path(path) and path.is_file():
            n_files += 1
            try:
                bank.append(decode_audio(path, sample_rate=cfg.audio.sample_rate, max_seconds=600))
            except AudioError as exc:
                log.warning("noise file skipped: %s", exc)
    if not bank:  # an empty folder was warned about before the run began (training.train.check_inputs)
        (log.warning if n_files else log.info)(
            "background noise folder %s: %s; mixing in synthesised coloured noise instead", folder,
            f"none of its {n_files} audio files could be read" if n_files else "no audio files in it")
        return None
    log.info("background noise bank: %d recordings from %s", len(bank), folder)
    return bank
