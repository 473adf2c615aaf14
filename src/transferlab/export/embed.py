"""Labels and resize carried inside exported model files, so a file travelling alone stays right.

* ONNX: two ``metadata_props`` entries (any ONNX Runtime reads them:
  ``session.get_modelmeta().custom_metadata_map``).
* TFLite: two entries of the model's flatbuffer ``metadata`` table, each naming a buffer that
  holds UTF-8 JSON (read with any flatbuffer reader of the TFLite schema). The standard TFLite
  Metadata (``TFLITE_METADATA``, for the Android Task Library) needs tflite-support, whose
  protobuf pin TensorFlow 2.21 cannot run with; the labels are also in labels.txt beside it.

Keys are :data:`~transferlab.runtimes.metadata.METADATA_CLASSES` (a JSON list of class names in
output order) and :data:`~transferlab.runtimes.metadata.METADATA_RESIZE` (a JSON ResizeConfig).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transferlab._atomic import atomic_write_bytes
from transferlab.data.decode import ResizeConfig
from transferlab.runtimes.metadata import METADATA_CLASSES, METADATA_RESIZE, tflite_schema


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


def embed_tflite(path: str | os.PathLike, entries: dict[str, str]) -> None:
    """Add ``entries`` to the ``.tflite`` file's metadata table (replacing same-named ones)."""
    import flatbuffers
    import numpy as np

    schema = tflite_schema()
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
