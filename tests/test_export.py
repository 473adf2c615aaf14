"""Export a tiny trained run to every format, check parity, and predict from each format."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import transferlab
from conftest import make_class_folders, require_shared
from helpers import save_tiny_cnn
from transferlab.export.exporter import FILES, FORMATS, export_run, parse_formats
from transferlab.inference import load

FLOAT_FORMATS = ("keras", "savedmodel", "onnx", "tflite")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    backbone = save_tiny_cnn(root / "tiny.keras")
    data = make_class_folders(root / "data", {"red": 20, "green": 20, "blue": 20}, size=40)
    clf = transferlab.train(data, show_progress=False, backbone=str(backbone), runs_dir=str(root / "runs"), name="tiny",
                            cache_dir=str(root / "cache"), engine="keras", epochs=40, patience=40, learning_rate=0.05,
                            batch_size=4, dropout=0.0, val_fraction=0.2, test_fraction=0.3)
    summary = export_run(clf.run_dir, show_progress=False)
    return root, data, clf, summary


def test_every_format_is_written_with_labels_and_model_card(exported):
    _, _, clf, summary = exported
    out = clf.run_dir / "export"
    for fmt in FORMATS:
        assert (out / FILES[fmt]).exists(), fmt
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "labels.txt").read_text().split() == ["blue", "green", "red"]
    card = json.loads((out / "model_card.json").read_text())
    assert card["classes"] == ["blue", "green", "red"] and card["num_classes"] == 3
    assert card["input"]["dtype"] == "uint8" and card["input"]["shape"] == [None, 32, 32, 3]
    assert card["input"]["resize"] == clf.resize.to_dict() and "32x32" in card["input"]["resize_instructions"]
    assert card["backbone"]["family"] == "personal" and card["data"]["counts"]["test"]
    assert card["metrics"] == json.loads((clf.run_dir / "metrics.json").read_text())
    assert {"transferlab", "keras", "tensorflow"} <= set(card["versions"])
    assert card["tflite_metadata"]["embedded"] is True and card["onnx_metadata"]["embedded"] is True
    assert card["input"]["name"] == "image" and card["input"]["layout"] == "NHWC"
    assert card["input"]["resize_rule"]["filter"] == clf.resize.interpolation
    for fmt in FORMATS:  # every format's held-out accuracy, and that it passed and was kept
        assert card["files"][fmt]["accuracy"] == summary["formats"][fmt]["accuracy"]
        assert card["files"][fmt]["kept"] is True
    assert set(card["files"]) == set(FORMATS) and card["parity"]["split"] == "test+val"
    assert json.loads((out / "parity.json").read_text()) == summary


def test_parity_float_formats_within_1e4_and_int8_agrees(exported):
    _, _, clf, summary = exported
    assert summary["split"] == "test+val" and summary["images"] >= 10
    for fmt in FLOAT_FORMATS:
        entry = summary["formats"][fmt]
        assert entry["max_abs_diff"] <= 1e-4 and entry["passed"], (fmt, entry)
        assert entry["top1_agreement"] == 1.0 and entry["accuracy"] == summary["keras_accuracy"]
    int8 = summary["formats"]["tflite-int8"]
    # The tiny CNN has random (untrained) features, so its probabilities are near ties that
    # int8 rounding can flip: only >= 0.8 here. The 98% target is asserted on a real backbone
    # in test_int8_agreement_on_real_photos (slow).
    assert int8["top1_agreement"] >= 0.8 and int8["max_abs_diff"] < 0.05
    assert int8["calibration_images"] == sum(clf.metadata["data"]["counts"]["train"].values())  # all (< 300)
    # The quantization debugger's per-layer error is recorded, worst first.
    steps = [layer["rmse_steps"] for layer in int8["worst_layers"]]
    assert steps and steps == sorted(steps, reverse=True)
    assert set(int8["float_fallback"]) == {layer["layer"] for layer in int8["worst_layers"] if layer["rmse_steps"] > 1.0}


def test_onnx_has_one_uint8_input_and_opset_17(exported):
    import onnx

    _, _, clf, _ = exported
    model = onnx.load(str(clf.run_dir / "export" / "model.onnx"))
    assert len(model.graph.input) == 1
    graph_input = model.graph.input[0]
    assert graph_input.name == "image" and graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in model.graph.output] == ["probabilities"]
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17


def test_tflite_input_output_dtypes(exported):
    from transferlab.runtimes.exported import TFLiteRuntime

    _, _, clf, _ = exported
    int8 = TFLiteRuntime(clf.run_dir / "export" / "model_int8.tflite")
    assert int8.input_dtype == "uint8" and int8.output_dtype in ("uint8", "int8")
    assert int8.input_quantization == (1.0, 0)  # the uint8 input is the raw pixel values
    assert int8.output_quantization[0] > 0
    float_model = TFLiteRuntime(clf.run_dir / "export" / "model.tflite")
    assert float_model.input_dtype == "uint8" and float_model.output_dtype == "float32"


def test_tflite_falls_back_to_tf_lite_without_litert(exported, monkeypatch):
    from transferlab.runtimes.exported import TFLiteRuntime

    _, _, clf, _ = exported
    path = clf.run_dir / "export" / "model.tflite"
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    expected = TFLiteRuntime(path)(images)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # as if ai-edge-litert were not installed
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    runtime = TFLiteRuntime(path)
    assert runtime.interpreter == "tensorflow"
    np.testing.assert_allclose(runtime(images), expected, atol=1e-6)


def test_savedmodel_serving_signature(exported):
    import tensorflow as tf

    _, _, clf, _ = exported
    loaded = tf.saved_model.load(str(clf.run_dir / "export" / "saved_model"))
    fn = loaded.signatures["serving_default"]
    _, inputs = fn.structured_input_signature
    assert list(inputs) == ["image"] and inputs["image"].dtype == tf.uint8
    assert list(fn.structured_outputs) == ["probabilities"]
    out = fn(image=tf.zeros((2, 32, 32, 3), tf.uint8))["probabilities"].numpy()
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)


def test_exported_keras_loads_with_plain_keras_in_safe_mode(exported):
    import keras

    _, data, clf, _ = exported
    model = keras.models.load_model(clf.run_dir / "export" / "model.keras", safe_mode=True)
    assert model.inputs[0].dtype == "uint8"
    paths = sorted(str(p) for p in data.rglob("*.png"))[:5]
    images = np.stack([clf.resize.load(p) for p in paths])
    np.testing.assert_allclose(model.predict(images, verbose=0), clf.predict_proba(paths), atol=1e-6)


def test_every_format_predicts_like_keras(exported):
    _, data, clf, _ = exported
    paths = sorted(str(p) for p in data.rglob("*.png"))
    expected = clf.predict_proba(paths)
    out = clf.run_dir / "export"
    for fmt in FORMATS:
        exported_clf = transferlab.load(out / FILES[fmt])
        assert exported_clf.class_names == clf.class_names and exported_clf.resize == clf.resize, fmt
        probs = exported_clf.predict_proba(paths)
        if fmt == "tflite-int8":
            assert np.mean(probs.argmax(1) == expected.argmax(1)) >= 0.8  # see the parity test
            continue
        np.testing.assert_allclose(probs, expected, atol=1e-4, err_msg=fmt)
        preds = exported_clf.predict(paths[:3], top_k=2)
        assert [p.predicted for p in preds] == [clf.class_names[i] for i in expected[:3].argmax(1)], fmt
    # arrays of any size are resized like files, whatever the runtime
    from PIL import Image

    arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths[:4]]).astype(np.float32)
    np.testing.assert_allclose(transferlab.load(out / "model.onnx").predict_proba(arrays), expected[:4], atol=1e-4)


def test_load_dispatch_and_metadata(exported, tmp_path, caplog):
    _, _, clf, _ = exported
    assert load(clf.run_dir).runtime.name == "keras"
    assert load(clf.run_dir / "export").runtime.input_dtype == "uint8"  # export/model.keras
    assert load(clf.run_dir / "export" / "saved_model").runtime.name == "savedmodel"
    # a file travelling alone: labels and resize from inside it, without a word
    for name in ("model.onnx", "model_int8.tflite"):
        shutil.copy(clf.run_dir / "export" / name, tmp_path / name)
        alone = load(tmp_path / name)
        assert alone.class_names == ["blue", "green", "red"] and alone.resize == clf.resize, name
    assert not caplog.text
    # labels.txt beside it that disagrees: the model's own labels win, with a warning
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    assert load(tmp_path / "model.onnx").class_names == ["blue", "green", "red"]
    assert "differs from the labels inside" in caplog.text
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.onnx or \.tflite"):
        load(tmp_path / "m.pt")
    with pytest.raises(FileNotFoundError, match="No such model"):
        load(tmp_path / "absent.tflite")
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        load(tmp_path)


_NO_TF = """
import sys
{load}
clf = load(sys.argv[1])
preds = clf.predict(sys.argv[2:], top_k=3)
assert clf.runtime.name == sys.argv[1].rsplit(".", 1)[1], clf.runtime.name
leaked = [m for m in ("tensorflow", "keras") if m in sys.modules]
assert not leaked, leaked
print(",".join(p.predicted for p in preds))
"""


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_onnx_and_tflite_predict_without_importing_tensorflow(exported, fmt):
    _, data, clf, _ = exported
    paths = sorted(str(p) for p in (data / "red").glob("*.png"))[:4]
    code = _NO_TF.format(load="from transferlab.inference import load")
    model = str(clf.run_dir / "export" / FILES[fmt])
    proc = subprocess.run([sys.executable, "-c", code, model, *paths], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().split(",") == [p.predicted for p in clf.predict(paths)]


def test_top_level_load_of_onnx_does_not_import_tensorflow(exported):
    _, data, clf, _ = exported
    paths = sorted(str(p) for p in (data / "red").glob("*.png"))[:2]
    code = _NO_TF.format(load="import transferlab; load = transferlab.load")
    proc = subprocess.run([sys.executable, "-c", code, str(clf.run_dir / "export" / "model.onnx"), *paths],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_cli_predict_on_exported_files(exported):
    _, data, clf, _ = exported
    expected = [p.predicted for p in clf.predict(str(data / "red"))]
    for fmt in ("onnx", "tflite-int8", "savedmodel"):
        model = str(clf.run_dir / "export" / FILES[fmt])
        out = subprocess.run([sys.executable, "-m", "transferlab", "predict", model, str(data / "red"),
                              "--format", "json", "--top-k", "2"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        rows = json.loads(out.stdout)
        assert len(rows) == 20 and all(len(r["top_k"]) == 2 for r in rows)
        labels = [r["predicted"] for r in rows]
        assert labels == expected if fmt != "tflite-int8" else np.mean(np.array(labels) == expected) >= 0.8


def test_export_command_through_register(exported, capsys):
    from transferlab.cli.export import register

    _, _, clf, summary = exported
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", str(clf.run_dir), "--format", "onnx,tflite"])
    assert args.func(args) == 0
    table = capsys.readouterr().out
    assert "model.onnx" in table and "model.tflite" in table and "model.keras" in table  # earlier results kept
    parity = json.loads((clf.run_dir / "export" / "parity.json").read_text())
    assert list(parity["formats"]) == list(FORMATS)
    assert parity["formats"]["keras"] == summary["formats"]["keras"]


def test_export_command_in_the_cli(exported):

    _, _, clf, _ = exported
    out = subprocess.run([sys.executable, "-m", "transferlab", "-q", "export", str(clf.run_dir), "--format",
                          "onnx", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["formats"]["onnx"]["passed"] is True


def test_a_format_failing_parity_is_not_written_unless_kept(exported, tmp_path, monkeypatch, capsys):
    from transferlab.cli.export import register
    from transferlab.export import exporter

    _, _, clf, _ = exported
    run = tmp_path / "run"
    shutil.copytree(clf.run_dir, run, ignore=shutil.ignore_patterns("export"))
    # A threshold no int8 model can meet, so that this export fails its check.
    monkeypatch.setattr(exporter, "INT8_MIN_AGREEMENT", 1.01)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", str(run), "--format", "onnx,tflite-int8"])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "tflite-int8: FAILED" in err and "--keep-failing" in err and "--calibration-images" in err
    assert (run / "export" / "model.onnx").is_file() and not (run / "export" / "model_int8.tflite").exists()
    parity = json.loads((run / "export" / "parity.json").read_text())
    entry = parity["formats"]["tflite-int8"]
    assert entry["passed"] is False and entry["kept"] is False and "--format" in entry["advice"]
    assert parity["formats"]["onnx"]["kept"] is True and parity["passed"] is False
    args = parser.parse_args(["export", str(run), "--format", "tflite-int8", "--keep-failing"])
    assert args.func(args) == 0  # asked to keep it: kept, exit 0, still marked as failing
    assert (run / "export" / "model_int8.tflite").is_file()
    card = json.loads((run / "export" / "model_card.json").read_text())
    assert card["files"]["tflite-int8"]["passed"] is False and card["files"]["tflite-int8"]["kept"] is True


def test_bad_arguments_say_what_to_do(exported, tmp_path):
    _, data, clf, _ = exported
    assert parse_formats("tflite-int8, ONNX") == ["onnx", "tflite-int8"] and parse_formats("all") == list(FORMATS)
    with pytest.raises(ValueError, match="choose from"):
        parse_formats("onnx,coreml")
    with pytest.raises(FileNotFoundError, match="transferlab train"):
        export_run(tmp_path, ["onnx"])
    moved = tmp_path / "run"
    shutil.copytree(clf.run_dir, moved, ignore=shutil.ignore_patterns("export"))
    config = json.loads((moved / "config.json").read_text())
    config["data"]["source"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="--data"):
        export_run(moved, ["onnx"], show_progress=False)
    summary = export_run(moved, ["onnx"], data_root=data, show_progress=False)
    assert summary["formats"]["onnx"]["passed"] and list(summary["formats"]) == ["onnx"]


@pytest.mark.slow
def test_int8_agreement_on_real_photos(tmp_path):
    """int8 agrees with Keras on >= 99% of real held-out photos, accuracy within 1 point, ~1/4 size."""
    data = require_shared("hymenoptera_data")
    clf = transferlab.train(data, show_progress=False, runs_dir=str(tmp_path / "runs"), name="bees",
                            cache_dir=str(tmp_path / "cache"))
    summary = export_run(clf.run_dir, ["onnx", "tflite-int8"], show_progress=False)
    assert summary["split"] == "val" and summary["images"] == 153
    assert summary["formats"]["onnx"]["max_abs_diff"] <= 1e-4
    int8, onnx = summary["formats"]["tflite-int8"], summary["formats"]["onnx"]
    assert int8["top1_agreement"] >= 0.99, int8
    assert abs(int8["accuracy"] - summary["keras_accuracy"]) <= 0.01, int8
    assert int8["bytes"] < 0.35 * onnx["bytes"]
    assert summary["passed"]


def test_serve_an_exported_int8_tflite_without_tensorflow(exported, tmp_path):
    """`transferlab serve` on a lone model_int8.tflite (LiteRT): labels and resize from inside it."""
    pytest.importorskip("ai_edge_litert", reason="TFLite without TensorFlow needs `pip install ai-edge-litert`")
    httpx = pytest.importorskip("httpx")
    from serve_helpers import running_server

    _, data, clf, _ = exported
    model = shutil.copy(clf.run_dir / "export" / "model_int8.tflite", tmp_path / "model_int8.tflite")
    paths = sorted((data / "green").glob("*.png"))[:3]
    expected = [p.predicted for p in transferlab.load(model).predict([str(p) for p in paths])]
    with running_server(model) as (base, _):
        meta = httpx.get(f"{base}/metadata").json()
        assert meta["runtime"] == "tflite" and meta["classes"] == clf.class_names
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
        answer = httpx.post(f"{base}/predict", files=files, timeout=60).json()
    assert [p["label"] for p in answer["predictions"]] == expected
