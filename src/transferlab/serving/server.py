"""Run the service under uvicorn: :func:`serve`, the function behind ``transferlab serve``."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import time

import numpy as np
import uvicorn

from transferlab.errors import ConfigError
from transferlab.serving.app import API_KEY_ENV, ServeSettings, create_app
from transferlab.serving.model import ServedModel

logger = logging.getLogger("transferlab.serving")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses no other machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to an outside address
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """Binding beyond loopback needs an API key: raise ConfigError (with the fix) otherwise."""
    if not is_loopback(host) and not api_key:
        raise ConfigError(f"--host {host} makes the service reachable from other machines: set an API key "
                         f"(--api-key KEY or the {API_KEY_ENV} environment variable) or bind to 127.0.0.1.")


def serve(model: str | os.PathLike, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, name: str | None = None,
          api_key: str | None = None, settings: ServeSettings | None = None, limit_concurrency: int = 64,
          log_level: str = "info", access_log: bool = True) -> None:
    """Serve a model over HTTP until interrupted (SIGINT/SIGTERM: finishes requests in flight).

    Args:
        model: a run directory, its export/ folder, a ``.onnx`` or a ``.tflite`` file (run on
            ONNX Runtime / LiteRT; TensorFlow is never imported).
        host: interface to bind (default 127.0.0.1). Any other needs an API key.
        port: TCP port (default 8000).
        name: the model's name in /v1/models/NAME (default: the run directory's name).
        api_key: required on every request except /healthz (default: $TRANSFERLAB_API_KEY, if set).
        settings: batching and request limits (:class:`ServeSettings`).
        limit_concurrency: connections handled at once; more get 503 (bounds memory).
    """
    settings = settings or ServeSettings()
    api_key = api_key or settings.api_key or os.environ.get(API_KEY_ENV) or None
    check_exposure(host, api_key)
    if api_key != settings.api_key:
        settings = dataclasses.replace(settings, api_key=api_key)
    start = time.perf_counter()
    served = ServedModel(model, name)
    # One warm-up call so that the first client does not pay for the runtime's set-up.
    served.runtime(np.zeros((1, served.size, served.size, 3), np.uint8))
    logger.info("Serving %s (%s, %d classes, %s) as %r on http://%s:%d/ (ready in %.1f s)%s", served.path,
                served.runtime.name, len(served.class_names), f"{served.size}px", served.name, host, port,
                time.perf_counter() - start, "; API key required" if api_key else "")
    app = create_app(served, settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            limit_concurrency=limit_concurrency, timeout_keep_alive=5,
                            timeout_graceful_shutdown=10, server_header=False)
    uvicorn.Server(config).run()
