"""The web page in a real browser: headless Chromium (Debian's, driven through Playwright's Python API) against a
real ``wdgrid serve`` with a token, a SQLite store and real sweep drivers. Sign in, watch a smoke sweep fill in
without a reload, hover and click its cells, submit through the form (a bad field and a good one), download, cancel.
Every page loads without a console error or a failed request."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import Server, start_server, stop_server

CHROMIUM = Path(os.environ.get("WDGRID_CHROMIUM", "/usr/bin/chromium"))

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("pages")
    s = start_server(folder, f"sqlite:///{folder / 'wdgrid.db'}", secrets.token_hex(16))
    yield s
    stop_server(s)
    assert s.process.returncode in (0, -signal.SIGTERM), (folder / "serve.log").read_text()[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():  # `make test` and .ci/run install it (apt: chromium)
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set WDGRID_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


class Watched:
    """A page whose console errors, uncaught exceptions and failed requests (network errors and HTTP ≥ 400) are
    recorded: a page that loads cleanly leaves ``problems`` empty."""

    def __init__(self, page: Any) -> None:
        self.page, self.problems = page, list[str]()
        page.on("console", lambda m: self._note(m.type == "error", f"console: {m.text}"))
        page.on("pageerror", lambda e: self._note(True, f"exception: {e}"))
        page.on("requestfailed", lambda r: self._note(True, f"failed: {r.url}"))
        page.on("response", lambda r: self._note(r.status >= 400, f"{r.status}: {r.url}"))

    def _note(self, bad: bool, what: str) -> None:
        if bad:
            self.problems.append(what)


@pytest.fixture
def signed_in(browser: Any, server: Server) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{server.url}/ui/login")
    page.fill("#token", server.token)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/")
    yield Watched(page)
    context.close()


def test_without_the_cookie_the_login_page_and_a_wrong_token_is_a_message(browser: Any, server: Server):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.url}/ui/new")
    assert "/ui/login?next=" in page.url
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "wrong token" in page.text_content("#login-error")
    page.fill("#token", server.token)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/new")  # back where the person was going
    context.close()


def test_a_smoke_sweep_fills_in_live_and_its_cells_answer(signed_in: Watched, server: Server):
    page = signed_in.page
    page.goto(f"{server.url}/ui/new")
    page.wait_for_selector("#preset option[value=smoke]", state="attached")
    page.select_option("#preset", "smoke")
    # a bad override: the API's message beside the field it names
    page.fill("#epochs", "0")
    page.click("button[type=submit]")
    error = page.wait_for_selector('.field[data-field="epochs"] .field-error')
    assert "greater than or equal to 1" in error.text_content()
    page.fill("#epochs", "3")
    page.fill("#overrides", '{"unknown_field": 1}')
    page.click("button[type=submit]")
    error = page.wait_for_selector('.field[data-field="overrides"] .field-error')
    assert "unknown_field" in error.text_content()
    page.fill("#overrides", "")
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/sweeps/*")
    sweep_id = int(page.url.rsplit("/", 1)[1])
    signed_in.problems.clear()  # the two 422s above were the point

    # live: progress and cells advance with no reload of the page
    page.evaluate("window.notReloaded = true")
    page.wait_for_function("document.getElementById('status').textContent === 'completed'", timeout=300_000)
    page.wait_for_function("document.querySelectorAll('#trials tbody tr').length > 0")
    assert page.evaluate("window.notReloaded") is True
    assert page.evaluate("window.wdgridLive.polls") >= 1
    with server.client() as c:
        cells = c.get(f"/sweeps/{sweep_id}/cells").json()
        n_cells = c.get(f"/sweeps/{sweep_id}").json()["n_cells"]
    expected = sum(len(h["lrs"]) * len(h["weight_decays"]) for h in cells["heatmaps"])
    assert page.locator("td.cell").count() == expected
    assert page.locator("td.cell.unfinished").count() == 0
    assert "completed" in page.text_content("#progress-text") and f"/ {n_cells} cells" in page.text_content(
        "#progress-text"
    )

    # hover: the cell's numbers, the API's; click: its curves and attempts
    first = cells["heatmaps"][0]
    td = page.locator(f'table[data-optimizer="{first["optimizer"]}"] td.cell').first
    lr, wd = (float(td.get_attribute(a) or "nan") for a in ("data-lr", "data-wd"))
    cell = next(c for c in first["cells"] if (c["lr"], c["weight_decay"]) == (lr, wd))
    td.hover()
    tip = page.text_content("#tooltip")
    assert f"α = {cell['lr']}" in tip and f"{cell['mean']:.2f} %" in tip and f"over {cell['n']} seed" in tip
    td.click()
    page.wait_for_selector("#cell-curves svg path")
    assert page.locator("#cell-attempts tbody tr").count() == cell["n_trials"]
    best = page.locator("td.cell.best").count()
    assert best == sum(len(h["best"]) for h in cells["heatmaps"]) > 0
    assert signed_in.problems == []


def test_every_page_loads_cleanly_and_downloads_are_the_api_s(signed_in: Watched, server: Server):
    page = signed_in.page
    with server.client() as c:
        sweep_id = c.post("/sweeps", json={"preset": "smoke", "epochs": 1}).json()["id"]
    for path in ("/ui/", "/ui/new", f"/ui/sweeps/{sweep_id}", "/docs", "/redoc"):
        page.goto(server.url + path)
        page.wait_for_load_state("networkidle")
    assert signed_in.problems == [], signed_in.problems  # nothing failed to load, nothing from the internet
    page.goto(f"{server.url}/ui/")
    page.wait_for_selector(f'#sweeps tr[data-id="{sweep_id}"]')
    with server.client() as c:  # a running sweep's CSV changes between two downloads: compare a finished one
        deadline = time.monotonic() + 120
        while c.get(f"/sweeps/{sweep_id}").json()["status"] not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline, "the 1-epoch smoke sweep did not finish in 120 s"
            time.sleep(0.5)
    page.goto(f"{server.url}/ui/sweeps/{sweep_id}")
    link = page.locator('#downloads a[href$="/trials.csv"]')
    with page.expect_download() as download:
        link.click()
    with server.client() as c:
        expected = c.get(f"/sweeps/{sweep_id}/trials.csv").text
    assert Path(download.value.path()).read_text() == expected
    assert signed_in.problems == [], signed_in.problems
    missing = page.goto(f"{server.url}/ui/sweeps/99999")
    assert missing is not None and missing.status == 404 and "There is no sweep 99999" in page.text_content("main")


def test_cancel_from_the_page(signed_in: Watched, server: Server):
    page = signed_in.page
    with server.client() as c:  # long enough to be cancelled while it runs or waits
        sweep_id = c.post("/sweeps", json={"preset": "smoke", "epochs": 50, "name": "to cancel"}).json()["id"]
    page.goto(f"{server.url}/ui/sweeps/{sweep_id}")
    page.click("#cancel")
    page.wait_for_function("document.getElementById('status').textContent === 'cancelled'", timeout=30_000)
    assert page.is_visible("#resume") and not page.is_visible("#cancel")
    with server.client() as c:
        assert c.get(f"/sweeps/{sweep_id}").json()["status"] == "cancelled"
    assert signed_in.problems == []


def test_a_cross_site_page_cannot_act_with_the_cookie(signed_in: Watched, server: Server):
    # The session cookie is SameSite=Strict and writes check Origin: a page on another site that posts to the
    # service gets nothing done.
    with server.client() as c:
        sweep_id = c.post("/sweeps", json={"preset": "smoke", "epochs": 50, "name": "target"}).json()["id"]
    page = signed_in.page
    page.goto("about:blank")
    page.evaluate(
        """url => fetch(url, {method: "POST", mode: "no-cors", credentials: "include"}).catch(() => null)""",
        f"{server.url}/sweeps/{sweep_id}/cancel",
    )
    page.wait_for_timeout(500)
    with server.client() as c:
        assert c.get(f"/sweeps/{sweep_id}").json()["status"] != "cancelled"
        c.post(f"/sweeps/{sweep_id}/cancel")
    r = httpx.post(
        f"{server.url}/sweeps/{sweep_id}/resume",
        headers={"Origin": "https://elsewhere.example", "Authorization": f"Bearer {server.token}"},
    )
    assert r.status_code == 403
