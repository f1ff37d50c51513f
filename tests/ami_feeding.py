"""AMI messages into the PBX-neutral pipeline or queue service, as the live AMI feed does it
(one translator per pipeline or service, so AgentComplete finds its AgentConnect)."""

from __future__ import annotations

from datetime import datetime
from weakref import WeakKeyDictionary

from ami.codec import AmiMessage
from ami.feed import AmiFeed, AmiTranslator
from queue_stats.pipeline import EventPipeline, PipelineResult
from queue_stats.service import QueueService

_translators: WeakKeyDictionary[EventPipeline, AmiTranslator] = WeakKeyDictionary()
_feeds: WeakKeyDictionary[QueueService, AmiFeed] = WeakKeyDictionary()


def through_ami(
    pipeline: EventPipeline, message: AmiMessage, at: datetime | None = None
) -> PipelineResult:
    translator = _translators.setdefault(pipeline, AmiTranslator())
    fact = translator.translate(message, at or pipeline._clock())
    return pipeline.on_event(fact) if fact is not None else PipelineResult()


def into_service(service: QueueService, message: AmiMessage) -> None:
    _feeds.setdefault(service, AmiFeed(service, service._clock)).on_message(message)
