"""Typed configs: frozen dataclasses are the schema, YAML files are instances.

:func:`load_config` reads a YAML file into a dataclass, applies a named profile (a section
``profiles: {name: {...}}`` of the file) and ``--set a.b=value`` overrides, and refuses
unknown keys and ill-typed values with a message naming the key; a file or a profile may
``extends:`` another (:mod:`facefuse.config_files`). :func:`to_dict` gives the resolved config
back, to be written beside every run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from facefuse.config_files import ConfigError, apply_profile, config_document, deep_merge

__all__ = ["ConfigError", "apply_override", "check_whole", "from_dict", "is_finite_non_negative",
           "load_config", "same_config", "save_config", "to_dict"]

T = TypeVar("T")


def check_whole(name: str, value: Any, least: int, optional: bool = False) -> None:
    """Refuse (ValueError naming ``name``) a value that is not an integer >= ``least``;
    None passes where ``optional``. For the range checks of configs' ``__post_init__``."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number >= {least}"
                         f"{' or null' if optional else ''}, got {value!r}")


def is_finite_non_negative(value: Any) -> bool:
    """A real number (not a bool), finite and >= 0: a weight or a share."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]")
                     for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin in (dict, Mapping) or annotation in (dict,):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(k, kt, where): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys are an error."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def to_dict(config: Any) -> Any:
    """A dataclass config as plain YAML-able data."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def same_config(saved: Any, config: Any) -> bool:
    """Whether ``saved`` (a config's :func:`to_dict` as a run stored it, e.g. read back from
    JSON) describes ``config``: equal, except that a field missing from ``saved`` is accepted
    at its default value, so a run stored before a field was added still resumes (or is
    reused) under the version that added it. A field in ``saved`` that ``config`` no longer
    has makes them differ."""
    if not dataclasses.is_dataclass(config):
        return _plain(to_dict(config)) == _plain(saved)
    if not isinstance(saved, Mapping):
        return False
    names = {f.name for f in dataclasses.fields(config)}
    if set(saved) - names:
        return False
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in saved:
            recorded = saved[f.name]
        elif f.default is not dataclasses.MISSING:
            recorded = to_dict(f.default)  # a field added since: the same run at its default
        elif f.default_factory is not dataclasses.MISSING:
            recorded = to_dict(f.default_factory())
        else:  # a required field the stored run did not record
            return False
        if not same_config(recorded, value):
            return False
    return True


def _plain(data: Any) -> Any:
    """``data`` as JSON would give it back (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(data, sort_keys=True))


def apply_override(data: dict, assignment: str) -> dict:
    """Apply ``a.b.c=value`` (value parsed as YAML) to nested dict ``data``."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key.sub=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    value = yaml.safe_load(raw) if raw.strip() else ""
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    return deep_merge(data, nested)


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                profile: str | None = None) -> T:
    """Read a YAML config into ``cls`` (defaults where the file is silent).

    Args:
        cls: the dataclass schema.
        path: YAML file, or None for the defaults.
        overrides: ``key.sub=value`` strings applied last.
        profile: name of a section under ``profiles:`` in the file (or one it inherits),
            applied before overrides.

    Raises:
        ConfigError: a missing or ill-formed file, base or profile, an ``extends`` cycle, an
            unknown key or an ill-typed value (the message names it).
    """
    if path is None:
        data = apply_profile({}, profile, "the defaults (no config file)")
    else:
        data = apply_profile(config_document(path), profile, Path(path))
    for assignment in overrides:
        data = apply_override(data, assignment)
    return from_dict(cls, data)


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
