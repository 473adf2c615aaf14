"""`transferlab serve`: a real uvicorn server on 127.0.0.1 running a tiny ONNX model, no TensorFlow."""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import json
import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from serve_helpers import TINY_CLASSES, TINY_SIZE, colour_png, running_server, save_tiny_onnx

PORT_ARGS = ("--name", "tiny", "--max-images", "4", "--max-request-mb", "0.25", "--timeout", "3",
             "--max-wait-ms", "30")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    # Alone in its folder: labels and resize come only from inside the file.
    return save_tiny_onnx(tmp_path_factory.mktemp("serve") / "tiny.onnx")


@pytest.fixture(scope="module")
def server(model_file):
    with running_server(model_file, *PORT_ARGS) as (base, proc):
        yield base


def _labels(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [p["label"] for p in response.json()["predictions"]]


# ------------------------------------------------------------------ predictions
def test_multipart_upload_keeps_order_and_top_k(server):
    colours = ["green", "red", "blue", "red"]
    files = [("files", (f"{c}_{i}.png", colour_png(c), "image/png")) for i, c in enumerate(colours)]
    response = httpx.post(f"{server}/predict", params={"top_k": 2}, files=files, timeout=30)
    assert _labels(response) == colours
    body = response.json()
    assert body["model"] == "tiny"
    for i, p in enumerate(body["predictions"]):
        assert p["source"] == f"{colours[i]}_{i}.png"
        assert [t["label"] for t in p["top_k"]][0] == p["label"] and len(p["top_k"]) == 2
        assert p["probability"] > 0.9 and p["top_k"][0]["probability"] >= p["top_k"][1]["probability"]
    # top_k above the number of classes is capped, not an error
    response = httpx.post(f"{server}/predict?top_k=10", files={"file": ("b.jpg", colour_png("blue", fmt="JPEG"))})
    assert _labels(response) == ["blue"] and len(response.json()["predictions"][0]["top_k"]) == 3


def test_raw_image_body(server):
    for content_type in ("image/png", "application/octet-stream"):
        response = httpx.post(f"{server}/predict", content=colour_png("green"), headers={"Content-Type": content_type})
        assert _labels(response) == ["green"]
        assert response.json()["predictions"][0]["top_k"] == [
            {"label": "green", "probability": response.json()["predictions"][0]["probability"]}]


def test_tf_serving_rest_api(server):
    b64 = {c: base64.b64encode(colour_png(c)).decode() for c in TINY_CLASSES}
    url = f"{server}/v1/models/tiny:predict"
    response = httpx.post(url, json={"instances": [{"b64": b64["blue"]}, {"image": {"b64": b64["red"]}}]})
    assert response.status_code == 200, response.text
    predictions = np.array(response.json()["predictions"])
    assert predictions.shape == (2, 3) and list(predictions.argmax(1)) == [2, 0]
    assert np.allclose(predictions.sum(1), 1, atol=1e-5)
    # numeric instances, already resized (what the exported SavedModel's `image` input takes)
    pixels = np.zeros((TINY_SIZE, TINY_SIZE, 3), np.uint8)
    pixels[..., 1] = 200
    response = httpx.post(url, json={"instances": [pixels.tolist()]})
    assert np.argmax(response.json()["predictions"][0]) == 1
    # columnar format: {"inputs": ...} -> {"outputs": ...}; curl's default form content type is accepted
    response = httpx.post(url, content=json.dumps({"inputs": {"image": [{"b64": b64["green"]}]}}),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200 and np.argmax(response.json()["outputs"][0]) == 1
    status = httpx.get(f"{server}/v1/models/tiny").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    signature = httpx.get(f"{server}/v1/models/tiny/metadata").json()["metadata"]["signature_def"]
    assert signature["signature_def"]["serving_default"]["inputs"]["image"]["dtype"] == "DT_UINT8"
    missing = httpx.get(f"{server}/v1/models/other")
    assert missing.status_code == 404 and "tiny" in missing.json()["error"]


def test_health_metadata_and_metrics(server):
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok", "model": "tiny"}
    meta = httpx.get(f"{server}/metadata").json()
    assert meta["classes"] == TINY_CLASSES and meta["runtime"] == "onnx"
    assert meta["input"]["resize"]["size"] == TINY_SIZE and meta["input"]["dtype"] == "uint8"
    assert meta["limits"]["max_images"] == 4
    httpx.post(f"{server}/predict", content=colour_png("red"), headers={"Content-Type": "image/png"})
    response = httpx.get(f"{server}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert re.search(r'transferlab_requests_total\{endpoint="predict",status="200"\} [1-9]', text)
    assert "transferlab_request_seconds_bucket" in text and "transferlab_batch_size_bucket" in text
    assert re.search(r"transferlab_images_total [1-9]", text)


def _metric(text: str, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def test_concurrent_requests_are_batched(server):
    before = httpx.get(f"{server}/metrics").text
    colours = [TINY_CLASSES[i % 3] for i in range(12)]
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(12) as pool:
        def one(colour):
            return _labels(client.post(f"{server}/predict", content=colour_png(colour),
                                       headers={"Content-Type": "image/png"}))[0]
        assert list(pool.map(one, colours)) == colours
    after = httpx.get(f"{server}/metrics").text
    images = _metric(after, "transferlab_batch_size_sum") - _metric(before, "transferlab_batch_size_sum")
    calls = _metric(after, "transferlab_batch_size_count") - _metric(before, "transferlab_batch_size_count")
    assert images == 12 and calls < 12, (images, calls)  # some requests shared a model call


# ------------------------------------------------------------------ bad input
def _truncated_png() -> bytes:
    data = colour_png("red", size=64)
    return data[: len(data) // 2]


BAD_REQUESTS = {
    "not an image": dict(content=b"just some text", headers={"Content-Type": "image/png"}),
    "truncated image": dict(content=_truncated_png(), headers={"Content-Type": "image/png"}),
    "empty body": dict(content=b"", headers={"Content-Type": "image/jpeg"}),
    "empty upload": dict(files={"file": ("e.png", b"", "image/png")}),
    "body over the limit": dict(content=b"\xff" * 300_000, headers={"Content-Type": "image/jpeg"}),
    "too many images": dict(files=[("files", (f"{i}.png", colour_png("red"), "image/png")) for i in range(5)]),
    "wrong content type": dict(content=b'{"a": 1}', headers={"Content-Type": "application/json"}),
    "unknown form field": dict(files={"image": ("a.png", colour_png("red"), "image/png")}),
    "text form field": dict(data={"file": "/etc/passwd"}, files={"files": ("a.png", colour_png("red"))}),
    "malformed multipart": dict(content=b"--x\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=x"}),
    "a path as the body": dict(content=b"/etc/passwd", headers={"Content-Type": "application/octet-stream"}),
    "bad top_k": dict(params={"top_k": "two"}, content=colour_png("red"), headers={"Content-Type": "image/png"}),
}
BAD_TF_REQUESTS = {
    "malformed JSON": b'{"instances": [',
    "no instances": b'{"signature_name": "serving_default"}',
    "malformed base64": b'{"instances": [{"b64": "not*base64!"}]}',
    "base64 of a non-image": json.dumps({"instances": [{"b64": base64.b64encode(b"hello").decode()}]}).encode(),
    "a path as an instance": b'{"instances": ["/etc/passwd"]}',
    "pixels of the wrong shape": b'{"instances": [[[1, 2, 3]]]}',
    "pixels out of range": json.dumps({"instances": [np.full((TINY_SIZE, TINY_SIZE, 3), 300).tolist()]}).encode(),
    "too many instances": json.dumps({"instances": [{"b64": "AAAA"}] * 5}).encode(),
    "empty body": b"",
}


def test_every_bad_request_is_a_4xx_json_error_and_the_service_survives(server):
    for what, kwargs in BAD_REQUESTS.items():
        response = httpx.post(f"{server}/predict", timeout=30, **kwargs)
        assert 400 <= response.status_code < 500, (what, response.status_code, response.text)
        assert response.json()["error"], what
    for what, body in BAD_TF_REQUESTS.items():
        response = httpx.post(f"{server}/v1/models/tiny:predict", content=body, timeout=30)
        assert 400 <= response.status_code < 500, (what, response.status_code, response.text)
        assert response.json()["error"], what
    for method, path in (("GET", "/nowhere"), ("GET", "/predict"), ("DELETE", "/metadata")):
        response = httpx.request(method, f"{server}{path}")
        assert response.status_code in (404, 405) and response.json()["error"]
    # The answers say what was wrong.
    assert "limit of 4" in httpx.post(f"{server}/predict", **BAD_REQUESTS["too many images"]).json()["error"]
    assert httpx.post(f"{server}/predict", **BAD_REQUESTS["body over the limit"]).status_code == 413
    assert "truncated" in httpx.post(f"{server}/predict", **BAD_REQUESTS["truncated image"]).json()["error"]
    # ... and the service still answers correctly.
    assert _labels(httpx.post(f"{server}/predict", files={"file": ("r.png", colour_png("red"))})) == ["red"]
    metrics = httpx.get(f"{server}/metrics").text
    assert not re.search(r'status="5\d\d"', metrics)


def test_a_body_that_never_arrives_times_out_with_408(server):
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n")
        start = time.monotonic()
        # Headers and body may arrive in separate packets: read until the server closes or the body is in.
        answer = ""
        while '"error"' not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk.decode("latin-1")
        assert " 408 " in answer.split("\r\n")[0] and '"error"' in answer
        assert time.monotonic() - start < 15


# ------------------------------------------------------------------ security
def test_api_key_required_on_everything_but_health(model_file):
    with running_server(model_file, "--name", "tiny", env={"TRANSFERLAB_API_KEY": "s3cret"}) as (base, _):
        assert httpx.get(f"{base}/healthz").status_code == 200
        image = dict(content=colour_png("red"), headers={"Content-Type": "image/png"})
        for path in ("/metadata", "/metrics", "/", "/v1/models/tiny"):
            response = httpx.get(f"{base}{path}")
            assert response.status_code == 401 and response.json()["error"], path
        denied = httpx.post(f"{base}/predict", **image)
        assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Basic")
        wrong = httpx.post(f"{base}/predict", content=image["content"],
                           headers={**image["headers"], "X-API-Key": "guess"})
        assert wrong.status_code == 401
        for headers in ({"X-API-Key": "s3cret"}, {"Authorization": "Bearer s3cret"}):
            ok = httpx.post(f"{base}/predict", content=image["content"], headers={**image["headers"], **headers})
            assert _labels(ok) == ["red"]
        assert httpx.get(f"{base}/", auth=("anyone", "s3cret")).status_code == 200  # the browser's Basic prompt


def test_binding_beyond_loopback_needs_an_api_key(model_file, capsys, monkeypatch):
    from transferlab.cli import main

    monkeypatch.delenv("TRANSFERLAB_API_KEY", raising=False)
    assert main(["serve", str(model_file), "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err


# ------------------------------------------------------------------ pieces, in process
def test_model_resolution_and_name(tmp_path):
    from transferlab.serving.model import check_name, default_name, resolve_model

    run = tmp_path / "my run"
    model = save_tiny_onnx(run / "export" / "model.onnx")
    assert resolve_model(run) == model and resolve_model(run / "export") == model
    assert default_name(model) == "my-run"
    (run / "model.keras").write_bytes(b"")
    with pytest.raises(ValueError, match="onnx"):
        resolve_model(run / "model.keras")
    with pytest.raises(FileNotFoundError, match="transferlab export"):
        resolve_model(tmp_path)
    with pytest.raises(ValueError, match="letters"):
        check_name("a/b")


def test_load_uses_embedded_labels_and_warns_when_resize_is_unknown(tmp_path, caplog):
    import transferlab

    clf = transferlab.load(save_tiny_onnx(tmp_path / "with" / "m.onnx"))
    assert clf.class_names == TINY_CLASSES and clf.resize.size == TINY_SIZE
    bare = save_tiny_onnx(tmp_path / "bare" / "m.onnx", embed_metadata=False)
    (bare.parent / "labels.txt").write_text("r\ng\nb\n")
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        clf = transferlab.load(bare)
    assert clf.class_names == ["r", "g", "b"]
    assert "does not say how images were resized" in caplog.text


def test_batcher_groups_bounds_and_skips_timed_out_requests():
    from transferlab.serving.batcher import DynamicBatcher, Overloaded

    calls = []

    def runtime(images):
        calls.append(len(images))
        time.sleep(0.02)
        return images.reshape(len(images), -1)[:, :2].astype(np.float32)

    async def scenario():
        batcher = DynamicBatcher(runtime, max_batch=8, max_wait_s=0.05, max_pending=20)
        await batcher.start()
        try:
            images = [np.full((1, 2, 2, 3), i, np.uint8) for i in range(10)]
            results = await asyncio.gather(*(batcher.predict(x) for x in images))
            assert [int(r[0, 0]) for r in results] == list(range(10))  # each caller gets its own rows
            assert sum(calls) == 10 and max(calls) <= 8 and len(calls) < 10
            with pytest.raises(Overloaded):
                await batcher.predict(np.zeros((21, 2, 2, 3), np.uint8))
            with pytest.raises(TimeoutError):  # a request that gives up is dropped from its batch
                await asyncio.wait_for(batcher.predict(np.zeros((1, 2, 2, 3), np.uint8)), 0.001)
            assert batcher.pending == 0
        finally:
            await batcher.stop()

    asyncio.run(scenario())


# ------------------------------------------------------------------ the page, in a browser
PROBE = """<!DOCTYPE html><html><body><iframe id="app" src="%(url)s" width="1200" height="800"></iframe><script>
const frame = document.getElementById('app');
frame.addEventListener('load', () => run().catch(err => {
  const e = document.createElement('pre'); e.id = 'failure'; e.textContent = String(err); document.body.append(e); }));
async function run() {
  const win = frame.contentWindow, doc = frame.contentDocument;
  const files = [];
  for (const [name, colour] of [['red.png', '#e61414'], ['blue.png', '#1414e6']]) {
    const canvas = doc.createElement('canvas'); canvas.width = canvas.height = 40;
    const ctx = canvas.getContext('2d'); ctx.fillStyle = colour; ctx.fillRect(0, 0, 40, 40);
    const blob = await new Promise(resolve => canvas.toBlob(resolve, 'image/png'));
    files.push(new win.File([blob], name, {type: 'image/png'}));
  }
  const transfer = new win.DataTransfer();
  files.forEach(f => transfer.items.add(f));
  doc.getElementById('drop').dispatchEvent(new win.DragEvent('drop', {dataTransfer: transfer, bubbles: true,
                                                                      cancelable: true}));
  // No timers: under --virtual-time-budget they run ahead of the real server's answer.
  await new Promise(resolve => { if (doc.body.dataset.done) resolve();
    new win.MutationObserver(() => doc.body.dataset.done && resolve()).observe(doc.body, {attributes: true}); });
  const out = document.createElement('div'); out.id = 'copied';
  out.innerHTML = doc.getElementById('results').outerHTML;
  out.dataset.done = doc.body.dataset.done || '';
  document.body.append(out);
}
</script></body></html>"""


def test_page_classifies_dropped_images_in_headless_chromium(server, tmp_path):
    from test_report import run_chromium

    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "red, green, blue" in page.text and "http://" not in page.text.split("<script>")[1]
    (tmp_path / "probe.html").write_text(PROBE % {"url": f"{server}/"}, encoding="utf-8")
    # The probe, served from another local port, drops files on the page in an iframe and copies
    # out the results: reading a cross-origin frame is allowed only with web security off.
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as probe_server:
        threading.Thread(target=probe_server.serve_forever, daemon=True).start()
        try:
            dom = run_chromium(tmp_path, "--disable-web-security", "--disable-site-isolation-trials",
                               "--virtual-time-budget=20000", "--dump-dom",
                               f"http://127.0.0.1:{probe_server.server_port}/probe.html").stdout
        finally:
            probe_server.shutdown()
    copied = re.search(r'<div id="copied" data-done="(\d*)">(.*)</div>', dom, re.S)
    assert copied and copied.group(1) == "1", dom[-3000:]
    results = copied.group(2)
    cards = re.findall(r'<div class="result" data-label="(\w+)">(.*?)</div></div>(?=<div class="result"|</div>)',
                       results, re.S)
    # Newest first: blue was dropped after red.
    assert [label for label, _ in cards] == ["blue", "red"], results[:2000]
    for label, body in cards:
        assert f'<div class="name">{label}.png</div>' in body and "<img" in body
        assert re.search(rf"<b>{label}</b> \d+\.\d%", body)
