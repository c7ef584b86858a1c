"""Idempotency keys: deterministic, identity-based, namespaced, explicit keys verbatim."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.admission.keys import INGEST_NAMESPACE, KeyDeriver, body_sha256, canonical_identity
from ingest.models import UploadRequest

URL = "https://v3b.fal.media/files/b/0a9b4900/PDbTGy.png"


def test_default_key_is_uuid5_of_url() -> None:
    """By default the key is uuid5(project namespace, url) — stable across runs, machines and versions."""
    key = KeyDeriver().derive({"url": URL, "type": "image"})
    assert key == str(uuid.uuid5(INGEST_NAMESPACE, URL))
    # Pinned: changing the namespace or the derivation would re-upload every library.
    assert key == str(uuid.uuid5(uuid.UUID("6f1c5c1e-4d0b-5b8e-9a57-3b0f1a2d9c47"), URL))


def test_key_ignores_everything_but_identity() -> None:
    """Prompt, tags, favorite, position and format do not change the key with default key_fields."""
    deriver = KeyDeriver()
    a = deriver.derive({"url": URL, "type": "image", "prompt": "one"})
    b = deriver.derive({"url": URL, "type": "video", "prompt": "two", "favorite": True, "tag_ids": ["t"]})
    assert a == b


def test_key_fields_widen_identity() -> None:
    """With key_fields url+collection_id the same file in two collections gets two keys, field order irrelevant."""
    deriver = KeyDeriver(("url", "collection_id"))
    one = deriver.derive({"url": URL, "collection_id": "c1"})
    two = deriver.derive({"url": URL, "collection_id": "c2"})
    assert one != two
    assert one == KeyDeriver(("collection_id", "url")).derive({"collection_id": "c1", "url": URL})
    assert canonical_identity({"url": URL}, ("url", "collection_id")) == f'{{"collection_id":null,"url":"{URL}"}}'


def test_key_namespace_derives_new_keys() -> None:
    """A key_namespace gives every item a new, still deterministic key (to deliberately re-ingest)."""
    plain = KeyDeriver().derive({"url": URL})
    spaced = KeyDeriver(key_namespace="reingest-2026").derive({"url": URL})
    assert plain != spaced
    assert spaced == KeyDeriver(key_namespace="reingest-2026").derive({"url": URL})


def test_explicit_key_is_verbatim() -> None:
    """A row's explicit idempotency_key is used as is."""
    assert KeyDeriver().derive({"url": URL}, "my-key-17") == "my-key-17"


def test_unknown_key_field_rejected() -> None:
    """key_fields naming something that is not a request field is an error, not a silent constant key."""
    with pytest.raises(ValueError, match="key_fields"):
        KeyDeriver(("url", "colour"))


def test_body_hash_is_canonical() -> None:
    """Explicit defaults and absent fields hash the same; any real change changes the hash."""
    base = UploadRequest(url=URL, type="image")
    explicit = UploadRequest(url=URL, type="image", favorite=False, tag_ids=[], prompt=None)
    assert body_sha256(base.body_bytes()) == body_sha256(explicit.body_bytes())
    changed = UploadRequest(url=URL, type="image", prompt="new")
    assert body_sha256(base.body_bytes()) != body_sha256(changed.body_bytes())


@given(
    url=st.from_regex(r"https://[a-z]{1,12}\.fal\.media/[A-Za-z0-9_%/.-]{0,40}", fullmatch=True),
    prompt=st.none() | st.text(min_size=1, max_size=50),
    namespace=st.none() | st.text(max_size=20),
)
def test_key_determinism_property(url: str, prompt: str | None, namespace: str | None) -> None:
    body: dict[str, object] = {"url": url, "type": "image", "prompt": prompt}
    body = {"url": url, "type": "image", "prompt": prompt}
    first = KeyDeriver(key_namespace=namespace).derive(body)
    second = KeyDeriver(key_namespace=namespace).derive(dict(reversed(list(body.items()))))
    assert first == second
    assert uuid.UUID(first).version == 5


@given(
    prompt=st.none() | st.text(min_size=1, max_size=30),
    collection=st.none() | st.text(max_size=10),
    favorite=st.booleans(),
    tags=st.lists(st.text(max_size=8), max_size=3),
    kind=st.sampled_from(["image", "video", "audio", "3d"]),
)
def test_hand_built_body_equals_pydantic_dump(
    prompt: str | None, collection: str | None, favorite: bool, tags: list[str], kind: str
) -> None:
    """UploadRequest.body() (built by hand for speed) is exactly model_dump(mode="json", exclude_defaults=True)."""
    request = UploadRequest.model_validate(
        {"url": URL, "type": kind, "prompt": prompt, "collection_id": collection, "favorite": favorite, "tag_ids": tags}
    )
    assert request.body() == request.model_dump(mode="json", exclude_defaults=True)
