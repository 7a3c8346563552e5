"""``python -m service.cli``: the controller starts each sweep's driver this way (``drive``)."""

from service.cli import app

app()
