"""``transferlab serve MODEL``: the CLI layer over :func:`transferlab.serving.serve`."""

from __future__ import annotations

import argparse

from transferlab.cli._common import ExitCode, add_command

DESCRIPTION = """\
Serve a model over HTTP (Starlette on uvicorn). MODEL is a run directory, its export/ folder,
a .onnx or a .tflite file; it runs on ONNX Runtime / LiteRT, TensorFlow is never imported.

endpoints:
  POST /predict                  multipart field 'file' or 'files', or a raw image body; ?top_k=N
  POST /v1/models/NAME:predict   TF Serving REST: {"instances": [{"b64": "<base64 image>"}]}
  GET  /v1/models/NAME           TF Serving model status
  GET  /healthz  /metadata  /metrics (Prometheus)  /  (a page to drop images on)

examples:
  transferlab serve runs/NAME
  curl -F file=@photo.jpg 'http://127.0.0.1:8000/predict?top_k=3'
  curl -H 'Content-Type: image/jpeg' --data-binary @photo.jpg http://127.0.0.1:8000/predict

security: binds to 127.0.0.1 by default. Any other --host needs an API key (--api-key or
$TRANSFERLAB_API_KEY), checked on every request but /healthz: 'X-API-Key: KEY',
'Authorization: Bearer KEY', or HTTP Basic with KEY as the password (the browser page).
Requests never name files on the server: only uploaded bytes are read.

under a process manager (systemd), e.g. /etc/systemd/system/transferlab.service:
  [Service]
  ExecStart=/opt/venv/bin/transferlab serve /srv/models/inspect --host 0.0.0.0 --port 8000
  Environment=TRANSFERLAB_API_KEY=change-me
  Restart=on-failure
  User=transferlab
  [Install]
  WantedBy=multi-user.target
then `systemctl enable --now transferlab`. SIGTERM finishes the requests in flight and exits;
GET /healthz is the liveness probe. Run one process per core group; it uses all CPUs by default.
"""


def _cmd_serve(args: argparse.Namespace) -> int:
    from transferlab.serving import Limits, ServeSettings, serve  # MissingDependencyError without the extra

    limits = Limits(max_bytes=int(args.max_request_mb * 1024 * 1024), max_images=args.max_images,
                    timeout_s=args.timeout)
    settings = ServeSettings(limits=limits, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                             max_pending=args.max_pending)
    serve(args.model, host=args.host, port=args.port, name=args.name, api_key=args.api_key, settings=settings,
          limit_concurrency=args.max_connections, access_log=not args.no_access_log,
          log_level="warning" if args.quiet else "info")
    return ExitCode.OK


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` sub-command to the ``transferlab`` parser's sub-parsers."""
    p = add_command(subparsers, "serve", help="serve a model over HTTP (predict, TF Serving REST, metrics, a web page)",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="run directory, export folder, .onnx or .tflite file")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; others need --api-key)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--name", help="model name in /v1/models/NAME (default: the run directory's name)")
    p.add_argument("--api-key", help="key required on every request but /healthz (default: $TRANSFERLAB_API_KEY)")
    p.add_argument("--max-batch", type=_positive(int), default=32, help="most images per model call (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=2.0,
                   help="how long a batch waits for more requests (default 2 ms)")
    p.add_argument("--max-images", type=_positive(int), default=32, help="most images per request (default 32)")
    p.add_argument("--max-request-mb", type=_positive(float), default=16.0,
                   help="largest request body in MiB (default 16)")
    p.add_argument("--max-pending", type=_positive(int), default=256,
                   help="most decoded images waiting for the model; more get 503 (default 256)")
    p.add_argument("--max-connections", type=_positive(int), default=64,
                   help="connections handled at once; more get 503 (default 64)")
    p.add_argument("--timeout", type=_positive(float), default=30.0, help="seconds per request (default 30)")
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.set_defaults(func=_cmd_serve)
    return p
