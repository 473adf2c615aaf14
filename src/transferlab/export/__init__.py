"""Export stage: deployable copies of a trained classifier (the runtimes that run them: transferlab.runtimes).

    from transferlab.export import export_run
    summary = export_run("runs/NAME")                  # -> runs/NAME/export/, parity.json
    transferlab.load("runs/NAME/export/model.onnx")    # predicts without importing TensorFlow

Attributes are imported lazily: the runtimes must load without TensorFlow, the exporter needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export_run": "transferlab.export.exporter",
    "parse_formats": "transferlab.export.exporter",
    "FORMATS": "transferlab.export.exporter",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'transferlab.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
