"""A synthetic dataset of the Cornell 2020 set's size and shape, for rehearsals at scale.

The real set (Kaggle "birdsong-recognition", 2020) has 264 species and 21,375 recordings, 9 to 100
per species, mostly mp3 at 44.1 or 48 kHz, of long-tailed durations.  Its per-species counts are not
available offline, so :func:`species_counts` makes a deterministic stand-in with the same total,
range and shape (many species at 100, a linear tail down to 9); :func:`real_durations` draws
log-normal durations (median 40 s, mean about 57 s, a few over 10 minutes).

:func:`make_cornell_scale_dataset` writes such a set in the Kaggle 2020 layout (``train.csv``,
``train_audio/<code>/XC<id>.wav``) with every duration multiplied by ``duration_factor`` (the audio
is made shorter so that it fits a small machine; ``train.csv``'s ``duration`` is the written length,
its extra column ``real_duration`` the unshortened one, for scaling figures back).  Test recordings
are marked by their xeno-canto number (hundreds digit 0: the ``xc_hundreds`` split), so that exactly
:data:`CORNELL_TEST` × recordings / 21,375 of them are test.  Nothing here is real bird audio: a tone
at a per-species pitch in bursts, over noise.  Durations in seconds, rates in Hz.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

CORNELL_SPECIES = 264
CORNELL_RECORDINGS = 21_375
CORNELL_TEST = 2_222  # test recordings of the real set's split the figures are quoted for
COUNT_RANGE = (9, 100)  # recordings per species in the real set
MIN_COUNT = 3  # per species in a smaller set: one each for train, validation and test
DURATION_MEDIAN_S = 40.0
DURATION_SIGMA = 0.842  # of log-duration: mean = median * exp(sigma^2 / 2) = 57 s
DURATION_RANGE_S = (1.0, 3600.0)


def species_counts(total: int = CORNELL_RECORDINGS, n_species: int = CORNELL_SPECIES) -> np.ndarray:
    """Recordings per species (n_species,) int64 summing exactly to ``total`` (at full size, largest first).

    The full size (21,375 over 264 species; other species counts in proportion) has the real range
    9-100: as many species at 100 as the total allows (155 of 264) and a linear tail down to 9.  A
    smaller ``total`` scales that shape down (largest remainders), with at least :data:`MIN_COUNT` per
    species.  ValueError when ``total`` is below ``MIN_COUNT * n_species`` or above the full size.
    """
    lo, hi = COUNT_RANGE
    full = int(round(CORNELL_RECORDINGS * n_species / CORNELL_SPECIES))
    if not MIN_COUNT * n_species <= total <= full:
        raise ValueError(f"{total} recordings: choose {MIN_COUNT * n_species} to {full} for {n_species} species "
                         f"({MIN_COUNT} per species at least, the Cornell size at most)")
    flat = max(0, min(n_species, int(round((full - n_species * (lo + hi) / 2) / ((hi - lo) / 2)))))
    tail = np.rint(np.linspace(hi, lo, n_species - flat)) if n_species - flat > 1 else np.full(n_species - flat, lo)
    base = _fix_sum(np.concatenate([np.full(flat, hi), tail]).astype(np.int64), full, lo=lo, hi=hi, start=flat)
    if total == full:
        return base
    share = base * total / full
    counts = np.maximum(MIN_COUNT, np.floor(share)).astype(np.int64)
    up = np.argsort(-(share - np.floor(share)), kind="stable")  # largest remainders first
    for i in itertools.cycle(up if counts.sum() < total else range(n_species)):  # down: largest counts first
        if counts.sum() == total:
            return counts
        if counts.sum() < total:
            counts[i] += 1
        elif counts[i] > MIN_COUNT:
            counts[i] -= 1


def _fix_sum(counts: np.ndarray, total: int, *, lo: int, hi: int, start: int) -> np.ndarray:
    """Add or remove 1 at a time over ``counts[start:]`` (inner ones first) until the sum is ``total``."""
    counts = counts.copy()
    step = 1 if total > counts.sum() else -1
    inner = list(range(start + 1, len(counts) - 1)) or list(range(len(counts)))
    for i in itertools.cycle(inner):
        if counts.sum() == total:
            return counts
        if lo <= counts[i] + step <= hi:
            counts[i] += step
    return counts


def real_durations(n: int, *, seed: int = 0) -> np.ndarray:
    """n log-normal recording durations (s), float64: median 40 s, mean about 57 s, kept in 1 s to 1 h."""
    rng = np.random.default_rng([seed, 7])
    d = np.exp(rng.normal(np.log(DURATION_MEDIAN_S), DURATION_SIGMA, n))
    return np.clip(d, *DURATION_RANGE_S)


def held_out_counts(counts: np.ndarray, n_test: int) -> np.ndarray:
    """Test recordings per species (C,): ``n_test`` in all (or as many as fit), shared in proportion to
    ``counts`` (largest remainders), at most ``count - 2`` each (train and validation keep one)."""
    counts = np.asarray(counts, dtype=np.int64)
    cap = np.maximum(counts - 2, 0)
    share = counts * n_test / counts.sum()
    out = np.minimum(np.floor(share).astype(np.int64), cap)
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    while out.sum() < min(n_test, cap.sum()):
        for i in order:
            if out.sum() < n_test and out[i] < cap[i]:
                out[i] += 1
    return out


def xc_numbers(is_test: np.ndarray, *, first: int = 100_000) -> np.ndarray:
    """Distinct xeno-canto numbers (N,) int64, with hundreds digit 0 exactly where ``is_test``."""
    test = (n for n in itertools.count(first) if (n // 100) % 10 == 0)
    other = (n for n in itertools.count(first) if (n // 100) % 10 != 0)
    return np.array([next(test) if t else next(other) for t in is_test], dtype=np.int64)


def make_cornell_scale_dataset(out_dir: str | Path, *, species: list[tuple[str, str, str]],
                               recordings: int = CORNELL_RECORDINGS, duration_factor: float = 0.05,
                               sample_rate: int = 22_050, secondary_prob: float = 0.1, seed: int = 0) -> dict:
    """Write a Cornell-shaped synthetic set into ``out_dir`` (Kaggle 2020 layout, 16-bit WAV).

    ``species``: (ebird_code, common_name, scientific_name) per species (264 for the real shape).
    Each recording is ``duration_factor`` × its :func:`real_durations` long (at least one sample);
    ``secondary_prob`` of them name one other species as background (a label only: the audio holds
    one tone).  Returns a summary: recordings, species, test (recordings with a test xeno-canto
    number), audio_seconds (written), real_audio_seconds, bytes (of the audio files) and seconds
    (generation wall time).  The same arguments give the same files.
    """
    if not 0 < duration_factor <= 1:
        raise ValueError(f"duration_factor must be in (0, 1], got {duration_factor}")
    start = time.perf_counter()
    out = Path(out_dir)
    counts = species_counts(recordings, len(species))
    n_test = int(round(recordings * CORNELL_TEST / CORNELL_RECORDINGS))
    tests = held_out_counts(counts, n_test)
    durations = real_durations(recordings, seed=seed)
    rng = np.random.default_rng([seed, 11])
    is_test = np.concatenate([rng.permutation(np.arange(c) < t) for c, t in zip(counts, tests)])
    xc = xc_numbers(is_test)
    labels = [f"{sci}_{common}" for _, common, sci in species]
    rows, k, n_bytes, written = [], 0, 0, 0.0
    for j, ((code, common, sci), count) in enumerate(zip(species, counts)):
        folder = out / "train_audio" / code
        folder.mkdir(parents=True, exist_ok=True)
        pitch = 1500.0 + 6000.0 * j / max(1, len(species) - 1)
        for _ in range(count):
            wave = _tone_in_noise(durations[k] * duration_factor, pitch, sample_rate, rng)
            name = f"XC{xc[k]}.wav"
            sf.write(folder / name, wave, sample_rate, subtype="PCM_16")
            n_bytes += (folder / name).stat().st_size
            written += len(wave) / sample_rate
            other = int(rng.integers(len(species) - 1)) if rng.random() < secondary_prob else None
            secondary = [] if other is None else [labels[other + (other >= j)]]
            rows.append({"ebird_code": code, "filename": name, "duration": round(len(wave) / sample_rate, 4),
                         "real_duration": round(float(durations[k]), 3), "rating": 4.0, "channels": "1 (mono)",
                         "sampling_rate": f"{sample_rate} (Hz)", "secondary_labels": repr(secondary),
                         "species": common, "sci_name": sci, "primary_label": labels[j], "type": "call",
                         "xc_id": int(xc[k]), "author": "birdclef synthetic", "license": "CC0"})
            k += 1
    pd.DataFrame(rows).to_csv(out / "train.csv", index=False)
    (out / "README.txt").write_text(
        "SYNTHETIC DATA - not real bird recordings: tones in noise, in the Cornell 2020 layout and size.\n"
        f"birdcore.data.cornell_scale.make_cornell_scale_dataset(recordings={recordings}, "
        f"duration_factor={duration_factor}, sample_rate={sample_rate}, seed={seed}).\n")
    return {"recordings": int(recordings), "species": len(species), "test": int(is_test.sum()),
            "audio_seconds": round(written, 1), "real_audio_seconds": round(float(durations.sum()), 1),
            "bytes": int(n_bytes), "seconds": round(time.perf_counter() - start, 1)}


def _tone_in_noise(seconds: float, pitch: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """float32 (max(1, round(seconds * sample_rate)),): 0.25 s tone bursts every 0.6 s over quiet noise."""
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n, dtype=np.float32) / sample_rate
    bursts = (np.mod(t + float(rng.uniform(0, 0.6)), 0.6) < 0.25).astype(np.float32)
    wave = 0.3 * bursts * np.sin(np.float32(2 * np.pi * pitch) * t)
    return wave + 0.02 * rng.standard_normal(n).astype(np.float32)
