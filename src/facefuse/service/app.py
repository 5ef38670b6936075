"""The FastAPI application of ``facefuse serve``: the middleware (API key, request size,
metrics, errors as JSON) and the health and metrics endpoints; the analysis and gallery
endpoints are in :mod:`~facefuse.service.routes`."""

from __future__ import annotations

import logging
import secrets
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from facefuse import __version__
from facefuse.gallery import (
    FingerprintMismatch,
    GalleryBusy,
    GalleryError,
    UnknownFace,
    UnknownSubject,
)
from facefuse.service.core import Service, ServiceError
from facefuse.service.galleries import GalleryExists, UnknownGallery
from facefuse.service.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

#: paths open without the API key (the page asks for the key and sends it with its calls)
OPEN_PATHS = frozenset({"/", "/page.js", "/healthz", "/docs", "/docs/oauth2-redirect",
                        "/openapi.json", "/redoc"})
#: a request body may carry this much more than its images (multipart headers, fields)
BODY_OVERHEAD = 64 * 1024


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status)


def gallery_error(exc: GalleryError) -> JSONResponse:
    """A gallery's refusal as a response: unknown things 404, conflicts 409, the rest 400."""
    for kinds, status, code in (((UnknownGallery,), 404, "unknown_gallery"),
                                ((UnknownSubject,), 404, "unknown_subject"),
                                ((UnknownFace,), 404, "unknown_face"),
                                ((GalleryExists,), 409, "gallery_exists"),
                                ((GalleryBusy, FingerprintMismatch), 409, "gallery_unusable")):
        if isinstance(exc, kinds):
            return error(status, code, str(exc))
    return error(400, "bad_request", str(exc))


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors in one line: ``query limit: ...; body files: ...``."""
    parts = []
    for e in exc.errors():
        where = " ".join(str(x) for x in e.get("loc", ()))
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def page_file(name: str) -> str:
    """A file of the web page (``service/page/``: plain HTML and one script, no build)."""
    from importlib.resources import files

    return files("facefuse.service").joinpath("page", name).read_text(encoding="utf-8")


def create_app(service: Service) -> FastAPI:
    """The application serving ``service`` (closed when the application shuts down)."""
    from facefuse.service.routes import analysis_router, gallery_router

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(title="facefuse", version=__version__, lifespan=lifespan,
                  description="Face analysis (age, gender, race, emotion, attributes, "
                              "landmarks, identity), verification and persistent face "
                              "galleries. docs/SERVICE.md has the design.")
    app.state.service = service
    settings = service.settings
    body_limit = settings.max_files * settings.max_upload_bytes + BODY_OVERHEAD

    key = None if settings.api_key is None else settings.api_key.encode()

    @app.middleware("http")
    async def guard_and_count(request: Request, call_next):
        start = time.perf_counter()
        length = request.headers.get("content-length") or "0"
        if key is not None and request.url.path not in OPEN_PATHS and not \
                secrets.compare_digest(request.headers.get("x-api-key", "").encode(), key):
            response = error(401, "bad_api_key", "missing or wrong x-api-key header")
        elif not length.isdigit():
            response = error(400, "bad_request", f"bad content-length {length!r}")
        elif int(length) > body_limit:
            response = error(413, "too_large", f"request body over {body_limit} bytes")
        else:
            try:
                response = await call_next(request)
            except Exception:  # never a stack trace to the client
                log.exception("%s %s failed", request.method, request.url.path)
                response = error(500, "internal", "internal error (logged by the server)")
        route = request.scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        service.metrics.request(endpoint, request.method, response.status_code,
                                time.perf_counter() - start)
        return response

    _add_error_handlers(app)

    @app.get("/healthz", summary="liveness: the model thread is running")
    async def healthz() -> JSONResponse:  # on the event loop: answers under any load
        alive = service.batcher.alive()
        return JSONResponse({"status": "ok" if alive else "model thread stopped",
                             "version": __version__, "queued": service.batcher.pending()},
                            status_code=200 if alive else 503)

    @app.get("/metrics", summary="Prometheus text format", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(service.batcher.pending()),
                                 media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_file("index.html"))

    @app.get("/page.js", include_in_schema=False)
    async def page_script() -> Response:
        return Response(page_file("page.js"), media_type="text/javascript")

    app.include_router(analysis_router)
    app.include_router(gallery_router)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every refused request as one JSON error with a stable code, never a stack trace."""

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error(exc.status, exc.code, exc.message)

    @app.exception_handler(GalleryError)
    async def gallery_refused(_: Request, exc: GalleryError) -> JSONResponse:
        return gallery_error(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, "bad_request", validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        return error(exc.status_code, code, str(exc.detail))
