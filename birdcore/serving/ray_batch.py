"""Batch scoring on a Ray cluster (Ray Data): a dataset of file paths, ``map_batches`` over a pool of
actors, each holding one loaded model (``serving.batch.FileScorer``: the run's scorer, BirdNET on
LiteRT or Keras, a head, a fine-tuned run), results streamed back to the driver file by file.

The driver writes the outputs and their journal (``detections.ResultsCsv``), as scoring in one process
does, so a killed driver resumes from the journal; Ray Data restarts an actor that dies and retries
its file (actors run with ``max_restarts=-1`` and ``max_task_retries=-1``), and the file is written
once, because only the driver writes.  An actor sends back one file's detections and top species
(a few kB), never its segment scores.

``--cluster local`` starts Ray on this machine (or joins the Ray this process already runs: tests share
one); an address (``HOST:PORT`` of a head started with ``ray start --head``, or ``ray://HOST:10001``)
joins a running cluster, whose nodes need birdclef's dependencies installed; birdcore itself is
shipped with the job (Ray's ``py_modules``), so the nodes run the driver's code.
"""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Iterator

import numpy as np

from birdcore.serving.batch import BatchSettings, FileOutcome, FileScorer

log = logging.getLogger("birdcore")

LOCAL = "local"
FAULT_ENV = "BIRDCLEF_FAULT_KILL_ACTOR"  # "MARKER:SUBSTRING": an actor exits on the first file containing
# SUBSTRING while MARKER does not exist (creating it first): fault injection for the retry test


def connect(cluster: str, *, verbose: bool = False) -> None:
    """Start (``"local"``) or join (an address) a Ray cluster for this process; no-op when Ray is
    already initialised here.  ValueError (one line) when the address cannot be reached."""
    import sys

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        _quiet_ray_data(verbose)
        return
    if cluster != LOCAL:  # before Ray is imported: it reads its settings (RAY_AUTH_MODE) then
        _check_reachable(cluster)
        _use_token_if_any()
    if not verbose:  # Ray's start-up notes (its token authentication, C++ warnings) only with -v
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        logging.getLogger("ray").setLevel(logging.ERROR)
    package = Path(__file__).resolve().parents[1]  # birdcore/
    runtime_env = {"py_modules": [str(package)]} if cluster != LOCAL else {
        "env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (str(package.parent), os.environ.get("PYTHONPATH"))
                                                   if p)}}
    if os.environ.get(FAULT_ENV):
        runtime_env.setdefault("env_vars", {})[FAULT_ENV] = os.environ[FAULT_ENV]
    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR,
             "include_dashboard": False}
    import ray

    from birdcore.io.native_stderr import quiet_native_stderr

    try:
        with quiet_native_stderr():  # the C++ core's start-up lines (logged with -v)
            ray.init(address=cluster, runtime_env=runtime_env, **quiet)  # Ray's "local" starts a new one here
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ValueError(f"--cluster {cluster}: cannot connect to a Ray cluster there ({exc}); start one with "
                         "`ray start --head` and give its address (HOST:6379 or ray://HOST:10001); a head with token "
                         "authentication needs its token here: RAY_AUTH_TOKEN=$(ray get-auth-token) on the head") from None
    _quiet_ray_data(verbose)


def _use_token_if_any() -> None:
    """Send Ray's authentication token to a running cluster when this machine has one (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, which ``ray start --head`` makes): Ray 2.60 turns
    token authentication on for a head started on its own machine, but a driver joining an address does
    not send the token unless ``RAY_AUTH_MODE=token``.  An explicit ``RAY_AUTH_MODE`` is left alone."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
            (Path.home() / ".ray" / "auth_token").is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def _check_reachable(address: str, *, timeout: float = 10.0) -> None:
    """ValueError (one line) unless something listens at the address's host and port: ``ray.init`` would
    otherwise wait a minute or more for a head that is not there."""
    import socket

    text = address.split("://", 1)[-1]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--cluster {address}: expected 'local', HOST:PORT (e.g. 10.0.0.5:6379) or ray://HOST:10001")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ValueError(f"--cluster {address}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
                         "`ray start --head` and give its address (HOST:6379 or ray://HOST:10001)") from None


def _quiet_ray_data(verbose: bool) -> None:
    """Ray Data's own progress bars and per-operator log lines off (the batch logs its own progress)."""
    from ray.data import DataContext

    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = verbose


def cluster_cpus() -> int:
    """CPUs the connected cluster has in all."""
    import ray

    return int(ray.cluster_resources().get("CPU", 1))


def check_resources(cpus: float, gpus: float) -> None:
    """ValueError (one line) when no node of the cluster has the CPUs and GPUs one actor asks for: Ray
    would wait for such a node for ever, and the job would hang without a word."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        return
    def describe(resources: dict) -> str:
        gpus_there = resources.get("GPU", 0)
        return f"{resources.get('CPU', 0):g} CPU" + (f" + {gpus_there:g} GPU" if gpus_there else "")

    have = ", ".join(describe(r) for r in nodes) or "no node"
    raise ValueError(f"an actor asks for {cpus:g} CPU(s)" + (f" and {gpus:g} GPU(s)" if gpus else "") +
                     f" (--cpus-per-actor/--gpus-per-actor), but no node of the cluster has that ({have})")


class ScoringActor:
    """One Ray actor: the model loaded once, then one file per call (``map_batches`` with batch size 1)."""

    def __init__(self, settings: BatchSettings):
        logging.getLogger("birdcore").setLevel(logging.WARNING)
        threads = str(settings.threads or 1)  # read by TensorFlow when a run needs it (not BirdNET on LiteRT)
        os.environ["TF_NUM_INTRAOP_THREADS"], os.environ["TF_NUM_INTEROP_THREADS"] = threads, "1"
        self.scorer = FileScorer(settings)

    def __call__(self, batch: dict) -> dict:
        out = []
        for path in batch["path"]:
            _maybe_fail(str(path))
            out.append(pickle.dumps(self.scorer.score(str(path)), protocol=pickle.HIGHEST_PROTOCOL))
        return {"outcome": np.array(out, dtype=object)}


def _bound(settings: BatchSettings) -> type:
    """``ScoringActor`` with ``settings`` built in: the class travels to the actors with its settings (a
    few hundred bytes), instead of constructor arguments kept in the object store for restarts."""

    class BoundScoringActor(ScoringActor):
        def __init__(self):
            super().__init__(settings)

    return BoundScoringActor


def _maybe_fail(path: str) -> None:
    """Fault injection (``FAULT_ENV``): exit this actor's process once, on the first matching file."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    marker, _, pattern = spec.partition(":")
    if pattern in path and not os.path.exists(marker):
        Path(marker).write_text(path)
        os._exit(1)


def score_on_ray(settings: BatchSettings, files: list[str], *, actors: int | None = None,
                 cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0) -> Iterator[FileOutcome]:
    """``FileOutcome`` of each of ``files``, in the order they finish, scored by ``actors`` actors
    (default: as many as the cluster's CPUs allow) with ``cpus_per_actor`` CPUs (and compute threads)
    and ``gpus_per_actor`` GPUs each.  The cluster must be connected (``connect``)."""
    import ray.data

    if not files:
        return
    check_resources(cpus_per_actor, gpus_per_actor)
    if actors is None:
        actors = max(1, int(cluster_cpus() // max(cpus_per_actor, 1e-9)))
    actors = max(1, min(int(actors), len(files)))
    threads = max(1, int(round(cpus_per_actor)))
    actor_settings = BatchSettings(**{**settings.__dict__, "threads": threads})
    blocks = min(len(files), max(actors * 4, len(files) // 50 or 1, 1))
    dataset = ray.data.from_items([{"path": f} for f in files], override_num_blocks=blocks)
    kwargs = {"num_gpus": gpus_per_actor} if gpus_per_actor else {}
    scored = dataset.map_batches(_bound(actor_settings), batch_size=1,
                                 compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor,
                                 zero_copy_batch=True, **kwargs)
    for batch in scored.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
        for blob in batch["outcome"]:
            yield pickle.loads(blob)
