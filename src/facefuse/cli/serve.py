"""``facefuse serve``: the analyzer and the face galleries as a REST service on FastAPI and
uvicorn (:mod:`facefuse.service`; the serve extra)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from pathlib import Path

from facefuse.cli.options import add_analyzer_options, build_analyzer, examples
from facefuse.cli.values import (
    SETUP_ERRORS,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    report,
)

API_KEY_ENV = "FACEFUSE_API_KEY"
#: how ``--workers N`` hands the options to its worker processes (JSON)
WORKER_OPTIONS_ENV = "FACEFUSE_SERVE_OPTIONS"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_service(args: argparse.Namespace):
    """The :class:`~facefuse.service.core.Service` the options describe (``args.api_key``
    already resolved); raises what building the analyzer raises."""
    from facefuse.service.core import Service, ServiceSettings, reports_embedding

    settings = ServiceSettings(gallery_root=args.gallery_root and Path(args.gallery_root),
                               batch_window_ms=args.batch_window_ms, api_key=args.api_key,
                               max_upload_bytes=int(args.max_upload_mb * 2**20),
                               max_files=args.max_files, max_pixels=args.max_pixels,
                               request_timeout_s=args.request_timeout, model=args.model,
                               shared_galleries=args.workers > 1)
    from facefuse.runtime.graph import use_cpu_arena
    from facefuse.service.heap import limit_arenas

    limit_arenas()  # before the model's and the server's threads start
    use_cpu_arena(args.cpu_arena)  # before any session opens
    refiner = None if args.landmark_refiner == "none" else args.landmark_refiner
    analyzer = build_analyzer(args, None, refiner)  # every head, as `facefuse analyze`
    if not reports_embedding(analyzer):  # a model without an identity head of its own
        analyzer = build_analyzer(args, [*analyzer.model.tasks, "embedding"], refiner)
    return Service(analyzer, settings)


def app_from_environment():
    """uvicorn's application factory in each worker process of ``--workers N``: the options
    come from :data:`WORKER_OPTIONS_ENV`; the models load here, once per worker."""
    from facefuse.service.app import create_app

    return create_app(build_service(argparse.Namespace(
        **json.loads(os.environ[WORKER_OPTIONS_ENV]))))


def cmd_serve(args: argparse.Namespace) -> int:
    args.api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(args.host) and args.api_key is None:
        print(f"facefuse: --host {args.host} is reachable from other machines; give an API "
              f"key (--api-key KEY or ${API_KEY_ENV}) that every request must send as "
              f"x-api-key", file=sys.stderr)
        return 2
    if args.gallery_root is not None:
        from facefuse.extras import require_gallery_extra

        require_gallery_extra("facefuse serve --gallery-root")
    try:
        service = build_service(args)  # with several workers: a check, then dropped
    except SETUP_ERRORS as exc:
        report(exc)
        return 2
    import uvicorn

    from facefuse.service.app import create_app

    print(f"facefuse: serving on http://{args.host}:{args.port} (API docs at /docs; "
          f"{args.workers} worker(s); batching window {args.batch_window_ms:g} ms; "
          f"galleries: {args.gallery_root or 'none'})", file=sys.stderr)
    run = {"host": args.host, "port": args.port, "access_log": bool(args.verbose),
           "log_level": "info" if args.verbose else "warning"}
    if args.workers == 1:
        uvicorn.run(create_app(service), **run)
        return 0
    service.close()
    del service
    options = {k: v for k, v in vars(args).items() if k not in ("func", "written")}
    os.environ[WORKER_OPTIONS_ENV] = json.dumps(options, default=str)
    uvicorn.run("facefuse.cli.serve:app_from_environment", factory=True,
                workers=args.workers, **run)
    return 0


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="a REST service: analyze, verify and face galleries over "
                                     "HTTP (needs facefuse[serve])",
        **examples("facefuse serve                          # http://127.0.0.1:8000/docs",
                   "facefuse serve --gallery-root galleries/ --port 8080",
                   "FACEFUSE_API_KEY=secret facefuse serve --host 0.0.0.0"))
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other needs an API key)")
    s.add_argument("--port", type=non_negative_int, default=8000, help="port (default 8000)")
    s.add_argument("--gallery-root", type=Path, default=None, metavar="DIR",
                   help="folder of the galleries (one sub-folder each; made if missing); "
                        "without it the gallery endpoints answer 404")
    s.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="worker processes, each loading the models once (default 1; with "
                        "more, each gallery write waits its turn for the gallery's lock)")
    s.add_argument("--batch-window-ms", type=non_negative_float, default=10.0, metavar="MS",
                   help="how long the model thread waits for more requests to batch with "
                        "the first (default 10; 0: each request runs alone)")
    s.add_argument("--api-key", default=None, metavar="KEY",
                   help=f"require this x-api-key header on every request but /healthz and "
                        f"the docs (default: ${API_KEY_ENV}, else none)")
    s.add_argument("--max-upload-mb", type=positive_float, default=10.0, metavar="MB",
                   help="largest image upload (default 10; larger ones get 413)")
    s.add_argument("--max-files", type=positive_int, default=16, metavar="N",
                   help="most images in one request (default 16)")
    s.add_argument("--max-pixels", type=positive_int, default=40_000_000, metavar="N",
                   help="most pixels of an uploaded image (default 40000000; larger ones "
                        "get 413 before they are decoded)")
    s.add_argument("--request-timeout", type=positive_float, default=60.0, metavar="S",
                   help="seconds a request waits for the model (default 60; then 503)")
    s.add_argument("--cpu-arena", action="store_true",
                   help="keep ONNX Runtime's CPU memory arena (up to 12 %% less CPU a "
                        "batched image, about 240 MB more resident at the median; "
                        "docs/SERVICE.md)")
    s.add_argument("--landmark-refiner", default="shipped", metavar="shipped|none|PATH",
                   help="as for `facefuse analyze` (default: the shipped one)")
    add_analyzer_options(s)
    s.set_defaults(needs_serve=True, func=cmd_serve)
