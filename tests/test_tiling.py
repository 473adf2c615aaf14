"""Tiling: features of overlapping tiles of a large image, pooled (small defects on large images)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

import transferlab
from conftest import make_class_folders
from helpers import save_tiny_cnn
from transferlab.data.tiles import TileGrid, place_tiles
from transferlab.errors import ConfigError
from transferlab.training.config import TrainConfig

TILE = 32  # the tiny CNN's input: 2 x 2 tiles with 25% overlap cover 32 + 24 = 56 px


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_cnn(tmp_path_factory.mktemp("tiny") / "tiny.keras", size=TILE)


def _train(root, backbone, data, name, **settings):
    defaults = dict(show_progress=False, backbone=str(backbone), runs_dir=str(root / "runs"), name=name,
                    cache_dir=str(root / "cache"), epochs=20, patience=20, learning_rate=0.05, batch_size=4,
                    dropout=0.0, val_fraction=0.25, test_fraction=0.25, max_gallery=4)
    return transferlab.train(data, **{**defaults, **settings})


@pytest.fixture(scope="module")
def tiled_run(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("tiled")
    data = make_class_folders(root / "data", {"red": 12, "green": 12}, size=80)
    clf = _train(root, tiny, data, "tiled", tiles=2)
    return root, data, clf


# ---- geometry --------------------------------------------------------------------------------

def test_grid_geometry():
    grid = TileGrid(2, 224)
    assert (grid.stride, grid.size, grid.count) == (168, 392, 4)
    assert grid.offsets() == [(0, 0), (0, 168), (168, 0), (168, 168)]
    three = TileGrid(3, 32, overlap=0.0, pool="max+mean")
    assert three.size == 96 and three.offsets()[-1] == (64, 64) and three.feature_dim(16) == 32
    assert TileGrid.from_dict(three.to_dict()) == three and three.to_dict()["input_size"] == 96


def test_place_tiles_puts_each_map_where_its_tile_is():
    grid = TileGrid(2, 8, overlap=0.5)  # stride 4, whole input 12 px; maps of 2 x 2 per 8 px tile
    maps = np.zeros((1, 4, 2, 2), np.float32)
    maps[0, 3, 1, 1] = 1.0  # bottom-right corner of the bottom-right tile
    maps[0, 0, 1, 1] = 0.5  # overlaps with the top-left cell of tile 3: the larger value is kept
    maps[0, 3, 0, 0] = 0.25
    placed = place_tiles(maps, grid)
    assert placed.shape == (1, 3, 3)
    assert placed[0, 2, 2] == 1.0 and placed[0, 1, 1] == 0.5 and placed.sum() == 1.5


@pytest.mark.parametrize("pool", ["max", "mean", "max+mean"])
def test_each_tile_is_the_base_backbone_on_that_crop(tiny, pool):
    from transferlab.backbones import resolve_backbone

    tiled, info = resolve_backbone(str(tiny), tiles=3, tile_overlap=0.25, tile_pool=pool)
    plain, plain_info = resolve_backbone(str(tiny))
    grid = TileGrid(3, TILE, 0.25, pool)
    assert info.input_size == grid.size == 80 and tiled.input_shape[1:] == (80, 80, 3)
    assert info.tiling == grid.to_dict() and info.feature_dim == grid.feature_dim(plain_info.feature_dim)
    x = np.random.default_rng(0).integers(0, 256, (2, 80, 80, 3)).astype(np.float32)
    per_tile = np.stack([plain.predict(x[:, r:r + TILE, c:c + TILE], verbose=0) for r, c in grid.offsets()])
    expected = {"max": per_tile.max(0), "mean": per_tile.mean(0),
                "max+mean": np.concatenate([per_tile.max(0), per_tile.mean(0)], axis=1)}[pool]
    np.testing.assert_allclose(tiled.predict(x, verbose=0), expected, atol=1e-5)


def test_tiled_backbone_saves_and_loads_in_safe_mode(tiny, tmp_path):
    import keras

    from transferlab.backbones import resolve_backbone
    from transferlab.backbones.tiling import grid_of, is_tiled

    tiled, info = resolve_backbone(str(tiny), tiles=2, tile_overlap=0.5, tile_pool="max+mean")
    tiled.save(tmp_path / "tiled.keras")
    loaded = keras.models.load_model(tmp_path / "tiled.keras", safe_mode=True)
    x = np.random.default_rng(1).integers(0, 256, (3, info.input_size, info.input_size, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), tiled.predict(x, verbose=0), atol=1e-6)
    assert is_tiled(loaded) and grid_of(loaded).to_dict() == info.tiling


def test_feature_fingerprint_includes_the_tiling(tiny):
    from transferlab.backbones import resolve_backbone
    from transferlab.features import feature_fingerprint, resize_for

    _, plain = resolve_backbone(str(tiny))
    _, two = resolve_backbone(str(tiny), tiles=2)
    _, two_mean = resolve_backbone(str(tiny), tiles=2, tile_pool="mean")
    big = dataclasses.replace(plain, input_size=two.input_size)  # the same input size, untiled
    prints = [feature_fingerprint(info, resize_for(info)) for info in (plain, two, two_mean, big)]
    assert "tiling" not in prints[0]  # untiled caches keep their folders
    assert prints[1]["tiling"]["grid"] == 2 and prints[1]["input_size"] == prints[3]["input_size"]
    assert len({json.dumps(p, sort_keys=True) for p in prints}) == 4


# ---- settings --------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, message", [
    ({"tiles": 0}, "tiles must be a whole number from 1"),
    ({"tiles": "7"}, "to 6, or 'auto'"),
    ({"tiles": "two"}, "got 'two'"),
    ({"tile_overlap": 0.8}, "tile_overlap must be <= 0.75"),
    ({"tile_pool": "sum"}, "tile_pool must be one of max, mean, max\\+mean"),
    ({"tiles": 2, "strategy": "fine-tune"}, "--tiles 1 to fine-tune"),
    ({"tiles": "auto", "strategy": "fine-tune"}, "--strategy feature-extraction"),
])
def test_bad_tiling_settings_say_the_fix(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)


def test_tiles_setting_round_trips_and_is_a_cli_option():
    from transferlab.cli import build_parser

    assert TrainConfig(tiles=3).tiles == "3" and TrainConfig(tiles=3).tile_grid == 3
    assert TrainConfig(tiles="auto").tile_grid is None
    assert TrainConfig.from_dict(TrainConfig(tiles=2, tile_pool="mean").to_dict()).tile_pool == "mean"
    args = build_parser().parse_args(["train", "data", "--tiles", "2", "--tile-overlap", "0.5",
                                      "--tile-pool", "max+mean"])
    assert (args.tiles, args.tile_overlap, args.tile_pool) == ("2", 0.5, "max+mean")


def test_cli_rejects_a_bad_tiles_value(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "transferlab", "train", str(tmp_path), "--tiles", "9"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "tiles must be a whole number from 1" in proc.stderr


def test_auto_candidates_follow_the_image_size():
    from transferlab.api.choices import tile_candidates

    assert tile_candidates(300, 224) == [1]
    assert tile_candidates(448, 224) == [1, 2]
    assert tile_candidates(896, 224) == [1, 2, 3]


# ---- a tiled run -----------------------------------------------------------------------------

def test_a_tiled_run_records_the_larger_input(tiled_run):
    _, _, clf = tiled_run
    meta = json.loads((clf.run_dir / "config.json").read_text())
    assert meta["config"]["tiles"] == "2" and meta["backbone"]["tiling"]["grid"] == 2
    assert meta["resize"]["size"] == 56 and clf.resize.size == 56
    assert meta["resize"]["crop_fraction"] == 1.0  # the whole image: a defect may be at its border
    assert meta["feature_cache"]["engine"] == "onnx"  # ONNX Runtime extracted the tiled backbone
    assert clf.model.input_shape[1:] == (56, 56, 3)


def test_tiled_run_exports_with_parity_and_predicts_without_tensorflow(tiled_run):
    from transferlab.export.exporter import FILES, export_run

    _, data, clf = tiled_run
    summary = export_run(clf.run_dir, formats=["onnx", "tflite"], show_progress=False)
    for fmt in ("onnx", "tflite"):
        assert summary["formats"][fmt]["passed"] and summary["formats"][fmt]["max_abs_diff"] < 1e-4, fmt
    card = json.loads((clf.run_dir / "export" / "model_card.json").read_text())
    assert card["input"]["shape"] == [None, 56, 56, 3] and "56x56" in card["input"]["resize_instructions"]
    paths = sorted(str(p) for p in (data / "red").glob("*.png"))[:4]
    code = ("import sys\nfrom transferlab.inference import load\nclf = load(sys.argv[1])\n"
            "preds = clf.predict(sys.argv[2:])\n"
            "assert not [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
            "print(','.join(p.predicted for p in preds))")
    proc = subprocess.run([sys.executable, "-c", code, str(clf.run_dir / "export" / FILES["onnx"]), *paths],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().split(",") == [p.predicted for p in clf.predict(paths)]


def test_gradcam_on_a_tiled_model_places_tile_maps_back(tiled_run, tmp_path):
    from transferlab.evaluation.gradcam import explain, feature_maps, gradcam

    _, data, clf = tiled_run
    images = np.stack([clf.resize.load(p) for p in sorted((data / "green").glob("*.png"))[:2]])
    maps = feature_maps(clf, images)
    assert maps.shape[0] == 2 and maps.shape[1] == 4 * maps.shape[2]  # 4 tiles stacked along the height
    cams = gradcam(clf, images)
    side = round(56 * maps.shape[2] / TILE)  # the whole input at the tile maps' resolution
    assert cams.shape == (2, side, side) and np.isfinite(cams).all() and cams.max() <= 1.0
    assert len(explain(clf, [str(data / "red")], tmp_path / "cams")) == 12
    # The report's gallery, through the feature-map cache training set up (twice: computed, then read).
    from transferlab.evaluation.reporting import gallery_overlays

    rows = [{"path": str(p), "predicted": "red"} for p in sorted((data / "green").glob("*.png"))[:3]]
    assert clf.feature_map_cache is not None
    for _ in range(2):
        overlays, note = gallery_overlays(clf, rows)
        assert note == "" and len(overlays) == 3 and all(o.shape == (160, 160, 3) for o in overlays.values())


def test_strategy_auto_keeps_a_tiled_backbone_frozen_and_says_why(tiled_run, tiny):
    root, data, _ = tiled_run
    clf = _train(root, tiny, data, "tiled-auto", tiles=2, strategy="auto", time_budget=600)
    strategy = json.loads((clf.run_dir / "config.json").read_text())["extras"]["strategy"]
    assert "tiled backbone (2x2 tiles) is feature-extraction only" in json.dumps(strategy)
    assert clf.metadata["fine_tune"] in (None, {})


def test_from_a_tiled_run_refuses_tiles_and_keeps_the_geometry(tiled_run, tiny):
    root, data, clf = tiled_run
    with pytest.raises(ConfigError, match="drop --tiles 2"):
        _train(root, tiny, data, "from-tiled-bad", tiles=2, from_model=str(clf.run_dir))
    again = _train(root, tiny, data, "from-tiled", from_model=str(clf.run_dir))
    meta = json.loads((again.run_dir / "config.json").read_text())
    assert meta["backbone"]["tiling"]["grid"] == 2 and meta["resize"]["size"] == 56


def test_tiles_auto_is_deterministic_and_recorded(tiled_run, tiny, caplog):
    root, data, _ = tiled_run
    records = []
    for name in ("auto-a", "auto-b"):
        with caplog.at_level("INFO", logger="transferlab"):
            clf = _train(root, tiny, data, name, tiles="auto")
        records.append(json.loads((clf.run_dir / "config.json").read_text())["extras"]["tiles"])
    assert records[0] == records[1] and set(records[0]["scores"]) == {"1", "2"}  # 80 px: 2.5x the 32 px input
    chosen = records[0]["chosen"]
    assert json.loads((clf.run_dir / "config.json").read_text())["resize"]["size"] == TileGrid(chosen, TILE).size \
        if chosen > 1 else TILE
    assert "Tiles chosen:" in caplog.text


def test_tiles_auto_keeps_small_images_whole(tmp_path, tiny):
    data = make_class_folders(tmp_path / "data", {"red": 8, "green": 8}, size=40)
    clf = _train(tmp_path, tiny, data, "auto-small", tiles="auto")
    record = json.loads((clf.run_dir / "config.json").read_text())["extras"]["tiles"]
    assert record["chosen"] == 1 and "under 2x the backbone's input (32 px)" in record["reason"]


def test_serve_runs_a_tiled_export_without_tensorflow(tiled_run):
    import httpx

    from serve_helpers import running_server
    from transferlab.export.exporter import FILES, export_run

    _, data, clf = tiled_run
    model = clf.run_dir / "export" / FILES["onnx"]
    if not model.exists():  # alone, this test exports the ONNX file itself
        export_run(clf.run_dir, formats=["onnx"], show_progress=False)
    image = sorted((data / "green").glob("*.png"))[0]
    with running_server(model) as (base, _):
        info = httpx.get(f"{base}/metadata", timeout=10).json()
        response = httpx.post(f"{base}/predict", content=image.read_bytes(), headers={"Content-Type": "image/png"},
                              timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] == clf.predict([str(image)])[0].predicted
    assert info["input"]["shape"] == [None, 56, 56, 3] and info["input"]["resize"]["size"] == 56


def test_tiles_auto_scores_with_the_probe_when_the_run_uses_it(tiled_run, tiny, monkeypatch):
    import transferlab.training.probe as probe

    root, data, _ = tiled_run
    fits = []
    original = probe.fit_logistic_head
    monkeypatch.setattr(probe, "fit_logistic_head", lambda *a, **k: fits.append(a[0].shape) or original(*a, **k))
    clf = _train(root, tiny, data, "auto-probe", tiles="auto", head="logistic")
    record = json.loads((clf.run_dir / "config.json").read_text())["extras"]["tiles"]
    assert set(record["scores"]) == {"1", "2"}
    assert len(fits) == 3  # one probe per candidate, then the run's own
