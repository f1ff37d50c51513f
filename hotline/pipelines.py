"""The pure pipeline as the settings configure it, for ``hotline run`` and ``hotline replay``.

A module of its own so that ``hotline replay`` imports the pure cores only, not the web, the
database and the PBX clients that ``hotline.service`` wires (a replay is a whole process a user
waits for, start-up included).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from infra.replay_settings import ReplaySettings
from queue_stats.calls import CallTracker
from queue_stats.pipeline import EventPipeline
from queue_stats.satisfaction import SatisfactionStats
from queue_stats.stats import QueueStats
from survey.scale import parse_scale

if TYPE_CHECKING:  # pydantic is not loaded for a replay without settings to validate
    from infra.config import Settings


def build_pipeline(
    settings: Settings | ReplaySettings, clock: Callable[[], datetime]
) -> EventPipeline:
    return EventPipeline(
        CallTracker(frozenset(settings.inbound_contexts), surveys=settings.survey),
        QueueStats(
            settings.zone,
            short_abandon_seconds=settings.short_abandon_seconds,
            default_service_level_seconds=settings.service_level_seconds,
            wrap_up_seconds=settings.wrap_up_seconds,
        ),
        clock,
        SatisfactionStats(settings.zone, parse_scale(settings.survey_scale)),
    )
