"""Settings layers (flags > INGEST_* env > TOML file > defaults) and errors that name their source."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.errors import ConfigError
from ingest.settings import Settings, UnknownVariable, build_settings, unknown_env_variables

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_defaults() -> None:
    """With nothing set, the defaults apply."""
    settings = build_settings(env={})
    assert settings == Settings()
    assert settings.base_url == "https://api.fal.ai/v1"


def test_precedence(tmp_path: Path) -> None:
    """A flag beats an INGEST_ variable, which beats the file, which beats the default."""
    config = tmp_path / "c.toml"
    config.write_text("rate = 3.0\nconcurrency = 7\nmax_attempts = 4\n[manifest]\nstrict_columns = true\n")
    env = {"INGEST_RATE": "5", "INGEST_CONCURRENCY": "9", "INGEST_MANIFEST__MAX_LINE_BYTES": "4096"}
    settings = build_settings(flags={"rate": 8.0}, config_file=config, env=env)
    assert settings.rate == 8.0
    assert settings.concurrency == 9
    assert settings.max_attempts == 4
    assert settings.manifest.strict_columns is True
    assert settings.manifest.max_line_bytes == 4096


def test_env_json_values() -> None:
    """List and table settings come from JSON in environment variables."""
    settings = build_settings(env={"INGEST_KEY_FIELDS": '["url", "collection_id"]'})
    assert settings.key_fields == ["url", "collection_id"]


def test_nested_tables_merge(tmp_path: Path) -> None:
    """[manifest.columns] from the file and a manifest flag combine."""
    config = tmp_path / "c.toml"
    config.write_text('[manifest.columns]\nurl = "media_url"\n[manifest.defaults]\nfavorite = true\n')
    settings = build_settings(flags={"manifest": {"format": "csv"}}, config_file=config, env={})
    assert settings.manifest.columns == {"url": "media_url"}
    assert settings.manifest.defaults == {"favorite": True}
    assert settings.manifest.format == "csv"


def test_unknown_key_in_file_names_file_and_key(tmp_path: Path) -> None:
    """A typo in a config file is an error naming the file and the key."""
    config = tmp_path / "nightly.toml"
    config.write_text("rate = 2\nconcurency = 4\n")
    with pytest.raises(ConfigError, match=r"nightly\.toml: key 'concurency': unknown setting"):
        build_settings(config_file=config, env={})


def test_bad_value_in_file_names_file_and_key(tmp_path: Path) -> None:
    """A bad value names the file, the dotted key and what was expected."""
    config = tmp_path / "c.toml"
    config.write_text("[manifest]\nmax_line_bytes = -1\n")
    with pytest.raises(ConfigError, match=r"c\.toml: key 'manifest\.max_line_bytes': Input should be greater than 0"):
        build_settings(config_file=config, env={})


def test_bad_env_value_names_variable() -> None:
    """A bad environment value names the variable."""
    with pytest.raises(ConfigError, match=r"INGEST_RATE: Input should be greater than or equal to 0\.01"):
        build_settings(env={"INGEST_RATE": "-1"})


def test_bad_flag_names_flag() -> None:
    """A bad flag value names the flag."""
    with pytest.raises(ConfigError, match="--concurrency: Input should be greater than or equal to 1"):
        build_settings(flags={"concurrency": 0}, env={})


def test_broken_toml_names_file(tmp_path: Path) -> None:
    """A config file that is not TOML, or is missing, is an error naming it."""
    config = tmp_path / "broken.toml"
    config.write_text("rate = = 2\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        build_settings(config_file=config, env={})
    with pytest.raises(ConfigError, match=r"missing\.toml: config file not found"):
        build_settings(config_file=tmp_path / "missing.toml", env={})


@pytest.mark.parametrize("profile", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_shipped_profiles_are_valid(profile: str) -> None:
    """Every settings profile shipped in configs/ loads."""
    build_settings(config_file=CONFIGS / profile, env={})


def test_unknown_env_variables_are_ignored_not_errors() -> None:
    """An ``INGEST_*`` variable that names no setting is left out of the settings instead of failing them."""
    settings = build_settings(env={"INGEST_RATTE": "1", "INGEST_CMD": "run", "INGEST_MANIFEST__FORMT": "csv"})
    assert settings == Settings()


def test_kubernetes_service_variables_are_silent_others_get_a_did_you_mean() -> None:
    """Kubernetes' service variables for a Service named ``ingest`` are not reported; a typo names the setting."""
    env = {
        "INGEST_SERVICE_HOST": "10.0.0.7",
        "INGEST_SERVICE_PORT": "9090",
        "INGEST_SERVICE_PORT_METRICS": "9090",
        "INGEST_PORT": "tcp://10.0.0.7:9090",
        "INGEST_PORT_9090_TCP": "tcp://10.0.0.7:9090",
        "INGEST_PORT_9090_TCP_ADDR": "10.0.0.7",
        "INGEST_PORT_9090_TCP_PORT": "9090",
        "INGEST_PORT_9090_TCP_PROTO": "tcp",
        "INGEST_METRICS_PORT": "9090",  # a real setting that happens to end in _PORT
        "INGEST_RAT": "5",
        "INGEST_CMD": "run",
        "OTHER_RAT": "5",
    }
    assert unknown_env_variables(env) == [
        UnknownVariable("INGEST_CMD", None),
        UnknownVariable("INGEST_RAT", "INGEST_RATE"),
    ]
    assert build_settings(env=env).metrics_port == 9090


def test_bad_value_of_a_known_variable_is_still_an_error() -> None:
    """Ignoring unknown variables does not soften a bad value of a known one."""
    with pytest.raises(ConfigError, match="INGEST_CONCURRENCY"):
        build_settings(env={"INGEST_CONCURRENCY": "many", "INGEST_PORT": "tcp://10.0.0.7:9090"})
