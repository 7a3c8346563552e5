"""Dependencies every route shares, as ``Annotated`` aliases: settings, the store, the scheduler, the bearer token,
and the sweep of a ``/sweeps/{sweep_id}/...`` path (404 when there is none)."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from results import NotFoundError, Storage, SweepRecord
from service.guard import signed_in
from service.scheduler import Scheduler
from service.settings import Settings

__all__ = ["MAX_ID", "SchedulerDep", "SettingsDep", "StoreDep", "SweepDep", "require_token"]

# Ids and offsets are 32-bit integers in the store (PostgreSQL INTEGER): a larger number in a path or query is a 422,
# not a database overflow.
MAX_ID: Final = 2**31 - 1


# The dependencies that only read app state are ``async def``: FastAPI runs each plain ``def`` dependency in its
# thread pool, a hop per dependency per request (`bench/api.py --baseline` measures the gain, together with uvicorn's
# httptools and uvloop). Anything that touches the database stays ``def``, off the event loop.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> Storage:
    store: Storage = request.app.state.store
    return store


async def get_scheduler(request: Request) -> Scheduler:
    scheduler: Scheduler = request.app.state.scheduler
    return scheduler


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Storage, Depends(get_store)]
SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]

_bearer = HTTPBearer(auto_error=False, description="WDGRID_API_TOKEN, when the server has one.")


async def require_token(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """With ``WDGRID_API_TOKEN`` set, every route of the router needs ``Authorization: Bearer <token>`` (or the web
    page's session cookie, ``service.guard``): all but the health checks and the API docs (``/docs``, ``/redoc``,
    ``/openapi.json``), which Swagger UI must fetch without one and which hold no results."""
    if settings.api_token is None:
        return
    bearer = None if credentials is None else f"Bearer {credentials.credentials}"
    if not signed_in(settings.api_token.get_secret_value(), bearer, request.headers.get("cookie")):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


def get_sweep_or_404(
    store: StoreDep, sweep_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The sweep's id.")]
) -> SweepRecord:
    try:
        return store.get_sweep(sweep_id)
    except NotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no sweep with id {sweep_id}") from None


SweepDep = Annotated[SweepRecord, Depends(get_sweep_or_404)]
