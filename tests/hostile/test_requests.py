"""Hostile requests against a real ``wdgrid serve``, on SQLite and on PostgreSQL: oversized and unauthenticated
bodies, numbers JSON does not have, text no database stores, integers no column holds, runaway schedules, and every
route of the OpenAPI document without the token. Each gets a short, exact answer; none a 500. The queue is paused
(``WDGRID_MAX_CONCURRENT_SWEEPS=0``): nothing trains."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import pg_schema_url
from tests.factories import spec_data
from tests.processes import Server, start_server, stop_server

LIMIT = 64 * 1024  # WDGRID_MAX_BODY_BYTES of these servers


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp(f"hostile-{request.param}")
    settings = {"WDGRID_MAX_CONCURRENT_SWEEPS": "0", "WDGRID_MAX_BODY_BYTES": str(LIMIT)}
    if request.param == "sqlite":
        s = start_server(folder, f"sqlite:///{folder / 'wdgrid.db'}", secrets.token_hex(16), settings=settings)
        yield s
        stop_server(s)
        return
    urls = pg_schema_url(request.getfixturevalue("pg_admin"))
    s = start_server(folder, next(urls), secrets.token_hex(16), settings=settings)
    yield s
    stop_server(s)
    urls.close()  # drops the schema


def post_raw(server: Server, body: bytes, *, token: bool = True) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {server.token}"
    return httpx.post(f"{server.url}/sweeps", content=body, headers=headers, timeout=60)


def test_an_oversized_body_is_a_413_before_it_is_parsed(server: Server):
    big = json.dumps(spec_data(description="x" * LIMIT)).encode()
    r = post_raw(server, big)
    assert r.status_code == 413 and "WDGRID_MAX_BODY_BYTES" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts the bytes as they come
        yield b'{"description": "'
        for _ in range(LIMIT // 1024 + 1):
            yield b"y" * 1024
        yield b'"}'

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}) as c:
        chunked = c.post("/sweeps", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_without_the_token_nothing_is_read(server: Server):
    started = time.monotonic()
    r = post_raw(server, b"[" + b"0," * (5 * 2**20) + b"0]", token=False)  # 10 MB, no token
    assert r.status_code == 401 and time.monotonic() - started < 10
    wrong = httpx.post(f"{server.url}/sweeps", json={"preset": "smoke"}, headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"preset": "smoke", "epochs": NaN}', ["body", "epochs"]),
        (b'{"preset": "smoke", "epochs": Infinity}', ["body", "epochs"]),
        (b'{"preset": "smoke", "batch_size": -Infinity}', ["body", "batch_size"]),
        (b'{"preset": "smoke", "grids": [{"optimizer": "sgd", "lr": [1e309], "weight_decay": [0]}]}', None),
        (b'{"preset": "smoke", "name": "\\ud800"}', ["body", "name"]),
        (b'{"preset": "smoke", "name": "a\\u0000b"}', ["body", "name"]),
        (b'{"preset": "smoke", "seeds": [2147483648]}', ["body", "seeds", 0]),
        (b'{"preset": "smoke", "batch_size": 1099511627776}', ["body", "batch_size"]),
        (b'{"preset": "\\ud800"}', ["body", "preset"]),
        (b'{"preset": "smoke", "model": "small_convnet", "model_args": {"width": NaN}}', ["body", "model_args"]),
        (b'{"preset": "smoke", "model": "small_convnet", "model_args": {"width": "\\u0000"}}', None),
        (b'{"preset": "smoke", "schedule": {"name": "warm_restarts", "t_0": 1e-300, "t_mult": 1.0000000001}}', None),
    ],
)
def test_input_json_does_not_have_or_no_backend_stores_is_a_short_422(
    server: Server, body: bytes, loc: list[str | int] | None
):
    r = post_raw(server, body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]  # a response that is itself valid JSON
    assert len(r.content) < 4000
    if loc is not None:
        assert detail[0]["loc"] == loc, detail


def test_deep_nesting_is_a_422_at_the_body():
    from service.guard import MAX_DEPTH, too_deep

    assert not too_deep(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    assert too_deep(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    body = b'{"name": "' + b"[{" * 1000 + b'\\\\", "x": [1]}'  # a string of brackets, ending in an escaped \\
    assert json.loads(body)["x"] == [1] and not too_deep(body)  # brackets in a string do not nest
    assert not too_deep(b"[" + b"[1], " * 100_000 + b"[]]")  # many brackets, shallow: two levels


def test_a_deeply_nested_body_is_refused_before_it_is_parsed(server: Server):
    r = post_raw(server, b'{"preset": "smoke", "model_args": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]
    assert "nested deeper" in r.json()["detail"][0]["msg"]


def test_a_runaway_schedule_is_refused_naming_it(server: Server):
    schedule = {"name": "warm_restarts", "t_0": 1e-300, "t_mult": 1.0000000001}
    r = post_raw(server, json.dumps({"preset": "smoke", "schedule": schedule}).encode())
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "schedule"]
    assert "restart" in r.json()["detail"][0]["msg"]


def test_long_lists_are_refused_with_an_excerpt_not_an_echo(server: Server):
    r = post_raw(server, json.dumps({"preset": "smoke", "seeds": list(range(5000))}).encode())
    assert r.status_code == 422 and len(r.content) < 2000
    assert r.json()["detail"][0]["input"] == "a list of 5000 items"


def test_every_route_of_the_document_needs_the_token(server: Server):
    doc = httpx.get(f"{server.url}/openapi.json").json()
    open_paths = {"/healthz", "/readyz"}
    checked = 0
    for path, operations in doc["paths"].items():
        url = server.url + path.replace("{sweep_id}", "1").replace("{trial_id}", "1")
        for method in operations:
            r = httpx.request(method.upper(), url, json={} if method == "post" else None)
            if path in open_paths:
                assert r.status_code == 200, path
            else:
                assert r.status_code == 401, (method, path, r.status_code)
                checked += 1
    assert checked >= 14  # a new route cannot forget the token


def test_the_web_pages_need_the_token_and_other_sites_cannot_write(server: Server):
    from service.guard import session_value

    for path in ("/", "/ui/", "/ui/new", "/ui/sweeps/1"):  # a person without the cookie: to the login page
        r = httpx.get(server.url + path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next="), (path, r.status_code)
    assert httpx.get(f"{server.url}/ui/login").status_code == 200
    assert httpx.get(f"{server.url}/ui/static/sweep.js").status_code == 200  # public code, like the docs' assets

    r = httpx.post(f"{server.url}/ui/session", json={"token": "wrong"})
    assert r.status_code == 401 and "wrong token" in r.json()["detail"]
    r = httpx.post(f"{server.url}/ui/session", json={"token": server.token})
    cookie = r.headers["set-cookie"]
    assert r.status_code == 204 and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert server.token not in cookie  # the cookie is not the API token itself
    session = {"Cookie": f"wdgrid_session={session_value(server.token)}"}
    assert httpx.get(f"{server.url}/sweeps", headers=session).status_code == 200
    assert httpx.get(f"{server.url}/sweeps", headers={"Cookie": "wdgrid_session=" + "0" * 64}).status_code == 401

    # Writes from another site are refused, whatever credentials ride along; the page's own origin passes.
    bearer = {"Authorization": f"Bearer {server.token}"}
    for origin in ("https://evil.example", "null", server.url.replace("127.0.0.1", "localhost")):
        for headers in (bearer, session):
            r = httpx.post(f"{server.url}/sweeps", json={"preset": "smoke"}, headers=headers | {"Origin": origin})
            assert r.status_code == 403 and "another site" in r.json()["detail"], (origin, r.status_code)
    r = httpx.post(f"{server.url}/sweeps", json={"preset": "smoke"}, headers=session | {"Origin": server.url})
    assert r.status_code == 201


def test_readyz_says_what_is_down_without_naming_hosts():
    from service.main import _ray_reachable

    answer = _ray_reachable("no-such-host.invalid:6380")
    assert answer.startswith("unreachable (") and "no-such-host" not in answer


def test_errors_shown_to_clients_are_one_line_without_server_paths():
    from service.schemas import one_line

    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/srv/wdgrid/workers/train.py", line 12, in train\n'
        "    raise ValueError(x)\n"
        "ValueError: cannot read /srv/data/secret/x.npz: truncated\n"
    )
    assert one_line(traceback) == "ValueError: cannot read x.npz: truncated"
    assert one_line(None) is None
