"""The controller's door: what every HTTP request passes before FastAPI reads a byte of its body.

A pure ASGI middleware (``Guard``), so that its checks cost nothing per byte and run before any parsing:

1. **The token first.** With ``WDGRID_API_TOKEN`` set, a request to a protected path without the right bearer token
   is a 401 at once: an unauthenticated client cannot make the server read, parse or validate anything it sends.
   (``service.deps.require_token`` still guards every route of the router and documents the scheme in OpenAPI; this
   is the same check made earlier, not a second policy.)
2. **Bounded bodies.** A body longer than ``WDGRID_MAX_BODY_BYTES`` is a 413: at once when its ``Content-Length``
   says so, else as soon as the bytes received pass the limit (chunked uploads), before the route parses it.

Open paths — the health checks and the API documents — need no token and carry no body.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

__all__ = ["DOCS_ASSETS", "OPEN_PATHS", "Guard"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
DOCS_ASSETS: Final = "/docs-assets"  # the API documents' scripts and styles (public library code): open too


class Guard:
    """See the module docstring. ``token``: the bearer token every path but :data:`OPEN_PATHS` needs (None: none);
    ``max_body_bytes``: the longest request body accepted."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self._token = None if token is None else f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        path = str(scope.get("path", ""))
        if self._token is not None and path not in OPEN_PATHS and not path.startswith(DOCS_ASSETS + "/"):
            given = headers.get(b"authorization", b"")
            if not secrets.compare_digest(given, self._token):
                await _answer(send, 401, "missing or wrong bearer token", {"www-authenticate": "Bearer"})
                return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _answer(send, 413, self._too_large())
            return
        # Read the body here, up to the limit (a chunked upload has no Content-Length to trust), then hand it on:
        # FastAPI would turn an error raised while it reads into a 400 about parsing.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _answer(send, 413, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()  # after the body: wait for the client to disconnect

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"the request body is longer than {self.max_body_bytes} bytes (WDGRID_MAX_BODY_BYTES)"


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
