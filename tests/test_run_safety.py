"""A run directory survives kills and rivals: checkpoints are one atomic unit (old layouts still
resume), two `train --name X` at once do not corrupt each other, and a run trained on a
SavedModel backbone loads again without --unsafe while that SavedModel is provably unchanged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import transferlab
from conftest import make_class_folders
from helpers import save_tiny_cnn, save_tiny_savedmodel

CLI = [sys.executable, "-c", "from transferlab.cli import main; raise SystemExit(main())"]

_WRITER = """
import sys, numpy as np
from transferlab.training.checkpoint import commit_checkpoint
run = sys.argv[1]
print("ready", flush=True)
epoch = 0
while True:  # every array carries the epoch it belongs to
    epoch += 1
    stamp = np.full(50_000, epoch, np.float32)
    commit_checkpoint(run, {"phase": "head", "epochs_done": epoch},
                      {"state": {"w0": stamp}, **({"best": {"w0": stamp}} if epoch % 3 == 0 else {})})
"""


def test_killed_at_any_moment_the_checkpoint_counters_match_the_weights(tmp_path):
    from transferlab.training.checkpoint import checkpoint_file, read_state

    for attempt, delay in enumerate((0.05, 0.13, 0.31, 0.57)):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        state = read_state(tmp_path)
        if state is None:
            continue  # killed before the first commit
        with np.load(checkpoint_file(tmp_path, "state", state)) as data:
            assert set(data["w0"].tolist()) == {state["epochs_done"]}, attempt
        best = checkpoint_file(tmp_path, "best", state)
        if best is not None:
            with np.load(best) as data:
                assert data["w0"][0] == 3 * (state["epochs_done"] // 3)  # the best of the same commit
        names = {p.name for p in (tmp_path / "checkpoint").glob("*.npz")}
        assert set(state["files"].values()) <= names


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    backbone = save_tiny_cnn(root / "tiny.keras")
    data = make_class_folders(root / "data", {"red": 10, "green": 10, "blue": 10}, size=32)
    return root, backbone, data


def _train(root, backbone, data, name, **kwargs):
    settings = dict(backbone=str(backbone), runs_dir=str(root / "runs"), name=name, cache_dir=str(root / "cache"),
                    engine="keras", epochs=4, val_fraction=0.2, test_fraction=0.2)
    return transferlab.train(data, show_progress=False, **{**settings, **kwargs})


def test_a_run_checkpointed_in_the_old_layout_still_resumes(setup):
    from transferlab.training.checkpoint import checkpoint_file, read_state

    root, backbone, data = setup
    clf = _train(root, backbone, data, "legacy")
    run, ckpt = clf.run_dir, clf.run_dir / "checkpoint"
    state = read_state(run)
    for kind, name in state.pop("files").items():  # rewrite it as an older transferlab left it
        os.replace(ckpt / name, ckpt / f"{kind}.npz")
    (ckpt / "state.json").write_text(json.dumps(state))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "status": "running"}))
    (run / "model.keras").unlink()
    assert checkpoint_file(run, "head") == ckpt / "head.npz"
    resumed = transferlab.resume(run, show_progress=False)
    assert (run / "model.keras").is_file()
    np.testing.assert_allclose(resumed.predict_proba(np.zeros((1, 32, 32, 3), np.uint8)),
                               clf.predict_proba(np.zeros((1, 32, 32, 3), np.uint8)), atol=1e-6)


def test_two_trains_with_one_name_at_once_one_wins_the_other_says_why(setup):
    root, backbone, data = setup
    args = ["-q", "train", str(data), "--backbone", str(backbone), "--runs-dir", str(root / "runs"),
            "--cache-dir", str(root / "cache"), "--engine", "keras", "--epochs", "3", "--name", "twin"]
    procs = [subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    loser = next(err for p, (_, err) in zip(procs, results) if p.returncode == 2)
    assert "Traceback" not in loser and "already exists" in loser and "--name twin" in loser
    run = root / "runs" / "twin"
    assert json.loads((run / "config.json").read_text())["status"] == "complete"
    assert transferlab.load(run).predict(str(data / "red"))[0].label


def test_a_run_being_written_is_not_resumed_under_it(setup):
    from transferlab.training.runlock import RunBusyError, run_lock

    root, backbone, data = setup
    run = root / "runs" / "busy"
    run.mkdir(parents=True)
    from transferlab.rundir import RunDir, RunMetadata
    from transferlab.training.config import TrainConfig

    RunDir(run).write_metadata(RunMetadata(
        status="running", config=TrainConfig(backbone=str(backbone)).to_dict(), class_names=["blue", "green", "red"],
        resize={"size": 32}, backbone={}, data={"source": str(data)}, versions={}, created="now"))
    with run_lock(run):
        with pytest.raises(RunBusyError, match=f"pid {os.getpid()}"):
            transferlab.resume(run, show_progress=False)


# ---------------------------------------------------------------- SavedModel backbones
@pytest.fixture(scope="module")
def savedmodel_run(setup):
    root, _, data = setup
    hub = save_tiny_savedmodel(root / "hub_module", size=32, dim=6)
    clf = _train(root, hub, data, "hub", epochs=3)
    return root, hub, data, clf.run_dir


def _cli(*args):
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_a_run_on_its_own_savedmodel_loads_without_unsafe(savedmodel_run):
    root, hub, data, run = savedmodel_run
    config = json.loads((run / "config.json").read_text())
    assert len(config["backbone"]["savedmodel_sha256"]) == 64
    clf = transferlab.load(run)  # safe mode on: the recorded hash matches
    assert clf.predict(str(data / "blue"))[0].label in ("red", "green", "blue")
    proc = _cli("-q", "predict", str(run), str(data / "red"), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 10
    assert "accuracy" in clf.evaluate(data, show_progress=False)  # `evaluate RUN` goes through the same load


def test_a_changed_or_unrecorded_savedmodel_names_the_unsafe_flag(savedmodel_run, tmp_path):
    from transferlab.backbones.trusted import UntrustedModelError

    root, hub, data, run = savedmodel_run
    # A run from before the hash was recorded: the message says why and which flag.
    old = tmp_path / "old-run"
    old.mkdir()
    for name in ("model.keras", "labels.txt"):
        (old / name).write_bytes((run / name).read_bytes())
    config = json.loads((run / "config.json").read_text())
    del config["backbone"]["savedmodel_sha256"]
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(UntrustedModelError, match="records no content hash.*--unsafe"):
        transferlab.load(old)
    proc = _cli("-q", "predict", str(old), str(data / "red" / "red_0000.png"))
    assert proc.returncode == 2 and "--unsafe" in proc.stderr and "TFSMLayer" in proc.stderr
    assert _cli("-q", "predict", str(old), str(data / "red" / "red_0000.png"), "--unsafe").returncode == 0

    # The SavedModel replaced by another one at the same path: not the model the user trusted.
    import shutil

    shutil.rmtree(hub)
    save_tiny_savedmodel(hub, size=32, dim=6, seed=7)
    with pytest.raises(UntrustedModelError, match="changed since the run was trained"):
        transferlab.load(run)
    proc = _cli("-q", "evaluate", str(run), str(data))
    line = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert proc.returncode == 2 and len(line) == 1 and "--unsafe" in line[0] and str(hub) in line[0]
    assert transferlab.load(run, safe_mode=False).predict(str(data / "red"))[0].label
