"""Out of disk space and unwritable folders: one line naming the path, the need and the flag;
nothing half-written is trusted afterwards, and a run resumes once there is space.

The full disks are real: small tmpfs mounts (tests run as root here and in CI). Where mounting
is impossible (not root, no mount permission in a container) the tests skip and say why.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_class_folders
from helpers import save_tiny_cnn

CLI = [sys.executable, "-c", "from transferlab.cli import main; raise SystemExit(main())"]


def _mount(point: Path, options: str) -> None:
    point.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True,
                          text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root and mount permission): "
                    f"{proc.stderr.strip() or proc.returncode}")


@pytest.fixture
def mounts():
    """``mount(point, options)``; every mount is undone after the test."""
    made: list[Path] = []

    def mount(point: Path, options: str = "size=400k") -> Path:
        _mount(point, options)
        made.append(point)
        return point

    yield mount
    for point in reversed(made):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


def fill(folder: Path, leave: int = 0) -> None:
    """Write a filler file until the file system has at most ``leave`` bytes free."""
    with open(folder / "filler.bin", "ab") as fh:
        chunk = b"\0" * 4096
        try:
            while os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize > leave:
                fh.write(chunk)
                fh.flush()
        except OSError:
            pass


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def stray_temporaries(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob(".tmp-*")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    backbone = save_tiny_cnn(root / "tiny.keras")
    # More images than a 400 KB cache holds: each feature entry takes a 4 KiB page on tmpfs.
    data = make_class_folders(root / "data", {"red": 45, "green": 45, "blue": 45}, size=32)
    return root, backbone, data


def train_args(root: Path, backbone: Path, data: Path, cache: Path, name: str, *extra: str) -> list[str]:
    return ["-q", "train", str(data), "--backbone", str(backbone), "--cache-dir", str(cache), "--runs-dir",
            str(root / "runs"), "--name", name, "--epochs", "3", *extra]


def test_feature_cache_fills_up_then_the_run_resumes_with_space(tiny, mounts, tmp_path):
    root, backbone, data = tiny
    cache = mounts(tmp_path / "cache")
    proc = run_cli(*train_args(root, backbone, data, cache, "full-cache", "--engine", "keras"))
    assert proc.returncode == 2
    line = error_line(proc)
    assert re.search(rf"no space left on device writing {re.escape(str(cache))}/features/\w+/\w\w/\w+\.feat "
                     r"\(needs 4\.0 KiB, \d+ bytes free there\)", line), line
    assert "--cache-dir" in line and f"--resume {root / 'runs' / 'full-cache'}" in line
    assert not stray_temporaries(cache)
    run = root / "runs" / "full-cache"
    assert json.loads((run / "config.json").read_text())["status"] == "running"  # whole, resumable

    subprocess.run(["mount", "-o", "remount,size=4m", str(cache)], check=True, timeout=30)
    proc = run_cli("-q", "train", "--resume", str(run))
    assert proc.returncode == 0, proc.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "complete"
    cached = config["feature_cache"]
    assert cached["hits"] > 0 and cached["hits"] + cached["misses"] == 135  # the entries written before count
    assert "corrupt" not in proc.stderr


def test_onnx_conversion_out_of_space_says_so_instead_of_running_slower(tiny, mounts, tmp_path):
    from transferlab.backbones import resolve_backbone
    from transferlab.features import feature_cache_for, resize_for

    root, backbone, data = tiny
    cache = mounts(tmp_path / "cache")
    _, info = resolve_backbone(str(backbone))
    feature_cache_for(info, resize_for(info), cache)  # its folder exists, as a first run leaves it
    fill(cache)
    proc = run_cli(*train_args(root, backbone, data, cache, "full-onnx"))
    assert proc.returncode == 2
    line = error_line(proc)
    assert "backbone.onnx" in line and re.search(r"needs \d+\.\d KiB, \d+ bytes free there", line), line
    assert "--cache-dir" in line
    assert "using Keras" not in proc.stderr  # no silent fall back to the slow engine
    assert not (Path(line.split("writing ")[1].split(" (")[0])).exists()
    assert not stray_temporaries(cache)


def test_read_only_cache_dir_is_named_with_the_flag(tiny, mounts, tmp_path):
    from transferlab.features.cache import CacheDirError, FeatureCache

    cache = mounts(tmp_path / "ro-cache", "size=400k,ro")
    with pytest.raises(CacheDirError) as exc:
        FeatureCache(cache, {"backbone": "x"})
    assert str(cache) in str(exc.value) and "--cache-dir" in str(exc.value) and "Read-only" in str(exc.value)
    root, backbone, data = tiny
    proc = run_cli(*train_args(root, backbone, data, cache, "ro-cache"))
    assert proc.returncode == 2
    line = error_line(proc)
    assert line.startswith(f"error: cannot write the feature cache in {cache}") and "--cache-dir" in line
    # The file-check cache (same folder) is optional: it says so and the files are checked without it.
    assert "checking files without it" in proc.stderr


def test_checkpoint_on_a_full_disk_keeps_the_previous_one_whole(mounts, tmp_path):
    from transferlab._atomic import DiskFullError
    from transferlab.training.checkpoint import checkpoint_file, commit_checkpoint, read_state

    run = mounts(tmp_path / "run")
    small = {"w0": np.arange(10, dtype=np.float32)}
    commit_checkpoint(run, {"phase": "head", "epochs_done": 1}, {"state": small, "best": small})
    before = read_state(run)
    fill(run, leave=64 * 1024)
    big = {"w0": np.ones(200_000, dtype=np.float32)}  # 800 KB: cannot fit
    with pytest.raises(DiskFullError) as exc:
        commit_checkpoint(run, {"phase": "head", "epochs_done": 2}, {"state": big})
    message = str(exc.value)
    assert f"writing {run}/checkpoint/state-" in message and "needs 784.0 KiB" in message
    assert read_state(run) == before  # counters and arrays still belong together
    with np.load(checkpoint_file(run, "state")) as data:
        np.testing.assert_array_equal(data["w0"], small["w0"])
    assert not stray_temporaries(run)


def test_export_to_a_full_disk_is_one_line_and_keeps_nothing_partial(tiny, mounts):
    import transferlab

    root, backbone, data = tiny
    clf = transferlab.train(data, backbone=str(backbone), runs_dir=str(root / "runs"), name="to-export",
                            cache_dir=str(root / "cache"), engine="keras", epochs=2, show_progress=False)
    export = mounts(clf.run_dir / "export")
    fill(export)
    proc = run_cli("-q", "export", str(clf.run_dir), "--format", "onnx")
    assert proc.returncode == 2
    line = error_line(proc)
    assert f"no space left on device writing {export}" in line and "export again" in line
    assert not (export / "model.onnx").exists() and not stray_temporaries(export)
