"""Bottleneck extraction on a Ray cluster (Ray Data), into the shared feature cache.

The pipeline, over the distinct images the cache still lacks::

    from_items(path, key) -> map_batches(_decode_batch)            tasks: read bytes, check hash, decode, resize
                          -> map_batches(_Backbone, ActorPool)     one ONNX session per actor, writes the cache
                          -> iter_batches on the driver            keys and errors only: progress, failures

* The backbone runs under ONNX Runtime: converted once on the driver into the cache folder
  (``backbone.onnx``, the file the in-process path uses) and checked against Keras there, so
  workers never import TensorFlow. Each actor builds its session once, with as many threads as
  the CPUs it reserved.
* Each actor writes its features with :meth:`FeatureCache.put`, the in-process path's atomic
  writer, so a Ray-filled cache holds the very bytes the in-process path would write, and only
  keys travel back to the driver. The cache folder must therefore be a path every node sees
  and can write (NFS, a cluster filesystem); a node that cannot fails the run with a
  :class:`SharedCacheError` naming it. The images must be visible to every node too.
* Ray Data streams: its backpressure bounds the blocks in flight, so memory on every node
  stays at a few batches whatever the dataset size.
* Faults: a dead actor is restarted and its in-flight batches retried by Ray (Ray Data sets
  ``max_restarts=-1`` and ``max_task_retries=-1`` on its actors); a dead task is retried. A
  killed run leaves only complete, checksummed entries, so running again computes only what is
  missing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from transferlab.data.decode import ImageDecodeError, ResizeConfig
from transferlab.data.loader import background_pool
from transferlab.errors import ConfigError, MissingDependencyError, TransferlabError
from transferlab.features.cache import FeatureCache
from transferlab.features.extract import ENGINES, onnx_backbone
from transferlab.features.fill import FillResult, fill_cache, find_missing
from transferlab.progress import progress_bar

logger = logging.getLogger("transferlab")

# The Ray Data API used here: `map_batches(compute=ActorPoolStrategy(size=n), num_cpus=...)`.
# Ray 2.9-2.50 preferred `concurrency=` and warned on `compute=`; 2.51 went back to `compute=`
# and deprecated `concurrency=`. Kept in step with pyproject.toml's `ray` extra.
RAY_REQUIREMENT = "ray[data]>=2.51,<3"
RAY_MIN_VERSION = (2, 51)
INSTALL_HINT = 'pip install "transferlab[ray]"'

BATCH_SIZE = 16  # ONNX Runtime's best batch on CPU (see features/extract.py); also the unit of retry
BATCHES_PER_BLOCK = 4  # input block = one decode task: small, so a lost task costs little
DECODE_CPUS = 0.25  # CPUs reserved per decode task: decoding is ~1/4 of the work per image
BACKBONE_SHARE = 0.75  # of each node's CPUs, reserved by its backbone actor(s)
MAX_ACTOR_THREADS = 8  # ONNX Runtime scales poorly past ~8 threads at batch 16: more actors instead


SHARED_HINT = "--cache-dir must be a shared path that every Ray node mounts and can write"


class SharedCacheError(TransferlabError, OSError):
    """A Ray worker cannot read or write the feature cache: it must be on a path every node mounts."""


def import_ray():
    """``ray`` with Ray Data, or a :class:`MissingDependencyError` that says what to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra, not just Ray core
    except ImportError as exc:
        raise MissingDependencyError(f"--ray needs Ray Data ({RAY_REQUIREMENT}), which is not installed: "
                                     f"{INSTALL_HINT}, or run without --ray.") from exc
    version = tuple(int(part) for part in ray.__version__.split(".")[:2] if part.isdigit())
    if version < RAY_MIN_VERSION or version[0] >= 3:
        raise MissingDependencyError(f"Ray {ray.__version__} is installed; transferlab's --ray needs "
                                     f"{RAY_REQUIREMENT}: {INSTALL_HINT}.")
    return ray


@contextmanager
def ray_session(address: str | None = "auto") -> Iterator:
    """Connected to a Ray cluster for the block; disconnects only if it connected.

    Args:
        address: "auto" (the cluster in ``RAY_ADDRESS`` or started with ``ray start`` on this
            machine, else a new local one for this run), "local" (always a new local one), or a
            cluster address ("10.0.0.5:6379", "ray://head:10001"). Ignored when this process is
            already connected (``ray.init`` called by the caller).
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    address = address or "auto"
    try:
        if address == "auto":
            try:
                ray.init(address="auto", **quiet)
            except ConnectionError:  # no running cluster: one on this machine, for this run
                ray.init(address="local", include_dashboard=False, **quiet)
        elif address == "local":
            ray.init(address="local", include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except ConnectionError as exc:
        raise ConfigError(f"Cannot connect to the Ray cluster at {address!r} ({exc}). Start one (`ray start "
                          "--head`, `ray up`) or pass its address: --ray HOST:6379.") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class WorkerPlan:
    """How the work is laid out on the cluster."""

    nodes: int  # alive nodes with CPUs
    actors: int  # backbone actors (ONNX sessions)
    actor_cpus: float  # CPUs each actor reserves
    threads: int  # ONNX Runtime threads per actor
    decode_cpus: float  # CPUs each decode task reserves


def plan_workers(ray, actors: int | None = None, actor_cpus: float | None = None,
                 decode_cpus: float = DECODE_CPUS) -> WorkerPlan:
    """Default: on every node, 3/4 of its CPUs for backbone actors of at most 8 threads, the rest decodes."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    if not nodes:
        raise ConfigError("The Ray cluster has no node with CPUs for the backbone actors.")
    cpus = min(n["Resources"]["CPU"] for n in nodes)  # size actors to fit on the smallest node
    if actor_cpus is None:
        per_node = max(1, math.ceil(BACKBONE_SHARE * cpus / MAX_ACTOR_THREADS))
        actor_cpus = max(0.5, BACKBONE_SHARE * cpus / per_node)
        actors = actors or per_node * len(nodes)
    if actor_cpus <= 0 or decode_cpus <= 0:
        raise ConfigError(f"actor_cpus and decode_cpus must be > 0, got {actor_cpus!r} and {decode_cpus!r}.")
    # Every node keeps room for one decode task beside its actors, else the pipeline would stall.
    fits = int(sum(max(0.0, n["Resources"]["CPU"] - decode_cpus) // actor_cpus for n in nodes))
    actors = actors or fits
    if actors < 1 or actors > fits:
        raise ConfigError(f"{actors} backbone actor(s) of {actor_cpus:g} CPU do not fit on this cluster beside the "
                          f"decode tasks ({fits} fit on {len(nodes)} node(s)): lower --actors or --actor-cpus.")
    return WorkerPlan(len(nodes), actors, actor_cpus, max(1, math.ceil(actor_cpus)), decode_cpus)


def _where() -> str:
    return f"node {socket.gethostname()} (pid {os.getpid()})"


def _decode_batch(batch: dict, resize: ResizeConfig) -> dict:
    """Ray task: read each file, check its content hash, decode and resize; errors become strings."""
    def load() -> dict:
        images = np.zeros((len(batch["key"]), resize.size, resize.size, 3), np.uint8)
        errors = []
        for i, (path, key) in enumerate(zip(batch["path"], batch["key"])):
            try:
                data = Path(path).read_bytes()
                if hashlib.sha256(data).hexdigest() != key:  # never store features under a stale key
                    raise ImageDecodeError(path, "changed since the dataset was scanned; scan it again")
                images[i] = resize.load(data)
                errors.append("")
            except FileNotFoundError:
                errors.append(f"not found on {_where()}: the images must be on a path every node mounts")
            except (ImageDecodeError, OSError) as exc:
                errors.append(getattr(exc, "reason", None) or str(exc))
        return {"key": batch["key"], "path": batch["path"], "image": images, "error": np.array(errors, dtype=object)}

    # In a low-priority thread, as in the in-process loader: on a node shared with a backbone
    # actor, decoding fills the moments its ONNX threads wait instead of stalling them.
    with background_pool(1) as pool:
        return pool.submit(load).result()


class _Backbone:
    """Ray Data actor: one ONNX Runtime session, features written straight into the shared cache."""

    def __init__(self, onnx_path: str, cache_root: str, parts: dict, fingerprint: str, threads: int,
                 version: str):
        from transferlab import __version__
        from transferlab.runtimes.exported import OnnxRuntime

        if version != __version__:  # another decoder or resize could change features under the same key
            raise ConfigError(f"transferlab {__version__} on {_where()}, {version} on the driver: install the "
                              "same version on every node.")
        try:
            self.cache = FeatureCache(cache_root, parts)
            probe = self.cache.directory / f".probe-{socket.gethostname()}-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SharedCacheError(f"{_where()} cannot write the feature cache {cache_root} ({exc}): "
                                   f"{SHARED_HINT}.") from None
        if self.cache.fingerprint != fingerprint:
            raise ConfigError(f"Feature cache fingerprint differs on {_where()}: install the same transferlab on "
                              "every node.")
        if not Path(onnx_path).is_file():
            raise SharedCacheError(f"{_where()} does not see {onnx_path}: {SHARED_HINT}.")
        self.runtime = OnnxRuntime(onnx_path, threads=threads)

    def __call__(self, batch: dict) -> dict:
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        if ok.any():
            features = self.runtime(np.asarray(batch["image"][ok], dtype=np.float32))
            for key, vector in zip(batch["key"][ok], features):
                try:
                    self.cache.put(str(key), vector)
                except OSError as exc:
                    raise SharedCacheError(f"{_where()} cannot write the feature cache {self.cache.directory} "
                                           f"({exc}): {SHARED_HINT}.") from None
        return {"key": batch["key"], "path": batch["path"], "error": batch["error"]}


def _user_error(exc: BaseException) -> TransferlabError | None:
    """The TransferlabError a worker raised, unwrapped from Ray's exception chain."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, TransferlabError) and type(e).__module__.startswith("transferlab"):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


@contextmanager
def _quiet_ray_data(ray) -> Iterator:
    """Our progress bar instead of Ray Data's; its start/finish log lines at debug level only."""
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.raise_original_map_exception
    ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.raise_original_map_exception = False, False, True
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)
    try:
        yield ctx
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.raise_original_map_exception = saved
        data_logger.setLevel(level)


def fill_cache_ray(paths: Sequence[str], keys: Sequence[str], model, resize: ResizeConfig, cache: FeatureCache, *,
                   address: str | None = "auto", engine: str = "auto", batch_size: int = BATCH_SIZE,
                   actors: int | None = None, actor_cpus: float | None = None, decode_cpus: float = DECODE_CPUS,
                   show_progress: bool = True) -> FillResult:
    """Compute and cache the features of every image the cache lacks, on a Ray cluster.

    Same contract as :func:`transferlab.features.fill_cache` (the in-process path), and the
    same cache entries. Nothing is started when every image is cached already.

    Args:
        paths: image files (N,), on a path every node sees.
        keys: their content hashes, SHA-256 hex (N,).
        model: the Keras backbone, raw pixels (B, S, S, 3) -> (B, D); converted to ONNX here.
        resize: decode/resize settings (part of ``cache``'s fingerprint).
        cache: the feature cache; its folder must be shared by every node.
        address: the cluster, see :func:`ray_session` (default "auto").
        engine: "auto" or "onnx": the workers run ONNX Runtime. When the ONNX features differ
            from Keras (beyond 1e-4), the extraction runs in this process under Keras instead.
        batch_size: images per backbone call (default 16).
        actors: backbone actors (default: :func:`plan_workers`, one per node on small nodes).
        actor_cpus: CPUs each actor reserves; its ONNX Runtime threads = ceil(actor_cpus).
        decode_cpus: CPUs each decode task reserves (default 0.25).

    Returns:
        A :class:`~transferlab.features.FillResult` with ``backend="ray"``.

    Raises:
        MissingDependencyError: Ray Data is not installed.
        SharedCacheError: a node cannot write the cache folder.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}.")
    if engine == "keras":
        raise ConfigError("--ray runs the backbone under ONNX Runtime on the workers; --engine keras runs only in "
                          "this process (drop --ray or --engine keras).")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}.")
    import_ray()  # fail before any work when the extra is missing
    dim = int(model.output_shape[-1])
    corrupt_before = cache.corrupt_entries
    todo_paths, todo_keys, distinct, hits = find_missing(paths, keys, cache, dim)
    result = FillResult(images=len(paths), distinct=distinct, hits=hits, backend="ray",
                        cache_dir=str(cache.directory), corrupt_entries=cache.corrupt_entries - corrupt_before)
    if not todo_paths:
        return result
    try:
        runner = onnx_backbone(model, cache, resize, todo_paths[:batch_size])
    except Exception as exc:  # noqa: BLE001 - a backbone ONNX cannot express runs under Keras, here
        if engine == "onnx":
            raise
        logger.warning("The backbone cannot be converted to ONNX (%s: %s).", type(exc).__name__, exc)
        runner = None
    if runner is None:
        logger.warning("The Ray workers need the backbone under ONNX Runtime, matching Keras within 1e-4: "
                       "extracting in this process under Keras instead.")
        return fill_cache(paths, keys, model, resize, cache, engine="keras", show_progress=show_progress)
    logger.info("Feature cache: %d distinct images, %d cached, %d to compute on Ray (%s)", distinct, hits,
                len(todo_paths), cache.directory)
    from transferlab import __version__

    start = time.perf_counter()
    with ray_session(address) as ray, _quiet_ray_data(ray):
        plan = plan_workers(ray, actors, actor_cpus, decode_cpus)
        result.nodes, result.workers, result.engine = plan.nodes, plan.actors, "onnx"
        logger.info("Ray: %d node(s), %d backbone actor(s) x %g CPU (%d threads), decode tasks %g CPU", plan.nodes,
                    plan.actors, plan.actor_cpus, plan.threads, plan.decode_cpus)
        items = [{"path": p, "key": k} for p, k in zip(todo_paths, todo_keys)]
        blocks = max(1, math.ceil(len(items) / (batch_size * BATCHES_PER_BLOCK)))
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        ds = ds.map_batches(_decode_batch, fn_kwargs={"resize": resize}, batch_size=batch_size,
                            batch_format="numpy", num_cpus=plan.decode_cpus)
        # Ray core logs one "constructor arguments in the object store" line per actor here: Ray
        # Data keeps the UDF there (ray#53727); harmless, restarts of killed actors are tested.
        ds = ds.map_batches(_Backbone, fn_constructor_kwargs={
            "onnx_path": str(runner.path), "cache_root": str(cache.root), "parts": cache.parts,
            "fingerprint": cache.fingerprint, "threads": plan.threads, "version": __version__},
            compute=ray.data.ActorPoolStrategy(size=plan.actors), num_cpus=plan.actor_cpus,
            batch_size=batch_size, batch_format="numpy")
        first_at = None
        with progress_bar(total=len(items), desc="Extracting features (Ray)", unit="img",
                          enabled=show_progress) as bar:
            try:
                for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    first_at = first_at or time.perf_counter()
                    for path, error in zip(out["path"], out["error"]):
                        if error:
                            result.failed[str(path)] = str(error)
                            logger.warning("skipped %s: %s", path, error)
                    bar.update(len(out["key"]))
            except Exception as exc:  # noqa: BLE001 - a worker's user-facing error, unwrapped
                user = _user_error(exc)
                if user is not None:
                    raise user from None
                raise
    result.seconds = time.perf_counter() - start
    result.startup_seconds = (first_at or time.perf_counter()) - start
    result.misses = len(items) - len(result.failed)
    return result
