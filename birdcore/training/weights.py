"""The backbone's starting weights, checked before any data is decoded (``train.check_inputs``).

``model.weights`` is ``imagenet``, ``none`` or a weights file.  InceptionV3's ImageNet weights come
from the internet the first time (Keras keeps them in ``$KERAS_HOME/models``, ``~/.keras/models`` by
default); without internet the job used to learn so only when it built the model, after decoding the
whole dataset (hours on Cornell).  ``check_weights`` fetches them (or finds them in Keras's cache) up
front, and checks that a weights file is there and is one Keras loads, each failure one line.
"""
from __future__ import annotations

import logging
import os
import socket
import zipfile
from pathlib import Path

from birdcore.models.keras_audio.model import WeightsUnavailable

log = logging.getLogger("birdcore")

# What keras.applications.InceptionV3(include_top=False, weights="imagenet") fetches: the same name in the
# same cache folder and the same hash, so the model build later finds this file and downloads nothing
# (tests/test_train_job_input.py checks these against Keras's source).  The URL is read from Keras at call time.
NOTOP_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
NOTOP_HASH = "bcbd6486424b2319ff4ef7d526e38f63"
NOTOP_MB = 87
DOWNLOAD_TIMEOUT_S = 30  # per network operation (connect, each read), not for the whole download
OFFLINE_CHOICES = ("use --weights none (InceptionV3 from scratch), --weights FILE (a local InceptionV3 "
                   f"'notop' weights file such as {NOTOP_FILE}), or --backbone birdnet (works offline)")


def check_weights(cfg) -> Path | None:
    """Make sure the starting weights ``cfg.model.weights`` of the backbone ``cfg.model.backbone`` can
    be had; returns the weights file (None where none is loaded).  Backbones that take no such
    setting (BirdNET's) pass.  Raises ``WeightsUnavailable`` with a one-line message."""
    backbone, weights = cfg.model.backbone, str(cfg.model.weights or "none")
    if backbone == "small_cnn":
        if weights != "none":
            raise WeightsUnavailable(f"--backbone small_cnn is trained from scratch and loads no weights "
                                     f"(model.weights is {weights!r}): give --weights none")
        return None
    if backbone != "inception_v3" or weights == "none":
        return None
    if weights == "imagenet":
        return fetch_imagenet_weights()
    return check_weights_file(Path(weights))


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models`` (as Keras read it when imported)
    or ``~/.keras/models``."""
    from keras.src.backend import config

    return Path(os.path.expanduser(config.keras_home())) / "models"


def fetch_imagenet_weights() -> Path:
    """The InceptionV3 "notop" ImageNet weights file, from Keras's cache or downloaded into it
    (checked against its hash either way); ``WeightsUnavailable`` in one line when it cannot be had."""
    from keras.src.applications import inception_v3
    from keras.src.utils import file_utils

    cached = keras_cache_dir() / NOTOP_FILE
    if cached.is_file():
        log.debug("ImageNet weights of InceptionV3: %s", cached)
    else:
        log.info("downloading the ImageNet weights of InceptionV3 (%d MB, once; kept in %s)", NOTOP_MB,
                 cached.parent)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urlretrieve has no timeout of its own: a dead link must not hang
    try:
        path = file_utils.get_file(NOTOP_FILE, inception_v3.WEIGHTS_PATH_NO_TOP, cache_subdir="models",
                                   file_hash=NOTOP_HASH)
    except Exception as exc:  # URL errors, timeouts, a hash mismatch, a read-only cache
        url = inception_v3.WEIGHTS_PATH_NO_TOP
        reason = " ".join((str(exc) if type(exc) is Exception else f"{type(exc).__name__}: {exc}").split())
        raise WeightsUnavailable(f"could not download InceptionV3's ImageNet weights into {cached.parent} "
                                 f"({reason if url in reason else f'{url}: {reason}'}; no internet access?): "
                                 f"{OFFLINE_CHOICES}") from None
    finally:
        socket.setdefaulttimeout(previous)
    return Path(path)


def check_weights_file(path: Path) -> Path:
    """``path`` is a weights file Keras loads: an HDF5 file (``.h5``, ``.hdf5``, ``.weights.h5``) or a
    ``.keras`` archive holding weights.  Only the file is checked, not that it fits the model."""
    if not path.exists():
        raise WeightsUnavailable(f"--weights {path}: no such file (imagenet, none, or an InceptionV3 'notop' "
                                 "weights file)")
    if not path.is_file():
        raise WeightsUnavailable(f"--weights {path}: not a file")
    name = path.name.lower()
    if name.endswith(".keras"):
        try:
            with zipfile.ZipFile(path) as archive:
                holds_weights = any(n.endswith(".weights.h5") for n in archive.namelist())
        except (OSError, zipfile.BadZipFile) as exc:
            raise WeightsUnavailable(f"--weights {path}: not a .keras file ({' '.join(str(exc).split())})") from None
        if not holds_weights:
            raise WeightsUnavailable(f"--weights {path}: this .keras file holds no weights")
        return path
    if not name.endswith((".h5", ".hdf5")):
        raise WeightsUnavailable(f"--weights {path}: Keras loads weights from .h5/.hdf5 (HDF5) or .keras files, "
                                 f"not {path.suffix or 'a file without an extension'}")
    try:
        import h5py

        if not h5py.is_hdf5(path):
            raise WeightsUnavailable(f"--weights {path}: not an HDF5 weights file")
        with h5py.File(path, "r"):
            pass
    except WeightsUnavailable:
        raise
    except Exception as exc:  # truncated (an interrupted copy), damaged, unreadable
        raise WeightsUnavailable(f"--weights {path}: an HDF5 file that cannot be read "
                                 f"({' '.join(str(exc).split())})") from None
    return path
