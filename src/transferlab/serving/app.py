"""The ASGI application of ``transferlab serve`` (Starlette): routes, auth, errors, metrics.

Routes::

    GET  /                         a page to drop images on and see the top classes
    GET  /healthz                  liveness (never needs the API key)
    GET  /metadata                 labels, input spec, model card
    GET  /metrics                  Prometheus text format
    POST /predict                  multipart 'file'/'files' or a raw image body; ?top_k=
    GET  /v1/models/NAME           TF Serving model status
    GET  /v1/models/NAME/metadata  TF Serving signature metadata
    POST /v1/models/NAME:predict   TF Serving REST predict: {"instances": [{"b64": ...}]}

Every client mistake is answered with a 4xx JSON ``{"error": "..."}``; a 5xx means a bug (or,
503, that the service is at its memory bound or timed out waiting for the model).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from transferlab.data.decode import ImageDecodeError
from transferlab.data.loader import background_pool
from transferlab.serving.batcher import DynamicBatcher, Overloaded
from transferlab.serving.inputs import (
    Limits,
    RequestError,
    images_from_upload,
    parse_top_k,
    read_body,
    tf_serving_instances,
)
from transferlab.serving.model import ServedModel
from transferlab.serving.page import render_page

logger = logging.getLogger("transferlab.serving")
API_KEY_ENV = "TRANSFERLAB_API_KEY"
OPEN_PATHS = frozenset({"/healthz"})


@dataclass(frozen=True)
class ServeSettings:
    """How the service batches and what it accepts.

    Attributes:
        limits: per-request body size, image count and time limit.
        max_batch: most images per model call.
        max_wait_ms: how long the batcher waits for more requests after the first.
        max_pending: most images decoded and waiting for the model at once (memory bound).
        decode_workers: threads decoding uploads (default: all CPUs).
        api_key: required on every request except /healthz when set.
    """

    limits: Limits = field(default_factory=Limits)
    max_batch: int = 32
    max_wait_ms: float = 2.0
    max_pending: int = 256
    decode_workers: int | None = None
    api_key: str | None = None


class _Metrics:
    """The service's Prometheus metrics, in a registry of its own (several apps in one process)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("transferlab_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("transferlab_request_seconds", "Request latency by endpoint", ["endpoint"],
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30), registry=self.registry)
        self.images = Counter("transferlab_images", "Images classified", registry=self.registry)
        self.batch_size = Histogram("transferlab_batch_size", "Images per model call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.model_seconds = Histogram("transferlab_model_seconds", "Seconds per model call",
                                       buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5), registry=self.registry)
        self.pending = Gauge("transferlab_pending_images", "Images decoded and waiting for the model",
                             registry=self.registry)

    def batch(self, images: int, seconds: float) -> None:
        self.batch_size.observe(images)
        self.model_seconds.observe(seconds)
        self.images.inc(images)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def api_key_matches(request_headers, key: str) -> bool:
    """``X-API-Key: KEY``, ``Authorization: Bearer KEY``, or HTTP Basic with KEY as the password."""
    supplied = request_headers.get("x-api-key")
    auth = request_headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if supplied is None and scheme.lower() == "bearer":
        supplied = value.strip()
    elif supplied is None and scheme.lower() == "basic":
        try:
            supplied = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            supplied = None
    return supplied is not None and hmac.compare_digest(supplied.encode(), key.encode())


class ApiKeyMiddleware:
    """Refuse (401 JSON) every HTTP request without the key, except the open paths (health)."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            request = Request(scope)
            if not api_key_matches(request.headers, self.key):
                # Basic: lets a browser ask for the key when a person opens the page.
                response = _error(401, "missing or wrong API key: send 'X-API-Key: KEY' or "
                                       "'Authorization: Bearer KEY'", {"WWW-Authenticate": 'Basic realm="transferlab"'})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(model: ServedModel, settings: ServeSettings | None = None) -> Starlette:
    """The Starlette application serving ``model``.

    Args:
        model: the loaded model (:class:`~transferlab.serving.model.ServedModel`).
        settings: batching, limits and API key (defaults: :class:`ServeSettings`).

    Returns:
        An ASGI app; run it with uvicorn (:func:`transferlab.serving.serve` does).
    """
    settings = settings or ServeSettings()
    limits = settings.limits
    metrics = _Metrics()
    batcher = DynamicBatcher(model.runtime, max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1000,
                             max_pending=settings.max_pending, on_batch=metrics.batch)
    metrics.pending.set_function(lambda: batcher.pending)
    workers = settings.decode_workers or os.cpu_count() or 1
    decoder = background_pool(workers)
    page = render_page(model, limits)

    def instrument(endpoint: str):
        """Wrap a handler: RequestError -> 4xx JSON, request count and latency per endpoint."""
        def wrap(handler):
            async def run(request: Request) -> Response:
                start = time.perf_counter()
                try:
                    response = await handler(request)
                except RequestError as exc:
                    response = _error(exc.status, exc.message, exc.headers)
                metrics.requests.labels(endpoint, str(response.status_code)).inc()
                metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
                return response
            return run
        return wrap

    async def classify(items: list, sources: list, deadline: float) -> np.ndarray:
        """Decode the encoded items (in parallel threads), then run them through the batcher."""
        loop = asyncio.get_running_loop()

        async def one(item, i):
            if isinstance(item, np.ndarray):
                return item
            try:
                return await loop.run_in_executor(decoder, model.decode, item)
            except ImageDecodeError as exc:
                name = (repr(sources[i]) if sources[i] else "the request body" if len(items) == 1
                        else f"instance {i}")
                raise RequestError(400, f"{name} is not a usable image: {exc.reason}") from None

        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                images = np.stack(await asyncio.gather(*(one(item, i) for i, item in enumerate(items))))
                return await batcher.predict(images)
        except Overloaded as exc:
            raise RequestError(503, f"the service is at its limit ({exc}): retry shortly",
                               {"Retry-After": "1"}) from None
        except TimeoutError:
            raise RequestError(503, f"no answer within {limits.timeout_s:g} s: the service is overloaded, "
                                    "retry shortly", {"Retry-After": "1"}) from None

    @instrument("predict")
    async def predict(request: Request) -> Response:
        deadline = time.monotonic() + limits.timeout_s
        top_k = parse_top_k(request, len(model.class_names))
        body = await read_body(request, limits)
        uploads = await images_from_upload(request, body, limits)
        del body
        sources = [name for _, name in uploads]
        probs = await classify([data for data, _ in uploads], sources, deadline)
        return JSONResponse({"model": model.name, "predictions": model.answers(probs, top_k, sources)})

    def check_name(request: Request) -> None:
        name = request.path_params["name"]
        if name != model.name:
            raise RequestError(404, f"no model named {name!r}: this service serves {model.name!r} "
                                    f"(/v1/models/{model.name})")

    @instrument("tf_predict")
    async def tf_predict(request: Request) -> Response:
        deadline = time.monotonic() + limits.timeout_s
        check_name(request)
        if request.headers.get("content-type", "").lower().startswith("multipart/"):
            raise RequestError(415, "this TF Serving endpoint takes JSON "
                                    '{"instances": [{"b64": "..."}]}; for uploads use POST /predict')
        body = await read_body(request, limits)
        items, key = tf_serving_instances(body, limits, model.size)
        del body
        probs = await classify(items, [None] * len(items), deadline)
        return JSONResponse({key: probs.tolist()})

    @instrument("tf_status")
    async def tf_status(request: Request) -> Response:
        check_name(request)
        return JSONResponse({"model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})

    @instrument("tf_metadata")
    async def tf_metadata(request: Request) -> Response:
        check_name(request)
        size, classes = model.size, len(model.class_names)
        signature = {"inputs": {"image": {"dtype": "DT_UINT8", "name": "image:0", "tensor_shape": {
                         "dim": [{"size": "-1"}, {"size": str(size)}, {"size": str(size)}, {"size": "3"}]}}},
                     "outputs": {"probabilities": {"dtype": "DT_FLOAT", "name": "probabilities:0", "tensor_shape": {
                         "dim": [{"size": "-1"}, {"size": str(classes)}]}}},
                     "method_name": "tensorflow/serving/predict"}
        return JSONResponse({"model_spec": {"name": model.name, "signature_name": "", "version": "1"},
                             "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}}})

    @instrument("healthz")
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": model.name})

    @instrument("metadata")
    async def metadata(request: Request) -> Response:
        data = model.metadata()
        data["limits"] = {"max_request_bytes": limits.max_bytes, "max_images": limits.max_images,
                          "timeout_s": limits.timeout_s, "max_batch": settings.max_batch}
        return JSONResponse(data)

    @instrument("metrics")
    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @instrument("page")
    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        """Unknown paths and methods: JSON like every other error."""
        metrics.requests.labels("other", str(exc.status_code)).inc()
        return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path} "
                                       "(see GET /metadata; predictions are POST /predict)", exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        metrics.requests.labels("other", "500").inc()
        return _error(500, f"internal error ({type(exc).__name__}); this is a bug in transferlab serve")

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            decoder.shutdown(wait=False, cancel_futures=True)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metadata", metadata, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/predict", predict, methods=["POST"]),
        Route("/v1/models/{name}:predict", tf_predict, methods=["POST"]),
        Route("/v1/models/{name}/metadata", tf_metadata, methods=["GET"]),
        Route("/v1/models/{name}", tf_status, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, key=settings.api_key)
    app.state.model, app.state.settings, app.state.metrics = model, settings, metrics
    return app
