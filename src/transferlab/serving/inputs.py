"""Reading prediction requests: multipart uploads, raw image bodies, TF Serving JSON.

Everything a client can get wrong becomes a :class:`RequestError` with a 4xx status and a
message saying what was wrong and how to send it instead. The body is read with a size limit
(never more than ``max_bytes`` in memory per request) and a time limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

RAW_TYPES = ("application/octet-stream",)
FILE_FIELDS = ("file", "files")
HOW_TO_SEND = ("send images as multipart form fields 'file' or 'files' (curl -F file=@photo.jpg URL) "
               "or as a raw body with an image Content-Type (curl -H 'Content-Type: image/jpeg' "
               "--data-binary @photo.jpg URL)")


class RequestError(Exception):
    """A client mistake: HTTP ``status`` (4xx) and a message for the JSON ``error`` field."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


@dataclass(frozen=True)
class Limits:
    """Per-request limits (defaults: 16 MiB body, 32 images, 30 s)."""

    max_bytes: int = 16 * 1024 * 1024
    max_images: int = 32
    timeout_s: float = 30.0


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limits: Limits) -> bytes:
    """The whole body, refusing it (413) as soon as it passes ``max_bytes``, or 408 if too slow."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise _too_large(int(declared), limits)
    chunks, total = [], 0
    try:
        async with asyncio.timeout(limits.timeout_s):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limits.max_bytes:
                    raise _too_large(total, limits, at_least=True)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, f"the request body did not arrive within {limits.timeout_s:g} s") from None
    return b"".join(chunks)


def _too_large(size: int, limits: Limits, at_least: bool = False) -> RequestError:
    return RequestError(413, f"request body is {'over ' if at_least else ''}{size} bytes, more than the limit of "
                             f"{limits.max_bytes} bytes: send fewer or smaller images per request "
                             "(the limit is `transferlab serve --max-request-mb`)")


def _too_many(count: int | str, limits: Limits) -> RequestError:
    return RequestError(413, f"{count} images in one request, more than the limit of {limits.max_images}: "
                             "split them over several requests (the limit is `transferlab serve --max-images`)")


async def images_from_upload(request: Request, body: bytes, limits: Limits) -> list[tuple[bytes, str | None]]:
    """``[(encoded bytes, file name or None)]`` in upload order from a /predict body."""
    kind = media_type(request)
    if kind == "multipart/form-data":
        return await _multipart(request, body, limits)
    if kind.startswith("image/") or kind in RAW_TYPES or not kind:
        if not body:
            raise RequestError(400, f"empty request body: {HOW_TO_SEND}")
        return [(body, None)]
    raise RequestError(415, f"unsupported Content-Type {kind!r} for /predict: {HOW_TO_SEND}")


async def _multipart(request: Request, body: bytes, limits: Limits) -> list[tuple[bytes, str | None]]:
    sent = False

    async def replay() -> dict:  # the body was already read (with its size limit): hand it over again
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    form_request = Request(request.scope, replay)
    try:
        # One more file than allowed, so that "too many" is ours to report (with the limit's flag).
        form = await form_request.form(max_files=limits.max_images + 1, max_fields=limits.max_images + 16)
    except (HTTPException, MultiPartException, KeyError, ValueError) as exc:
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or repr(exc)
        if "Too many files" in str(detail):
            raise _too_many(f"more than {limits.max_images}", limits) from None
        raise RequestError(400, f"malformed multipart body ({detail}): {HOW_TO_SEND}") from None
    try:
        images = []
        for key, value in form.multi_items():
            if key not in FILE_FIELDS:
                raise RequestError(400, f"unexpected form field {key!r}: {HOW_TO_SEND}")
            if not isinstance(value, UploadFile):
                raise RequestError(400, f"form field {key!r} is text, not a file upload: {HOW_TO_SEND}")
            images.append((await value.read(), value.filename))
        if not images:
            raise RequestError(400, f"no image in the form: {HOW_TO_SEND}")
        if len(images) > limits.max_images:
            raise _too_many(len(images), limits)
        return images
    finally:
        await form.close()


# ------------------------------------------------------------------ TF Serving REST
def tf_serving_instances(body: bytes, limits: Limits, size: int) -> tuple[list, str]:
    """Parse ``{"instances": [...]}`` (row format) or ``{"inputs": ...}`` (columnar format).

    Each instance is ``{"b64": "..."}`` (an encoded image), ``{"image": {"b64": "..."}}``, or a
    numeric (S, S, 3) array already resized (as the exported SavedModel's ``image`` input takes).

    Returns:
        ``(items, key)``: items are ``bytes`` (encoded) or uint8 (S, S, 3) arrays, in order;
        key is ``"predictions"`` (row format) or ``"outputs"`` (columnar), as TF Serving answers.
    """
    if not body:
        raise RequestError(400, 'empty request body: send JSON {"instances": [{"b64": "<base64 image>"}]}')
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"malformed JSON: {exc}") from None
    if not isinstance(payload, dict) or not ({"instances", "inputs"} & set(payload)):
        raise RequestError(400, 'the JSON body must be an object with "instances" (or "inputs"), e.g. '
                                '{"instances": [{"b64": "<base64 image>"}]}')
    key = "predictions" if "instances" in payload else "outputs"
    items = payload.get("instances", payload.get("inputs"))
    if isinstance(items, dict):  # columnar with the input's name: {"inputs": {"image": [...]}}
        if len(items) != 1:
            raise RequestError(400, f"the model has one input ('image'), the request names {len(items)}")
        items = next(iter(items.values()))
    if not isinstance(items, list) or not items:
        raise RequestError(400, '"instances" must be a non-empty list, e.g. [{"b64": "<base64 image>"}]')
    if len(items) > limits.max_images:
        raise _too_many(len(items), limits)
    return [_instance(item, i, size) for i, item in enumerate(items)], key


def _instance(item, index: int, size: int):
    if isinstance(item, dict) and "b64" not in item and len(item) == 1:
        item = next(iter(item.values()))  # {"image": {"b64": ...}} / {"image": [[...]]}
    if isinstance(item, dict):
        if set(item) != {"b64"} or not isinstance(item["b64"], str):
            raise RequestError(400, f'instance {index}: expected {{"b64": "<base64 image>"}}, got keys {sorted(item)}')
        try:
            return base64.b64decode(item["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(400, f"instance {index}: malformed base64 ({exc})") from None
    if isinstance(item, list):
        try:
            array = np.asarray(item, dtype=np.float64)
        except (ValueError, TypeError):
            raise RequestError(400, f"instance {index}: not a rectangular array of numbers") from None
        if array.shape != (size, size, 3):
            raise RequestError(400, f"instance {index}: a pixel array must have shape [{size}, {size}, 3] (already "
                                    f"resized), got {list(array.shape)}; or send the encoded image as "
                                    '{"b64": "..."}')
        if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 255:
            raise RequestError(400, f"instance {index}: pixel values must be numbers in 0..255")
        return np.round(array).astype(np.uint8)
    raise RequestError(400, f'instance {index}: expected {{"b64": "<base64 image>"}} or a [{size}, {size}, 3] '
                            f"pixel array, got {type(item).__name__}")


def parse_top_k(request: Request, num_classes: int) -> int:
    """``?top_k=`` (default 1), capped at the number of classes; 400 if not a positive integer."""
    text = request.query_params.get("top_k", "1")
    if not text.isdigit() or int(text) < 1:
        raise RequestError(400, f"top_k must be a positive integer, got {text!r}")
    return min(int(text), num_classes)
