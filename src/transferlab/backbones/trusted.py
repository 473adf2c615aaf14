"""Load a run's Keras model whose backbone is a TensorFlow SavedModel, safely and without ceremony.

A run trained on ``--backbone path/to/saved_model`` holds that SavedModel in a
``keras.layers.TFSMLayer``, which Keras' safe mode refuses to load (a SavedModel's graph can do
anything). The user trusted that SavedModel when training, so transferlab records its content
hash in the run's ``config.json`` (``backbone.savedmodel_sha256``) and, when the run is loaded
again, turns safe mode off only when:

* every ``TFSMLayer`` in ``model.keras`` points at a SavedModel recorded by the run, and the
  directory's content (``saved_model.pb`` and ``variables/``) still has the recorded hash;
* the model holds nothing else that safe mode guards against (``Lambda`` layers, serialized
  Python functions, external vocabulary files, Torch modules) and only Keras or transferlab classes.

Otherwise :class:`UntrustedModelError` says what differs and that ``--unsafe`` (``safe_mode=False``)
loads it anyway, for a model the user trusts.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

from transferlab._paths import display_path
from transferlab.errors import TransferlabError

logger = logging.getLogger("transferlab")

HASH_KEY = "savedmodel_sha256"
# What Keras' safe mode refuses to deserialize, besides TFSMLayer (checked on its own).
_UNSAFE_CLASSES = frozenset({"Lambda", "__lambda__", "TorchModuleWrapper", "StringLookup", "IntegerLookup",
                             "TextVectorization"})
_SAFE_MODULE_PREFIXES = ("keras", "transferlab", "builtins")


class UntrustedModelError(TransferlabError, ValueError):
    """The model needs safe mode off and is not provably what the user trusted at training."""


def trust_record(info) -> dict[str, str]:
    """What to record in a run's ``config.json`` ``backbone`` entry: the SavedModel's content hash."""
    if getattr(info, "family", None) != "savedmodel" or not info.weights_source:
        return {}
    from transferlab.backbones.registry import weights_fingerprint

    return {HASH_KEY: weights_fingerprint(info)}


def _objects(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        if "class_name" in node:
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _scan(model_file: Path) -> tuple[list[str], list[str]]:
    """(what else safe mode would refuse, SavedModel paths of the TFSMLayers) in a ``.keras`` file."""
    with zipfile.ZipFile(model_file) as archive:
        config = json.loads(archive.read("config.json"))
    others, savedmodels = [], []
    for obj in _objects(config):
        name, module = str(obj.get("class_name")), obj.get("module")
        if name == "TFSMLayer":
            savedmodels.append(str((obj.get("config") or {}).get("filepath")))
        elif name in _UNSAFE_CLASSES:
            others.append(f"a {name} layer")
        elif module and not str(module).startswith(_SAFE_MODULE_PREFIXES):
            others.append(f"the class {module}.{name}")
    return sorted(set(others)), sorted(set(savedmodels))


def _unsafe_hint(model_file: Path) -> str:
    return (f"If you trust it, load it with --unsafe (Python: safe_mode=False); transferlab then lets Keras load "
            f"{display_path(model_file)} with safe mode off")


def needs_trust(model_file: Path) -> bool:
    """True for a ``.keras`` file whose model holds a TFSMLayer (a SavedModel backbone)."""
    if model_file.suffix.lower() != ".keras" or not zipfile.is_zipfile(model_file):
        return False
    return bool(_scan(model_file)[1])


def check_trusted(model_file: Path, run_config: dict | None) -> None:
    """Raise :class:`UntrustedModelError` unless ``model_file`` may load with safe mode off (see module doc)."""
    from transferlab.backbones.registry import directory_sha256

    others, savedmodels = _scan(model_file)
    if others:
        raise UntrustedModelError(f"{display_path(model_file)} contains {', '.join(others)}, which Keras' safe mode "
                                  f"refuses to load (it can run code). {_unsafe_hint(model_file)}.")
    backbone = (run_config or {}).get("backbone") or {}
    recorded = {}
    if backbone.get(HASH_KEY) and backbone.get("weights_source"):
        recorded[os.path.realpath(backbone["weights_source"])] = backbone[HASH_KEY]
    for saved in savedmodels:
        where = display_path(saved)
        expected = recorded.get(os.path.realpath(saved))
        if expected is None:
            why = ("its run records no content hash for it (trained before transferlab recorded one, or not "
                   "loaded from its run directory)" if not recorded else "it is not the SavedModel its run was "
                   "trained on")
            raise UntrustedModelError(f"{display_path(model_file)} runs the SavedModel {where} (a TFSMLayer), which "
                                      f"Keras' safe mode refuses to load because a SavedModel can run any "
                                      f"TensorFlow graph, and {why}. {_unsafe_hint(model_file)}.")
        if not (Path(saved) / "saved_model.pb").is_file():
            raise UntrustedModelError(f"{display_path(model_file)} needs the SavedModel it was trained on at {where}, "
                                      f"which is gone: put it back at that path (or retrain on its new location).")
        now = directory_sha256(Path(saved))
        if now != expected:
            raise UntrustedModelError(f"The SavedModel {where} changed since the run was trained on it (content "
                                      f"sha256 {expected[:12]}... then, {now[:12]}... now), so it is not provably the "
                                      f"model you trusted. {_unsafe_hint(model_file)}.")
    logger.info("%s: its SavedModel backbone is unchanged since training (content hash checked); loading it",
                display_path(model_file))


def load_run_model(model_file: str | os.PathLike, *, safe_mode: bool = True, run_config: dict | None = None):
    """``keras.models.load_model(model_file, compile=False)`` that knows the run's own SavedModel.

    Args:
        model_file: a ``.keras`` / ``.h5`` file.
        safe_mode: False loads anything (trusted files only). True keeps Keras' safe mode, except
            for a SavedModel backbone that :func:`check_trusted` verifies against ``run_config``.
        run_config: the run's ``config.json`` (None when the model has no run).

    Raises:
        UntrustedModelError: safe mode would refuse the model; the message says why and names ``--unsafe``.
    """
    from transferlab._keras import keras

    model_file = Path(model_file)
    if safe_mode and needs_trust(model_file):
        check_trusted(model_file, run_config)
        safe_mode = False
    try:
        return keras.models.load_model(model_file, compile=False, safe_mode=safe_mode)
    except ValueError as exc:
        text = str(exc)
        if safe_mode and ("safe_mode" in text or "unsafe_deserialization" in text):
            raise UntrustedModelError(f"{display_path(model_file)} holds code that Keras' safe mode refuses to load "
                                      f"(Keras: {text.splitlines()[0][:160]}). {_unsafe_hint(model_file)}.") from exc
        raise
