"""Where settings come from: a TOML file, ``INGEST_*`` variables and flags, merged in that order and validated
(``build_settings``); an error names the flag, variable or file and key it came from."""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel

from ingest.errors import ConfigError
from ingest.settings.model import ENV_PREFIX, ManifestSettings, Settings


def _nested_fields() -> dict[str, type[BaseModel]]:
    return {"manifest": ManifestSettings}


def load_toml(path: Path) -> dict[str, Any]:
    """Read a settings file; a syntax error or an unreadable file is a ``ConfigError`` naming it."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings from the ``INGEST_*`` variables that name one, and for each dotted key the variable it came from."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, raw in env.items():
        path = _setting_path(name)
        if path is None:
            continue
        if len(path) == 2:
            values.setdefault(path[0], {})[path[1]] = _env_value(raw)
        else:
            values[path[0]] = _env_value(raw)
        origin[".".join(path)] = name
    return values, origin


# Service variables Kubernetes injects into every pod of a namespace, for each Service (here one named `ingest`):
# INGEST_SERVICE_HOST, INGEST_SERVICE_PORT(_<name>), INGEST_PORT, INGEST_PORT_9090_TCP(_ADDR|_PORT|_PROTO).
_KUBERNETES_SERVICE_VARIABLE = re.compile(r"_SERVICE_HOST$|_SERVICE_PORT|_PORT$|_PORT_\d+_(?:TCP|UDP|SCTP)")


@dataclass(frozen=True, slots=True)
class UnknownVariable:
    """An ``INGEST_*`` variable that names no setting, and the closest setting's variable, if any."""

    name: str
    did_you_mean: str | None


def unknown_env_variables(env: Mapping[str, str]) -> list[UnknownVariable]:
    """The ``INGEST_*`` variables that name no setting and are not Kubernetes service variables (sorted)."""
    unknown = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or _setting_path(name) is not None:
            continue
        if _KUBERNETES_SERVICE_VARIABLE.search(name):
            continue
        close = difflib.get_close_matches(name, _known_variables(), n=1, cutoff=0.8)
        unknown.append(UnknownVariable(name, close[0] if close else None))
    return unknown


def _setting_path(name: str) -> list[str] | None:
    """``INGEST_RATE`` → ``["rate"]``, ``INGEST_MANIFEST__FORMAT`` → ``["manifest", "format"]``; ``None`` when the
    variable names no setting."""
    if not name.startswith(ENV_PREFIX):
        return None
    path = name[len(ENV_PREFIX) :].lower().split("__")
    nested = _nested_fields()
    if len(path) == 1 and path[0] in Settings.model_fields and path[0] not in nested:
        return path
    if len(path) == 2 and path[0] in nested and path[1] in nested[path[0]].model_fields:
        return path
    return None


def _known_variables() -> list[str]:
    names = [ENV_PREFIX + name.upper() for name in Settings.model_fields if name not in _nested_fields()]
    for table, model in _nested_fields().items():
        names += [f"{ENV_PREFIX}{table.upper()}__{name.upper()}" for name in model.model_fields]
    return names


def _env_value(raw: str) -> Any:
    stripped = raw.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    return raw


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge layers, later ones winning; nested tables merge key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = value
    return merged


def build_settings(
    *,
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Layer flags > env > file > defaults and validate; errors name the flag, variable or file and key."""
    env = os.environ if env is None else env
    file_values = load_toml(config_file) if config_file is not None else {}
    env_values, env_origin = env_layer(env)
    flag_values = dict(flags or {})
    try:
        return Settings.model_validate(merge(file_values, env_values, flag_values))
    except pydantic.ValidationError as exc:
        raise ConfigError(_explain(exc, flag_values, env_origin, config_file)) from None


def _explain(
    exc: pydantic.ValidationError,
    flags: Mapping[str, Any],
    env_origin: Mapping[str, str],
    config_file: Path | None,
) -> str:
    problems = []
    for error in exc.errors():
        dotted = ".".join(str(part) for part in error["loc"])
        top = str(error["loc"][0]) if error["loc"] else ""
        if top in flags:
            where = f"--{top.replace('_', '-')}"
        elif dotted in env_origin or top in env_origin:
            where = env_origin.get(dotted) or env_origin[top]
        elif config_file is not None:
            where = f"{config_file}: key '{dotted}'"
        else:
            where = f"setting '{dotted}'"
        message = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{where}: {message}")
    return "invalid settings:\n  " + "\n  ".join(problems)
