"""Load on a running service: 50 pollers as the web page polls, submissions arriving all the while, a 1000-cell
soak training underneath, and (``--fuzz N``) a long Schemathesis run. One table.

A real ``wdgrid serve`` (token on; SQLite by default, ``--postgres`` for a PostgreSQL server of the bench's own)
trains a 1000-cell sweep (MNIST-1D, the built-in MLP, 1 epoch a cell: 4 optimizers × 10 α × 25 λ, one seed). Meanwhile
50 pollers each ask, every second, what the sweep page asks (``GET /sweeps/{id}`` and
``GET /sweeps/{id}/cells?since=<cursor>``), one in five also the sweeps list, and a submitter POSTs a small sweep
every 2 s (each with an ``Idempotency-Key``, each sent twice: the second must return the same sweep). At the end it
checks the soak: every cell finished (completed, or diverged: a result), none retried after a lost attempt, no
epoch of an attempt stored twice (with ``--fuzz``, Schemathesis may cancel and resume the soak itself: those
resumes are counted apart), and prints requests sent and 5xx
answers, poll latency (p50/p99/max), submissions accepted and duplicated, and the server's RSS at the start and the
end.

    .venv/bin/python bench/load.py                    # about 5 minutes on 2 CPU cores
    .venv/bin/python bench/load.py --postgres --fuzz 1000
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.faults import _rss_mb  # noqa: E402 - a checkout's bench
from results import SqlStorage  # noqa: E402
from tests.processes import BIN, own_postgres, start_server, stop_server  # noqa: E402

POLLERS = 50
SOAK = {
    "name": "load bench soak",
    "dataset": "mnist1d",
    "model": "mlp",
    "epochs": 1,
    "batch_size": 128,
    "schedule": {"name": "cosine"},
    "seeds": [0],
    "grids": [
        {
            "optimizer": o,
            "lr": {
                "base": 2,
                "start": -10 if o.startswith("adam") else -6,
                "stop": -1 if o.startswith("adam") else 3,
                "step": 1,
            },
            "weight_decay": {"base": 2, "start": -16, "stop": -4, "step": 0.5},
        }
        for o in ("sgd", "sgdw", "adam", "adamw")
    ],
}


class Tally:
    """Status codes and latencies (ms) of one kind of request, from many threads."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.ms: list[float] = []
        self.lock = threading.Lock()

    def time(self, client: httpx.Client, method: str, path: str, **kwargs: object) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError:
            with self.lock:
                self.codes.append(0)  # no answer: counted apart from 5xx
            return None
        with self.lock:
            self.codes.append(response.status_code)
            self.ms.append((time.perf_counter() - started) * 1000)
        return response


def _poller(url: str, token: str, sweep: int, n: int, stop: threading.Event, polls: Tally) -> None:
    cursor = None
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        while not stop.is_set():
            polls.time(c, "GET", f"/sweeps/{sweep}")
            r = polls.time(c, "GET", f"/sweeps/{sweep}/cells", params={"since": cursor} if cursor else None)
            if r is not None and r.status_code == 200:
                cursor = r.json()["cursor"]
            if n % 5 == 0:
                polls.time(c, "GET", "/sweeps", params={"limit": 100})
            stop.wait(1.0)


def _submitter(url: str, token: str, stop: threading.Event, posts: Tally, ids: dict[str, list[int]]) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        k = 0
        while not stop.is_set():
            key = f"load-{k}"
            body = {"preset": "smoke", "name": f"submitted {k}", "seeds": [k]}
            for _ in range(2):  # a client retrying: the same key must give the same sweep
                r = posts.time(c, "POST", "/sweeps", json=body, headers={"Idempotency-Key": key})
                if r is not None and r.status_code in (200, 201):
                    ids.setdefault(key, []).append(r.json()["id"])
            k += 1
            stop.wait(2.0)


@contextlib.contextmanager
def _database(postgres: bool, folder: Path) -> Iterator[str]:
    if not postgres:
        yield f"sqlite:///{folder / 'wdgrid.db'}"
        return
    with own_postgres() as pg:
        if pg is None:
            raise SystemExit("no PostgreSQL server binaries here: apt-get install postgresql")
        yield pg.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", action="store_true", help="a PostgreSQL server of the bench's own")
    parser.add_argument("--fuzz", type=int, default=0, help="also Schemathesis, this many examples per operation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wdgrid-load-") as tmp, _database(args.postgres, Path(tmp)) as db:
        token = secrets.token_hex(16)
        server = start_server(Path(tmp), db, token)  # one sweep at a time: the submissions queue behind the soak
        rss_start = _rss_mb(server.process.pid)
        polls, posts = Tally(), Tally()
        ids: dict[str, list[int]] = {}
        stop = threading.Event()
        started = time.monotonic()
        fuzz = "not run"
        try:
            with server.client() as c, SqlStorage(db, migrate=False) as store:
                soak = c.post("/sweeps", json=SOAK).json()["id"]
                threads = [
                    threading.Thread(target=_poller, args=(server.url, token, soak, n, stop, polls), daemon=True)
                    for n in range(POLLERS)
                ]
                threads.append(threading.Thread(target=_submitter, args=(server.url, token, stop, posts, ids)))
                for t in threads:
                    t.start()
                if args.fuzz:
                    fuzz = _fuzz(server.url, token, args.fuzz, Path(tmp))
                deadline = time.monotonic() + 1800
                while (status := c.get(f"/sweeps/{soak}").json()["status"]) in ("pending", "running"):
                    assert time.monotonic() < deadline, "the soak did not finish in 30 minutes"
                    time.sleep(2)
                soak_s = time.monotonic() - started
                stop.set()
                for t in threads:
                    t.join(timeout=120)
                trials, _ = store.trials(soak, limit=5000)
                epochs = store.sweep_epochs(soak)
                ended = {t.id: [a.status for a in store.attempts(t.id)] for t in trials}
                for sweep_ids in ids.values():  # the queued submissions: cancelled, they were load, not work
                    with contextlib.suppress(httpx.HTTPError):
                        c.post(f"/sweeps/{sweep_ids[0]}/cancel")
        finally:
            stop.set()
            rss_end = _rss_mb(server.process.pid)
            stop_server(server)

    completed = sum(t.status == "completed" for t in trials)
    diverged = sum(t.status == "diverged" for t in trials)
    # A cell trained again after a lost or failed attempt is a retry; after a cancelled one, a resume someone asked
    # for (the fuzzer cancels and resumes whatever sweep ids it draws, the soak's too).
    retried = sum(any(a in ("lost", "failed") for a in statuses) for statuses in ended.values())
    resumed = sum("cancelled" in statuses for statuses in ended.values())
    seen: dict[tuple[int, int, int], int] = {}
    for e in epochs:
        seen[(e.trial_id, e.attempt, e.epoch)] = seen.get((e.trial_id, e.attempt, e.epoch), 0) + 1
    duplicated = sum(n - 1 for n in seen.values())
    sent = len(polls.codes) + len(posts.codes)
    errors = sum(code >= 500 for code in polls.codes + posts.codes)
    unanswered = sum(code == 0 for code in polls.codes + posts.codes)
    q = statistics.quantiles(polls.ms, n=100)
    mixed = sum(len(set(v)) > 1 for v in ids.values())
    print(
        f"soak: {len(trials)} cells (mlp, MNIST-1D, 1 epoch) on {'PostgreSQL' if args.postgres else 'SQLite'}, "
        f"{soak_s:.0f} s, sweep {status}"
    )
    print(
        f"cells completed {completed}, diverged {diverged} (a result), other {len(trials) - completed - diverged}; "
        f"retried after a lost attempt {retried}, resumed after a cancel {resumed}, epochs duplicated {duplicated}"
    )
    print(
        f"pollers {POLLERS}; requests sent {sent} (polls {len(polls.codes)}, submissions {len(posts.codes)}), "
        f"5xx {errors}, unanswered {unanswered}"
    )
    print(f"poll latency: p50 {statistics.median(polls.ms):.1f} ms, p99 {q[98]:.1f} ms, max {max(polls.ms):.1f} ms")
    print(f"submissions: {len(ids)} sweeps, each POSTed twice with one Idempotency-Key; keys given two sweeps: {mixed}")
    print(f"schemathesis: {fuzz}")
    print(f"server RSS {rss_start:.0f} MB at the start, {rss_end:.0f} MB at the end")


def _fuzz(url: str, token: str, examples: int, folder: Path) -> str:
    command = [str(BIN / "schemathesis"), "run", f"{url}/openapi.json", "--header", f"Authorization: Bearer {token}"]
    command += ["--checks", "not_a_server_error", "--max-examples", str(examples), "--seed", "1", "--no-color"]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=3600, check=False)
    summary = [line.strip() for line in result.stdout.splitlines() if "generated" in line]
    return f"{'no 500' if result.returncode == 0 else 'FAILED'}; {summary[-1] if summary else result.stdout[-300:]}"


if __name__ == "__main__":
    main()
