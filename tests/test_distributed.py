"""Feature extraction on a real two-node Ray cluster (127.0.0.1): same cache as in-process, faults survived.

One cluster (a head and a second node, one CPU each) serves the whole module and is always shut
down by the fixture's finalizer; every Ray run is bounded by a timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import ray  # the `ray` extra is part of `dev`: CI installs it

from conftest import make_class_folders
from helpers import save_tiny_cnn
from transferlab.data import load_dataset
from transferlab.distributed import SharedCacheError, fill_cache_ray
from transferlab.distributed.ray_extract import BATCHES_PER_BLOCK
from transferlab.features import FeatureCache, feature_cache_for, fill_cache, resize_for

RUN_TIMEOUT_S = 240  # a Ray run here takes seconds; minutes only on a heavily shared machine
IMAGES = 240


def bounded(fn, *args, timeout: float = RUN_TIMEOUT_S, **kwargs):
    """``fn(*args, **kwargs)``, failing the test (not hanging it) after ``timeout`` seconds."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args, **kwargs).result(timeout=timeout)
    finally:
        pool.shutdown(wait=False)


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                      "gcs_server_port": 0})
    try:
        c.add_node(num_cpus=1)
        c.wait_for_nodes(timeout=120)
        ray.init(address=c.address, logging_level="WARNING")
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny backbone, 240 small images and their features computed in this process (the reference)."""
    from transferlab.backbones import resolve_backbone

    root = tmp_path_factory.mktemp("ray")
    model, info = resolve_backbone(str(save_tiny_cnn(root / "tiny.keras")))
    data = make_class_folders(root / "data", {"a": IMAGES // 2, "b": IMAGES // 2}, size=96)
    dataset = load_dataset(data, show_progress=False)
    paths, keys = [r.path for r in dataset.records], [r.sha256 for r in dataset.records]
    resize = resize_for(info)
    reference = feature_cache_for(info, resize, root / "in-process")
    filled = fill_cache(paths, keys, model, resize, reference, show_progress=False)
    assert (filled.misses, filled.engine) == (IMAGES, "onnx")
    return root, model, info, resize, paths, keys, reference, data


def entries(cache) -> dict[str, Path]:
    return {p.stem: p for p in cache.directory.rglob("*.feat")}


def assert_same_as_reference(cache, reference, keys):
    cache = FeatureCache(cache.root, cache.parts)  # a fresh reader: counts only what is corrupt now
    assert sorted(entries(cache)) == sorted(entries(reference)) == sorted(set(keys))
    for key in keys:
        ours, theirs = cache.get(key), reference.get(key)
        assert ours is not None, key  # present and its checksum verifies
        assert float(np.max(np.abs(ours - theirs))) <= 1e-6, key
    assert cache.corrupt_entries == 0


def test_ray_fills_the_cache_the_in_process_path_fills(cluster, setup, tmp_path):
    _, model, info, resize, paths, keys, reference, _ = setup
    cache = feature_cache_for(info, resize, tmp_path)
    result = bounded(fill_cache_ray, paths, keys, model, resize, cache, show_progress=False)
    assert (result.backend, result.engine, result.nodes, result.workers) == ("ray", "onnx", 2, 2)
    assert (result.images, result.hits, result.misses, result.failed) == (IMAGES, 0, IMAGES, {})
    assert_same_as_reference(cache, reference, keys)
    # Written by the cache's own writer: the very bytes of the in-process entries.
    same = sum(p.read_bytes() == entries(reference)[k].read_bytes() for k, p in entries(cache).items())
    assert same == IMAGES
    again = fill_cache_ray(paths, keys, model, resize, cache, show_progress=False)
    assert (again.hits, again.misses, again.seconds) == (IMAGES, 0, 0.0)  # nothing to do: Ray not even used


def test_a_restarted_run_computes_only_what_is_missing_and_trusts_no_broken_entry(cluster, setup, tmp_path):
    _, model, info, resize, paths, keys, reference, _ = setup
    cache = feature_cache_for(info, resize, tmp_path)
    half = IMAGES // 2  # what a killed earlier run had finished
    fill_cache(paths[:half], keys[:half], model, resize, cache, show_progress=False)
    torn, flipped = cache.entry_path(keys[0]), cache.entry_path(keys[1])
    torn.write_bytes(torn.read_bytes()[:20])  # as if cut short (the atomic writer never leaves this)
    data = bytearray(flipped.read_bytes())
    data[10] ^= 0x01
    flipped.write_bytes(bytes(data))
    (cache.directory / keys[2][:2] / f".tmp-x1y2-{keys[2]}.feat.part").write_bytes(b"half")  # a killed writer's temp file
    result = bounded(fill_cache_ray, paths, keys, model, resize, cache, show_progress=False)
    assert (result.hits, result.misses, result.corrupt_entries) == (half - 2, IMAGES - half + 2, 2)
    assert_same_as_reference(cache, reference, keys)


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])  # the field after the (command name) and the state


def _actor_pids() -> set[int]:
    """Processes of this cluster's backbone actors (Ray titles them after the actor class).

    Only descendants of this test process (its nodes' raylets start the workers): a cluster of
    another test process on the same machine is left alone.
    """
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or b"_Backbone" not in (proc / "cmdline").read_bytes():
                continue
            pid = ancestor = int(proc.name)
            while ancestor > 1 and ancestor != os.getpid():
                ancestor = _parent(ancestor)
            if ancestor == os.getpid() and pid != os.getpid():
                pids.add(pid)
        except (OSError, ValueError, IndexError):
            continue
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the actor's process through /proc")
def test_a_killed_worker_costs_only_its_in_flight_batches(cluster, setup, tmp_path):
    _, model, info, resize, paths, keys, reference, _ = setup
    cache = feature_cache_for(info, resize, tmp_path)
    batch = 2  # small batches: many of them, so the kill lands mid-run
    runner = ThreadPoolExecutor(1)
    future = runner.submit(fill_cache_ray, paths, keys, model, resize, cache, batch_size=batch, show_progress=False)
    deadline, killed, before = time.monotonic() + RUN_TIMEOUT_S, None, {}
    while killed is None and time.monotonic() < deadline and not future.done():
        done = entries(cache)
        pids = _actor_pids()
        if len(done) >= 2 * batch and pids:
            before = {k: p.stat().st_ino for k, p in done.items()}
            killed = min(pids)
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    result = future.result(timeout=RUN_TIMEOUT_S)
    runner.shutdown()
    assert killed is not None and len(before) < IMAGES, "the run ended before a worker could be killed"
    assert (result.misses, result.failed) == (IMAGES, {})
    assert_same_as_reference(cache, reference, keys)
    # Finished batches were kept; only the killed actor's in-flight tasks (at most 2 blocks) were redone.
    rewritten = [k for k, ino in before.items() if entries(cache)[k].stat().st_ino != ino]
    assert len(rewritten) <= 2 * BATCHES_PER_BLOCK * batch, rewritten


def test_a_node_that_cannot_write_the_cache_says_it_must_be_shared(cluster, setup, tmp_path):
    _, model, info, resize, paths, keys, _, _ = setup
    cache = feature_cache_for(info, resize, tmp_path)
    # One entry folder is a link to a mount this node lacks: reads miss, every write there fails.
    (cache.directory / keys[5][:2]).symlink_to(tmp_path / "not-mounted-here")
    with pytest.raises(SharedCacheError, match="shared path that every Ray node mounts") as caught:
        bounded(fill_cache_ray, paths, keys, model, resize, cache, show_progress=False)
    assert "node " in str(caught.value) and str(cache.directory) in str(caught.value)


def test_train_with_ray_gives_the_same_model(cluster, setup, tmp_path):
    import transferlab

    root, _, _, _, _, _, _, data = setup
    common = dict(backbone=str(root / "tiny.keras"), runs_dir=str(tmp_path / "runs"), epochs=8, show_progress=False)
    plain = transferlab.train(data, name="plain", cache_dir=str(tmp_path / "c1"), **common)
    on_ray = bounded(transferlab.train, data, name="ray", cache_dir=str(tmp_path / "c2"), ray=cluster.address,
                     **common)
    filled = on_ray.metadata["extras"]["ray_extraction"]
    assert (filled["backend"], filled["misses"], filled["failed"]) == ("ray", IMAGES, 0)
    assert on_ray.metadata["feature_cache"]["misses"] == 0  # phase 1 in the run itself: only cache hits
    assert plain.metadata["metrics"] == on_ray.metadata["metrics"]
    for a, b in zip(plain.model.get_weights(), on_ray.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_extract_command_in_process_then_ray_finds_everything_cached(cluster, setup, tmp_path, capsys):
    from transferlab.cli import main

    root, *_, data = setup
    args = ["extract", str(data), "--backbone", str(root / "tiny.keras"), "--cache-dir", str(tmp_path), "-q"]
    assert main(args) == 0
    assert f"{IMAGES} images ({IMAGES} distinct): 0 already cached, {IMAGES} computed, 0 unreadable" \
        in capsys.readouterr().out
    assert main(args + ["--ray", cluster.address]) == 0
    assert f"{IMAGES} already cached, 0 computed" in capsys.readouterr().out


def test_ray_flag_without_ray_installed_says_what_to_install(tmp_path):
    # A fresh interpreter in which `import ray` fails, as on an install without the extra.
    code = ("import sys; sys.modules['ray'] = None\n"
            "from transferlab.cli import main\n"
            f"raise SystemExit(main(['extract', {str(tmp_path)!r}, '--ray']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 2, done.stderr
    assert 'pip install "transferlab[ray]"' in done.stderr and "Traceback" not in done.stderr


def test_threads_are_the_actor_cpus(cluster):
    from transferlab.distributed import plan_workers

    plan = plan_workers(ray)  # two nodes of one CPU: one actor each, 3/4 CPU, one thread
    assert (plan.nodes, plan.actors, plan.threads) == (2, 2, 1) and plan.actor_cpus == 0.75
    assert plan_workers(ray, actor_cpus=0.5).actors == 2
    with pytest.raises(ValueError, match="do not fit"):
        plan_workers(ray, actors=3, actor_cpus=0.75)
