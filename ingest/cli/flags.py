"""Command-line flags generated from ``Settings``: each setting is declared once, with its default and help.

A field ``rate`` of ``Settings`` becomes ``--rate`` (dest ``s.rate``); a field of ``ManifestSettings`` such as
``format`` becomes ``--format`` (dest ``m.format``). The help shows the description, the default and the
``INGEST_*`` variable. Flags use ``argparse.SUPPRESS`` as default, so only the flags given form the CLI layer of
``build_settings`` (flags > env > file > defaults).
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ingest.settings import ENV_PREFIX, ManifestSettings, Settings

RUN_PREFIX = "s."
MANIFEST_PREFIX = "m."


def csv_list(value: str) -> list[str]:
    """``a, b`` → ``["a", "b"]``."""
    return [part.strip() for part in value.split(",") if part.strip()]


def add_setting_flags(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """One flag per top-level setting (all of them, or ``names``); tables such as ``manifest`` are skipped."""
    for name, info in Settings.model_fields.items():
        if (names is None or name in names) and not _is_table(info):
            _add(parser, name, info, dest=RUN_PREFIX + name, env=ENV_PREFIX + name.upper())


def add_manifest_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per scalar manifest setting (``--format``, ``--strict-columns``…)."""
    for name, info in ManifestSettings.model_fields.items():
        if not _is_table(info):
            _add(parser, name, info, dest=MANIFEST_PREFIX + name, env=f"{ENV_PREFIX}MANIFEST__{name.upper()}")


def flag_layer(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, as a settings layer."""
    layer: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest.startswith(RUN_PREFIX):
            layer[dest[len(RUN_PREFIX) :]] = value
        elif dest.startswith(MANIFEST_PREFIX):
            layer.setdefault("manifest", {})[dest[len(MANIFEST_PREFIX) :]] = value
    return layer


def _add(parser: argparse.ArgumentParser, name: str, info: FieldInfo, *, dest: str, env: str) -> None:
    flag = "--" + name.replace("_", "-")
    default = info.get_default(call_default_factory=True)
    shown = "none" if default is None else ",".join(default) if isinstance(default, list) else default
    help_text = f"{info.description or name} (default: {shown}; env {env})".replace("%", "%%")
    options: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text}
    kind = _scalar(info.annotation)
    if kind is bool:
        options["action"] = argparse.BooleanOptionalAction if default else "store_true"
    elif typing.get_origin(kind) is Literal:
        options["choices"] = list(typing.get_args(kind))
    elif typing.get_origin(kind) is list:
        options.update(type=csv_list, metavar="A,B")
    else:
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        options.update(type=kind, metavar=extra.get("metavar") or _METAVARS.get(kind, "VALUE"))
    parser.add_argument(flag, **options)


_METAVARS: dict[Any, str] = {int: "N", float: "X", Path: "PATH", str: "VALUE"}


def _scalar(annotation: Any) -> Any:
    """``float | None`` → ``float``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def _is_table(info: FieldInfo) -> bool:
    annotation = _scalar(info.annotation)
    return typing.get_origin(annotation) is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel))


class _ColumnAction(argparse.Action):
    """``--column FIELD=SOURCE`` (repeatable) into the ``[manifest.columns]`` table of the CLI layer."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any, option: str | None = None
    ) -> None:
        field, sep, source = str(value).partition("=")
        if not sep or not field.strip() or not source.strip():
            parser.error(f"--column needs FIELD=SOURCE, e.g. url=media_url or url=images[*].url (got {value!r})")
        columns = dict(getattr(namespace, self.dest, None) or {})
        columns[field.strip()] = source.strip()
        setattr(namespace, self.dest, columns)


def add_column_flag(parser: argparse.ArgumentParser) -> None:
    """``--column FIELD=SOURCE``: read a field from another column, key or JSON path (beside [manifest.columns])."""
    parser.add_argument(
        "--column",
        dest=MANIFEST_PREFIX + "columns",
        action=_ColumnAction,
        default=argparse.SUPPRESS,
        metavar="FIELD=SOURCE",
        help="read FIELD from column/key SOURCE, or a JSON path such as images[*].url (repeatable; "
        "adds to [manifest.columns])",
    )
