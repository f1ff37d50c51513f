"""The settings ``hotline replay`` reads, and their defaults, without pydantic.

Why: a replay is a whole process a user waits for, and importing pydantic to validate some fifty
settings costs more than a tenth of a second. The defaults written here are the only copy:
``infra.config.Settings`` takes its own from ``REPLAY_DEFAULTS``. When nothing configures the
bridge (no settings file, no ``HOTLINE_*`` variable) these defaults are the settings, already
valid; otherwise ``infra.config.load_settings`` validates everything as for any other command,
so a bad value stops a replay with the same one-line error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from survey.scale import DEFAULT_SCALE_TEXT

ENV_PREFIX = "HOTLINE_"
CONFIG_FILE_VARIABLE = "HOTLINE_CONFIG"


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """What the pure pipeline and the replay command read (a subset of ``Settings``)."""

    inbound_contexts: tuple[str, ...] = ("from-citizens",)
    service_level_seconds: int = 20
    short_abandon_seconds: float = 5.0
    wrap_up_seconds: float = 2.0
    timezone: str = "Asia/Shanghai"
    survey: bool = True
    survey_scale: str = DEFAULT_SCALE_TEXT
    log_level: str = "INFO"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


REPLAY_DEFAULTS = ReplaySettings()


def configured(
    config_path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> bool:
    """Whether a settings file or a ``HOTLINE_*`` variable may change a default (pydantic
    reads variable names without regard to case)."""
    environ = os.environ if environ is None else environ
    return bool(config_path) or any(name.upper().startswith(ENV_PREFIX) for name in environ)
