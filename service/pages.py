"""The web page: what a person opens first (``/`` leads to ``/ui/``).

Server-rendered shells (Jinja2 templates in ``service/templates``) and one small script per page
(``service/static``); every number on them comes from the JSON API (``service.routes``), which the script polls —
there is no second implementation of grids or verdicts in the browser. Nothing loads from elsewhere: no CDN, no
build step.

- ``/ui/`` — the sweeps, live; ``/ui/sweeps/{id}`` — one sweep: heatmaps filling in, the verdict, curves, trials,
  downloads, cancel and resume; ``/ui/new`` — submit a preset with overrides or a spec; ``/ui/login`` — with
  ``WDGRID_API_TOKEN`` set, the page asks for the token once and keeps a session cookie (HttpOnly,
  SameSite=Strict; ``service.guard`` checks it, and refuses writes from other sites).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from results import NotFoundError
from service.deps import MAX_ID, SettingsDep, StoreDep, require_token
from service.guard import LOGIN, SESSION_COOKIE, UI, session_value, signed_in
from service.routes import cells, public

__all__ = ["STATIC", "pages", "static_files"]

HERE: Final = Path(__file__).parent
STATIC: Final = f"{UI}/static"
templates = Jinja2Templates(directory=HERE / "templates")

pages = APIRouter(include_in_schema=False)
_signed = APIRouter(include_in_schema=False, dependencies=[Depends(require_token)])


def static_files() -> StaticFiles:
    """The pages' script and style sheet, mounted at :data:`STATIC`."""
    return StaticFiles(directory=HERE / "static")


def _render(request: Request, settings: Any, name: str, **context: Any) -> HTMLResponse:
    context |= {"static": STATIC, "ui": UI, "token_set": settings.api_token is not None}
    return templates.TemplateResponse(request, name, context)


@pages.get("/")
def root() -> RedirectResponse:
    return RedirectResponse(f"{UI}/", status.HTTP_307_TEMPORARY_REDIRECT)


@_signed.get(f"{UI}/", response_class=HTMLResponse)
def sweeps_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _render(request, settings, "sweeps.html")


@_signed.get(UI + "/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    sweep_id: Annotated[int, PathParam(ge=1, le=MAX_ID)],
) -> HTMLResponse:
    try:
        sweep = store.get_sweep(sweep_id)
    except NotFoundError:
        response = _render(request, settings, "missing.html", message=f"There is no sweep {sweep_id}.")
        response.status_code = status.HTTP_404_NOT_FOUND
        return response
    # The first state is in the page (the same answers the script polls later): it draws at once, no round trip.
    initial = {
        "sweep": public(store, sweep, datetime.now(UTC)).model_dump(mode="json"),
        "cells": cells(store, sweep).model_dump(mode="json"),
    }
    return _render(request, settings, "sweep.html", sweep=sweep, initial=initial)


@_signed.get(f"{UI}/new", response_class=HTMLResponse)
def new_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _render(request, settings, "new.html")


@pages.get(LOGIN, response_class=HTMLResponse)
def login_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _render(request, settings, "login.html")


class Login(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    token: str = Field(min_length=1, max_length=1000, description="WDGRID_API_TOKEN.")


@pages.post(f"{UI}/session", status_code=status.HTTP_204_NO_CONTENT)
def sign_in(request: Request, settings: SettingsDep, body: Annotated[Login, Body()]) -> Response:
    """Trade the token for the session cookie (HttpOnly: the page's scripts never hold the token)."""
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    if settings.api_token is None:
        return response  # nothing to sign in to: the service is open (loopback only)
    token = settings.api_token.get_secret_value()
    if not signed_in(token, f"Bearer {body.token}", None):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong token: it is the server's WDGRID_API_TOKEN")
    response.set_cookie(
        SESSION_COOKIE,
        session_value(token),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@pages.post(f"{UI}/logout")
def sign_out() -> RedirectResponse:
    response = RedirectResponse(LOGIN, status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


pages.include_router(_signed)
