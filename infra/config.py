"""Configuration, layered once: defaults, then an optional TOML file, then ``HOTLINE_*`` variables.

The result is validated at start; a bad value becomes a ``ConfigError`` whose message is one line
naming the setting the operator has to fix. Secrets are ``SecretStr`` so they never reach a log.
"""

from __future__ import annotations

import base64
import binascii
import os
import tomllib
import zoneinfo
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from infra.replay_settings import CONFIG_FILE_VARIABLE, ENV_PREFIX, REPLAY_DEFAULTS
from survey.scale import ScaleError, parse_scale

# FreeSWITCH's own default Event Socket password, and its fallback when none is set: refused.
FREESWITCH_DEFAULT_PASSWORD = "ClueCon"  # noqa: S105 (a value we refuse, not a secret)

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}
_SUPPORTED_DRIVERS = frozenset(_ASYNC_DRIVERS.values())


class ConfigError(ValueError):
    """The configuration cannot be used; the message is one line meant for the operator."""


class PbxSpec(BaseModel):
    """One PBX of a hotline that runs several (``[[pbxs]]`` in the TOML file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,16}$")
    kind: Literal["asterisk", "freeswitch"] = "asterisk"
    # Asterisk: its AMI and its queue_log as this host sees it.
    ami_host: str = "127.0.0.1"
    ami_port: int = Field(5038, ge=1, le=65535)
    ami_username: str = "hotline"
    ami_secret: SecretStr = SecretStr("")
    queue_log: Path | None = None
    # FreeSWITCH: its inbound Event Socket (mod_event_socket).
    esl_host: str = "127.0.0.1"
    esl_port: int = Field(8021, ge=1, le=65535)
    esl_password: SecretStr = SecretStr("")
    # Where this PBX leaves finished recordings, as this host sees it (one spool per PBX: two
    # Asterisks name their files by uniqueids that may repeat). The PBX's lease holder moves
    # them into the store. Unset: this PBX's recordings are not collected.
    recordings_spool: Path | None = None

    @model_validator(mode="after")
    def _reachable(self) -> PbxSpec:
        if self.kind == "asterisk" and not self.ami_secret.get_secret_value():
            raise ValueError(f"PBX {self.name}: an Asterisk needs ami_secret")
        if self.kind == "freeswitch":
            password = self.esl_password.get_secret_value()
            if not password:
                raise ValueError(f"PBX {self.name}: a FreeSWITCH needs esl_password")
            if password == FREESWITCH_DEFAULT_PASSWORD:
                raise ValueError(f"PBX {self.name}: ClueCon is FreeSWITCH's well-known default")
            if self.queue_log is not None:
                raise ValueError(f"PBX {self.name}: queue_log is Asterisk's; FreeSWITCH has none")
        return self


class Settings(BaseSettings):
    """Every setting of the bridge. Field ``x`` is read from ``HOTLINE_X`` or key ``x`` in TOML."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    database_url: str = "sqlite+aiosqlite:///./var/hotline.db"
    # SQLite: "background" answers a route once its ticket is in the WAL and syncs the WAL to
    # disk on a thread of its own right after (a crash of the process loses nothing; a power cut
    # can lose the last few milliseconds of commits); "in_commit" waits for the disk in every
    # commit, so routes wait for it too. PostgreSQL keeps its own synchronous_commit.
    database_sync: Literal["background", "in_commit"] = "background"
    redis_url: str = ""
    # Names this PBX in every call id the bridge keeps (``<name>/<the PBX's own id>``): set a
    # different name for each PBX whose calls share one database. Empty: ids as the PBX gives
    # them (Asterisk's uniqueids repeat across servers unless asterisk.conf sets systemname).
    pbx_name: str = Field("", pattern=r"^([A-Za-z0-9_.-]{1,16})?$")
    ami_host: str = "127.0.0.1"
    ami_port: int = Field(5038, ge=1, le=65535)
    # Several PBXs (``[[pbxs]]`` tables, or HOTLINE_PBXS as JSON): each is ingested by exactly
    # one bridge process at a time, the one holding its lease in the database (infra/leases.py).
    # Every bridge of the hotline lists the same PBXs; the single-PBX ami_* settings are unused.
    pbxs: tuple[PbxSpec, ...] = ()
    # Seconds a lease lasts unless renewed (renewed every third of it): a process that dies or
    # freezes hands its PBXs on within this time and one more renewal beat.
    lease_seconds: float = Field(5.0, ge=1, le=60)
    ami_username: str = "hotline"
    ami_secret: SecretStr = SecretStr("")
    ami_action_timeout: float = Field(5.0, gt=0, le=120)
    ami_max_backoff: float = Field(30.0, ge=0.5, le=600)
    # FreeSWITCH's Event Socket (mod_event_socket, inbound): used when the password is set.
    esl_host: str = "127.0.0.1"
    esl_port: int = Field(8021, ge=1, le=65535)
    esl_password: SecretStr = SecretStr("")
    esl_command_timeout: float = Field(5.0, gt=0, le=120)
    esl_max_backoff: float = Field(30.0, ge=0.5, le=600)
    # Where FreeSWITCH's dialplan `socket` application reaches the bridge's router (outbound).
    esl_router_host: str = "127.0.0.1"
    esl_router_port: int = Field(8084, ge=0, le=65535)
    agi_host: str = "127.0.0.1"
    agi_port: int = Field(4573, ge=1, le=65535)
    agi_read_timeout: float = Field(5.0, gt=0, le=60)
    # uvloop when installed (auto), or asyncio's own loop: see hotline/loop.py.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    web_host: str = "127.0.0.1"
    web_port: int = Field(8080, ge=0, le=65535)
    # The web port's guard (web/guard.py): seconds a client has to send a request's headers, seconds
    # a connection may stay idle between requests, and how many connections may be open per
    # client address (per /64 for IPv6) and in all. Behind a reverse proxy every client has the
    # proxy's address: raise the per-address cap there. The total (a 1,500-seat centre keeps a
    # live socket open per agent desk) is held under half the process's open-file limit, which
    # ``hotline run`` raises to its hard limit at start, leaving the rest to the database.
    web_header_timeout: float = Field(10.0, gt=0, le=300)
    web_idle_timeout: float = Field(30.0, gt=0, le=3600)
    web_max_connections_per_address: int = Field(128, ge=1, le=1_000_000)
    web_max_connections: int = Field(4096, ge=1, le=1_000_000)
    # Recordings: the store (a local or mounted folder) and Asterisk's MixMonitor spool, as this
    # host sees it (the dialplan's HOTLINE_RECORDINGS_SPOOL).
    recordings_dir: Path = Path("./var/recordings")
    recordings_spool: Path = Path("/var/spool/asterisk/monitor/hotline")
    # Asterisk's queue_log as this host sees it: after an absence the bridge journals from it the
    # queue calls it never saw. Unset: calls that begin and end while it is away have no row.
    queue_log: Path | None = None
    # The settings ``hotline replay`` reads take their defaults from infra/replay_settings.py.
    timezone: str = REPLAY_DEFAULTS.timezone
    default_queue: str = Field("hotline", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    inbound_contexts: tuple[str, ...] = REPLAY_DEFAULTS.inbound_contexts
    service_level_seconds: int = Field(REPLAY_DEFAULTS.service_level_seconds, ge=1, le=3600)
    short_abandon_seconds: float = Field(REPLAY_DEFAULTS.short_abandon_seconds, ge=0, le=600)
    wrap_up_seconds: float = Field(REPLAY_DEFAULTS.wrap_up_seconds, ge=0, le=3600)
    log_level: str = Field(REPLAY_DEFAULTS.log_level, pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    # The citizen's rating after the human (FastAGI ``survey``): on, an answered call without
    # a valid key is "not rated" (the dialplan's HOTLINE_SURVEY_URL must be set as well). The
    # scale: key=code/中文/English/kind;... with kind good, neutral or review (see README).
    survey: bool = REPLAY_DEFAULTS.survey
    survey_scale: str = REPLAY_DEFAULTS.survey_scale
    survey_key_seconds: float = Field(5.0, ge=1, le=30)
    # Callbacks of missed callers (one task per caller): attempts before giving up, minutes
    # between attempts, and how long the agent's phone rings first (the dialplan's own
    # HOTLINE_CALLBACK_AGENT_RING should be the same). On time: within sla_callback_minutes.
    callback_attempts: int = Field(3, ge=1, le=20)
    callback_spacing_minutes: float = Field(10.0, ge=0, le=1440)
    callback_agent_ring_seconds: float = Field(20.0, ge=5, le=120)
    # Off by default: while nobody waits in a queue, offer the oldest due callbacks to free
    # agents (their screen pops the offer; accepting starts the dialling); an offer stands
    # this many seconds, then it may go to another agent.
    callback_offer_when_quiet: bool = False
    callback_offer_seconds: float = Field(20.0, ge=5, le=600)
    # Routing (ivr_bypass): queues, the emergency numbers and the decision's time budget.
    enterprise_queue: str = Field("enterprise", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    emergency_queue: str = Field("emergency", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    emergency_numbers: tuple[str, ...] = ("110", "119", "120", "122")
    routing_budget_ms: float = Field(50.0, gt=0, le=2000)
    # Where FastAGI routing runs: "process" (its own child process, so nothing the web side or
    # the AMI ingest does can stall a call's route) or "inline" (in the bridge's own loop).
    routing_process: Literal["process", "inline"] = "process"
    # With routing in its own process: niceness that ``hotline run`` adds to itself once that
    # process is started, so a busy web port or panel yields the CPU to routes (0: off).
    bridge_nice: int = Field(5, ge=0, le=19)
    # Tickets: number prefix, how long an open ticket is reused, the 12345 SLA clocks.
    ticket_prefix: str = Field("12345", pattern=r"^[0-9A-Za-z]{1,16}$")
    ticket_match_days: int = Field(7, ge=1, le=365)
    sla_contact_minutes: float = Field(30.0, gt=0, le=100_000)
    sla_on_site_minutes: float = Field(60.0, gt=0, le=100_000)
    sla_resolve_working_days: int = Field(2, ge=1, le=365)
    sla_callback_minutes: float = Field(30.0, gt=0, le=100_000)
    # Working calendar: the official Chinese calendar, corrected by these days.
    calendar_official: bool = True
    calendar_extra_holidays: tuple[date, ...] = ()
    calendar_extra_workdays: tuple[date, ...] = ()
    # The web side: the key that encrypts and signs session cookies (empty: a new one at every
    # start, so logins end with a restart), cookies only over HTTPS, the /metrics token, and the
    # first admin (created at start when no user of that name exists).
    session_secret: SecretStr = SecretStr("")
    secure_cookies: bool = False
    metrics_token: SecretStr = SecretStr("")
    admin_user: str = ""
    admin_password: SecretStr = SecretStr("")
    # Outbound CTI events (newCall/answer/hangup) for another ticket system; empty URL: off.
    webhook_url: str = ""
    webhook_secret: SecretStr = SecretStr("")

    @field_validator("database_url")
    @classmethod
    def _async_database_url(cls, value: str) -> str:
        if value.startswith(tuple(f"{driver}://" for driver in _SUPPORTED_DRIVERS)):
            return value  # already as the engine wants it (the default among them)
        # SQLAlchemy is imported here, not with the module: ``hotline replay`` never needs it.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError as error:
            raise ValueError(f"not a database URL ({error})") from None
        driver = _ASYNC_DRIVERS.get(url.drivername, url.drivername)
        if driver not in _SUPPORTED_DRIVERS:
            raise ValueError(
                f"unsupported database driver {url.drivername!r}; "
                "use sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return url.set(drivername=driver).render_as_string(hide_password=False)

    @field_validator("survey_scale")
    @classmethod
    def _usable_scale(cls, value: str) -> str:
        try:
            parse_scale(value)
        except ScaleError as error:
            raise ValueError(str(error)) from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix:// (or be empty)")
        return value

    @field_validator("esl_password")
    @classmethod
    def _not_freeswitchs_default(cls, value: SecretStr) -> SecretStr:
        # FreeSWITCH's own default, and what it falls back to when its password is left unset:
        # anybody on the host knows it.
        if value.get_secret_value() == FREESWITCH_DEFAULT_PASSWORD:
            raise ValueError("ClueCon is FreeSWITCH's well-known default: choose another")
        return value

    @field_validator("emergency_numbers")
    @classmethod
    def _digits_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for number in value:
            if not number.isdigit() or len(number) > 20:
                raise ValueError(f"emergency numbers are digits only, got {number[:25]!r}")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (or be empty)")
        return value

    @field_validator("calendar_extra_workdays")
    @classmethod
    def _not_both(cls, value: tuple[date, ...], info: Any) -> tuple[date, ...]:
        clash = set(value) & set(info.data.get("calendar_extra_holidays", ()))
        if clash:
            raise ValueError(f"{min(clash)} is also listed in calendar_extra_holidays")
        return value

    @field_validator("session_secret")
    @classmethod
    def _fernet_key(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret:
            try:
                if len(base64.urlsafe_b64decode(secret.encode())) != 32:
                    raise ValueError
            except (ValueError, binascii.Error):
                raise ValueError(
                    "must be 32 url-safe base64 bytes (python -c 'from cryptography.fernet "
                    "import Fernet; print(Fernet.generate_key().decode())')"
                ) from None
        return value

    @field_validator("pbxs")
    @classmethod
    def _distinct_pbxs(cls, value: tuple[PbxSpec, ...]) -> tuple[PbxSpec, ...]:
        names = [pbx.name for pbx in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"PBX name {name!r} is listed twice")
        spools = [pbx.recordings_spool for pbx in value if pbx.recordings_spool is not None]
        for spool in spools:
            if spools.count(spool) > 1:
                raise ValueError(f"recordings_spool {spool} is listed for two PBXs")
        return value

    @model_validator(mode="after")
    def _first_admin(self) -> Settings:
        if bool(self.admin_user) != bool(self.admin_password.get_secret_value()):
            raise ValueError("admin_user and admin_password go together")
        return self

    @model_validator(mode="after")
    def _web_caps(self) -> Settings:
        if self.web_max_connections_per_address > self.web_max_connections:
            raise ValueError(
                f"web_max_connections_per_address ({self.web_max_connections_per_address}) is "
                f"more than web_max_connections ({self.web_max_connections})"
            )
        return self

    @model_validator(mode="after")
    def _signed_webhook(self) -> Settings:
        if self.webhook_url and not self.webhook_secret.get_secret_value():
            raise ValueError("webhook_url needs webhook_secret (events are HMAC-signed)")
        return self

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file values, which arrive as init arguments.
        return (env_settings, init_settings)

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def __repr_args__(self) -> list[tuple[str | None, Any]]:
        return list(self.redacted().items())

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict fit for a log line: secrets and passwords masked."""
        from sqlalchemy.engine import make_url

        shown = self.model_dump(mode="json")
        shown["ami_secret"] = "***" if self.ami_secret.get_secret_value() else ""
        shown["esl_password"] = "***" if self.esl_password.get_secret_value() else ""
        shown["webhook_secret"] = "***" if self.webhook_secret.get_secret_value() else ""
        for name in ("session_secret", "metrics_token", "admin_password"):
            shown[name] = "***" if getattr(self, name).get_secret_value() else ""
        for pbx in shown["pbxs"]:
            pbx["ami_secret"] = pbx["esl_password"] = "***"  # noqa: S105 (the mask)
        shown["database_url"] = make_url(self.database_url).render_as_string(hide_password=True)
        if self.redis_url:
            shown["redis_url"] = make_url(self.redis_url).render_as_string(hide_password=True)
        if self.webhook_url:
            shown["webhook_url"] = masked_url(self.webhook_url)
        return shown


def masked_url(url: str) -> str:
    """``url`` fit for a log: user and password, query and fragment become ``***``.

    Help desks hand out webhook URLs with the access token in the query (``?token=...``) or
    as ``user:password@``; ``https://h/p?token=abc`` shows as ``https://h/p?***``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    host = parts.netloc.rpartition("@")[2]
    shown = f"{parts.scheme}://{'***@' if '@' in parts.netloc else ''}{host}{parts.path}"
    return shown + ("?***" if parts.query else "") + ("#***" if parts.fragment else "")


def _flatten_toml(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``[ami] host = ...`` and ``ami_host = ...`` both become ``ami_host``."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}".replace("-", "_").lower()
        if isinstance(value, Mapping):
            flat.update(_flatten_toml(value, prefix=f"{name}_"))
        else:
            flat[name] = value
    return flat


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return _flatten_toml(tomllib.load(handle))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from None


def _describe(error: ValidationError, file_values: Mapping[str, Any], source: Path | None) -> str:
    first = error.errors()[0]
    if not first["loc"]:  # a rule across settings: its message names them
        return f"invalid settings: {first['msg'].removeprefix('Value error, ')}"
    field = str(first["loc"][0])
    env_name = f"{ENV_PREFIX}{field.upper()}"
    if first["type"] == "extra_forbidden":
        where = f"config file {source}" if source else "settings"
        return f"unknown setting {field!r} in {where}"
    if env_name in os.environ:
        origin = env_name
    elif field in file_values and source is not None:
        origin = f"{field} in {source}"
    else:
        origin = env_name
    message = first["msg"].removeprefix("Value error, ")
    if "secret" in field:
        return f"invalid {origin}: {message}"
    return f"invalid {origin}={first.get('input')!r}: {message}"


def load_settings(config_path: str | Path | None = None) -> Settings:
    """Build the validated settings; raises ``ConfigError`` with a one-line reason."""
    if config_path is None and os.environ.get(CONFIG_FILE_VARIABLE):
        config_path = os.environ[CONFIG_FILE_VARIABLE]
    source = Path(config_path) if config_path else None
    file_values = _read_config_file(source) if source else {}
    file_values.pop("config", None)
    try:
        return Settings(**file_values)
    except ValidationError as error:
        raise ConfigError(_describe(error, file_values, source)) from None
