"""Config files that inherit: ``extends:`` and profiles, resolved to one plain mapping.

A config file is a YAML mapping. Two keys are not part of any schema:

* ``profiles: {name: {...}}``: named changes to the file's values, one of which
  ``--profile NAME`` applies.
* ``extends:`` names what a file or a profile starts from; its own values are then deep-merged
  over that (mappings merge key by key, anything else, lists included, is replaced; an empty
  mapping ``{}`` replaces, so it clears an inherited one):

  - in a file: another file (``extends: base.yaml``, relative to this file's folder), whose
    values and profiles it inherits; or a profile of another file
    (``extends: {file: base.yaml, profile: quick}``), whose values with that profile applied
    it inherits (not its profiles);
  - in a profile: another profile of the same file (``extends: quick``, or
    ``extends: {profile: quick}``), whose changes come first.

A missing file or profile, a cycle (``a`` extends ``b`` extends ``a``) and an ill-formed
``extends`` are :class:`~facefuse.config.ConfigError` naming the file. Keys a schema does not
know are refused later, by :func:`facefuse.config.from_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

EXTENDS = "extends"
PROFILES = "profiles"
YAML_SUFFIXES = (".yaml", ".yml")


class ConfigError(ValueError):
    """A config that does not fit its schema; the message names the key."""


def deep_merge(base: Mapping, update: Mapping) -> dict:
    """``base`` with ``update``'s values over it: a non-empty mapping merges into a mapping
    key by key, anything else (an empty mapping, a list, a scalar) replaces."""
    out = dict(base)
    for k, v in update.items():
        merge = isinstance(v, Mapping) and v and isinstance(out.get(k), Mapping)
        out[k] = deep_merge(out[k], v) if merge else v
    return out


def read_yaml_mapping(path: Path) -> dict:
    """The YAML mapping in ``path`` (an empty file is ``{}``)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return loaded


def parse_extends(value: Any, where: str) -> tuple[str | None, str | None]:
    """The (file, profile) an ``extends`` value names: ``"base.yaml"`` is a file,
    ``"quick"`` a profile, ``{file: ..., profile: ...}`` either or both."""
    if isinstance(value, str) and value:
        return (value, None) if value.endswith(YAML_SUFFIXES) else (None, value)
    if isinstance(value, Mapping) and value:
        unknown = set(value) - {"file", "profile"}
        if unknown:
            raise ConfigError(f"{where}: extends has unknown key(s) {sorted(unknown)}; "
                              f"valid: ['file', 'profile']")
        named = {k: v for k, v in value.items() if v is not None}
        if named and all(isinstance(v, str) and v for v in named.values()):
            return named.get("file"), named.get("profile")
    raise ConfigError(f"{where}: extends must name a file (base.yaml), a profile (quick) or "
                      f"both ({{file: base.yaml, profile: quick}}), got {value!r}")


def config_document(path: str | Path, _chain: Sequence[Path] = ()) -> dict:
    """``path``'s values with its ``extends`` resolved (recursively), its ``profiles``
    (each still a change, perhaps extending another) merged over the inherited ones."""
    path = Path(path)
    key = path.resolve()
    if key in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain[_chain.index(key):], key))
        raise ConfigError(f"{path}: extends cycle {cycle}")
    data = read_yaml_mapping(path)
    _profiles(data, path)  # checked here, where the file is named
    if EXTENDS not in data:
        return data
    file, profile = parse_extends(data.pop(EXTENDS), str(path))
    if file is None:
        raise ConfigError(f"{path}: a file extends another file ({{file: base.yaml}} or "
                          f"{{file: base.yaml, profile: {profile}}}); only a profile extends "
                          f"a profile of its own file")
    base_path = path.parent / file
    if not base_path.is_file():
        raise ConfigError(f"{path}: extends {file}, which does not exist ({base_path})")
    base = config_document(base_path, (*_chain, key))
    if profile is not None:
        base = apply_profile(base, profile, base_path)
    return deep_merge(base, data)


def _profiles(doc: Mapping, where: object) -> Mapping:
    profiles = doc.get(PROFILES) or {}
    if not isinstance(profiles, Mapping):
        raise ConfigError(f"{where}: profiles must be a mapping of name to changes")
    return profiles


def profile_changes(doc: Mapping, name: str, where: object, _chain: Sequence[str] = ()
                    ) -> dict:
    """Profile ``name``'s changes with the profiles it extends resolved (theirs first)."""
    profiles = _profiles(doc, where)
    if name in _chain:
        raise ConfigError(f"{where}: profile extends cycle "
                          f"{' -> '.join((*_chain[_chain.index(name):], name))}")
    if name not in profiles:
        via = f" (extended by profile {_chain[-1]!r})" if _chain else ""
        raise ConfigError(f"profile {name!r}{via} not in {where}; available: "
                          f"{sorted(profiles) or 'none'}")
    changes = profiles[name] or {}
    if not isinstance(changes, Mapping):
        raise ConfigError(f"{where}: profile {name!r} must be a mapping, got {changes!r}")
    changes = dict(changes)
    if EXTENDS not in changes:
        return changes
    file, parent = parse_extends(changes.pop(EXTENDS), f"{where}: profile {name!r}")
    if file is not None:
        raise ConfigError(f"{where}: profile {name!r} extends {file}: a profile extends "
                          f"another profile of its own file (a file extends files)")
    return deep_merge(profile_changes(doc, str(parent), where, (*_chain, name)), changes)


def apply_profile(doc: Mapping, name: str | None, where: object) -> dict:
    """The document's values with profile ``name`` (None: none) applied; without
    ``profiles``."""
    changes = {} if name is None else profile_changes(doc, name, where)
    top = {k: v for k, v in doc.items() if k != PROFILES}
    return deep_merge(top, changes)


def profile_names(path: str | Path) -> list[str]:
    """The profiles ``path`` offers, its inherited ones included."""
    return sorted(_profiles(config_document(path), path))
