"""Tiny models for fast tests (a real pretrained backbone is used only in a few slow tests)."""

from __future__ import annotations

from pathlib import Path

TINY_SIZE = 32


def save_tiny_cnn(path: Path, num_classes: int = 4, size: int = TINY_SIZE, seed: int = 0,
                  batchnorm: bool = False) -> Path:
    """A small CNN classifier saved as ``.keras``: usable as a "personal model" backbone.

    ``batchnorm`` adds BatchNormalization layers with non-trivial moving statistics.
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(x)
    if batchnorm:
        x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    if batchnorm:
        x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs, name="tiny_cnn")
    if batchnorm:  # moving statistics that a wrongly unfrozen BN would visibly change
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                gamma, beta, mean, var = layer.get_weights()
                layer.set_weights([gamma, beta, mean + 0.3, var * 2.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def save_tiny_onnx_classifier(path: Path, class_names: list[str], size: int = TINY_SIZE) -> Path:
    """An ONNX classifier built with the ``onnx`` helpers alone (no TensorFlow): uint8 image
    (N, size, size, 3) -> mean colour per channel -> linear -> softmax ``probabilities``.

    Class ``i`` scores the mean of colour channel ``i % 3``, which is what tells apart the tinted
    classes of ``conftest.make_class_folders``. ``labels.txt`` is written next to it.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((3, len(class_names)), np.float32)
    for i in range(len(class_names)):
        weights[i % 3, i] = 0.1
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels", "axes"], ["colour"], keepdims=0),
        helper.make_node("MatMul", ["colour", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_classifier",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [None, size, size, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, len(class_names)])],
        initializer=[numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
                     numpy_helper.from_array(weights, "weights")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    (path.parent / "labels.txt").write_text("\n".join(class_names) + "\n", encoding="utf-8")
    return path
