"""The FastAPI controller: ``create_app(settings)``. Domain errors map to status codes here, in one place; the
scheduler (``service.scheduler``) starts with the app and stops with it."""

from __future__ import annotations

import functools
import logging
import math
import socket
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import fastapi_offline
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import InterfaceError, OperationalError

from results import ConflictError, NotFoundError, SqlStorage, TransitionError
from service.deps import SettingsDep, StoreDep
from service.disk import full_disks, written_folders
from service.guard import DOCS_ASSETS, Guard
from service.local_ray import LocalRay
from service.pages import STATIC, pages, static_files
from service.routes import router
from service.scheduler import STANDBY, Scheduler
from service.schemas import SUBMISSION_TAGS
from service.settings import API_DB_RETRY_S, Settings
from sweeps import DataPathError, SpecLimitError, UnknownPresetError

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, log_dir: Path | None = None) -> FastAPI:
    """The app for ``settings`` (default: from the environment). Driver logs go to ``log_dir`` (default
    ``./wdgrid-logs``), one file per sweep."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = SqlStorage(settings.database_url, retry_s=API_DB_RETRY_S)
        logs = log_dir or Path("wdgrid-logs")
        local_ray = None
        if settings.local_ray and not settings.ray_address and settings.max_concurrent_sweeps > 0:
            local_ray = LocalRay(logs / "ray-head.log")
            local_ray.start()  # returns at once: the scheduler starts no driver before the head is up
        standby = STANDBY if settings.standby_driver else None
        scheduler = Scheduler(settings, store, log_dir=logs, standby=standby, local_ray=local_ray)
        app.state.settings, app.state.store, app.state.scheduler = settings, store, scheduler
        app.state.local_ray, app.state.log_dir = local_ray, logs
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()  # its drivers first, then the Ray they joined
            if local_ray is not None:
                local_ray.stop()
            store.close()

    # Swagger UI and ReDoc from the assets fastapi-offline ships, not from a CDN: the docs work offline and behind
    # firewalls (their scripts are public code, served without the token like the pages themselves).
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title="wdgrid",
        summary="(α, λ) grid searches for L2 regularization vs decoupled weight decay (Loshchilov & Hutter, 2019)",
        version=_version(),
        lifespan=lifespan,
    )
    # Ahead of the assets' mount, which would serve the bundle as shipped.
    app.router.routes.insert(
        0, APIRoute(f"{DOCS_ASSETS}/redoc.standalone.js", _redoc_bundle, include_in_schema=False, methods=["GET"])
    )
    app.include_router(router)
    app.include_router(pages)
    app.mount(STATIC, static_files(), name="static")
    token = None if settings.api_token is None else settings.api_token.get_secret_value()
    app.add_middleware(Guard, token=token, max_body_bytes=settings.max_body_bytes)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(request: Request, store: StoreDep, settings: SettingsDep) -> JSONResponse:
        """The database answers, the disks the service writes to have room (``WDGRID_MIN_FREE_DISK_MIB``), and
        the Ray that sweeps run on is up: the cluster's head (RAY_ADDRESS) accepts connections, or the controller's
        own Ray has started (``starting`` meanwhile: sweeps queue)."""
        checks: dict[str, str] = {}
        try:
            store.ping()
            checks["database"] = "ok"
        except Exception as exc:  # any failure is "not ready"; the kind of failure, never the server's address
            checks["database"] = f"unavailable ({type(exc).__name__})"
        full = full_disks(written_folders(settings, request.app.state.log_dir), settings.min_free_disk_mib)
        checks["disk"] = f"full ({'; '.join(full)})" if full else "ok"
        local_ray: LocalRay | None = request.app.state.local_ray
        if local_ray is not None:
            checks["ray"] = "local" if local_ray.ready() else "down" if local_ray.down else "starting"
        else:
            checks["ray"] = _ray_reachable(settings.ray_address)
        ok = all(v in ("ok", "embedded", "local", "starting") for v in checks.values())
        return JSONResponse(checks | {"status": "ok" if ok else "unavailable"}, 200 if ok else 503)

    _errors(app)
    return app


def _ray_reachable(address: str | None) -> str:
    if not address or address == "local":
        return "embedded"  # each sweep's driver starts its own Ray (WDGRID_LOCAL_RAY=false, or the queue paused)
    target = address.removeprefix("ray://")
    if target == "auto":  # Ray's own meaning: the cluster `ray start` last started on this machine
        try:
            target = (Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster").read_text().strip()
        except OSError:
            return "RAY_ADDRESS=auto, and no Ray cluster was started on this machine"
    host, sep, port = target.rpartition(":")
    if not sep:  # no port: Ray's defaults (GCS 6379, Ray Client 10001)
        host, port = target, "10001" if address.startswith("ray://") else "6379"
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return "ok"
    except (OSError, ValueError) as exc:
        return f"unreachable ({type(exc).__name__})"  # the address is the operator's to know, not the caller's


def _errors(app: FastAPI) -> None:
    def handler(code: int) -> Any:
        async def respond(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc).strip("'\"")}, status_code=code)

        return respond

    app.add_exception_handler(NotFoundError, handler(status.HTTP_404_NOT_FOUND))
    app.add_exception_handler(TransitionError, handler(status.HTTP_409_CONFLICT))
    app.add_exception_handler(ConflictError, handler(status.HTTP_409_CONFLICT))

    async def unknown_preset(request: Request, exc: Exception) -> JSONResponse:
        detail = [{"type": "unknown_preset", "loc": ["body", "preset"], "msg": str(exc).strip("'\"")}]
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    app.add_exception_handler(UnknownPresetError, unknown_preset)

    async def refused_spec(request: Request, exc: Exception) -> JSONResponse:
        # A valid spec this server refuses (over its limits, a path leaving its data directory): a 422 at the field.
        assert isinstance(exc, SpecLimitError | DataPathError)
        kind = "over_limit" if isinstance(exc, SpecLimitError) else "outside_data_dir"
        loc = ["body", *(exc.field or "dataset_args").split(".")]
        detail = [{"type": kind, "loc": loc, "msg": str(exc)}]
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    app.add_exception_handler(SpecLimitError, refused_spec)
    app.add_exception_handler(DataPathError, refused_spec)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        # POST /sweeps's body is a tagged union (service.schemas.SweepSubmission): pydantic puts the tag ("spec" or
        # "preset") into each error's location; drop it, so that the location is the field as the user wrote it.
        assert isinstance(exc, RequestValidationError)
        # A body sent without Content-Type: application/json (curl -d, without -H) reaches the route as text.
        not_json = "json" not in request.headers.get("content-type", "")
        errors = []
        for e in exc.errors():
            loc = list(e.get("loc", ()))
            if len(loc) >= 2 and loc[0] == "body" and loc[1] in SUBMISSION_TAGS and request.url.path == "/sweeps":
                del loc[1]
            msg = str(e.get("msg", ""))
            if not_json and loc[:1] == ["body"] and len(loc) <= 2:
                msg += " (send the body as JSON, with Content-Type: application/json)"
            errors.append(_bounded_error(e, loc, msg))
            if len(errors) == MAX_ERRORS:
                break
        more = len(exc.errors()) - len(errors)
        if more > 0:
            errors.append({"type": "too_many_errors", "loc": ["body"], "msg": f"and {more} more errors"})
        return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    app.add_exception_handler(RequestValidationError, invalid)

    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        # The store could not be reached (a restart, a failover, a full disk): a state of the service, not of the
        # request. Nothing was written; the client may retry.
        log.warning("database unavailable for %s %s: %s", request.method, request.url.path, type(exc).__name__)
        detail = "the results database is unavailable; try again shortly"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    app.add_exception_handler(OperationalError, database_down)
    app.add_exception_handler(InterfaceError, database_down)


MAX_ERRORS: Final = 20  # validation errors listed in one 422
RETRY_AFTER_S: Final = 5


def _excerpt(value: Any) -> Any:
    """A short, printable stand-in for an input value (a 422 never echoes a whole body: a 100 MB list would come
    back as 100 MB, and NaN or a lone surrogate could not be written as JSON at all): small numbers, booleans and
    null as they are, text cut to 80 characters, anything else described."""
    if value is None or isinstance(value, bool):
        return value
    if (isinstance(value, int) and abs(value) < 2**53) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates as escapes
        return text if len(text) <= 80 else text[:77] + "..."
    text = ascii(value)  # NaN, ±inf, huge integers, anything else
    return text if len(text) <= 80 else text[:77] + "..."


def _bounded_error(error: Mapping[str, Any], loc: list[Any], msg: str) -> dict[str, Any]:
    def printable(text: str) -> str:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")[:500]

    out: dict[str, Any] = {
        "type": str(error.get("type", "")),
        "loc": [p if isinstance(p, int) else printable(str(p)) for p in loc],
        "msg": printable(msg),
    }
    if "input" in error:
        out["input"] = _excerpt(error["input"])
    return out


def _version() -> str:
    from importlib.metadata import version

    return version("wdgrid")


@functools.cache
def _redoc_source() -> bytes:
    bundle = Path(fastapi_offline.__file__).parent / "static" / "redoc.standalone.js"
    # The one thing the bundle fetches from the internet: its sidebar's "by Redocly" logo. An empty src fails at
    # once, without a request (so without an error in the browser's console), and ReDoc drops the image (onError).
    return bundle.read_bytes().replace(b'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"', b'src:""')


def _redoc_bundle() -> Response:
    """ReDoc's script, as fastapi-offline ships it but for the logo it would load from Redocly's CDN."""
    return Response(_redoc_source(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=3600"})
