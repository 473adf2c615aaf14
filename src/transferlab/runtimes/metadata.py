"""Labels and resize carried inside a model file: the keys, and reading them back from TFLite.

Written at export (:mod:`transferlab.export.embed`) so that a model file travelling alone still
knows its class names and the resize it was trained with; read by the runtimes (no TensorFlow).

* ONNX: ``metadata_props`` entries (ONNX Runtime: ``session.get_modelmeta().custom_metadata_map``).
* TFLite: entries of the flatbuffer's ``metadata`` table, each naming a buffer of UTF-8 JSON.
"""

from __future__ import annotations

import os
from pathlib import Path

METADATA_CLASSES = "transferlab.classes"  # JSON list of class names, in output order
METADATA_RESIZE = "transferlab.resize"  # JSON ResizeConfig (size, mode, interpolation, crop_fraction)
_PREFIX = "transferlab."


def tflite_schema():
    """The generated TFLite flatbuffer schema: LiteRT's copy, else TensorFlow's."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # LiteRT not installed: TensorFlow ships the same generated schema
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def read_tflite_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The transferlab entries (UTF-8 text) of a ``.tflite`` file's metadata table."""
    schema = tflite_schema()
    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    found = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        name = (entry.Name() or b"").decode("utf-8", "replace")
        buffer = model.Buffers(entry.Buffer()) if name.startswith(_PREFIX) else None
        if buffer is None or buffer.DataLength() == 0:
            continue
        try:
            found[name] = buffer.DataAsNumpy().tobytes().decode("utf-8")
        except UnicodeDecodeError:
            pass
    return found
