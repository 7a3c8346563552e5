"""Everything wdgrid reads from the environment (``WDGRID_*``, and Ray's own ``RAY_ADDRESS``), in one object,
validated when a program starts: a bad value stops it with a message naming the variable. The controller, its sweep
drivers and ``wdgrid run`` all read it; ``sweeps``, ``workers`` and ``results`` read nothing from the environment:
what they need (limits, data and Tune folders, CPUs and GPUs per trial, the store's URL) is passed to them from here.
The one exception is a worker image's ``WDGRID_GIT_SHA`` (provenance of a build without ``.git``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from results import DEFAULT_URL
from service.fanout import RunOptions
from sweeps import (
    DEFAULT_DATA_DIR,
    DEFAULT_MAX_CELLS,
    DEFAULT_MAX_EPOCHS,
    MAX_CELLS_CEILING,
    MAX_EPOCHS_CEILING,
    SpecLimits,
)

__all__ = ["Settings"]


API_DB_RETRY_S: Final = 2.0  # a request waits at most this long for an unreachable database, then gets a 503


class Settings(BaseSettings):
    """Each field is the environment variable ``WDGRID_<FIELD>`` (``ray_address``: ``RAY_ADDRESS``); the README's
    settings table lists them."""

    model_config = SettingsConfigDict(env_prefix="WDGRID_", extra="ignore", frozen=True)

    database_url: str = Field(default=DEFAULT_URL, description="SQLAlchemy URL of the results store.")
    data_dir: Path | None = Field(
        default=None, description="Where workers find data sets (default ~/.cache/wdgrid/data on each worker)."
    )
    tune_dir: Path | None = Field(
        default=None,
        description="Ray Tune's checkpoint folder; on a cluster a path every node shares (default: a temporary one).",
    )
    ray_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RAY_ADDRESS", "WDGRID_RAY_ADDRESS"),
        description="Ray cluster the sweeps run on; unset: the controller's own Ray (WDGRID_LOCAL_RAY).",
    )
    local_ray: bool = Field(
        default=True,
        description="Without RAY_ADDRESS: one Ray head started and stopped with the controller, that every sweep "
        "joins (true), or an embedded Ray started by each sweep's driver (false: 4-5 s and ~800 MB more per sweep).",
    )
    standby_driver: bool = Field(
        default=True,
        description="Keep one sweep driver started ahead (Ray joined, Ray Tune imported; ~200 MB while idle) and "
        "hand it the next sweep: its first trial starts ~2.5 s after the POST instead of ~3.8 s.",
    )
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(default=8000, description="Port the API listens on.")
    max_concurrent_sweeps: Annotated[int, Field(ge=0, le=64)] = Field(
        default=1,
        description="Sweeps trained at once, each on an equal share of the Ray cluster's trial slots; the rest wait "
        "in FIFO order. 0 pauses the queue: sweeps are accepted and "
        "wait (e.g. while the cluster is down for maintenance), running ones are not resumed until it is raised.",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token every route but /healthz, /readyz and the API docs requires; required off loopback.",
    )
    poll_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0, description="Seconds between the scheduler's looks at the queue."
    )
    db_retry_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=120.0,
        description="Seconds a sweep's driver rides out an unreachable database (retrying with back-off) before it "
        "gives up and the controller restarts it; the API waits at most API_DB_RETRY_S, then answers 503.",
    )
    min_free_disk_mib: Annotated[float, Field(ge=0, le=2**20)] = Field(
        default=64.0,
        description="Free space (MiB) below which the disk holding the SQLite store, the driver logs or the "
        "checkpoints counts as full: /readyz answers 503, and a sweep whose driver keeps failing says why.",
    )
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 2**20)] = Field(
        default=2**20, description="Longest request body accepted, in bytes (a longer one is a 413 before parsing)."
    )
    max_cells: Annotated[int, Field(ge=1, le=MAX_CELLS_CEILING)] = Field(
        default=DEFAULT_MAX_CELLS, description="Most cells (seeds × α × λ over all grids) one sweep may have."
    )
    max_epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS_CEILING)] = Field(
        default=DEFAULT_MAX_EPOCHS, description="Most epochs one sweep may train each cell."
    )
    cpus_per_trial: Annotated[float, Field(gt=0, le=1024)] = Field(
        default=1.0, description="CPUs Ray reserves for each trial (chunk of cells); torch uses as many threads."
    )
    gpus_per_trial: Annotated[float | None, Field(ge=0, le=64)] = Field(
        default=None, description="GPUs per trial (fractions share one); unset: 1 when the cluster has GPUs, else 0."
    )

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(v)
        except ArgumentError:
            raise ValueError(
                "WDGRID_DATABASE_URL is not a database URL (e.g. sqlite:///wdgrid.db or "
                "postgresql+psycopg://user:password@host:5432/db)"
            ) from None
        return v

    @model_validator(mode="after")
    def _token_off_loopback(self) -> Self:
        if self.api_token is None and not _is_loopback(self.host):
            raise ValueError(
                f"WDGRID_HOST={self.host} is reachable from other machines: set WDGRID_API_TOKEN (or bind 127.0.0.1)"
            )
        if self.api_token is not None and len(self.api_token.get_secret_value()) < 16:
            raise ValueError("WDGRID_API_TOKEN must be at least 16 characters")
        return self

    def data_root(self) -> Path:
        """The data directory: ``WDGRID_DATA_DIR``, else ``~/.cache/wdgrid/data``."""
        return self.data_dir if self.data_dir is not None else DEFAULT_DATA_DIR

    def spec_limits(self) -> SpecLimits:
        """The caps a submitted spec is checked against."""
        return SpecLimits(max_cells=self.max_cells, max_epochs=self.max_epochs)

    def driver_environment(self, inherited: Mapping[str, str]) -> dict[str, str]:
        """The environment of a sweep's driver process: ``inherited`` with every setting a driver reads written out
        (so that settings given in code reach it too), and without what only the server needs (its address and
        the API token: a driver serves nothing)."""
        env = {k: v for k, v in inherited.items() if not k.startswith("WDGRID_") and k != "RAY_ADDRESS"}
        values = {
            "WDGRID_DATABASE_URL": self.database_url,
            "WDGRID_DATA_DIR": self.data_dir,
            "WDGRID_MAX_CONCURRENT_SWEEPS": self.max_concurrent_sweeps,  # the share of the cluster a driver takes
            "WDGRID_TUNE_DIR": self.tune_dir,
            "WDGRID_DB_RETRY_S": self.db_retry_s,  # the driver's to use: set on the controller, it must reach it
            "RAY_ADDRESS": self.ray_address,
            "WDGRID_CPUS_PER_TRIAL": self.cpus_per_trial,
            "WDGRID_GPUS_PER_TRIAL": self.gpus_per_trial,
            "WDGRID_GIT_SHA": inherited.get("WDGRID_GIT_SHA"),
        }
        return env | {k: str(v) for k, v in values.items() if v is not None}

    def run_options(self) -> RunOptions:
        """How a sweep driver runs its sweep on Ray."""
        return RunOptions(
            cpus_per_trial=self.cpus_per_trial,
            gpus_per_trial=self.gpus_per_trial,
            storage_path=None if self.tune_dir is None else str(self.tune_dir),
            data_dir=None if self.data_dir is None else str(self.data_dir),
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere
