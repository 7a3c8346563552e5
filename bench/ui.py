"""The web page at scale: what a 5000-cell sweep costs the server and the browser, and the README's screenshots.

Builds a SQLite store through the real store API: the ``cpu-fig2`` preset's sweep (392 cells) from a measured run
(``tests/results/data/cpu_fig2_run.json``, errors as trained) and a 5000-cell sweep (4 optimizers × 25 α × 25 λ ×
2 seeds, synthetic errors: a diagonal valley for L2, an axis-aligned bowl for decoupled decay) with all but 8 cells
finished and those 8 running. Then starts a real ``wdgrid serve`` on that store (token on) and prints, for the
5000-cell sweep:

- the server's time to render the sweep page (its HTML carries the first state: every cell), and its size;
- the size of the full cells answer, and of one live update: the poll after 8 cells finished, and a poll when
  nothing changed;
- in headless Chromium: the time from navigation to the heatmaps drawn, and the live update as the page receives it.

``--shots DIR`` also writes the sweeps list and the finished cpu-fig2 sweep page (hovering its best AdamW cell, with
that cell's curves open) as PNG screenshots; with ``--server URL --token T --sweep N`` it only takes them, of a
running service's sweep N (the README's come from a real cpu-fig2 run: ``{"preset": "cpu-fig2"}`` POSTed to
``make run``'s service, 392 cells trained).

    .venv/bin/python bench/ui.py                       # about 2 minutes on 2 CPU cores
    .venv/bin/python bench/ui.py --shots docs --server http://127.0.0.1:8000 --token "$WDGRID_API_TOKEN" --sweep 1
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.analysis import big_spec, fill, finish, measured, measured_spec, synthetic_error  # noqa: E402 - a checkout's bench
from results import SqlStorage  # noqa: E402
from service.routes import CURSOR_OVERLAP  # noqa: E402
from tests.processes import start_server, stop_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TOKEN = "bench-ui-token-0123456789"


def build(db: str) -> tuple[int, int, list]:  # type: ignore[type-arg]
    store = SqlStorage(db)
    run = ROOT / "tests/results/data/cpu_fig2_run_wide.json"
    fig2, _ = fill(store, measured_spec(run), measured(run))
    store.set_sweep_status(fig2, "running")
    store.set_sweep_status(fig2, "completed")
    big, _ = fill(store, big_spec(25, 2), synthetic_error, leave=8)
    # Held by this process (alive): the controller's scheduler leaves the sweep alone, as it does a live driver's.
    # (Acquiring re-queues the 8 claimed trials; they are claimed again, as a driver would.)
    store.acquire_sweep(big, f"{socket.gethostname()}:{os.getpid()}:bench", lease_seconds=3600)
    store.set_sweep_status(big, "running")
    running = [t for _ in range(8) if (t := store.claim_trial(big, lease_seconds=3600)) is not None]
    store.close()
    return fig2, big, running


def timed_get(client: httpx.Client, path: str, n: int = 10) -> tuple[float, int]:
    """Median seconds over ``n`` GETs (after one to warm up), and the answer's size in bytes."""
    size = len(client.get(path).content)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, response.text[:300]
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=Path, help="write ui-sweeps.png and ui-sweep.png into this folder")
    parser.add_argument("--server", help="only take the screenshots, of this running service")
    parser.add_argument("--token", default=TOKEN, help="that service's WDGRID_API_TOKEN")
    parser.add_argument("--sweep", type=int, default=1, help="the sweep to show (with --server)")
    args = parser.parse_args()
    if args.server:
        screenshots(args.server, args.token, args.sweep, args.shots or Path("."))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = f"sqlite:///{folder / 'ui.db'}"
        start = time.perf_counter()
        fig2, big, running = build(db)
        print(f"store: cpu-fig2 (392 cells) and a 5000-cell sweep, filled in {time.perf_counter() - start:.0f} s")
        server = start_server(folder, db, TOKEN)
        try:
            measure(server.url, big, running, db)
            if args.shots:
                screenshots(server.url, TOKEN, fig2, args.shots)
        finally:
            stop_server(server)


def measure(url: str, big: int, running: list, db: str) -> None:  # type: ignore[type-arg]
    time.sleep(CURSOR_OVERLAP.total_seconds())  # the fill's last cells are older than any cursor from now on
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        page_s, page_b = timed_get(client, f"/ui/sweeps/{big}")
        cells_s, cells_b = timed_get(client, f"/sweeps/{big}/cells")
        cursor = client.get(f"/sweeps/{big}/cells").json()["cursor"]
        since = f"/sweeps/{big}/cells?{urlencode({'since': cursor})}"
        idle_s, idle_b = timed_get(client, since)
        store = SqlStorage(db)
        for t in running:  # 8 cells finish between two polls
            finish(store, t, synthetic_error(t.optimizer, t.lr, t.weight_decay, t.seed))
        store.close()
        update_s, update_b = timed_get(client, since)
        sent = sum(len(h["cells"]) for h in client.get(since).json()["heatmaps"])
    print(f"{'5000-cell sweep':44s} {'server time':>12s} {'size':>10s}")
    print(f"{'sweep page (HTML + every cell)':44s} {1000 * page_s:9.1f} ms {page_b / 1024:7.1f} KB")
    print(f"{'cells, all (GET /sweeps/{id}/cells)':44s} {1000 * cells_s:9.1f} ms {cells_b / 1024:7.1f} KB")
    print(f"{'live update, 8 cells finished':44s} {1000 * update_s:9.1f} ms {update_b / 1024:7.1f} KB  ({sent} cells)")
    print(f"{'live update, nothing changed':44s} {1000 * idle_s:9.1f} ms {idle_b / 1024:7.1f} KB")
    browser(url, big)


def _page(playwright, url: str, token: str = TOKEN):  # type: ignore[no-untyped-def]
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    context = browser.new_context(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
    page = context.new_page()
    page.goto(f"{url}/ui/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/")
    return browser, page


def browser(url: str, big: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium, page = _page(p, url)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            page.goto(f"{url}/ui/sweeps/{big}")
            page.wait_for_function("document.querySelectorAll('td.cell').length === 2500")
            times.append(time.perf_counter() - start)
        page.wait_for_function("window.wdgridLive.polls >= 2", timeout=20_000)
        live = page.evaluate("window.wdgridLive")
        chromium.close()
    print(f"{'in Chromium: navigation to heatmaps drawn':44s} {1000 * statistics.median(times):9.1f} ms")
    print(f"{'in Chromium: one live poll of the cells':44s} {'':12s} {live['bytes'] / 1024:7.1f} KB")


def screenshots(url: str, token: str, sweep: int, folder: Path) -> None:
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium, page = _page(p, url, token)
        page.wait_for_selector("#sweeps tbody tr")
        page.screenshot(path=str(folder / "ui-sweeps.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 420})
        page.goto(f"{url}/ui/sweeps/{sweep}")
        page.wait_for_selector(".comparison")
        page.wait_for_selector("#best-curves svg")
        best = page.locator('table[data-optimizer="adamw"] td.cell.best').first
        best.click()
        page.wait_for_selector("#cell-curves svg")
        best.hover()
        page.screenshot(
            path=str(folder / "ui-sweep.png"), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": 2000}
        )
        chromium.close()
    print(f"screenshots: {folder / 'ui-sweeps.png'}, {folder / 'ui-sweep.png'}")


if __name__ == "__main__":
    main()
