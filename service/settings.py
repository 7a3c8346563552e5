"""The controller's settings, from the environment (``WDGRID_*``, and Ray's own ``RAY_ADDRESS``), validated when the
server starts: a bad value stops it with a message naming the variable."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Environment variables: ``WDGRID_DATABASE_URL``, ``WDGRID_DATA_DIR``, ``RAY_ADDRESS``, ``WDGRID_HOST``,
    ``WDGRID_PORT``, ``WDGRID_MAX_CONCURRENT_SWEEPS``, ``WDGRID_API_TOKEN``, ``WDGRID_POLL_S``."""

    model_config = SettingsConfigDict(env_prefix="WDGRID_", extra="ignore", frozen=True)

    database_url: str = Field(default="sqlite:///wdgrid.db", description="SQLAlchemy URL of the results store.")
    data_dir: Path | None = Field(default=None, description="Where data sets live (default ~/.cache/wdgrid/data).")
    ray_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RAY_ADDRESS", "WDGRID_RAY_ADDRESS"),
        description="Ray cluster the sweeps run on; unset: each sweep's driver starts an embedded Ray.",
    )
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(default=8000, description="Port the API listens on.")
    max_concurrent_sweeps: Annotated[int, Field(ge=0, le=64)] = Field(
        default=1,
        description="Sweeps trained at once; the rest wait in FIFO order. 0 pauses the queue: sweeps are accepted and "
        "wait (e.g. while the cluster is down for maintenance), running ones are not resumed until it is raised.",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token every route but /healthz, /readyz and the API docs requires; required off loopback.",
    )
    poll_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0, description="Seconds between the scheduler's looks at the queue."
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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere
