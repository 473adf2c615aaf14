"""``transferlab serve``: an HTTP prediction service for an exported model.

Needs the ``serve`` extra (``pip install 'transferlab[serve]'``: Starlette, uvicorn,
python-multipart, prometheus-client). Models run on ONNX Runtime or LiteRT: the service never
imports TensorFlow. See :func:`serve` and :func:`create_app`.
"""

from __future__ import annotations

try:
    from transferlab.serving.app import API_KEY_ENV, ServeSettings, create_app
    from transferlab.serving.inputs import Limits
    from transferlab.serving.model import ServedModel, resolve_model
    from transferlab.serving.server import serve
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name not in ("starlette", "uvicorn", "multipart", "python_multipart", "prometheus_client"):
        raise
    from transferlab.errors import MissingDependencyError

    raise MissingDependencyError(f"transferlab serve needs the serve extra ({exc.name} is missing): "
                                 "pip install 'transferlab[serve]'") from exc

__all__ = ["API_KEY_ENV", "Limits", "ServeSettings", "ServedModel", "create_app", "resolve_model", "serve"]
