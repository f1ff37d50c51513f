"""Each process's own action links to every PBX of several, for the panel's buttons and callbacks.

The ingest of a PBX runs in one process only (its lease holder), but a supervisor's pause button
and the callback scheduler may run in any. Each process therefore keeps, per PBX, a session that
only sends: an AMI login with events off, or an Event Socket session subscribed to the
heartbeat alone. Asterisk reports the outcome of every action as events, which reach the
owner's ingest. FreeSWITCH does not report a tier added or removed, nor keep a pause reason, so
those are told to the owner over the bus (``tier_channel``); a message the owner misses while
the PBX changes hands is made good by the new owner's resync, which reads the tiers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ami.agent_control import AmiAgentControl, AmiCallbackDialer
from ami.client import AmiClient
from ami.codec import AmiMessage
from esl.agent_control import EslAgentControl, TierListener
from esl.client import EslClient
from esl.codec import EslEvent
from infra.bus import Bus
from infra.config import PbxSpec, Settings
from pbx.control import AgentControl
from pbx.dispatch import AgentBoard, CallbackDialer, SeveralPbxControl, SeveralPbxDialer

log = logging.getLogger(__name__)

HEARTBEAT_ONLY = ("HEARTBEAT",)


def tier_channel(pbx: str) -> str:
    return f"pbx-agents:{pbx}"


class TierRelay:
    """A FreeSWITCH change made on an action link, told to whichever process owns the PBX."""

    def __init__(self, bus: Bus, pbx: str) -> None:
        self._bus = bus
        self._channel = tier_channel(pbx)
        self._sending: set[asyncio.Task[None]] = set()
        self.counters = {"relayed": 0, "relay_failures": 0}

    def _send(self, message: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._publish(message))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _publish(self, message: dict[str, Any]) -> None:
        try:
            await self._bus.publish(self._channel, message)
            self.counters["relayed"] += 1
        except Exception as error:  # the owner's next resync reads the tiers anyway
            self.counters["relay_failures"] += 1
            log.warning("could not tell the owner of a FreeSWITCH agent change: %s", error)

    def tier_changed(self, queue: str, agent: str, added: bool) -> None:
        self._send({"type": "tier", "queue": queue, "agent": agent, "added": added})

    def pause_reason(self, agent: str, reason: str) -> None:
        self._send({"type": "pause_reason", "agent": agent, "reason": reason})


async def follow_tier_changes(bus: Bus, pbx: str, feed: TierListener) -> None:
    """The owner's side of ``TierRelay``: each change reaches the feed as if made here."""
    messages: AsyncIterator[dict[str, Any]] = bus.subscribe(tier_channel(pbx))
    async for message in messages:
        kind, agent = message.get("type"), message.get("agent")
        if not isinstance(agent, str):
            continue
        if kind == "tier" and isinstance(message.get("queue"), str):
            feed.tier_changed(message["queue"], agent, bool(message.get("added")))
        elif kind == "pause_reason" and isinstance(message.get("reason"), str):
            feed.pause_reason(agent, message["reason"])


def _no_events(_: AmiMessage | EslEvent) -> None:
    """An action link's events (Asterisk sends none; FreeSWITCH only its heartbeat)."""


@dataclass
class ActionLinks:
    """Every PBX's action link, and the control and dialer that pick one by the agent."""

    links: dict[str, AmiClient | EslClient]
    control: SeveralPbxControl
    dialer: SeveralPbxDialer
    relays: dict[str, TierRelay] = field(default_factory=dict)

    async def start(self) -> None:
        for link in self.links.values():
            await link.start()

    async def close(self) -> None:
        for link in self.links.values():
            with contextlib.suppress(Exception):
                await link.close()

    def health(self) -> dict[str, Any]:
        return {name: {"up": link.connected} for name, link in sorted(self.links.items())}


def _ami_link(spec: PbxSpec, settings: Settings) -> AmiClient:
    return AmiClient(
        host=spec.ami_host,
        port=spec.ami_port,
        username=spec.ami_username,
        secret=spec.ami_secret.get_secret_value(),
        sink=_no_events,
        keep_event=lambda _: False,
        action_timeout=settings.ami_action_timeout,
        max_backoff=settings.ami_max_backoff,
        events=False,
    )


def _esl_link(spec: PbxSpec, settings: Settings) -> EslClient:
    return EslClient(
        host=spec.esl_host,
        port=spec.esl_port,
        password=spec.esl_password.get_secret_value(),
        sink=_no_events,
        events=HEARTBEAT_ONLY,
        command_timeout=settings.esl_command_timeout,
        max_backoff=settings.esl_max_backoff,
    )


def action_links(settings: Settings, bus: Bus, board: Callable[[], AgentBoard]) -> ActionLinks:
    """One action link per configured PBX; nothing connects until ``start``."""
    links: dict[str, AmiClient | EslClient] = {}
    controls: dict[str, AgentControl] = {}
    dialers: dict[str, CallbackDialer | None] = {}
    relays: dict[str, TierRelay] = {}
    for spec in settings.pbxs:
        if spec.kind == "freeswitch":
            esl = _esl_link(spec, settings)
            relays[spec.name] = TierRelay(bus, spec.name)
            links[spec.name] = esl
            controls[spec.name] = EslAgentControl(esl.api, relays[spec.name])
            dialers[spec.name] = None  # FreeSWITCH callbacks are not dialled by the bridge
        else:
            ami = _ami_link(spec, settings)
            links[spec.name] = ami
            controls[spec.name] = AmiAgentControl(ami)
            dialers[spec.name] = AmiCallbackDialer(
                ami, agent_ring_seconds=settings.callback_agent_ring_seconds
            )
    return ActionLinks(
        links,
        SeveralPbxControl(controls, board),
        SeveralPbxDialer(dialers, board),
        relays,
    )
