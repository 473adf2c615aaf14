"""The run directory's layout and config.json's metadata: one owner, old runs still load."""

from __future__ import annotations

import json

import pytest

from transferlab.errors import MissingFileError, ModelFormatError
from transferlab.rundir import RunDir, RunMetadata, read_labels, write_labels

# config.json as transferlab 0.1.0 wrote it before RunMetadata existed (no schema_version, no extras).
OLD_CONFIG = {
    "status": "complete", "config": {"backbone": "efficientnet_lite0", "epochs": 100},
    "class_names": ["ants", "bees"], "resize": {"size": 224, "mode": "center-crop", "interpolation": "bicubic",
                                                 "crop_fraction": 0.875},
    "backbone": {"name": "efficientnet_lite0"}, "warm_start": None,
    "data": {"source": "/data/hym", "layout": "presplit", "counts": {}, "bad_files": 1},
    "versions": {"transferlab": "0.1.0"}, "created": "2026-11-26T10:15:00+00:00", "from_model": None,
    "fine_tune": None, "feature_cache": {"hits": 0}, "timing": {"total_seconds": 5.0},
}


def test_old_run_directories_still_load(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OLD_CONFIG))
    meta = RunDir(tmp_path).read_metadata()
    assert meta.schema_version == 1 and meta.extras == {}
    assert meta.class_names == ["ants", "bees"] and meta.resize["mode"] == "center-crop"


def test_metadata_round_trips_and_rejects_what_it_does_not_know(tmp_path):
    run = RunDir(tmp_path)
    meta = RunMetadata.from_dict(OLD_CONFIG)
    meta.extras["selection"] = {"winner": "linear"}
    run.write_metadata(meta)
    assert run.read_metadata() == meta
    (tmp_path / "config.json").write_text(json.dumps({**OLD_CONFIG, "surprise": 1}))
    with pytest.raises(ModelFormatError, match="unknown key.*surprise"):
        run.read_metadata()
    (tmp_path / "config.json").write_text(json.dumps({**OLD_CONFIG, "schema_version": 99}))
    with pytest.raises(ModelFormatError, match="schema version 99"):
        run.read_metadata()
    (tmp_path / "config.json").write_text(json.dumps({"status": "complete"}))
    with pytest.raises(ModelFormatError, match="not a transferlab run"):
        run.read_metadata()


def test_status_is_checked_and_can_be_set(tmp_path):
    with pytest.raises(ModelFormatError, match="status"):
        RunMetadata.from_dict({**OLD_CONFIG, "status": "done"})
    run = RunDir(tmp_path)
    run.write_metadata(RunMetadata.from_dict({**OLD_CONFIG, "status": "running"}))
    run.set_status("interrupted")
    assert json.loads(run.config.read_text())["status"] == "interrupted"


def test_not_a_run_directory_names_the_folder(tmp_path):
    with pytest.raises(MissingFileError, match=str(tmp_path)):
        RunDir(tmp_path).read_metadata()


def test_labels_round_trip(tmp_path):
    write_labels(tmp_path / "labels.txt", ["a b", "ü", "c"])
    assert read_labels(tmp_path / "labels.txt") == ["a b", "ü", "c"]
