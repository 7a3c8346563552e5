"""Free space where the controller and its drivers write: the store (a SQLite file), the drivers' logs and Ray
Tune's checkpoints. A full disk stops every sweep at its next write (SQLite: "database or disk is full"), so
``/readyz`` reports it and a sweep failed by it says so."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import make_url

from service.settings import Settings

__all__ = ["full_disks", "written_folders"]

MIB = 2**20


def written_folders(settings: Settings, log_dir: Path) -> dict[str, Path]:
    """What the service writes, by a name that can be shown to API clients (never the path): ``store`` (only for
    a SQLite file: a database server's disk is its own), ``logs`` and ``checkpoints``."""
    folders = {"logs": log_dir, "checkpoints": settings.tune_dir or Path(tempfile.gettempdir())}
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        folders["store"] = Path(url.database or "").parent
    return folders


def full_disks(folders: Mapping[str, Path], min_free_mib: float) -> list[str]:
    """``"NAME: X MiB free"`` for each folder whose filesystem has less than ``min_free_mib`` MiB free (a folder
    not created yet: its nearest existing parent's); empty when every one has room."""
    out = []
    for name, folder in folders.items():
        path = folder.resolve()
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            free = shutil.disk_usage(path).free / MIB
        except OSError:
            continue  # not ours to judge (gone, no permission): the write itself will say
        if free < min_free_mib:
            out.append(f"{name}: {free:.1f} MiB free")
    return out
