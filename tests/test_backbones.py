"""Backbone registry: catalogue, Keras applications, offline weights, personal models, SavedModels.

Everything is built with weights=None at tiny input sizes, except EfficientNet-Lite0 whose
ImageNet weights ship in a pip package. The network is never touched (TRANSFERLAB_OFFLINE=1).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from transferlab.backbones import (
    BackboneInfo,
    UnsafeModelError,
    WeightsUnavailableError,
    check_fine_tunable,
    get_backbone_info,
    keras_apps,
    list_backbones,
    load_backbone,
    resolve_backbone,
    weights_fingerprint,
)
from transferlab.backbones.keras_apps import KERAS_APPS
from transferlab.backbones.preprocessing import preprocess_numpy

REQUIRED = [
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet50", "resnet50_v2",
    "resnet101_v2", "inception_v3", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
    "efficientnet_b3", "efficientnet_v2_b0", "efficientnet_v2_b1", "efficientnet_v2_b2",
    "efficientnet_v2_b3", "convnext_tiny", "densenet121", "xception",
]
# Bigger/slower to build; still run by default, but can be deselected with -m "not slow".
SLOW_APPS = {"resnet101_v2", "efficientnet_b3", "efficientnet_v2_b3"}



@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No network, and an empty private Keras cache for every test."""
    monkeypatch.setenv("TRANSFERLAB_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    yield
    keras.backend.clear_session()


def _pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _run(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Eager inference (much faster here than predict(), which traces a tf.function)."""
    return keras.ops.convert_to_numpy(model(x, training=False))


def _min_size(name: str) -> int:
    return KERAS_APPS[name].min_size


def _app_params():
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_APPS else n for n in REQUIRED]


def _write_legacy_h5(model: keras.Model, path: Path) -> Path:
    """Write weights in Keras' legacy .h5 layout, like the files Keras downloads."""
    from keras.src.legacy.saving import legacy_h5_format

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


# ---- catalogue --------------------------------------------------------------------------------

def test_listing_has_all_names_unique_and_json_serialisable():
    infos = list_backbones()
    names = [i.name for i in infos]
    assert len(names) == len(set(names))
    assert set(REQUIRED) <= set(names)
    assert names[:3] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    data = json.loads(json.dumps([i.to_dict() for i in infos]))
    assert data[0]["name"] == names[0]
    for info in infos:
        assert isinstance(info, BackboneInfo)
        assert info.family in ("efficientnet_lite", "keras_application")
        assert info.resize_mode in ("center-crop", "squash")
        assert 0.5 < info.crop_fraction <= 1.0
        assert info.params > 0 and info.feature_dim > 0 and info.feature_layer
        assert info.supports_fine_tune
    by_name = {i.name: i for i in infos}
    assert by_name["inception_v3"].input_size == 299 and by_name["xception"].input_size == 299
    assert [by_name[f"efficientnet_b{i}"].input_size for i in range(4)] == [224, 240, 260, 300]
    assert [by_name[f"efficientnet_v2_b{i}"].input_size for i in range(4)] == [224, 240, 260, 300]
    assert by_name["resnet50"].preprocess == "caffe"
    assert by_name["mobilenet_v2"].weights_available is False  # empty KERAS_HOME
    assert by_name["mobilenet_v2"].weights_source.startswith("https://")


def test_unknown_name_suggests_close_matches_and_paths():
    with pytest.raises(ValueError, match="mobilenet_v2") as exc:
        get_backbone_info("mobilenetv2")
    assert ".keras" in str(exc.value) and "SavedModel" in str(exc.value)
    with pytest.raises(ValueError, match="Did you mean"):
        load_backbone("resnet_50", weights=None)
    assert get_backbone_info("MobileNet-V2").name == "mobilenet_v2"


# ---- Keras applications -----------------------------------------------------------------------

@pytest.mark.parametrize("name", _app_params())
def test_keras_app_builds_with_documented_feature_dim(name):
    size = _min_size(name)
    model, info = resolve_backbone(name, weights=None, input_size=size)
    static = get_backbone_info(name)
    assert info.feature_dim == static.feature_dim == KERAS_APPS[name].feature_dim
    assert info.feature_layer == static.feature_layer  # stable names, even for auto-named layers
    assert info.params == static.params
    assert info.input_size == size and info.weights_source is None
    assert weights_fingerprint(info) == "random"
    assert model.name == f"backbone_{name}"
    assert model.layers[0].name == "image" and model.layers[-1].name == "pool"
    base = model.get_layer("base")
    assert isinstance(base, keras.Model) and not base.trainable
    assert len(base.output.shape) == 4
    x = _pixels(2, size)
    out = _run(model, x.astype("uint8"))  # uint8 is cast to float by the input layer
    assert out.shape == (2, static.feature_dim) and np.isfinite(out).all()
    if not KERAS_APPS[name].include_preprocessing_arg and static.preprocess != "none":
        # Our preprocessing layer inside the model == keras.applications.<module>.preprocess_input
        ours = keras.Model(model.input, model.layers[1].output)
        want = keras_apps.keras_preprocess_input(name)(x.copy())
        np.testing.assert_allclose(_run(ours, x), want, rtol=1e-5, atol=1e-3)


def _keras_builtin_preprocessing(name: str, size: int) -> keras.Model:
    """The preprocessing layers Keras puts in front of the stem (include_preprocessing=True)."""
    spec = KERAS_APPS[name]
    ref = getattr(keras.applications, spec.constructor)(
        include_top=False, weights=None, input_shape=(size, size, 3), include_preprocessing=True)
    pre = [l for l in ref.layers[1:4]
           if isinstance(l, (keras.layers.Rescaling, keras.layers.Normalization))]
    assert pre, f"no built-in preprocessing found in {name}"
    return keras.Model(ref.input, pre[-1].output)


PREPROCESS_CASES = {
    # name: expected mode (verified against keras/src/applications/*.py)
    "mobilenet_v2": "-1-1", "mobilenet_v3_small": "-1-1", "mobilenet_v3_large": "-1-1",
    "resnet50": "caffe", "resnet50_v2": "-1-1", "resnet101_v2": "-1-1", "inception_v3": "-1-1",
    "xception": "-1-1", "densenet121": "torch", "convnext_tiny": "torch",
    **{f"efficientnet_b{i}": "none" for i in range(4)},
    **{f"efficientnet_v2_b{i}": "torch" for i in range(4)},
}


def test_preprocess_modes_are_the_verified_ones():
    assert {n: get_backbone_info(n).preprocess for n in REQUIRED} == PREPROCESS_CASES


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_v2_b0", "convnext_tiny"])
def test_preprocessing_matches_keras_builtin_layers(name):
    """Models built with include_preprocessing=False: our layer == what Keras would include.

    (Families with a real ``preprocess_input`` are compared in the build test above.)
    """
    size = _min_size(name)
    info = get_backbone_info(name)
    model = load_backbone(name, weights=None, input_size=size)
    ours = keras.Model(model.input, model.layers[1].output)  # image -> our preprocessing
    x = _pixels(2, size, seed=1)
    # preprocess_input is a pass-through for these; Keras normalises inside the model instead.
    np.testing.assert_array_equal(keras_apps.keras_preprocess_input(name)(x.copy()), x)
    want = _run(_keras_builtin_preprocessing(name, size), x)
    np.testing.assert_allclose(_run(ours, x), want, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(preprocess_numpy(x, info.preprocess), want, rtol=1e-5, atol=1e-3)


def test_efficientnet_v1_keeps_its_own_preprocessing():
    model, info = resolve_backbone("efficientnet_b0", weights=None, input_size=32)
    assert info.preprocess == "none"
    assert [l.name for l in model.layers] == ["image", "base", "pool"]
    kinds = [type(l) for l in model.get_layer("base").layers[1:3]]
    assert kinds == [keras.layers.Rescaling, keras.layers.Normalization]
    x = _pixels(1, 8)
    np.testing.assert_array_equal(keras.applications.efficientnet.preprocess_input(x.copy()), x)


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50", "efficientnet_b0"])
def test_static_params_match_a_weights_none_build(name):
    spec = KERAS_APPS[name]
    kwargs = {"include_preprocessing": False} if spec.include_preprocessing_arg else {}
    net = getattr(keras.applications, spec.constructor)(
        include_top=False, weights=None, input_shape=(spec.min_size,) * 2 + (3,), **kwargs)
    assert net.count_params() == get_backbone_info(name).params


# One per file-name pattern by default; the others follow the same pattern (slow).
_NAME_PATTERNS = {"mobilenet_v2", "mobilenet_v3_small", "resnet50", "resnet50_v2", "inception_v3",
                  "efficientnet_b0", "efficientnet_v2_b0", "convnext_tiny", "densenet121",
                  "xception"}


@pytest.mark.parametrize(
    "name", [n if n in _NAME_PATTERNS else pytest.param(n, marks=pytest.mark.slow)
             for n in REQUIRED])
def test_weight_file_names_match_keras(name, monkeypatch):
    """Our cache file name and URL are exactly what the Keras constructor would download."""
    from keras.src.utils import file_utils

    class Requested(Exception):
        pass

    def fake_get_file(fname=None, origin=None, **kwargs):
        raise Requested(fname, origin)

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)
    spec = KERAS_APPS[name]
    # File names don't depend on the size, except MobileNetV2's (96..224); build small.
    size = 96 if name == "mobilenet_v2" else spec.min_size
    kwargs = {"include_preprocessing": False} if spec.include_preprocessing_arg else {}
    with pytest.raises(Requested) as exc, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MobileNetV3: "weights for 224 will be loaded"
        getattr(keras.applications, spec.constructor)(
            include_top=False, weights="imagenet", input_shape=(size, size, 3), **kwargs)
    assert exc.value.args == (keras_apps.weights_file_name(name, size),
                              keras_apps.weights_url(name, size))


# ---- weights: offline, local files, cache -----------------------------------------------------

def test_offline_error_is_fast_and_says_what_to_do(tmp_path):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as exc:
        load_backbone("mobilenet_v2")
    assert time.monotonic() - start < 5
    msg = str(exc.value)
    fname = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    assert fname in msg
    url = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + fname
    assert url in msg
    assert str(tmp_path / "keras_home" / "models") in msg
    assert "--weights PATH" in msg
    assert isinstance(exc.value, RuntimeError)


def test_weights_path_loads_a_local_file(tmp_path):
    net = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3))
    path = tmp_path / "mnv2.weights.h5"
    net.save_weights(path)
    model, info = resolve_backbone("mobilenet_v2", weights=path, input_size=96)
    for a, b in zip(model.get_layer("base").get_weights(), net.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _pixels(2, 96)
    want = _run(net, x / 127.5 - 1.0).mean(axis=(1, 2))
    np.testing.assert_allclose(_run(model, x), want, rtol=1e-4, atol=1e-4)
    assert info.weights_source == str(path)
    assert weights_fingerprint(info) == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(FileNotFoundError):
        load_backbone("mobilenet_v2", weights=tmp_path / "missing.h5")


def test_cached_keras_file_is_used_offline(tmp_path):
    """A file in $KERAS_HOME/models under Keras' name serves weights='imagenet' offline."""
    net = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3))
    cache = tmp_path / "keras_home" / "models"
    path = _write_legacy_h5(net, cache / keras_apps.weights_file_name("mobilenet_v2", 96))
    model, info = resolve_backbone("mobilenet_v2", input_size=96)
    np.testing.assert_array_equal(model.get_layer("base").get_weights()[0], net.get_weights()[0])
    assert info.weights_source == str(path) and info.weights_available
    assert weights_fingerprint(info) == weights_fingerprint(info)  # cached, same answer


def test_efficientnet_imagenet_file_matches_keras_imagenet_graph(tmp_path, monkeypatch):
    """Keras adds Rescaling(1/sqrt(std)) only for weights='imagenet'; we fold it equivalently."""
    from keras.src.applications import efficientnet

    src = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                            input_shape=(32, 32, 3))
    norm = next(l for l in src.layers if isinstance(l, keras.layers.Normalization))
    count = norm.get_weights()[2]
    norm.set_weights([np.array([0.485, 0.456, 0.406], "float32"),
                      np.array([0.229, 0.224, 0.225], "float32"), count])  # Keras file layout
    path = _write_legacy_h5(src, tmp_path / "keras_home" / "models" / "efficientnetb0_notop.h5")
    monkeypatch.setattr(efficientnet.file_utils, "get_file", lambda *a, **k: str(path))
    ref = keras.applications.EfficientNetB0(include_top=False, weights="imagenet",
                                            input_shape=(32, 32, 3))
    ours = load_backbone("efficientnet_b0", input_size=32)
    x = _pixels(2, 32, seed=3)
    want = _run(ref, x).mean(axis=(1, 2))
    np.testing.assert_allclose(_run(ours, x), want, rtol=1e-4, atol=1e-4)
    # base.save_weights() of that backbone reloads without folding twice.
    saved = tmp_path / "b0.weights.h5"
    ours.get_layer("base").save_weights(saved)
    again = load_backbone("efficientnet_b0", weights=saved, input_size=32)
    np.testing.assert_allclose(_run(again, x), want, rtol=1e-4, atol=1e-4)


def test_keras_app_cut_at_a_named_layer():
    model, info = resolve_backbone("mobilenet_v2", weights=None, input_size=32,
                                   feature_layer="block_13_expand_relu")
    assert info.feature_layer == "block_13_expand_relu" and info.feature_dim == 576
    assert _run(model, _pixels(1, 32)).shape == (1, 576)
    with pytest.raises(ValueError, match="Available layers: .*block_1_expand"):
        load_backbone("mobilenet_v2", weights=None, input_size=32, feature_layer="nope")


def test_network_probe_is_bounded(monkeypatch):
    monkeypatch.delenv("TRANSFERLAB_OFFLINE")
    monkeypatch.setattr(keras_apps, "_probe_cache", {})

    def hanging_connect(*args, **kwargs):  # a resolver/connect that hangs, then fails
        time.sleep(3)
        raise OSError("unreachable")

    monkeypatch.setattr(keras_apps.socket, "create_connection", hanging_connect)
    start = time.monotonic()
    assert keras_apps.is_offline(timeout=0.3) is True
    assert time.monotonic() - start < 2


# ---- personal models --------------------------------------------------------------------------

def _small_classifier(lambda_layer: bool = False, size: int | None = 32) -> keras.Model:
    inputs = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    if lambda_layer:
        x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(12, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="my_classifier")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_personal_model_round_trip(tmp_path, suffix, caplog):
    clf = _small_classifier()
    path = tmp_path / f"clf{suffix}"
    clf.save(path)
    with caplog.at_level(logging.INFO, logger="transferlab.backbones.personal"):
        model, info = resolve_backbone(path)
    # Walks back past predictions/drop/hidden to "gap", then prefers its 4-D input + our pool.
    assert info.feature_layer == "conv2" and "conv2" in caplog.text
    assert info.family == "personal" and info.input_size == 32 and info.feature_dim == 16
    assert info.preprocess == "none" and info.supports_fine_tune
    assert [l.name for l in model.layers] == ["image", "base", "pool"]
    assert len(model.get_layer("base").output.shape) == 4
    x = _pixels(2, 32)
    want = _run(keras.Model(clf.input, clf.get_layer("gap").output), x)
    np.testing.assert_allclose(_run(model, x), want, rtol=1e-5, atol=1e-5)
    assert weights_fingerprint(info) == hashlib.sha256(path.read_bytes()).hexdigest()

    hidden, hinfo = resolve_backbone(path, feature_layer="hidden")
    assert hinfo.feature_dim == 12 and _run(hidden, x).shape == (2, 12)
    assert "pool" not in [l.name for l in hidden.layers]  # already 2-D
    with pytest.raises(ValueError, match="conv1.*conv2|Available layers"):
        load_backbone(path, feature_layer="nope")


def test_personal_model_with_lambda_needs_unsafe(tmp_path):
    path = tmp_path / "lambda.keras"
    _small_classifier(lambda_layer=True).save(path)
    with pytest.raises(UnsafeModelError, match="--unsafe"):
        load_backbone(path)
    with pytest.warns(UserWarning, match="unsafe=True"):
        model = load_backbone(path, unsafe=True)
    assert _run(model, _pixels(1, 32)).shape == (1, 16)


def test_personal_model_with_dynamic_input_needs_input_size(tmp_path):
    path = tmp_path / "dyn.keras"
    _small_classifier(size=None).save(path)
    with pytest.raises(ValueError, match="input_size"):
        load_backbone(path)
    model, info = resolve_backbone(path, input_size=40)
    assert info.input_size == 40 and _run(model, _pixels(1, 40)).shape == (1, 16)


def test_weights_only_file_is_not_a_model(tmp_path):
    path = tmp_path / "w.weights.h5"
    _small_classifier().save_weights(path)
    with pytest.raises(ValueError, match="weights-only"):
        load_backbone(path)


# ---- SavedModel -------------------------------------------------------------------------------

def test_savedmodel_is_feature_extraction_only(tmp_path):
    import tensorflow as tf

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.random.normal((3, 5), seed=1))

        @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32)])
        def __call__(self, x):
            return {"feature_vector": tf.reduce_mean(tf.tensordot(x, self.w, 1), axis=[1, 2])}

    module = Module()
    path = tmp_path / "hub_module"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.__call__})

    model, info = resolve_backbone(path)
    assert info.family == "savedmodel" and not info.supports_fine_tune
    assert info.input_size == 16 and info.feature_dim == 5
    x = _pixels(2, 16)
    np.testing.assert_allclose(_run(model, x), module(tf.constant(x))["feature_vector"],
                               rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="feature-extraction only"):
        check_fine_tunable(info)
    assert len(weights_fingerprint(info)) == 64
    check_fine_tunable(get_backbone_info("mobilenet_v2"))  # no error for Keras models


# ---- EfficientNet-Lite ------------------------------------------------------------------------

@pytest.mark.slow
def test_efficientnet_lite0_via_registry():
    model, info = resolve_backbone("efficientnet_lite0", input_size=64)
    assert info.preprocess == "lite" and info.weights_available
    assert info.interpolation == "bicubic" and info.crop_fraction == 0.875
    assert info.params == get_backbone_info("efficientnet_lite0").params
    assert [l.name for l in model.layers][-2:] == ["base", "pool"]
    assert _run(model, _pixels(2, 64)).shape == (2, 1280)
    assert len(weights_fingerprint(info)) == 64


def test_lite_static_params_match_builds():
    from transferlab.backbones.efficientnet_lite import build_efficientnet_lite

    for variant in ("efficientnet_lite1", "efficientnet_lite2"):
        net = build_efficientnet_lite(variant, weights=None, input_shape=(32, 32, 3))
        assert net.count_params() == get_backbone_info(variant).params


def test_tensorflow_startup_chatter_is_filtered_but_other_stderr_kept():
    code = textwrap.dedent("""
        import os
        from transferlab._tf import _startup_chatter_filtered
        with _startup_chatter_filtered():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
            os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see ...\\n")
            os.write(2, b"E0000 something real went wrong\\n")
        os.write(2, b"after\\n")
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60).stderr
    assert err.splitlines() == ["E0000 something real went wrong", "after"]
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"  # the user asked for TensorFlow's info logs: nothing is hidden
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60).stderr
    assert "oneDNN" in err and "absl::InitializeLog" in err
