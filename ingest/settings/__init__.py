"""Settings for a run, from four layers: CLI flags > ``INGEST_*`` environment variables > a TOML file > defaults.

Hand-written rather than with pydantic-settings (so no longer a dependency): every error names where the bad
value came from,
``configs/nightly.toml: key 'rate': Input should be greater than 0``, ``INGEST_RATE: …``, ``--rate: …``, and an
unknown key in a file is an error naming the file and key (a typo must not silently fall back to a default).

TOML layout: top-level keys are the fields of ``Settings``; ``[manifest]`` holds the fields of
``ManifestSettings`` with ``[manifest.columns]`` and ``[manifest.defaults]`` tables. Environment variables are
``INGEST_<FIELD>`` (``INGEST_RATE=5``) and ``INGEST_MANIFEST__<FIELD>`` for the manifest table; list and table values
are JSON (``INGEST_KEY_FIELDS='["url","collection_id"]'``).

An ``INGEST_*`` variable that names no setting never stops a run (``unknown_env_variables``): Kubernetes injects
``<SERVICE>_SERVICE_HOST``, ``<SERVICE>_PORT``, ``<SERVICE>_PORT_9090_TCP_ADDR``… for every Service of a namespace,
so a Service named ``ingest`` yields ``INGEST_PORT`` and friends; those are ignored silently, any other unknown one
gets one warning (with the closest setting's variable when there is one). A bad *value* of a known variable is
still an error.
"""

from ingest.settings.layers import (
    UnknownVariable,
    build_settings,
    env_layer,
    load_toml,
    merge,
    unknown_env_variables,
)
from ingest.settings.model import DEFAULT_BASE_URL, ENV_PREFIX, ManifestSettings, Settings, default

__all__ = [
    "DEFAULT_BASE_URL",
    "ENV_PREFIX",
    "ManifestSettings",
    "Settings",
    "UnknownVariable",
    "build_settings",
    "default",
    "env_layer",
    "load_toml",
    "merge",
    "unknown_env_variables",
]
