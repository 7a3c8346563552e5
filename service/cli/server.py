"""``wdgrid serve``: the REST controller (uvicorn) with its scheduler, configured from ``WDGRID_*`` settings."""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli._common import command, fail, first_line, settings_or_fail, shown

if TYPE_CHECKING:
    from service.settings import Settings

app = typer.Typer()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [default: $WDGRID_HOST or 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="[default: $WDGRID_PORT or 8000].")] = None,
) -> None:
    """Start the REST controller (uvicorn); settings from WDGRID_* variables (README, 'The service')."""
    import os

    import uvicorn

    from results import SqlStorage
    from service.main import create_app

    settings = settings_or_fail(**{k: v for k, v in {"host": host, "port": port}.items() if v is not None})
    try:  # reachable, and migrated, before anything listens: a wrong URL is one line here, not a failed lifespan
        SqlStorage(settings.database_url).close()
    except Exception as exc:
        raise fail(
            f"cannot open the results store {shown(settings.database_url)}: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    os.environ.setdefault("WDGRID_DATABASE_URL", settings.database_url)
    typer.echo(banner(settings))
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


def banner(settings: Settings) -> str:
    """What `wdgrid serve` is about to do, in three lines: where, with what, and a first request to try."""
    store = shown(settings.database_url)
    if settings.ray_address:
        ray = f"the Ray cluster at {settings.ray_address}"
    else:
        ray = "this controller's own Ray" if settings.local_ray else "an embedded Ray per sweep"
    slots = settings.max_concurrent_sweeps
    running = f"{slots} sweep{'s' if slots != 1 else ''} at once" if slots else "the queue PAUSED (0 sweeps at once)"
    base = f"http://{settings.host}:{settings.port}"
    auth = ' -H "Authorization: Bearer $WDGRID_API_TOKEN"' if settings.api_token else ""
    return (
        f"wdgrid {version('wdgrid')}: results in {store}; sweeps train on {ray}, {running}.\n"
        f"API docs: {base}/docs   CLI: WDGRID_URL={base} {command()} submit --preset smoke\n"
        f"Try: curl -X POST {base}/sweeps{auth} -H 'Content-Type: application/json' -d '{{\"preset\": \"smoke\"}}'"
    )
