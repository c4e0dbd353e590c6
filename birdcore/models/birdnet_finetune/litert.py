"""Serving a fine-tuned BirdNET run on LiteRT, without Keras or TensorFlow in the process.

A fine-tuned run's ``model.keras`` is BirdNET's front (frozen), its last N blocks (trained) and the
head (``network.whole_model``).  On LiteRT (the default engine on a CPU) the run scores as a head
run does (``birdnet_head.inference.BirdNETHeadScorer``): BirdNET's TFLite model, here with the
trained blocks' weights written in (``birdnet.tflite_weights.with_weights``), gives each 3 s
window's logits and embedding; BirdNET's frozen class layer gives the prior logits (``PriorLogits``
= ``birdnet_head.embeddings.features``); the head runs in NumPy (``NumpyHead``).  Everything is read
from ``model.keras`` with h5py.

``read_litert_model`` returns None, and the run is served by Keras as before, when the saved network
is not that: a front whose weights are not those of the installed BirdNET file, layers BirdNET does
not have, or a head ``NumpyHead`` cannot evaluate.

The result carries BirdNET's licence, CC BY-NC-SA 4.0 (``runtime.LICENSE_NOTE``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdcore.models.birdnet_finetune.names import FRONT, HEAD, TAIL
from birdcore.models.birdnet_head.inference import NumpyHead, numpy_head_from, open_keras_file, weight_groups

log = logging.getLogger(__name__)
_WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Dense", "Affine")
_TAIL_EXTRAS = {"activations": "InputLayer", "cut": "Reshape", "GLOBAL_AVG_POOL": "GlobalAveragePooling2D",
                "prior_logits": "PriorLogits", "head_input": "Concatenate"}


@dataclass
class LiteRTFineTuned:
    """A fine-tuned run ready for LiteRT: ``tflite`` (BirdNET with the trained blocks, flatbuffer
    bytes), ``head`` (the run's head in NumPy), ``sources`` (BirdNET columns of each species' prior
    logit, None without the prior) and ``trained`` (the layers whose weights were written)."""

    tflite: bytes
    head: NumpyHead
    sources: list[list[int]] | None
    trained: list[str]


def _part(top: list[dict], groups: dict[str, str], weights, name: str):
    """(layers, var) of the nested functional model ``name``: its config's layers and a reader
    ``var(layer name, index)`` of its weights."""
    entry = next((layer for layer in top if layer["config"]["name"] == name), None)
    if entry is None or entry["class_name"] != "Functional":
        raise KeyError(name)
    layers = entry["config"]["layers"]
    inner = weight_groups(layers)
    return layers, lambda layer, i: np.asarray(weights[f"layers/{groups[name]}/layers/{inner[layer]}/vars/{i}"])


def _arrays(var, name: str) -> list[np.ndarray]:
    """All saved weight arrays of layer ``name`` (``get_weights`` order), read by ``var``."""
    arrays = []
    while True:
        try:
            arrays.append(var(name, len(arrays)))
        except KeyError:
            return arrays


def _layer_weights(layers: list[dict], var) -> dict[str, list[np.ndarray]]:
    """Name → arrays (``get_weights`` order) of the layers of BirdNET's kinds that hold weights."""
    return {layer["config"]["name"]: _arrays(var, layer["config"]["name"])
            for layer in layers if layer["class_name"] in _WEIGHTED}


def _spectrograms(layers: list[dict], var) -> dict[str, tuple[dict, list[np.ndarray]]]:
    """Name → (config, weight arrays in the layer's order) of the ``BirdNETSpectrogram`` layers."""
    out = {}
    for layer in layers:
        if layer["class_name"] == "BirdNETSpectrogram":
            name = layer["config"]["name"]
            out[name] = (layer["config"], _arrays(var, name))
    return out


def _differing_spectrograms(saved: dict[str, tuple[dict, list[np.ndarray]]], g) -> str | None:
    """The first saved spectrogram branch whose settings or weights are not what the converter makes
    of the installed BirdNET file (``keras_model.spectrogram_weights``): a front converted from
    another file or by another converter version, whose spectrogram LiteRT would not reproduce;
    None when both branches agree."""
    from birdcore.models.birdnet.keras_model import SPECTROGRAM_WEIGHTS, spectrogram_weights

    for branch in ("MEL_SPEC1", "MEL_SPEC2"):
        if branch not in saved:
            return f"{branch} missing"
        config, arrays = saved[branch]
        want_config, want = spectrogram_weights(g, branch)
        if any(config.get(k) != v for k, v in want_config.items()):
            return branch
        # within 2 float32 ulps: the converter's float64 products may round differently on another BLAS
        if len(arrays) != len(SPECTROGRAM_WEIGHTS) or not all(
                a.shape == want[k].shape and np.allclose(a, want[k], rtol=2.5e-7, atol=0)
                for a, k in zip(arrays, SPECTROGRAM_WEIGHTS)):
            return branch
    return None


FORMAT = 1  # of the built TFLite model: part of its cache key, raised whenever tflite_weights changes
KEEP = 4  # built models kept in the cache (~52 MB each); rebuilding one takes about 1 s


def cached_path(path: Path, cache_dir: Path | None = None) -> Path:
    """Where the TFLite model built from the network in ``path`` is kept:
    ``<cache>/birdnet/finetuned/<model.keras hash>_<BirdNET file hash>_f<FORMAT>.tflite`` (SHA-256,
    16 digits).  One file (BirdNET's size, ~52 MB) per fine-tuned network served; only the ``KEEP``
    most recently used are kept (``_keep``)."""
    import hashlib

    from birdcore.data.cache import default_cache_dir
    from birdcore.models.birdnet.keras_model import model_hash

    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / "birdnet" / "finetuned" / f"{digest}_{model_hash()}_f{FORMAT}.tflite"


def _read_cached(path: Path) -> bytes | None:
    """A cached TFLite model's bytes, None when absent, unreadable or not a TFLite file."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if data[4:8] == b"TFL3" else None


def read_litert_model(path: Path, *, cache_dir: Path | None = None) -> LiteRTFineTuned | None:
    """The fine-tuned network saved in ``path`` (a run's ``model.keras``) for LiteRT, or None when it
    cannot be served that way (then Keras serves it; the reason is logged).  Building the TFLite
    model takes about 1 s; it is kept in the cache (``cached_path``; skipped where the cache cannot
    be written) for the next process.  Needs BirdNET's file and LiteRT (``runtime.birdnet_available``)."""
    from birdcore.models.birdnet.tflite_graph import plan, read_graph
    from birdcore.models.birdnet.tflite_weights import differing_layers, with_weights

    def refuse(reason: str) -> None:
        log.info("%s: served by Keras, not LiteRT: %s", path, reason)

    cached = cached_path(path, cache_dir)
    with open_keras_file(Path(path)) as (config, weights):
        top = config.get("config", {}).get("layers", [])
        groups = weight_groups(top)
        try:
            front_layers, front_var = _part(top, groups, weights, FRONT)
            tail_layers, tail_var = _part(top, groups, weights, TAIL)
            head_layers, head_var = _part(top, groups, weights, HEAD)
        except KeyError as missing:
            return refuse(f"no part {missing} in the saved network")
        head = numpy_head_from(head_layers, head_var)
        if head is None:
            return refuse("its head is not build_head's with float32 variables")
        prior = next((layer for layer in tail_layers if layer["class_name"] == "PriorLogits"), None)
        if (prior is not None) != (head.prior_scale is not None):
            return refuse("the prior logits and the head's prior weights do not go together")
        sources = None if prior is None else [[int(c) for c in s] for s in prior["config"]["sources"]]
        trained = sorted(layer["config"]["name"] for layer in tail_layers if layer["class_name"] in _WEIGHTED)
        built = _read_cached(cached)
        if built is not None:
            _touch(cached)
            return LiteRTFineTuned(tflite=built, head=head, sources=sources, trained=trained)
        front = _layer_weights(front_layers, front_var)
        spectrograms = _spectrograms(front_layers, front_var)
        tail = _layer_weights(tail_layers, tail_var)
    g = read_graph()
    birdnet_layers = {name for s in plan(g) for name in (s.layer, s.act) if name}
    extras = {layer["config"]["name"]: layer["class_name"] for layer in tail_layers
              if layer["config"]["name"] not in birdnet_layers}
    odd = sorted(name for name, kind in extras.items() if _TAIL_EXTRAS.get(name) != kind)
    if odd:
        return refuse(f"layers BirdNET does not have: {', '.join(odd[:5])}")
    odd = _differing_spectrograms(spectrograms, g)
    if odd:
        return refuse(f"its spectrogram layers are not those of the installed BirdNET file and this converter "
                      f"({odd})")
    try:
        differ = differing_layers(front, g)
        if differ:
            return refuse(f"its frozen part differs from the installed BirdNET file ({differ[0]}...)")
        tflite = with_weights(tail, g)
    except ValueError as exc:
        return refuse(str(exc))
    _keep(cached, tflite)
    return LiteRTFineTuned(tflite=tflite, head=head, sources=sources, trained=trained)


def _keep(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, then remove all but the ``KEEP`` most recently used
    built models beside it (by modification time, which a cache hit renews); nothing when the cache
    cannot be written."""
    from birdcore.io.atomic import replacing

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path, suffix=".tflite") as tmp:
            tmp.write_bytes(data)
    except OSError:
        return
    _prune(path.parent, keep=KEEP)


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _prune(folder: Path, *, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest ``*.tflite`` files in ``folder`` (not the hidden temporary
    files of writes in progress); returns those removed.  Another process removing the same file
    first is not an error."""
    def age(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return float("-inf")

    built = sorted((p for p in folder.glob("*.tflite") if not p.name.startswith(".")), key=age, reverse=True)
    removed = []
    for old in built[keep:]:
        try:
            old.unlink()
            removed.append(old)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.info("%s: not removed from the cache: %s", old, exc)
    if removed:
        log.info("removed %d built model(s) from %s (keeping the %d most recently used)", len(removed), folder, keep)
    return removed
