"""The package's structure: one dependency order, no import cycles, light entry points.

The import graph is read from the source (top-level and function-level imports alike), so a
cycle hidden inside a function, which works until someone moves an import, fails here too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "transferlab"

# The dependency order, bottom first: a module may import from its own layer and the layers below.
LAYERS = [
    {"_atomic", "_lazy", "_paths", "_tf", "_keras", "errors", "progress", "rundir"},
    {"data"},
    {"backbones"},
    {"runtimes"},
    {"features"},
    {"training"},
    {"inference"},
    {"evaluation"},
    {"export"},
    {"selection", "audit", "serving", "distributed"},
    {"api"},
    {"cli", "__main__"},
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its code."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")
                    base = base[:len(base) - node.level + (1 if is_package else 0)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
            for target in targets:
                if target.split(".")[0] != "transferlab":
                    continue
                resolved = _resolve(target, modules)
                if resolved and resolved != module:
                    graph[module].add(resolved)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} belongs to no layer of tests/test_architecture.py's LAYERS: add its package")


def test_no_import_cycle_between_modules():
    assert _cycles(import_graph()) == []


def test_cycle_detection_sees_function_level_imports(tmp_path):
    """The check itself can fail: a cycle through an import inside a function is found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from transferlab.data import loader\n")
    assert any(isinstance(n, ast.ImportFrom) and n.module == "transferlab.data" for n in ast.walk(tree))


def test_every_import_goes_down_the_dependency_order():
    upward = []
    for module, targets in import_graph().items():
        if module == "transferlab":  # the package's lazy attribute map names everything on purpose
            continue
        for target in targets:
            if target != "transferlab" and _layer(target) > _layer(module):
                upward.append(f"{module} -> {target}")
    assert upward == []


_NO_TF = textwrap.dedent("""
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow.") or name == "keras":
                raise ImportError("importing " + name + " is not allowed in this test")
    sys.meta_path.insert(0, _Block())
    {body}
""")


def _run_without_tf(body: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_TF.format(body=textwrap.dedent(body)), *args],
                          capture_output=True, text=True, timeout=120)


def test_light_entry_points_do_not_import_tensorflow():
    proc = _run_without_tf("""
        import transferlab
        transferlab.TrainConfig(epochs=3)
        transferlab.TransferlabError, transferlab.TrainingInterrupted, transferlab.Classifier, transferlab.load
        import transferlab.cli
        from transferlab.cli import build_parser
        build_parser().parse_args(["train", "data", "--epochs", "3"])
        import transferlab.api, transferlab.evaluation.evaluate, transferlab.runtimes, transferlab.features
        print("ok")
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


def test_predict_and_evaluate_an_onnx_model_without_tensorflow(tmp_path):
    """``transferlab.predict``/``evaluate`` on an ONNX file run where importing TensorFlow raises,
    and the evaluation's report.html says plainly why it has no Grad-CAM."""
    from conftest import make_class_folders, rgb_array, write_image
    from helpers import save_tiny_onnx_classifier

    data = make_class_folders(tmp_path / "data", {"red": 6, "green": 6})
    reddish = rgb_array(32, 32, seed=999)
    reddish[..., 0] = reddish[..., 0] // 2 + 128
    write_image(data / "green" / "mislabeled.png", reddish)  # one mistake for the report's gallery
    model = save_tiny_onnx_classifier(tmp_path / "model" / "model.onnx", ["red", "green"])
    out = tmp_path / "evaluation"
    proc = _run_without_tf("""
        import sys, json, transferlab
        preds = transferlab.predict(sys.argv[1], [sys.argv[2]])
        report = transferlab.evaluate(sys.argv[1], sys.argv[2], out_dir=sys.argv[3], show_progress=False)
        print(json.dumps({"n": len(preds), "accuracy": report["accuracy"], "modules": sorted(sys.modules)}))
    """, str(model), str(data), str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["n"] == 13 and result["accuracy"] == 12 / 13
    assert not [m for m in result["modules"] if m.startswith(("tensorflow", "keras"))]
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "No model in" not in text
    assert "Grad-CAM needs the Keras model" in text
    assert (out / "metrics.json").is_file() and (out / "predictions.csv").is_file()
