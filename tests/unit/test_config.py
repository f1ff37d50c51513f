from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("HOTLINE_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_documented_ones() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite+aiosqlite:///./var/hotline.db"
    assert settings.redis_url == ""
    assert (settings.ami_host, settings.ami_port) == ("127.0.0.1", 5038)
    assert (settings.agi_host, settings.agi_port) == ("127.0.0.1", 4573)
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 8080)
    assert settings.timezone == "Asia/Shanghai"


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "hotline.toml"
    config.write_text('web_port = 9000\n\n[ami]\nhost = "10.1.1.1"\nport = 5039\n')
    monkeypatch.setenv("HOTLINE_AMI_PORT", "6000")
    settings = load_settings(config)
    assert settings.ami_host == "10.1.1.1"  # from the file
    assert settings.web_port == 9000  # from the file
    assert settings.ami_port == 6000  # the environment wins


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "site.toml"
    config.write_text('timezone = "Asia/Urumqi"\n')
    monkeypatch.setenv("HOTLINE_CONFIG", str(config))
    assert load_settings().timezone == "Asia/Urumqi"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("HOTLINE_AMI_PORT", "abc", "invalid HOTLINE_AMI_PORT='abc'"),
        ("HOTLINE_AGI_PORT", "70000", "invalid HOTLINE_AGI_PORT='70000'"),
        ("HOTLINE_TIMEZONE", "Mars/Olympus", "unknown time zone"),
        ("HOTLINE_DATABASE_URL", "mysql://x/y", "unsupported database driver"),
        ("HOTLINE_REDIS_URL", "http://localhost", "must start with redis://"),
        ("HOTLINE_ESL_PASSWORD", "ClueCon", "well-known default"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert expected in message
    assert variable in message
    assert "\n" not in message


def test_unknown_key_in_the_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "typo.toml"
    config.write_text("ami_prot = 5038\n")
    with pytest.raises(ConfigError, match="unknown setting 'ami_prot'"):
        load_settings(config)


def test_missing_or_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("ami_port = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)


def test_secrets_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_AMI_SECRET", "very-secret-1")
    monkeypatch.setenv("HOTLINE_DATABASE_URL", "postgresql://bridge:pw-secret-2@db/hotline")
    settings = load_settings()
    assert settings.ami_secret.get_secret_value() == "very-secret-1"
    assert settings.database_url == "postgresql+asyncpg://bridge:pw-secret-2@db/hotline"
    shown = f"{settings!r} {settings} {settings.redacted()}"
    assert "very-secret-1" not in shown
    assert "pw-secret-2" not in shown
