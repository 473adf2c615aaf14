"""The user's own models as backbones: Keras model files and TensorFlow SavedModel directories.

* ``.keras`` / ``.h5`` files (or an unzipped Keras model dir with ``config.json``): loaded with
  ``keras.models.load_model(path, compile=False, safe_mode=not unsafe)`` and cut before their
  classification head; the cut is a functional sub-model, so it can be fine-tuned.
* Other SavedModel directories (TF-Hub feature-vector modules, ``tf.saved_model.save`` /
  ``model.export`` output, Keras 2 SavedModels): wrapped in ``keras.layers.TFSMLayer``; these are
  feature-extraction only (the layer holds copies of the variables, so training can't reach the
  graph that computes the features).

Both return ``(base, fields)``: the functional model named ``"base"`` and the facts the registry
puts into a ``BackboneInfo``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np

from transferlab.errors import ConfigError, ModelFormatError, TransferlabError

logger = logging.getLogger(__name__)

KERAS_MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
#: Layers that make up a classification head; the feature layer is the one feeding the first.
HEAD_LAYER_TYPES: tuple[type, ...] = (
    keras.layers.Dense, keras.layers.Softmax, keras.layers.Activation,
    keras.layers.Dropout, keras.layers.Flatten,
)


class UnsafeModelError(TransferlabError, ValueError):
    """The model file needs ``unsafe=True`` (it contains a Lambda layer / Python code)."""


def looks_like_path(name_or_path: str | os.PathLike) -> bool:
    """True for anything that should be treated as a model path rather than a registry name."""
    s = os.fspath(name_or_path)
    return (Path(s).expanduser().exists() or s.endswith(KERAS_MODEL_SUFFIXES)
            or os.sep in s or "/" in s)


def is_savedmodel_dir(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def is_keras_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


# ---- Keras model files ------------------------------------------------------------------------

def load_keras_model(path: Path, unsafe: bool = False) -> keras.Model:
    """``load_model`` with safe mode on unless ``unsafe``; explains what to do when it refuses."""
    if path.name.endswith(".weights.h5"):
        raise ModelFormatError(
            f"{path} is a weights-only file (no architecture). Pass the architecture's registry "
            f"name with --weights {path} (load_backbone(name, weights=path)), or save the full "
            "model with model.save('model.keras').")
    if unsafe:
        msg = (f"Loading {path} with unsafe=True: Lambda layers and other serialized Python code "
               "in this file will be executed. Only do this for files you trust.")
        warnings.warn(msg, UserWarning, stacklevel=3)
        logger.warning(msg)
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as exc:
        text = str(exc)
        if not unsafe and ("safe_mode" in text or "Lambda" in text or "unsafe" in text):
            raise UnsafeModelError(
                f"{path} contains a Lambda layer (arbitrary Python code), which safe mode refuses "
                "to deserialize. If and only if you trust this file, pass --unsafe "
                "(unsafe=True). Better: replace the Lambda with built-in layers and re-save."
            ) from exc
        if "No model config" in text or "model_config" in text:
            raise ModelFormatError(
                f"{path} holds weights but no model architecture. Pass the architecture's "
                f"registry name with --weights {path} instead.") from exc
        raise ModelFormatError(f"Could not load {path} as a Keras model: {exc}") from exc
    if not isinstance(model, keras.Model):
        raise ModelFormatError(f"{path} does not contain a Keras model (got {type(model).__name__}).")
    return model


def _history(tensor: Any) -> tuple[Any, int]:
    """(producing layer, node index) of a symbolic Keras tensor."""
    op, node_index, _ = tensor._keras_history
    return op, node_index


def _graph_outputs(model: keras.Model) -> dict[str, Any]:
    """Layer name -> its output tensor *in this model's graph* (walks back from the outputs)."""
    found: dict[str, Any] = {}
    stack = list(model.outputs)
    seen: set[int] = set()
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        op, node_index = _history(tensor)
        found.setdefault(op.name, tensor)
        stack.extend(op._inbound_nodes[node_index].input_tensors)
    return found


def _auto_feature_tensor(model: keras.Model) -> tuple[Any, str]:
    """Walk back past the head (Dense/Softmax/Activation/Dropout/Flatten) to the feature tensor.

    A GlobalAveragePooling2D with a 4-D input is stepped over too, so the base keeps the conv map
    (for Grad-CAM / fine-tuning) and our own average pooling reproduces it exactly.
    """
    tensor = model.outputs[0]
    op, node_index = _history(tensor)
    while isinstance(op, HEAD_LAYER_TYPES):
        inputs = op._inbound_nodes[node_index].input_tensors
        if len(inputs) != 1:
            break
        tensor = inputs[0]
        op, node_index = _history(tensor)
    if isinstance(op, keras.layers.InputLayer):
        raise ModelFormatError(
            f"Model {model.name!r} has no layer before its classification head. Pass "
            f"feature_layer=NAME; layers: {', '.join(l.name for l in model.layers)}")
    if isinstance(op, keras.layers.GlobalAveragePooling2D):
        inputs = op._inbound_nodes[node_index].input_tensors
        if len(inputs) == 1 and len(inputs[0].shape) == 4:
            tensor = inputs[0]
            op, _ = _history(tensor)
    return tensor, op.name


def _input_size(shape: tuple, input_size: int | None, source: str) -> int:
    if len(shape) != 4 or shape[-1] != 3:
        raise ModelFormatError(f"{source} takes input of shape {shape}; transferlab backbones need "
                         "RGB images (batch, height, width, 3), channels last.")
    h, w = shape[1], shape[2]
    if h is None or w is None:
        if input_size is None:
            raise ConfigError(f"{source} accepts any image size; pass input_size (e.g. 224).")
        return int(input_size)
    if h != w:
        raise ModelFormatError(f"{source} expects {h}x{w} images; only square inputs are supported.")
    if input_size is not None and int(input_size) != h:
        raise ConfigError(f"{source} expects {h}x{h} images but input_size={input_size} was "
                         f"requested. Drop input_size, or re-save the model at that size.")
    return int(h)


def load_personal_base(
    path: Path,
    *,
    input_size: int | None = None,
    feature_layer: str | None = None,
    unsafe: bool = False,
) -> tuple[keras.Model, dict[str, Any]]:
    """Load a user's Keras classifier and cut it at its feature layer (see module docstring)."""
    model = load_keras_model(path, unsafe=unsafe)
    if len(model.inputs) != 1:
        raise ModelFormatError(f"{path} has {len(model.inputs)} inputs; a backbone needs exactly one.")
    size = _input_size(tuple(model.inputs[0].shape), input_size, str(path))
    if feature_layer is not None:
        tensors = _graph_outputs(model)
        if feature_layer not in tensors:
            names = [layer.name for layer in model.layers]
            raise ConfigError(f"{path} has no layer {feature_layer!r}. Available layers: "
                             f"{', '.join(names)}")
        tensor, chosen = tensors[feature_layer], feature_layer
    else:
        tensor, chosen = _auto_feature_tensor(model)
        logger.info("%s: using layer %r (output %s) as features", path, chosen,
                    tuple(tensor.shape))
    base = keras.Model(model.inputs[0], tensor, name="base")
    return base, {
        "family": "personal",
        "input_size": size,
        "feature_layer": chosen,
        "feature_dim": int(tensor.shape[-1]),
        "params": int(base.count_params()),
        "supports_fine_tune": True,
    }


# ---- SavedModel directories -------------------------------------------------------------------

def _signature_defs(path: Path) -> dict[str, Any] | None:
    """Signature defs read from saved_model.pb without loading variables (None if unreadable)."""
    try:
        from tensorflow.python.saved_model import loader_impl

        saved = loader_impl.parse_saved_model(str(path))
        return dict(saved.meta_graphs[0].signature_def)
    except Exception:  # private TF API: fall back to TFSMLayer's own checks
        return None


def _pick_endpoint(path: Path, sigs: dict[str, Any] | None) -> str:
    if not sigs:
        return "__call__"  # TF2 hub modules without signatures are callable objects
    if "serving_default" in sigs:
        return "serving_default"
    if len(sigs) == 1:
        return next(iter(sigs))
    raise ModelFormatError(f"SavedModel {path} has no 'serving_default' signature; available "
                     f"endpoints: {', '.join(sigs)}. Re-export it with a serving_default.")


def _signature_input_size(sig: Any) -> int | None:
    if sig is None or len(sig.inputs) != 1:
        return None
    info = next(iter(sig.inputs.values()))
    dims = [d.size for d in info.tensor_shape.dim]
    if len(dims) == 4 and dims[1] > 0 and dims[1] == dims[2]:
        return int(dims[1])
    return None


def load_savedmodel_base(
    path: Path,
    *,
    input_size: int | None = None,
    feature_layer: str | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """Wrap a non-Keras SavedModel dir in ``TFSMLayer`` (feature extraction only).

    ``feature_layer`` selects the output key when the endpoint returns several tensors.
    """
    sigs = _signature_defs(path)
    endpoint = _pick_endpoint(path, sigs)
    size = input_size or _signature_input_size((sigs or {}).get(endpoint))
    if size is None:
        raise ModelFormatError(f"Cannot infer the input size of SavedModel {path}; pass input_size "
                         "(e.g. 224).")
    try:
        layer = keras.layers.TFSMLayer(str(path), call_endpoint=endpoint, name="savedmodel")
    except ValueError as exc:
        listing = ", ".join(sigs) if sigs else "(none)"
        raise ModelFormatError(f"Cannot call SavedModel {path} via endpoint {endpoint!r}: {exc} "
                         f"Signatures: {listing}.") from exc
    probe = layer(np.zeros((1, size, size, 3), np.float32))
    key = None
    if isinstance(probe, dict):
        keys = list(probe)
        if feature_layer is not None:
            if feature_layer not in probe:
                raise ModelFormatError(f"SavedModel {path} endpoint {endpoint!r} has no output "
                                 f"{feature_layer!r}; outputs: {', '.join(keys)}.")
            key = feature_layer
        elif len(keys) == 1:
            key = keys[0]
        else:
            raise ModelFormatError(f"SavedModel {path} endpoint {endpoint!r} returns several outputs "
                             f"({', '.join(keys)}); choose one with feature_layer=NAME.")
        probe = probe[key]
    shape = tuple(probe.shape)
    if len(shape) not in (2, 4):
        raise ModelFormatError(f"SavedModel {path} returns shape {shape}; expected (N, D) features "
                         "or an (N, h, w, C) feature map.")
    inp = keras.Input((size, size, 3), name="savedmodel_input")
    out = layer(inp)
    if key is not None:
        out = out[key]
    base = keras.Model(inp, out, name="base")
    logger.info("SavedModel %s: endpoint %r, output %s, shape %s", path, endpoint, key, shape)
    return base, {
        "family": "savedmodel",
        "input_size": int(size),
        "feature_layer": key or endpoint,
        "feature_dim": int(shape[-1]),
        "params": int(sum(int(np.prod(w.shape)) for w in layer.weights)),
        "supports_fine_tune": False,
    }
