"""Presets: named sweep specs shipped as JSON files in ``sweeps/presets/`` (package data).

Each file is one spec; its ``name`` is the file name and its ``description`` says what it reproduces. A spec has one
schedule, so the paper's Figure 1 (Adam vs AdamW under three schedules) is three presets, ``paper-fig1-fixed``,
``paper-fig1-step`` and ``paper-fig1-cosine``, with the same grids: three sweeps, three fingerprints, one figure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sweeps._spec import SweepSpec

__all__ = ["PresetInfo", "UnknownPresetError", "list_presets", "load_preset"]

_SUFFIX = ".json"


class UnknownPresetError(LookupError):
    """No preset has this name. ``name`` is the name asked for; ``known`` the names there are."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown preset {name!r}; known presets: {', '.join(known)}")


@dataclass(frozen=True)
class PresetInfo:
    """A preset's name and what it reproduces."""

    name: str
    description: str


def _files() -> dict[str, Any]:
    folder = resources.files("sweeps") / "presets"
    return {f.name.removesuffix(_SUFFIX): f for f in folder.iterdir() if f.name.endswith(_SUFFIX)}


def _raw(name: str) -> dict[str, Any]:
    files = _files()
    if name not in files:
        raise UnknownPresetError(name, sorted(files))
    data: dict[str, Any] = json.loads(files[name].read_text(encoding="utf-8"))
    return data


def list_presets() -> list[PresetInfo]:
    """Every preset, sorted by name."""
    return [PresetInfo(name, str(_raw(name).get("description", ""))) for name in sorted(_files())]


def load_preset(name: str, /, **overrides: Any) -> SweepSpec:
    """The preset ``name`` as a validated spec, with top-level fields replaced by ``overrides``
    (e.g. ``load_preset("cpu-fig2", epochs=5, seeds=[0])``); the result is validated like any spec.

    Raises:
        UnknownPresetError: no preset is called ``name``.
        pydantic.ValidationError: an override is not a field or not a valid value (its ``loc`` names the field).
    """
    return SweepSpec.model_validate({**_raw(name), **overrides})
