"""Field values as people write them, made into what the API takes. Pure functions, shared by every format.

- ``type``: trimmed and case-insensitive (``Image``, `` VIDEO ``), or a MIME type (``image/png`` → ``image``,
  ``model/gltf-binary`` → ``3d``); inferred from the URL's extension when absent.
- ``favorite`` (text cells): true/false, 1/0, yes/no, y/n, any case.
- ``tag_ids`` (text cells): a JSON array of strings, else a list split on ``;`` (or, when there is no ``;``, on
  ``,``), items trimmed and empties dropped.
- ``url``: trimmed (surrounding spaces are what a spreadsheet cell picks up, never part of a URL).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import urlsplit

import orjson

from ingest.models import ASSET_TYPES

TYPE_BY_EXTENSION: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(("png", "jpg", "jpeg", "webp", "gif", "bmp", "tiff", "avif", "heic"), "image"),
        **dict.fromkeys(("mp4", "mov", "webm", "mkv", "avi", "m4v"), "video"),
        **dict.fromkeys(("mp3", "wav", "flac", "ogg", "m4a", "aac", "opus"), "audio"),
        **dict.fromkeys(("glb", "gltf", "obj", "fbx", "stl", "usdz", "ply"), "3d"),
    }
)
TYPE_BY_MIME_MAJOR: Mapping[str, str] = MappingProxyType({"image": "image", "video": "video", "audio": "audio"})
# model/* is 3D (RFC 2077); a few 3D formats travel as application/* too.
TYPE_BY_MIME: Mapping[str, str] = MappingProxyType(
    {
        "application/x-tgif": "3d",
        "application/sla": "3d",
        "application/vnd.ms-pki.stl": "3d",
        "application/x-fbx": "3d",
        "application/ogg": "audio",
    }
)

_BOOLEAN_WORDS: Mapping[str, bool] = MappingProxyType(
    {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "y": True, "n": False}
)
FAVORITE_EXPECTED = "Input should be true/false, 1/0, yes/no or y/n"
TAG_IDS_EXPECTED = "Input should be a JSON array of strings, or a list separated by ';' or ','"
TYPES_EXPECTED = "Input should be 'image', 'video', 'audio' or '3d', or a MIME type such as image/png"
VALUE_SHOWN_CHARS = 60  # an invalid value is quoted in its message, cut to about this many characters


def normalize_type(value: object) -> object:
    """A ``type`` value as the API takes it, when it can be read as one; otherwise ``value`` unchanged."""
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    if word in ASSET_TYPES:
        return word
    return type_from_mime(word) or value


def type_from_mime(mime: object) -> str | None:
    """``image/png; q=1`` → ``image``, ``model/gltf-binary`` → ``3d``; ``None`` for anything else."""
    if not isinstance(mime, str) or "/" not in mime:
        return None
    essence = mime.split(";", 1)[0].strip().lower()
    major = essence.partition("/")[0]
    if major == "model":
        return "3d"
    return TYPE_BY_MIME_MAJOR.get(major) or TYPE_BY_MIME.get(essence)


def infer_type(url: str) -> str | None:
    """The asset type that the extension of ``url``'s path suggests (``…/a.PNG?x=1`` -> ``image``), if any."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    name = path.rpartition("/")[2]
    if "." not in name:
        return None
    return TYPE_BY_EXTENSION.get(name.rpartition(".")[2].lower())


def parse_favorite(cell: str) -> bool | None:
    """A text ``favorite`` cell as a boolean (see the module docstring), else ``None``."""
    return _BOOLEAN_WORDS.get(cell.strip().lower())


def parse_tag_ids(cell: str) -> list[str] | None:
    """A text ``tag_ids`` cell as a list of tag ids (see the module docstring), else ``None``."""
    if not cell.lstrip().startswith("["):
        separator = ";" if ";" in cell else ","
        return [tag for tag in (item.strip() for item in cell.split(separator)) if tag]
    try:
        value = orjson.loads(cell)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(tag, str) for tag in value):
        return value
    return None


def shown(value: object) -> str:
    """``value`` quoted for a message, cut short: ``'Imag'``, ``'a very long…'``."""
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if len(text) > VALUE_SHOWN_CHARS:
        text = text[:VALUE_SHOWN_CHARS] + "…"
    return repr(text) if isinstance(value, str) else text
