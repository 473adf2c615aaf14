"""Bottleneck feature cache: hits, misses, invalidation, corruption, killed runs, engines."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_class_folders
from helpers import save_tiny_cnn
from transferlab.data import load_dataset
from transferlab.data.pipeline import ResizeConfig
from transferlab.features.cache import FeatureCache
from transferlab.features.extract import extract_features

PARTS = {"backbone": "tiny", "weights": "abc", "feature_layer": "gap", "input_size": 32,
         "resize": ResizeConfig(32).to_dict(), "preprocess": "none"}


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    from transferlab.backbones import resolve_backbone

    path = save_tiny_cnn(tmp_path_factory.mktemp("model") / "tiny.keras")
    return resolve_backbone(str(path))


@pytest.fixture
def images(tmp_path):
    ds = load_dataset(make_class_folders(tmp_path / "d", {"a": 6, "b": 6}), show_progress=False)
    return [r.path for r in ds.records], [r.sha256 for r in ds.records]


def test_put_get_roundtrip_and_fingerprint_invalidation(tmp_path):
    cache = FeatureCache(tmp_path, PARTS)
    vector = np.arange(5, dtype=np.float32)
    cache.put("ab" * 32, vector)
    np.testing.assert_array_equal(cache.get("ab" * 32), vector)
    assert cache.get("cd" * 32) is None
    # Every fingerprint part moves the cache to a new folder: stale features are never read.
    for key, value in [("backbone", "other"), ("weights", "def"), ("feature_layer", "conv2"), ("input_size", 64),
                       ("resize", ResizeConfig(32, "pad").to_dict()), ("preprocess", "0-1")]:
        other = FeatureCache(tmp_path, {**PARTS, key: value})
        assert other.fingerprint != cache.fingerprint, key
        assert other.get("ab" * 32) is None
    assert FeatureCache(tmp_path, dict(reversed(list(PARTS.items())))).fingerprint == cache.fingerprint


def test_corrupted_entries_are_detected_deleted_and_recomputed(tmp_path, tiny_backbone, images):
    model, _ = tiny_backbone
    paths, keys = images
    cache = FeatureCache(tmp_path, PARTS)
    first = extract_features(paths, keys, model, ResizeConfig(32), cache, engine="keras", show_progress=False)
    assert (first.hits, first.misses) == (0, 12)
    entry = cache.entry_path(keys[0])
    data = bytearray(entry.read_bytes())
    data[12] ^= 0xFF  # flip a bit inside the vector
    entry.write_bytes(bytes(data))
    cache.entry_path(keys[1]).write_bytes(entry.read_bytes()[:10])  # truncated
    cache2 = FeatureCache(tmp_path, PARTS)
    again = extract_features(paths, keys, model, ResizeConfig(32), cache2, engine="keras", show_progress=False)
    assert (again.hits, again.misses) == (10, 2)
    assert cache2.corrupt_entries == 2
    np.testing.assert_allclose(again.features, first.features, atol=1e-6)
    third = extract_features(paths, keys, model, ResizeConfig(32), FeatureCache(tmp_path, PARTS), engine="keras",
                             show_progress=False)
    assert (third.hits, third.misses) == (12, 0)


def test_duplicate_contents_are_computed_once(tmp_path, tiny_backbone, images):
    model, _ = tiny_backbone
    paths, keys = images
    result = extract_features(paths + paths[:3], keys + keys[:3], model, ResizeConfig(32),
                              FeatureCache(tmp_path, PARTS), engine="keras", show_progress=False)
    assert result.misses == 15 and len(list((tmp_path / "features").rglob("*.feat"))) == 12
    np.testing.assert_array_equal(result.features[12:], result.features[:3])


def test_onnx_engine_matches_keras(tmp_path, tiny_backbone, images):
    model, _ = tiny_backbone
    paths, keys = images
    onnx = extract_features(paths, keys, model, ResizeConfig(32), FeatureCache(tmp_path / "o", PARTS),
                            engine="onnx", show_progress=False)
    keras_result = extract_features(paths, keys, model, ResizeConfig(32), FeatureCache(tmp_path / "k", PARTS),
                                    engine="keras", show_progress=False)
    assert onnx.engine == "onnx" and onnx.parity_max_abs_diff is not None and onnx.parity_max_abs_diff <= 1e-4
    np.testing.assert_allclose(onnx.features, keras_result.features, atol=1e-4)
    assert (tmp_path / "o" / "features").rglob("backbone.onnx")


_KILLABLE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from transferlab.backbones import resolve_backbone
    from transferlab.data import load_dataset
    from transferlab.data.pipeline import ResizeConfig
    from transferlab.features import extract
    from transferlab.features.cache import FeatureCache

    slow_call = extract.KerasRuntime.__call__
    def slowly(self, images):
        time.sleep(0.3)  # slow enough for the test to kill us mid-way
        return slow_call(self, images)
    extract.KerasRuntime.__call__ = slowly
    model, _ = resolve_backbone({model!r})
    ds = load_dataset({data!r}, show_progress=False)
    parts = {parts!r}
    extract.extract_features([r.path for r in ds.records], [r.sha256 for r in ds.records], model, ResizeConfig(32),
                             FeatureCache({cache!r}, parts), engine="keras", batch_size=2, show_progress=False)
    print("finished")
""")


def test_killed_extraction_leaves_a_usable_cache(tmp_path, tiny_backbone):
    model_path = tmp_path / "tiny.keras"
    save_tiny_cnn(model_path)
    data = make_class_folders(tmp_path / "d", {"a": 15, "b": 15})
    script = _KILLABLE.format(tests=str(Path(__file__).parent), model=str(model_path), data=str(data),
                              parts=PARTS, cache=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((tmp_path / "cache").rglob("*.feat"))) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(list((tmp_path / "cache").rglob("*.feat")))
    assert 4 <= written < 30, "the process should have been killed mid-way"

    model, _ = tiny_backbone
    ds = load_dataset(data, show_progress=False)
    result = extract_features([r.path for r in ds.records], [r.sha256 for r in ds.records], model, ResizeConfig(32),
                              FeatureCache(tmp_path / "cache", PARTS), engine="keras", show_progress=False)
    assert result.hits == written and result.hits + result.misses == 30
    assert result.failed == []
    # Nothing a later run trusts is broken: every entry verifies.
    cache = FeatureCache(tmp_path / "cache", PARTS)
    assert all(cache.get(r.sha256) is not None for r in ds.records)
    assert cache.corrupt_entries == 0


def test_two_processes_sharing_one_cache_do_not_corrupt_it(tmp_path, tiny_backbone):
    model_path = tmp_path / "tiny.keras"
    save_tiny_cnn(model_path)
    data = make_class_folders(tmp_path / "d", {"a": 10, "b": 10})
    script = _KILLABLE.replace("time.sleep(0.3)", "time.sleep(0.02)").format(
        tests=str(Path(__file__).parent), model=str(model_path), data=str(data), parts=PARTS,
        cache=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "finished" in out, err[-2000:]
    cache = FeatureCache(tmp_path / "cache", PARTS)
    ds = load_dataset(data, show_progress=False)
    model, _ = tiny_backbone
    result = extract_features([r.path for r in ds.records], [r.sha256 for r in ds.records], model, ResizeConfig(32),
                              cache, engine="keras", show_progress=False)
    assert (result.hits, result.misses, cache.corrupt_entries) == (20, 0, 0)
    assert not list((tmp_path / "cache").rglob("*.part"))  # no temporary file left behind
