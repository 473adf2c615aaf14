"""Export stage: deployable copies of a trained classifier (the runtimes that run them: transferlab.runtimes).

    from transferlab.export import export_run
    summary = export_run("runs/NAME")                  # -> runs/NAME/export/, parity.json
    transferlab.load("runs/NAME/export/model.onnx")    # predicts without importing TensorFlow

Attributes are imported lazily: the runtimes must load without TensorFlow, the exporter needs it.
"""

from __future__ import annotations

from transferlab._lazy import lazy_attributes

_LAZY = {
    "export_run": "transferlab.export.exporter",
    "parse_formats": "transferlab.export.exporter",
    "FORMATS": "transferlab.export.exporter",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
