"""A named PBX's way into the queue service: every call id it gives carries its name.

``hotline run`` puts this between a PBX adapter and ``QueueService`` when ``HOTLINE_PBX_NAME``
is set (``pbx.naming``): facts, the present a resync reports and the routes made for the PBX's
calls all reach the service with named ids, so calls of two PBXs never meet under one id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from ivr_bypass.decision import RoutingDecision
from pbx.facts import DomainEvent
from pbx.naming import PbxName
from queue_stats.pipeline import PresentState
from queue_stats.service import QueueService


def named_present(present: PresentState, pbx: PbxName) -> PresentState:
    """``present`` with its callers' and channels' ids named."""
    return replace(
        present,
        callers=[pbx.ids_of(caller) for caller in present.callers],
        channels={pbx.call_id(channel) for channel in present.channels},
    )


class NamedPbx:
    """What an adapter needs of the queue service (``on_fact``, ``begin_resync``,
    ``resync_from``) and the route link's ``on_routed``, naming ids on the way in."""

    def __init__(self, service: QueueService, pbx: PbxName) -> None:
        self.service = service
        self.pbx = pbx

    def on_fact(self, fact: DomainEvent) -> None:
        self.service.on_fact(self.pbx.fact(fact))

    def begin_resync(self) -> None:
        self.service.begin_resync()

    async def resync_from(
        self,
        ask: Callable[[], Awaitable[Any]],
        read: Callable[[Any, datetime], PresentState],
    ) -> None:
        await self.service.resync_from(
            ask, lambda answers, at: named_present(read(answers, at), self.pbx)
        )

    def on_routed(self, uniqueid: str, decision: RoutingDecision) -> None:
        self.service.on_routed(self.pbx.call_id(uniqueid), decision)
