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


def test_several_pbxs_from_toml_each_with_its_own_recordings_spool(tmp_path: Path) -> None:
    config = tmp_path / "hotline.toml"
    config.write_text(
        "[[pbxs]]\n"
        'name = "west"\nami_secret = "w-secret"\nqueue_log = "/var/log/west/queue_log"\n'
        'recordings_spool = "/srv/spool/west"\n'
        "[[pbxs]]\n"
        'name = "fs1"\nkind = "freeswitch"\nesl_password = "fs-secret"\n',
        encoding="utf-8",
    )
    west, fs1 = load_settings(config).pbxs
    assert (west.name, west.kind, west.recordings_spool) == (
        "west", "asterisk", Path("/srv/spool/west"),
    )  # fmt: skip
    assert (fs1.kind, fs1.esl_port, fs1.recordings_spool) == ("freeswitch", 8021, None)


@pytest.mark.parametrize(
    ("pbxs", "message"),
    [
        ('[{"name": "west", "ami_secret": "s"}, {"name": "west", "ami_secret": "t"}]',
         "listed twice"),
        ('[{"name": "west", "ami_secret": "s", "recordings_spool": "/srv/spool"},'
         ' {"name": "east", "ami_secret": "t", "recordings_spool": "/srv/spool"}]',
         "listed for two PBXs"),
        ('[{"name": "west"}]', "an Asterisk needs ami_secret"),
    ],
)  # fmt: skip
def test_a_bad_list_of_pbxs_is_refused_with_the_reason(
    pbxs: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTLINE_PBXS", pbxs)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_the_replay_settings_are_the_defaults_of_the_full_settings() -> None:
    """``hotline replay`` without a settings file or variable reads ``REPLAY_DEFAULTS``, not
    ``Settings``: they must be the same values (``Settings`` takes them from there)."""
    from dataclasses import fields

    from infra.replay_settings import REPLAY_DEFAULTS

    settings = load_settings()
    for field in fields(REPLAY_DEFAULTS):
        assert getattr(settings, field.name) == getattr(REPLAY_DEFAULTS, field.name), field.name
    assert settings.zone == REPLAY_DEFAULTS.zone


@pytest.mark.parametrize(
    ("config_path", "environ", "expected"),
    [
        (None, {"PATH": "/usr/bin", "HOME": "/root"}, False),
        ("site.toml", {}, True),
        (None, {"HOTLINE_CONFIG": "site.toml"}, True),
        (None, {"HOTLINE_TIMEZONE": "Asia/Urumqi"}, True),
        (None, {"hotline_timezone": "Asia/Urumqi"}, True),  # pydantic ignores the case
    ],
)
def test_a_replay_validates_settings_when_anything_may_set_one(
    config_path: str | None, environ: dict[str, str], expected: bool
) -> None:
    from infra.replay_settings import configured

    assert configured(config_path, environ) is expected
