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
from fastapi.responses import JSONResponse
from sqlalchemy import text

from results import ConflictError, NotFoundError, Storage, TransitionError
from service.deps import SettingsDep, StoreDep
from service.routes import router
from service.scheduler import Scheduler
from service.schemas import spec_body_schemas
from service.settings import Settings
from sweeps import UnknownPresetError

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, log_dir: Path | None = None) -> FastAPI:
    """The app for ``settings`` (default: from the environment). Driver logs go to ``log_dir`` (default
    ``./wdgrid-logs``), one file per sweep."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Storage(settings.database_url)
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
            with store.engine.connect() as conn:
                conn.execute(text("select 1"))
            checks["database"] = "ok"
        except Exception as exc:  # any failure is "not ready", said in the body
            checks["database"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        checks["ray"] = _ray_reachable(settings.ray_address)
        ok = all(v in ("ok", "embedded") for v in checks.values())
        return JSONResponse(checks | {"status": "ok" if ok else "unavailable"}, 200 if ok else 503)

    _errors(app)
    _document_spec_body(app)
    return app


def _document_spec_body(app: FastAPI) -> None:
    """Give ``POST /sweeps`` the spec's JSON schema in the OpenAPI document. The route takes a plain object because
    a preset's overrides can only be validated once merged into the preset (``routes._spec_from``); the document
    still says exactly what may be sent: a ``SweepSpec`` or a ``PresetSubmission``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()  # FastAPI's own, cached on the app: amended once, in place
            components = document.setdefault("components", {}).setdefault("schemas", {})
            body = spec_body_schemas()
            if clash := body.keys() & components.keys():
                raise RuntimeError(f"spec schemas clash with the API's own: {sorted(clash)}")
            components.update(body)
            content = document["paths"]["/sweeps"]["post"]["requestBody"]["content"]["application/json"]
            content["schema"] = {
                "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in ("SweepSpec", "PresetSubmission")]
            }
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to amend the document


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


def _version() -> str:
    from importlib.metadata import version

    return version("wdgrid")
