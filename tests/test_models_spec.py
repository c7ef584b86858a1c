"""The pydantic models mirror spec/assets-upload.openapi.yaml: required fields, nullability, enums and bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.models import (
    _ASSET_FIELDS,
    ASSET_TYPES,
    PROMPT_MAX_LENGTH,
    ApiErrorBody,
    Asset,
    Tag,
    UploadRequest,
    asset_conforms,
)

SPEC = Path(__file__).resolve().parent.parent / "spec" / "assets-upload.openapi.yaml"
SHARED_SPEC = Path(__file__).resolve().parent.parent.parent / "shared" / "spec" / "assets-upload.openapi.yaml"


@pytest.fixture(scope="module")
def operation() -> dict[str, Any]:
    """The uploadAsset operation of the spec."""
    spec = yaml.safe_load(SPEC.read_text())
    return spec["paths"]["/assets/uploads"]["post"]  # type: ignore[no-any-return]


def _nullable(schema: dict[str, Any]) -> bool:
    kinds = schema.get("type")
    return isinstance(kinds, list) and "null" in kinds


def _accepts_none(model: type[pydantic.BaseModel], name: str) -> bool:
    annotation = model.model_fields[name].annotation
    return "None" in str(annotation)


def test_repo_copy_of_spec_matches_shared_one() -> None:
    """The spec kept in the repo is the shared contract, byte for byte (when the shared copy is present)."""
    if not SHARED_SPEC.exists():
        pytest.skip("shared/ is not beside this checkout")
    assert SPEC.read_bytes() == SHARED_SPEC.read_bytes()


def test_request_fields_required_and_defaults(operation: dict[str, Any]) -> None:
    """UploadRequest has exactly the spec's properties, required ones without defaults, and the spec's defaults."""
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(UploadRequest.model_fields) == set(schema["properties"])
    required = {name for name, field in UploadRequest.model_fields.items() if field.is_required()}
    assert required == set(schema["required"])
    for name, prop in schema["properties"].items():
        if "default" in prop:
            assert UploadRequest.model_fields[name].get_default(call_default_factory=True) == prop["default"]
        assert _accepts_none(UploadRequest, name) == _nullable(prop), name


def test_request_enum_and_prompt_bounds(operation: dict[str, Any]) -> None:
    """The type enum and the prompt's length bounds are the spec's."""
    props = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert tuple(props["type"]["enum"]) == ASSET_TYPES
    assert props["prompt"]["maxLength"] == PROMPT_MAX_LENGTH
    base = {"url": "https://v3b.fal.media/files/a.png", "type": "image"}
    UploadRequest.model_validate({**base, "prompt": "x" * props["prompt"]["maxLength"]})
    UploadRequest.model_validate({**base, "prompt": "x" * props["prompt"]["minLength"]})
    for bad in ("", "x" * (props["prompt"]["maxLength"] + 1)):
        with pytest.raises(pydantic.ValidationError):
            UploadRequest.model_validate({**base, "prompt": bad})
    for kind in props["type"]["enum"]:
        UploadRequest.model_validate({**base, "type": kind})
    with pytest.raises(pydantic.ValidationError):
        UploadRequest.model_validate({**base, "type": "gif"})


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "ftp://host/a.png",
        "/relative/a.png",
        "https://",
        "https:// a.png",
        "data:image/png;base64,AAAA",
        "https://host:99999/a.png",
    ],
)
def test_request_url_must_be_absolute_http(url: str) -> None:
    """A URL that is not an absolute http(s) URI with a host is rejected; valid ones are kept verbatim."""
    with pytest.raises(pydantic.ValidationError):
        UploadRequest.model_validate({"url": url, "type": "image"})


def test_request_url_kept_verbatim() -> None:
    """The URL string is not normalised (it is the item's identity)."""
    url = "HTTPS://v3b.fal.media/files/b/x/PDbTGy%20%281%29.png?x=1#frag"
    assert UploadRequest.model_validate({"url": url, "type": "image"}).url == url


def test_request_rejects_unknown_fields() -> None:
    """An unknown body field is a validation error, not silently dropped."""
    with pytest.raises(pydantic.ValidationError):
        UploadRequest.model_validate({"url": "https://a.fal.media/x.png", "type": "image", "colour": "red"})


def test_asset_has_all_sixteen_required_fields(operation: dict[str, Any]) -> None:
    """Asset requires the spec's 16 fields, with the spec's nullability, and Tag its 3."""
    asset = operation["responses"]["201"]["content"]["application/json"]["schema"]["properties"]["asset"]
    assert len(asset["required"]) == 16
    required = {name for name, field in Asset.model_fields.items() if field.is_required()}
    assert required == set(asset["required"])
    for name, prop in asset["properties"].items():
        assert _accepts_none(Asset, name) == _nullable(prop), name
    tag = asset["properties"]["tags"]["items"]
    assert {name for name, field in Tag.model_fields.items() if field.is_required()} == set(tag["required"])
    assert tuple(asset["properties"]["type"]["enum"]) == ASSET_TYPES


def test_asset_example_validates(operation: dict[str, Any]) -> None:
    """The spec's own 201 example validates, and dropping a nullable field is still an error (required)."""
    example = operation["responses"]["201"]["content"]["application/json"]["example"]["asset"]
    Asset.model_validate(example)
    with pytest.raises(pydantic.ValidationError):
        Asset.model_validate({k: v for k, v in example.items() if k != "similarity"})


SPEC_EXAMPLE = yaml.safe_load(SPEC.read_text())["paths"]["/assets/uploads"]["post"]["responses"]["201"]["content"][
    "application/json"
]["example"]["asset"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["id", "name", "created_at"]), inner),
    max_leaves=6,
)


def test_the_quick_asset_check_knows_every_field_of_the_model() -> None:
    """``asset_conforms`` checks each field the model has (a field added to the model cannot be skipped)."""
    assert {*_ASSET_FIELDS, "type"} == set(Asset.model_fields)
    assert asset_conforms(dict(SPEC_EXAMPLE))


@settings(max_examples=400, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(sorted(Asset.model_fields)), JSON_VALUES | st.just("image"), max_size=3))
def test_an_asset_the_quick_check_passes_always_validates(changes: dict[str, Any]) -> None:
    """``asset_conforms`` is stricter than the model, never looser: whatever it passes, ``Asset`` validates (the
    201 check skips the model only then)."""
    asset = {**SPEC_EXAMPLE, **changes}
    if asset_conforms(asset):
        Asset.model_validate(asset)


def test_the_quick_check_refuses_a_missing_field_or_a_wrong_type() -> None:
    for name in Asset.model_fields:
        assert not asset_conforms({k: v for k, v in SPEC_EXAMPLE.items() if k != name}), name
    assert not asset_conforms({**SPEC_EXAMPLE, "width": True})  # a bool is left to the model
    assert not asset_conforms({**SPEC_EXAMPLE, "type": "document"})
    assert not asset_conforms({**SPEC_EXAMPLE, "tags": [{"id": "t", "name": 3, "created_at": None}]})


def test_error_envelope_matches_every_error_response(operation: dict[str, Any]) -> None:
    """Every error response of the spec has the envelope ApiErrorBody models, with the same type enum."""
    for status, response in operation["responses"].items():
        if status == "201":
            continue
        schema = response["content"]["application/json"]["schema"]["properties"]["error"]
        assert set(schema["required"]) == {n for n, f in ApiErrorBody.model_fields.items() if f.is_required()}
        assert set(schema["properties"]) == set(ApiErrorBody.model_fields)
        enum = schema["properties"]["type"]["enum"]
        for kind in enum:
            ApiErrorBody.model_validate({"type": kind, "message": "m"})
        ApiErrorBody.model_validate(response["content"]["application/json"]["example"]["error"])
