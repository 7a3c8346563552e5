"""The controller's door: what every HTTP request passes before FastAPI reads a byte of its body.

A pure ASGI middleware (``Guard``), so that its checks cost nothing per byte and run before any parsing:

1. **No cross-site writes.** A request that can change state (any method but GET, HEAD, OPTIONS) whose ``Origin``
   header names another site than the one it was sent to is a 403, token or not: a web page elsewhere cannot make
   a browser submit or cancel sweeps here (the loopback service without a token included). Clients that are not
   browsers send no ``Origin`` and are not concerned.
2. **The token first.** With ``WDGRID_API_TOKEN`` set, a request to a protected path without the right bearer token
   — or the web page's session cookie (:data:`SESSION_COOKIE`, HttpOnly, SameSite=Strict, set by logging in) — is a
   401 at once, and a page of the web UI a redirect to its login page: an unauthenticated client cannot make the
   server read, parse or validate anything it sends. (``service.deps.require_token`` still guards every route and
   documents the scheme in OpenAPI; this is the same check made earlier, not a second policy.)
3. **Bounded bodies.** A body longer than ``WDGRID_MAX_BODY_BYTES`` is a 413: at once when its ``Content-Length``
   says so, else as soon as the bytes received pass the limit (chunked uploads), before the route parses it. A
   JSON body nested deeper than :data:`MAX_DEPTH` levels is a 422 at ``body`` (Python's parser would give up with a
   RecursionError, which FastAPI reports as a 400 that names nothing).

Open paths — the health checks, the API documents, the web page's login page, its script and style sheet — need no
token and hold no results.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any, Final
from urllib.parse import quote, urlsplit

import anyio.to_thread
import numpy as np

__all__ = ["DOCS_ASSETS", "LOGIN", "OPEN_PATHS", "SESSION_COOKIE", "UI", "Guard", "session_value", "signed_in"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UI: Final = "/ui"  # the web page's paths
LOGIN: Final = f"{UI}/login"
OPEN_PATHS: Final = frozenset(
    {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", LOGIN, f"{UI}/session"}
)
DOCS_ASSETS: Final = "/docs-assets"  # the API documents' scripts and styles (public library code): open too
OPEN_PREFIXES: Final = (f"{DOCS_ASSETS}/", f"{UI}/static/")  # the same for the web page's script and style sheet
SESSION_COOKIE: Final = "wdgrid_session"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def session_value(token: str) -> str:
    """The web page's session cookie for ``token``: an HMAC of it, so that the cookie is not the API token itself
    (a cookie read off a screen or a log does not open the API to a script)."""
    return hmac.new(token.encode(), b"wdgrid web session", hashlib.sha256).hexdigest()


def signed_in(token: str, authorization: str | None, cookie: str | None) -> bool:
    """Whether a request carries ``token``: as ``Authorization: Bearer <token>``, or as the session cookie in its
    ``Cookie`` header."""
    if authorization is not None and secrets.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        return True
    if not cookie:
        return False
    try:
        morsel = SimpleCookie(cookie).get(SESSION_COOKIE)
    except CookieError:
        return False
    return morsel is not None and secrets.compare_digest(morsel.value.encode(), session_value(token).encode())


def _cross_site(method: str, headers: Mapping[bytes, bytes]) -> bool:
    origin = headers.get(b"origin")
    if method in _SAFE_METHODS or origin is None:
        return False
    host = headers.get(b"host", b"").decode("latin-1")
    return urlsplit(origin.decode("latin-1")).netloc != host  # "null" (a sandboxed or file: page) is another site


def _is_page(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and (path == "/" or path.startswith(f"{UI}/"))


class Guard:
    """See the module docstring. ``token``: the bearer token every path but :data:`OPEN_PATHS` needs (None: none);
    ``max_body_bytes``: the longest request body accepted."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes, self._token = app, max_body_bytes, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        path, method = str(scope.get("path", "")), str(scope.get("method", "GET"))
        if _cross_site(method, headers):
            await _answer(send, 403, "a request from another site may not change anything here (Origin)")
            return
        if self._token is not None and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
            authorization, cookie = headers.get(b"authorization"), headers.get(b"cookie")
            if not signed_in(
                self._token,
                None if authorization is None else authorization.decode("latin-1"),
                None if cookie is None else cookie.decode("latin-1"),
            ):
                if _is_page(method, path):  # a person at the web page: to its login page, and back afterwards
                    target = quote(
                        path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
                    )
                    await _answer(send, 303, "sign in first", {"location": f"{LOGIN}?next={target}"})
                    return
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
        body = b"".join(chunks)
        # A body with many brackets is measured in a worker thread: the event loop keeps answering meanwhile.
        if body.count(b"{") + body.count(b"[") > MAX_DEPTH and await anyio.to_thread.run_sync(too_deep, body):
            msg = f"JSON nested deeper than {MAX_DEPTH} levels"
            await _answer(send, 422, [{"type": "too_deep", "loc": ["body"], "msg": msg}])
            return
        whole: Message | None = {"type": "http.request", "body": body, "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()  # after the body: wait for the client to disconnect

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"the request body is longer than {self.max_body_bytes} bytes (WDGRID_MAX_BODY_BYTES)"


MAX_DEPTH: Final = 64  # levels of JSON nesting a body may have (a spec needs about 6)
_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"')


def too_deep(body: bytes) -> bool:
    """Whether ``body``, read as JSON, nests arrays and objects more than :data:`MAX_DEPTH` deep. Cheap: a count of
    brackets decides most bodies; otherwise strings are cut out (a regular expression) and the depth is a cumulative
    sum over the brackets left (numpy), a few milliseconds for a megabyte."""
    if body.count(b"{") + body.count(b"[") <= MAX_DEPTH:
        return False
    steps = _STEP[np.frombuffer(_STRING.sub(b"", body), dtype=np.uint8)]
    return bool(steps.size) and int(np.cumsum(steps, dtype=np.int32).max()) > MAX_DEPTH


_STEP: Final = np.zeros(256, dtype=np.int8)  # a byte's change of depth: +1 for [ and {, -1 for ] and }, else 0
_STEP[[ord("["), ord("{")]], _STEP[[ord("]"), ord("}")]] = 1, -1


async def _answer(send: Send, status: int, detail: object, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
