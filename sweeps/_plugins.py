"""The plugin registry: the models, data sets and trainers a spec may name, found as Python entry points.

Installing a package is the only way code gets into wdgrid: a distribution declares entry points in the groups
``wdgrid.models``, ``wdgrid.datasets`` and ``wdgrid.trainers`` (``[project.entry-points."wdgrid.models"]`` in its
``pyproject.toml``), and a spec names one by its entry-point name. wdgrid's own built-ins register the same way, so
there is one registry, not two. The controller and every worker discover them with ``importlib.metadata``; a name that
is not installed is refused naming the field and listing what is.

A plugin may declare its arguments as a pydantic model, the attribute ``Args`` of the entry point's object (a class
or a function). The controller checks a spec's ``model_args`` / ``dataset_args`` / ``trainer_args`` against it when
the sweep is submitted, so a bad argument is a 422 naming ``model_args.width``, not a failed sweep an hour later.
Without ``Args``, a plugin takes no arguments. Listing names reads only package metadata; checking arguments imports
the plugin's module (once per process).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, Field

__all__ = [
    "DEFAULT_DATA_DIR",
    "GROUPS",
    "DataPath",
    "DataPathError",
    "PluginDescription",
    "PluginError",
    "PluginInfo",
    "PluginKind",
    "args_model",
    "check_args",
    "check_data_paths",
    "data_paths",
    "describe",
    "installed",
    "load_plugin",
    "resolve_data_path",
]

PluginKind = Literal["model", "dataset", "trainer"]
DEFAULT_DATA_DIR: Final = Path.home() / ".cache" / "wdgrid" / "data"
"""Where data sets live when no data directory is given (the controller's ``WDGRID_DATA_DIR`` overrides it)."""
GROUPS: Final[dict[PluginKind, str]] = {
    "model": "wdgrid.models",
    "dataset": "wdgrid.datasets",
    "trainer": "wdgrid.trainers",
}


class PluginError(LookupError):
    """A plugin is not installed, is installed twice, or cannot be imported; the message names it and, when it is
    unknown, what is installed. ``field`` is the spec field that named it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PluginInfo:
    """One installed plugin: its kind and name, the entry point's object (``module:attribute``) and the
    distribution (package name and version) that installed it."""

    kind: PluginKind
    name: str
    value: str
    package: str
    version: str


def _info(kind: PluginKind, ep: EntryPoint) -> PluginInfo:
    dist = ep.dist
    return PluginInfo(kind, ep.name, ep.value, dist.name if dist else "?", dist.version if dist else "?")


@functools.cache
def _entry_points(kind: PluginKind) -> tuple[EntryPoint, ...]:
    # Cached per process: the metadata of every installed distribution is read once. A package installed while a
    # server runs is seen after a restart, like any Python code.
    return tuple(sorted(entry_points(group=GROUPS[kind]), key=lambda ep: ep.name))


def installed(kind: PluginKind) -> dict[str, PluginInfo]:
    """Every installed plugin of a kind, by name (sorted). A name two distributions register is listed once, with
    the first distribution; :func:`load_plugin` refuses it."""
    out: dict[str, PluginInfo] = {}
    for ep in _entry_points(kind):
        out.setdefault(ep.name, _info(kind, ep))
    return out


def load_plugin(kind: PluginKind, name: str) -> Any:
    """The object an installed plugin's entry point names (importing its module once per process).
    :class:`PluginError` when no distribution or two register ``name``, or when its module cannot be imported."""
    return _load(kind, name)


@functools.cache
def _load(kind: PluginKind, name: str) -> Any:
    found = [ep for ep in _entry_points(kind) if ep.name == name]
    if not found:
        names = ", ".join(installed(kind)) or "none"
        raise PluginError(kind, f"no {kind} named {name!r} is installed; installed: {names}")
    if len(found) > 1:
        packages = ", ".join(_info(kind, ep).package for ep in found)
        raise PluginError(kind, f"{kind} {name!r} is registered by more than one package ({packages})")
    try:
        return found[0].load()
    except Exception as exc:  # the plugin's own import error, whatever it is: name it in one line
        raise PluginError(
            kind, f"{kind} {name!r} ({found[0].value}) cannot be imported: {type(exc).__name__}: {exc}"
        ) from exc


@dataclass(frozen=True)
class PluginDescription:
    """What a user needs to name a plugin in a spec: where it comes from, its docstring, its arguments' JSON schema
    (None: it takes none), the metrics a trainer declares it reports (its ``METRICS``: what an objective may name;
    None: not declared, or not a trainer), and whether it could be imported here (``error`` says why not)."""

    info: PluginInfo
    doc: str
    args_schema: dict[str, Any] | None
    error: str | None = None
    metrics: tuple[str, ...] | None = None


def describe(kind: PluginKind) -> list[PluginDescription]:
    """Every installed plugin of a kind, described (importing each plugin's module)."""
    out = []
    for name, info in installed(kind).items():
        try:
            plugin = load_plugin(kind, name)
        except PluginError as exc:
            out.append(PluginDescription(info, "", None, str(exc)))
            continue
        model = args_model(plugin)
        doc = " ".join((getattr(plugin, "__doc__", None) or "").strip().split("\n\n")[0].split())
        declared = getattr(plugin, "METRICS", None) if kind == "trainer" else None
        metrics = tuple(declared) if isinstance(declared, list | tuple) else None
        out.append(PluginDescription(info, doc, None if model is None else model.model_json_schema(), None, metrics))
    return out


def args_model(plugin: Any) -> type[BaseModel] | None:
    """The pydantic model a plugin declares for its arguments (its ``Args`` attribute), or None."""
    model = getattr(plugin, "Args", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def check_args(kind: PluginKind, name: str, args: dict[str, Any]) -> None:
    """Check ``args`` against the plugin's ``Args``: ``ValidationError`` (locations inside the arguments) when they
    do not fit, ``ValueError`` when the plugin takes no arguments and some were given."""
    model = args_model(load_plugin(kind, name))
    if model is None:
        if args:
            raise ValueError(f"{kind} {name!r} takes no arguments; got {', '.join(sorted(args))}")
        return
    model.model_validate(args)


# --- Paths in arguments: always inside the data directory ---------------------------------------------------------
class DataPathError(ValueError):
    """A path argument leaves the data directory (absolute, ``..``, or a symbolic link that points outside).
    ``field`` names the spec field (``dataset_args.path``) when known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _relative(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not path or "\x00" in path or "\\" in path:
        raise DataPathError("must be a non-empty path with / between its parts")
    if PurePosixPath(path).is_absolute() or ".." in parts:
        raise DataPathError(f"{path!r} must be relative to the data directory, without '..'")
    return path


class _DataPathMark:
    """Marks a field of a plugin's ``Args`` as a path inside the data directory (found by :func:`data_paths`)."""


DataPath = Annotated[
    str,
    Field(max_length=1000, description="A path relative to the data directory (WDGRID_DATA_DIR)."),
    AfterValidator(_relative),
    _DataPathMark(),
]
"""The type of a plugin argument that names a file or folder: relative to the data directory, never absolute, never
``..``; where it is opened, :func:`resolve_data_path` also refuses symbolic links that lead outside."""


def check_data_paths(kind: PluginKind, name: str, args: dict[str, Any], data_dir: Path) -> None:
    """Resolve every path argument of a plugin under ``data_dir``: :class:`DataPathError` naming the argument
    (``dataset_args.path``) when one leads outside it through a symbolic link. Lexical escapes (absolute, ``..``)
    were refused when the arguments were validated."""
    for arg, path in data_paths(kind, name, args).items():
        try:
            resolve_data_path(data_dir, path)
        except DataPathError as exc:
            raise DataPathError(str(exc), field=f"{kind}_args.{arg}") from None


def data_paths(kind: PluginKind, name: str, args: dict[str, Any]) -> dict[str, str]:
    """The path arguments (fields typed :data:`DataPath`) among ``args`` of a plugin, by field name."""
    model = args_model(load_plugin(kind, name))
    if model is None:
        return {}
    marked = [f for f, info in model.model_fields.items() if any(isinstance(m, _DataPathMark) for m in info.metadata)]
    return {f: str(args[f]) for f in marked if isinstance(args.get(f), str)}


def resolve_data_path(data_dir: Path, path: str) -> Path:
    """``data_dir / path`` with every symbolic link followed; :class:`DataPathError` when it is not inside
    ``data_dir`` (also followed), or when ``path`` is absolute or climbs with ``..``."""
    _relative(path)
    root = data_dir.resolve()
    full = (root / path).resolve()
    if full != root and root not in full.parents:
        raise DataPathError(f"{path!r} leads outside the data directory")
    return full
