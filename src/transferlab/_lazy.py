"""Package attributes imported on first use: ``import transferlab.x`` stays light (no TensorFlow).

    __getattr__, __dir__ = lazy_attributes(__name__, {"load": "transferlab.api:load", ...})

A target is ``"module:attribute"``, ``"module"`` (the attribute of the same name there) or
``"module:"`` (the module itself). A resolved attribute is kept in the package's namespace.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_attributes(package: str, targets: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` serving the names of ``targets`` on demand."""

    def __getattr__(name: str) -> Any:
        target = targets.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, colon, attr = target.partition(":")
        module = importlib.import_module(module_name)
        value = (getattr(module, attr) if attr else module) if colon else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(targets) | set(vars(sys.modules[package])))

    return __getattr__, __dir__
