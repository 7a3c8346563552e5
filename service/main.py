"""The FastAPI controller: ``create_app(settings)``. Domain errors map to status codes here, in one place; the
scheduler (``service.scheduler``) starts with the app and stops with it."""

from __future__ import annotations

import logging
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from results import ConflictError, NotFoundError, SqlStorage, TransitionError
from service.deps import SettingsDep, StoreDep
from service.routes import router
from service.scheduler import Scheduler
from service.schemas import SUBMISSION_TAGS
from service.settings import Settings
from sweeps import DataPathError, SpecLimitError, UnknownPresetError

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, log_dir: Path | None = None) -> FastAPI:
    """The app for ``settings`` (default: from the environment). Driver logs go to ``log_dir`` (default
    ``./wdgrid-logs``), one file per sweep."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = SqlStorage(settings.database_url)
        scheduler = Scheduler(settings, store, log_dir=log_dir or Path("wdgrid-logs"))
        app.state.settings, app.state.store, app.state.scheduler = settings, store, scheduler
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()
            store.close()

    app = FastAPI(
        title="wdgrid",
        summary="(α, λ) grid searches for L2 regularization vs decoupled weight decay (Loshchilov & Hutter, 2019)",
        version=_version(),
        lifespan=lifespan,
    )
    app.include_router(router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(store: StoreDep, settings: SettingsDep) -> JSONResponse:
        """The database answers, and the Ray cluster's head (RAY_ADDRESS) accepts connections."""
        checks: dict[str, str] = {}
        try:
            store.ping()
            checks["database"] = "ok"
        except Exception as exc:  # any failure is "not ready", said in the body
            checks["database"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        checks["ray"] = _ray_reachable(settings.ray_address)
        ok = all(v in ("ok", "embedded") for v in checks.values())
        return JSONResponse(checks | {"status": "ok" if ok else "unavailable"}, 200 if ok else 503)

    _errors(app)
    return app


def _ray_reachable(address: str | None) -> str:
    if not address or address == "local":
        return "embedded"  # each sweep's driver starts its own Ray
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
        return f"{address} unreachable: {exc}"


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

    async def over_limit(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SpecLimitError)
        detail = [{"type": "over_limit", "loc": ["body", exc.field], "msg": str(exc)}]
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    app.add_exception_handler(SpecLimitError, over_limit)

    async def outside_data(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DataPathError)
        loc = ["body", *(exc.field or "dataset_args").split(".")]
        detail = [{"type": "outside_data_dir", "loc": loc, "msg": str(exc)}]
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    app.add_exception_handler(DataPathError, outside_data)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        # POST /sweeps's body is a tagged union (service.schemas.SweepSubmission): pydantic puts the tag ("spec" or
        # "preset") into each error's location; drop it, so that the location is the field as the user wrote it.
        assert isinstance(exc, RequestValidationError)
        errors = []
        for e in exc.errors():
            loc = list(e.get("loc", ()))
            if len(loc) >= 2 and loc[0] == "body" and loc[1] in SUBMISSION_TAGS and request.url.path == "/sweeps":
                del loc[1]
            errors.append({**e, "loc": loc})
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    app.add_exception_handler(RequestValidationError, invalid)


def _version() -> str:
    from importlib.metadata import version

    return version("wdgrid")
