"""fal model outputs, recognised: a JSON record with no ``url`` but a media file where fal's models put one.

The shapes, from fal's published model output schemas (the ``File`` / ``Image`` objects of the endpoints' OpenAPI
output types: ``{"url", "content_type", "file_name", "file_size", "width"?, "height"?}``):

| key | holds | type |
| --- | --- | --- |
| ``images`` | a list of images (text-to-image, image-to-image: FLUX, SDXL, Recraft, Imagen…) | image |
| ``image`` | one image (upscalers, background removal, editing) | image |
| ``masks`` | a list of mask images (segmentation: SAM) | image |
| ``video`` | one video (text/image-to-video: Kling, Veo, LTX, MiniMax…; video-to-video) | video |
| ``videos`` | a list of videos | video |
| ``audio`` / ``audio_file`` / ``audio_url`` | one audio file (TTS, music, stable-audio, MMAudio) | audio |
| ``model_mesh`` / ``model_glb`` | one 3D model (TripoSR, TRELLIS, Hunyuan3D) | 3d |

A record may also be wrapped as the JS client returns it, ``{"data": {…output…}, "requestId": …}``. Each media file
becomes one item: ``type`` from its ``content_type`` when that names a media type (``image/png``,
``model/gltf-binary``), else from the key (3D files often travel as ``application/octet-stream``); ``prompt``,
``collection_id``, ``tag_ids`` and ``favorite`` from the record's top level when present.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ingest.manifest.cells import type_from_mime

# (key, asset type, holds a list), in the order a record's files are taken.
SHAPES: tuple[tuple[str, str, bool], ...] = (
    ("images", "image", True),
    ("image", "image", False),
    ("masks", "image", True),
    ("video", "video", False),
    ("videos", "video", True),
    ("audio", "audio", False),
    ("audio_file", "audio", False),
    ("audio_url", "audio", False),
    ("model_mesh", "3d", False),
    ("model_glb", "3d", False),
)
SHAPE_NAMES = tuple(f"{key}[*].url" if many else f"{key}.url" for key, _, many in SHAPES)
SHARED_FIELDS = ("prompt", "collection_id", "tag_ids", "favorite")  # copied from the record to each of its items

Item = tuple[str, int | None, dict[str, Any]]  # (shape, index in the record or None, fields)


def output_items(record: dict[str, Any]) -> list[Item]:
    """The items of a fal output record, in order; empty when the record holds no known shape."""
    body = record
    if not _has_shape(body) and isinstance(record.get("data"), dict):
        body = record["data"]
    shared = {name: body.get(name, record.get(name)) for name in SHARED_FIELDS if name in body or name in record}
    found = list(_files(body))
    numbered = len(found) > 1 or any(many for (_, _, many), _ in found)
    return [
        (_name(key, many), index if numbered else None, {**shared, "url": file["url"], "type": _type(file, kind)})
        for index, ((key, kind, many), file) in enumerate(found)
    ]


def _has_shape(record: dict[str, Any]) -> bool:
    return any(key in record for key, _, _ in SHAPES)


def _files(record: dict[str, Any]) -> Iterator[tuple[tuple[str, str, bool], dict[str, Any]]]:
    for shape in SHAPES:
        value = record.get(shape[0])
        files = value if shape[2] and isinstance(value, list) else [value]
        for file in files:
            if isinstance(file, dict) and "url" in file:
                yield shape, file


def _type(file: dict[str, Any], kind: str) -> str:
    return type_from_mime(file.get("content_type")) or kind


def _name(key: str, many: bool) -> str:
    return f"{key}[*].url" if many else f"{key}.url"
