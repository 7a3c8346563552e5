"""What every ``wdgrid`` command shares: one way to fail (one line on stderr), one way to describe invalid input,
one way to print a database URL, and one live progress display of a sweep's cells."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import typer

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["Snapshot", "command", "errors_line", "fail", "first_line", "settings_or_fail", "shown", "watch"]

TERMINAL: Final = frozenset({"completed", "failed", "cancelled"})


def command() -> str:
    """How to call this wdgrid from the current shell: ``wdgrid`` when that is on PATH, else its script's path
    (``.venv/bin/wdgrid`` after ``make run``, which does not activate the environment)."""
    import shutil
    import sys

    script = Path(sys.executable).parent / "wdgrid"
    found = shutil.which("wdgrid")
    if found is not None and Path(found).resolve() == script.resolve():
        return "wdgrid"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``wdgrid: message`` to stderr; the caller raises the returned Exit (2: bad input, 1: it did not work)."""
    typer.echo(f"wdgrid: {message}", err=True)
    return typer.Exit(code)


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def errors_line(errors: Sequence[Mapping[str, Any]], *, skip: int = 0) -> str:
    """Validation errors (pydantic's ``exc.errors()``, or an API 422's ``detail``) as one line: the first error's
    field path and message, and how many more there are. ``skip`` drops leading path parts (``body``)."""
    if not errors:
        return "invalid input"
    first = errors[0]
    where = ".".join(str(p) for p in list(first.get("loc", []))[skip:])
    message = str(first.get("msg", "")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


def settings_or_fail(**overrides: object) -> Settings:
    """The settings from the environment (``overrides`` win), or one line naming the bad variable."""
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        named = bool(exc.errors() and exc.errors()[0].get("loc"))
        raise fail(f"bad setting{' ' if named else ': '}{errors_line(exc.errors())}") from None


def shown(url: str) -> str:
    """A database URL fit to print: its password replaced by ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("://", 1)[0] + "://***" if "@" in url else url


@dataclass(frozen=True)
class Snapshot:
    """A sweep's state as a progress display needs it: cells per status, and (when known) its status and ETA (s)."""

    counts: Mapping[Any, int]  # by status name
    status: str | None = None
    eta_s: float | None = None

    @property
    def finished(self) -> int:
        return self.counts["completed"] + self.counts["diverged"] + self.counts["failed"]


def watch(
    sweep_id: int, total: int, poll: Callable[[], Snapshot], *, stop: threading.Event | None = None, every_s: float = 1
) -> Snapshot:
    """Draw cells finished / total with a live line of details until the sweep's status is final or ``stop`` is set
    (read once more after it is, so the last line is exact); returns the last snapshot."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn(f"[bold]sweep {sweep_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("cells  {task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task("", total=total, detail="")
        while True:
            stopping = stop is not None and stop.is_set()
            snap = poll()
            c = snap.counts
            status = f"{snap.status}, " if snap.status else ""
            eta = f" ETA {snap.eta_s:.0f} s" if snap.eta_s else ""
            detail = f"{status}{c['running']} running, {c['diverged']} diverged, {c['failed']} failed{eta}"
            bar.update(task, completed=snap.finished, detail=detail)
            if stopping or snap.status in TERMINAL:
                return snap
            if stop is not None:
                stop.wait(every_s)
            else:
                time.sleep(every_s)
