"""A synthetic dataset of species-like calls, written in the Cornell layouts.

Used by ``python train_job.py --demo`` and by the tests; nothing here is real
bird audio.  Each made-up species has one call type — upward or downward
frequency chirps, fast trills, harmonic stacks, two-note whistles, buzzy
noise bands, warbles — at its own pitch (about 1 to 7 kHz) and rhythm, so a
small CNN on log-mel spectrograms tells them apart easily.

All signals are float32 mono waveforms in [-1, 1]; times are in seconds,
frequencies in Hz, sample rates in Hz.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

FORMATS = {  # extension → (soundfile format, subtype)
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
LAYOUTS = ("kaggle2020", "birdclef")


@dataclass(frozen=True)
class SyntheticSpecies:
    """One made-up species.  ``call`` is the call type; ``params`` its settings
    (frequencies in Hz, durations in s); ``interval`` the mean time between the
    starts of successive calls (s)."""

    code: str
    common_name: str
    sci_name: str
    call: str  # "chirp" | "trill" | "harmonic" | "two_note" | "buzz" | "warble"
    interval: float
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The Kaggle 2020 ``"Scientific name_Common name"`` label."""
        return f"{self.sci_name}_{self.common_name}"

    @property
    def max_frequency(self) -> float:
        """The highest frequency (Hz) this species' calls reach before jitter."""
        top = max(v for k, v in self.params.items() if k.startswith("f_"))
        return top * len(self.params["harmonics"]) if self.call == "harmonic" else top


# The order matters: a dataset with n_species uses the first n.  Dominant
# pitches are spread so that no two species share one (±5% jitter included).
SYNTHETIC_SPECIES: list[SyntheticSpecies] = [
    SyntheticSpecies("synchi1", "Synthetic Chirper", "Synthetica chirpus", "chirp", 0.55,
                     {"f_start": 2200.0, "f_end": 3300.0, "duration": 0.16}),
    SyntheticSpecies("syntri1", "Synthetic Triller", "Synthetica trillans", "trill", 1.1,
                     {"f_note": 5200.0, "note": 0.018, "rate": 28.0, "duration": 0.6}),
    SyntheticSpecies("synhar1", "Synthetic Harmonist", "Synthetica harmonica", "harmonic", 0.9,
                     {"f_0": 1000.0, "harmonics": (1.0, 0.5, 0.3, 0.15), "duration": 0.4}),
    SyntheticSpecies("synwhi1", "Synthetic Whistler", "Synthetica bitonus", "two_note", 1.3,
                     {"f_first": 3800.0, "f_second": 3200.0, "note": 0.22, "gap": 0.06}),
    SyntheticSpecies("synbuz1", "Synthetic Buzzer", "Synthetica stridens", "buzz", 1.0,
                     {"f_low": 6200.0, "f_high": 7000.0, "am_rate": 55.0, "duration": 0.35}),
    SyntheticSpecies("synwar1", "Synthetic Warbler", "Synthetica modulata", "warble", 1.4,
                     {"f_center": 4400.0, "depth": 350.0, "mod_rate": 11.0, "duration": 0.8}),
    SyntheticSpecies("syndes1", "Synthetic Descender", "Synthetica descendens", "chirp", 0.7,
                     {"f_start": 2300.0, "f_end": 1600.0, "duration": 0.22}),
    SyntheticSpecies("synpip1", "Synthetic Piper", "Synthetica pipiens", "trill", 1.6,
                     {"f_note": 6000.0, "note": 0.05, "rate": 7.0, "duration": 0.9}),
]
_BY_CODE = {s.code: s for s in SYNTHETIC_SPECIES}


def species_names() -> dict[str, tuple[str, str]]:
    """Every synthetic species: code → (common name, scientific name)."""
    return {s.code: (s.common_name, s.sci_name) for s in SYNTHETIC_SPECIES}


def make_call(species_code: str, *, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A recording of one species: float32 (round(seconds * sample_rate),), peak <= 0.9.

    The species' calls repeat with jitter in timing (±25% of the interval),
    pitch (±5%) and amplitude, over white or pink-ish background noise at a
    random signal-to-noise ratio of 5-20 dB (powers over the whole clip).
    """
    calls = _calls(_species(species_code), seconds=seconds, sample_rate=sample_rate, rng=rng)
    return _finish(calls, rng)


def make_synthetic_dataset(out_dir: Path, *, n_species: int = 6, recordings_per_species: int = 10,
                           seconds: tuple[float, float] = (4.0, 10.0), sample_rate: int = 16000, seed: int = 0,
                           audio_format: str = "wav", layout: str = "kaggle2020",
                           secondary_prob: float = 0.0) -> Path:
    """Write a synthetic dataset into ``out_dir`` and return ``out_dir``.

    The first ``n_species`` of :data:`SYNTHETIC_SPECIES`, each with
    ``recordings_per_species`` recordings whose lengths are drawn uniformly
    from ``seconds`` (s).  Layout ``"kaggle2020"`` writes ``train.csv``;
    ``"birdclef"`` writes ``train_metadata.csv``; audio goes to
    ``train_audio/<code>/XC<xc_id>.<audio_format>`` (xc ids 100000, 100001, ...).
    With probability ``secondary_prob`` a recording also contains another
    species' calls mixed in quietly, listed in ``secondary_labels``.  Also
    writes ``README.txt``.  The same arguments give the same files.
    """
    if not 1 <= n_species <= len(SYNTHETIC_SPECIES):
        raise ValueError(f"n_species must be between 1 and {len(SYNTHETIC_SPECIES)}, got {n_species}")
    if recordings_per_species < 1:
        raise ValueError(f"recordings_per_species must be >= 1, got {recordings_per_species}")
    if audio_format not in FORMATS:
        raise ValueError(f"unknown audio_format {audio_format!r}; expected one of {', '.join(FORMATS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    lo, hi = seconds
    if not 0 < lo <= hi:
        raise ValueError(f"seconds must be (min, max) with 0 < min <= max, got {seconds}")
    chosen = SYNTHETIC_SPECIES[:n_species]
    for sp in chosen:
        _check_rate(sp, sample_rate)

    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    fmt, subtype = FORMATS[audio_format]
    rows = []
    xc_id = 100000
    for sp in chosen:
        folder = out_dir / "train_audio" / sp.code
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(recordings_per_species):
            length = float(rng.uniform(lo, hi))
            wave = _calls(sp, seconds=length, sample_rate=sample_rate, rng=rng)
            others = [o for o in chosen if o.code != sp.code]
            background = []
            if others and secondary_prob > 0 and rng.random() < secondary_prob:
                other = others[int(rng.integers(len(others)))]
                quiet = _calls(other, seconds=length, sample_rate=sample_rate, rng=rng)
                wave = wave + float(rng.uniform(0.15, 0.3)) * quiet
                background.append(other)
            wave = _finish(wave, rng)
            name = f"XC{xc_id}.{audio_format}"
            sf.write(folder / name, wave, sample_rate, format=fmt, subtype=subtype)
            rows.append(_row(sp, background, layout=layout, name=name, xc_id=xc_id,
                             duration=len(wave) / sample_rate, sample_rate=sample_rate,
                             rating=float(rng.choice([3.0, 3.5, 4.0, 4.5, 5.0]))))
            xc_id += 1
    csv = "train.csv" if layout == "kaggle2020" else "train_metadata.csv"
    pd.DataFrame(rows).to_csv(out_dir / csv, index=False)
    (out_dir / "README.txt").write_text(
        "SYNTHETIC DATA - not real bird recordings.\n\n"
        "Generated by birdcore.data.synthetic.make_synthetic_dataset "
        f"(n_species={n_species}, recordings_per_species={recordings_per_species}, seed={seed}, "
        f"format={audio_format}, layout={layout}).\n"
        "Species, names and xeno-canto numbers are made up; the calls are generated tones and noise.\n"
        "Licence: CC0.\n")
    return out_dir


def _row(sp: SyntheticSpecies, background: list[SyntheticSpecies], *, layout: str, name: str, xc_id: int,
         duration: float, sample_rate: int, rating: float) -> dict:
    """One metadata row in the chosen layout's columns."""
    if layout == "kaggle2020":
        return {
            "ebird_code": sp.code, "filename": name, "duration": round(duration, 3), "rating": rating,
            "channels": "1 (mono)", "sampling_rate": f"{sample_rate} (Hz)",
            "secondary_labels": repr([o.label for o in background]), "species": sp.common_name,
            "sci_name": sp.sci_name, "primary_label": sp.label, "type": "call", "xc_id": xc_id,
            "author": "birdclef synthetic", "license": "CC0",
        }
    return {
        "primary_label": sp.code, "secondary_labels": repr([o.code for o in background]), "type": "['call']",
        "scientific_name": sp.sci_name, "common_name": sp.common_name, "author": "birdclef synthetic",
        "license": "CC0", "rating": rating, "filename": f"{sp.code}/{name}",
    }


def _species(code: str) -> SyntheticSpecies:
    try:
        return _BY_CODE[code]
    except KeyError:
        raise ValueError(f"unknown synthetic species {code!r}; known: {', '.join(_BY_CODE)}") from None


def _check_rate(sp: SyntheticSpecies, sample_rate: int) -> None:
    if sp.max_frequency * 1.05 >= 0.95 * sample_rate / 2:
        raise ValueError(f"sample_rate {sample_rate} Hz is too low for {sp.code} (calls up to "
                         f"{sp.max_frequency:.0f} Hz); use at least {int(sp.max_frequency * 2.3)} Hz")


def _calls(sp: SyntheticSpecies, *, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Clean calls of ``sp`` (no noise): float64 (round(seconds * sample_rate),)."""
    _check_rate(sp, sample_rate)
    n = max(1, int(round(seconds * sample_rate)))
    out = np.zeros(n)
    start = float(rng.uniform(0.0, min(sp.interval, seconds) * 0.8))
    while start < seconds:
        note = _note(sp, sample_rate, pitch=float(rng.uniform(0.95, 1.05)), rng=rng)
        note *= float(rng.uniform(0.5, 1.0))
        i = int(start * sample_rate)
        m = min(len(note), n - i)
        out[i:i + m] += note[:m]
        start += sp.interval * float(rng.uniform(0.75, 1.25))
    return out


def _note(sp: SyntheticSpecies, sr: int, *, pitch: float, rng: np.random.Generator) -> np.ndarray:
    """One call of ``sp`` with its frequencies scaled by ``pitch``: float64 (samples,), peak about 1."""
    p = sp.params
    if sp.call == "chirp":
        t = _times(p["duration"], sr)
        freq = p["f_start"] * (p["f_end"] / p["f_start"]) ** (t / p["duration"])  # exponential sweep
        return _tone(freq * pitch, sr) * _envelope(len(t))
    if sp.call == "trill":
        period, n = int(sr / p["rate"]), len(_times(p["note"], sr))
        one = _tone(np.full(n, p["f_note"] * pitch), sr) * _envelope(n)
        out = np.zeros(int(p["duration"] * sr) + len(one))
        for k in range(int(p["duration"] * p["rate"])):
            out[k * period:k * period + len(one)] += one
        return out
    if sp.call == "harmonic":
        t = _times(p["duration"], sr)
        f0 = p["f_0"] * pitch * (1.0 - 0.08 * t / p["duration"])  # slight downward inflection
        stack = sum(a * _tone(f0 * (h + 1), sr) for h, a in enumerate(p["harmonics"]))
        return stack / sum(p["harmonics"]) * _envelope(len(t))
    if sp.call == "two_note":
        n = len(_times(p["note"], sr))
        first = _tone(np.full(n, p["f_first"] * pitch), sr) * _envelope(n)
        second = _tone(np.full(n, p["f_second"] * pitch), sr) * _envelope(n)
        return np.concatenate([first, np.zeros(int(p["gap"] * sr)), second])
    if sp.call == "buzz":
        t = _times(p["duration"], sr)
        band = _band_noise(len(t), sr, p["f_low"] * pitch, p["f_high"] * pitch, rng)
        am = 0.6 + 0.4 * np.sin(2 * np.pi * p["am_rate"] * t)
        return band * am * _envelope(len(t))
    if sp.call == "warble":
        t = _times(p["duration"], sr)
        phase0 = float(rng.uniform(0, 2 * np.pi))
        freq = p["f_center"] * pitch + p["depth"] * np.sin(2 * np.pi * p["mod_rate"] * t + phase0)
        return _tone(freq, sr) * _envelope(len(t))
    raise ValueError(f"unknown call type {sp.call!r}")


def _times(duration: float, sr: int) -> np.ndarray:
    return np.arange(max(2, int(duration * sr))) / sr


def _tone(freq: np.ndarray, sr: int) -> np.ndarray:
    """A sine whose instantaneous frequency (Hz) follows ``freq`` sample by sample."""
    return np.sin(2 * np.pi * np.cumsum(freq) / sr)


def _envelope(n: int, *, ramp: float = 0.2) -> np.ndarray:
    """A flat envelope with raised-cosine attack and decay over ``ramp`` of the length each."""
    k = max(1, int(n * ramp))
    env = np.ones(n)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k)
    env[:k] = rise
    env[n - k:] = np.minimum(env[n - k:], rise[::-1])
    return env


def _band_noise(n: int, sr: int, f_low: float, f_high: float, rng: np.random.Generator) -> np.ndarray:
    """White noise kept between ``f_low`` and ``f_high`` Hz, peak-normalised to 1: (n,)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spectrum[(freqs < f_low) | (freqs > f_high)] = 0
    out = np.fft.irfft(spectrum, n)
    return out / (np.abs(out).max() + 1e-12)


def _background(n: int, rng: np.random.Generator) -> np.ndarray:
    """White or pink-ish (power ~ 1/f above a low cut) noise with unit power: (n,)."""
    noise = rng.standard_normal(n)
    if rng.random() < 0.5:
        spectrum = np.fft.rfft(noise)
        scale = 1.0 / np.sqrt(np.maximum(np.arange(len(spectrum)), max(1, len(spectrum) // 200)))
        noise = np.fft.irfft(spectrum * scale, n)
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def _finish(calls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add background noise at a random 5-20 dB SNR and peak-normalise to <= 0.9: float32 (n,)."""
    power = float(np.mean(calls ** 2))
    snr_db = float(rng.uniform(5.0, 20.0))
    noise = _background(len(calls), rng) * np.sqrt(max(power, 1e-8) / 10 ** (snr_db / 10))
    wave = calls + noise
    peak = float(np.abs(wave).max())
    if peak > 0:
        wave = wave * (0.9 / peak) * float(rng.uniform(0.6, 1.0))
    return wave.astype(np.float32)


def make_synthetic_soundscapes(out_dir: Path, *, species: list[str], n_files: int = 2, seconds: float = 60.0,
                               sample_rate: int = 16000, call_prob: float = 0.3, seed: int = 0,
                               row_seconds: float = 5.0) -> dict:
    """Field-like soundscapes: calls of ``species`` placed in known 5 s rows over quiet noise.

    Writes ``out_dir/audio/SYN<k>_<date>.wav`` (the id a prefix of the name, as in the competition)
    and the labels in every format the soundscape evaluation reads:
    ``summary.csv`` (Cornell 2020 example_test_audio_summary), ``labels2021.csv`` (BirdCLEF 2021),
    ``test.csv`` (Cornell 2020 rows to predict) and ``raven/SYN<k>.Table.1.selections.txt``.
    A row holds at most one species; its calls stay inside the row.  Returns
    ``{"dir", "rows": [(file_id, end_s, species or None), ...]}``.
    """
    import soundfile as sf

    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    (out_dir / "raven").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    n_rows = int(seconds // row_seconds)
    rows, summary, labels21, test, = [], [], [], []
    for k in range(n_files):
        file_id = f"SYN{k + 1}"
        n = int(round(n_rows * row_seconds * sample_rate))
        wave = _background(n, rng) * 0.01
        selections = []
        for r in range(n_rows):
            code = str(rng.choice(species)) if rng.random() < call_prob else None
            if code is not None:
                length = row_seconds - 1.0
                call = _calls(_species(code), seconds=length, sample_rate=sample_rate, rng=rng)
                call = call / (np.abs(call).max() + 1e-12) * 0.5
                start = int((r * row_seconds + 0.5) * sample_rate)
                wave[start:start + len(call)] += call
                selections.append((r * row_seconds + 0.5, r * row_seconds + 0.5 + length, code))
            end = int((r + 1) * row_seconds)
            rows.append((file_id, end, code))
            summary.append(f"{file_id}_{end},{code or 'nocall'},{file_id},{end}")
            labels21.append(f"{file_id}_SYN_{end},SYN,{file_id},{end},{code or 'nocall'}")
            test.append(f"site_1,{file_id}_{end},{end},{file_id}")
        sf.write(out_dir / "audio" / f"{file_id}_20260601.wav", np.clip(wave, -1, 1).astype(np.float32), sample_rate)
        with open(out_dir / "raven" / f"{file_id}.Table.1.selections.txt", "w", encoding="utf-8") as fh:
            fh.write("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tSpecies\n")
            for i, (a, b, code) in enumerate(selections, start=1):
                fh.write(f"{i}\tSpectrogram 1\t1\t{a:.3f}\t{b:.3f}\t{code}\n")
    (out_dir / "summary.csv").write_text("filename_seconds,birds,filename,seconds\n" + "\n".join(summary) + "\n")
    (out_dir / "labels2021.csv").write_text("row_id,site,audio_id,seconds,birds\n" + "\n".join(labels21) + "\n")
    (out_dir / "test.csv").write_text("site,row_id,seconds,audio_id\n" + "\n".join(test) + "\n")
    return {"dir": out_dir, "rows": rows}
