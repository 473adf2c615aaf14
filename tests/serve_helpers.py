"""A tiny ONNX classifier built without TensorFlow, and a real `transferlab serve` in a subprocess."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

TINY_CLASSES = ["red", "green", "blue"]
TINY_SIZE = 16
SRC = Path(__file__).resolve().parents[1] / "src"

# Run in the server process before anything else: importing TensorFlow or Keras raises, so a
# service that needed them would fail to start (or to answer) in these tests.
_NO_TF = """
import importlib.abc, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'):
            raise ImportError('importing ' + name + ' is forbidden in this test process')
sys.meta_path.insert(0, _NoTensorFlow())
from transferlab.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def save_tiny_onnx(path: Path, *, embed_metadata: bool = True, scale: float = 0.05) -> Path:
    """uint8 (N, 16, 16, 3) -> softmax(scale * mean colour): a red image is 'red', etc.

    With ``embed_metadata`` the labels and resize are in the file's ``metadata_props``, as
    ``transferlab export`` writes them.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array((np.eye(3) * scale).astype(np.float32), "weights")
    nodes = [helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["pixels"], ["colour"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["colour", "weights"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)]
    graph = helper.make_graph(
        nodes, "tiny_colour_classifier",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", TINY_SIZE, TINY_SIZE, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if embed_metadata:
        resize = {"size": TINY_SIZE, "mode": "squash", "interpolation": "bilinear", "crop_fraction": 1.0}
        helper.set_model_props(model, {"transferlab.classes": json.dumps(TINY_CLASSES),
                                       "transferlab.resize": json.dumps(resize)})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def colour_png(colour: str, size: int = 24, fmt: str = "PNG") -> bytes:
    """Encoded image of one pure colour (with a little noise) in ``fmt``."""
    rgb = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}[colour]
    rng = np.random.default_rng(len(colour))
    arr = np.clip(np.array(rgb) + rng.integers(-10, 10, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model: Path, *args: str, env: dict | None = None, startup_s: float = 90.0):
    """Start ``transferlab serve MODEL ARGS`` on a free 127.0.0.1 port; yield its base URL; stop it."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-c", _NO_TF, "serve", str(model), "--port", str(port), "--no-access-log", *args]
    environ = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env or {})}
    proc = subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited with {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not answer /healthz within {startup_s:g} s")
            time.sleep(0.2)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
