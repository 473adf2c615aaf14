"""Labels and resize carried inside exported model files, so a file travelling alone stays right.

* ONNX: two ``metadata_props`` entries (any ONNX Runtime reads them:
  ``session.get_modelmeta().custom_metadata_map``).
* TFLite: two entries of the model's flatbuffer ``metadata`` table, each naming a buffer that
  holds UTF-8 JSON (read with any flatbuffer reader of the TFLite schema). The standard TFLite
  Metadata (``TFLITE_METADATA``, for the Android Task Library) needs tflite-support, whose
  protobuf pin TensorFlow 2.21 cannot run with; the labels are also in labels.txt beside it.

Keys are :data:`~transferlab.export.runtimes.METADATA_CLASSES` (a JSON list of class names in
output order) and :data:`~transferlab.export.runtimes.METADATA_RESIZE` (a JSON ResizeConfig).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transferlab._atomic import atomic_write_bytes
from transferlab.data.pipeline import ResizeConfig
from transferlab.export.runtimes import METADATA_CLASSES, METADATA_RESIZE


def model_metadata(class_names: list[str], resize: ResizeConfig) -> dict[str, str]:
    """The key -> JSON text entries written into every model file."""
    return {METADATA_CLASSES: json.dumps(list(class_names)), METADATA_RESIZE: json.dumps(resize.to_dict())}


def embed_onnx(path: str | os.PathLike, entries: dict[str, str]) -> None:
    """Set ``entries`` in the ONNX file's ``metadata_props`` (replacing same-named ones)."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in kept}, **entries})
    atomic_write_bytes(path, model.SerializeToString())


def _tflite_schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # LiteRT not installed: TensorFlow ships the same generated schema
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def embed_tflite(path: str | os.PathLike, entries: dict[str, str]) -> None:
    """Add ``entries`` to the ``.tflite`` file's metadata table (replacing same-named ones)."""
    import flatbuffers
    import numpy as np

    schema = _tflite_schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(Path(path).read_bytes()), 0)
    model.metadata = [m for m in (model.metadata or []) if m.name.decode() not in entries] or []
    model.buffers = model.buffers or []
    for key, text in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(text.encode("utf-8"), np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = key.encode(), len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    atomic_write_bytes(path, bytes(builder.Output()))


def read_tflite_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The UTF-8 entries of a ``.tflite`` file's metadata table (binary ones are skipped)."""
    schema = _tflite_schema()
    data = Path(path).read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    found = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        name = (entry.Name() or b"").decode("utf-8", "replace")
        if not name.startswith("transferlab."):
            continue
        buffer = model.Buffers(entry.Buffer())
        if buffer is None or buffer.DataLength() == 0:
            continue
        try:
            found[name] = buffer.DataAsNumpy().tobytes().decode("utf-8")
        except UnicodeDecodeError:
            pass
    return found
