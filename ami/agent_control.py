"""Agents acted on over AMI: QueuePause, QueueAdd, QueueRemove."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ami.actions import (
    AmiAction,
    InvalidAction,
    originate,
    queue_add,
    queue_pause,
    queue_remove,
)
from ami.client import AmiActionFailed, AmiActionTimeout, AmiNotConnected
from pbx.control import PbxRefused, PbxUnavailable


class ActionSender(Protocol):
    async def send(self, action: AmiAction) -> Any: ...


class AmiAgentControl:
    def __init__(self, ami: ActionSender) -> None:
        self.ami = ami

    async def _send(self, action: AmiAction) -> None:
        try:
            await self.ami.send(action)
        except AmiActionFailed as error:  # Asterisk said no (e.g. not a member of that queue)
            raise PbxRefused(str(error)) from None
        except (AmiNotConnected, AmiActionTimeout) as error:
            raise PbxUnavailable(str(error)) from None

    async def pause(self, agent: str, paused: bool, reason: str) -> None:
        await self._send(_built(lambda: queue_pause(agent, paused, reason if paused else "")))

    async def join(self, queue: str, agent: str) -> None:
        await self._send(_built(lambda: queue_add(queue, agent)))

    async def leave(self, queue: str, agent: str) -> None:
        await self._send(_built(lambda: queue_remove(queue, agent)))


CALLBACK_AGENT_CONTEXT = "hotline-callback-agent"
CALLBACK_CONTEXT = "hotline-callback"


class AmiCallbackDialer:
    """A callback through AMI Originate and a Local channel: ``Local/<agent>@hotline-callback-
    agent/n`` rings the agent's phone alone; once the agent answers, the other half runs
    ``<number>@hotline-callback``, which dials the citizen with the hotline's caller ID and
    records the call (extensions.conf). The ticket and the task ride in channel variables."""

    def __init__(self, ami: ActionSender, *, agent_ring_seconds: float = 20) -> None:
        self.ami = ami
        self._agent_ring = agent_ring_seconds

    async def call_back(
        self, agent: str, number: str, *, callback: int, ticket: str, visit: bool = False
    ) -> None:
        tech, _, agent_id = agent.partition("/")
        if tech.upper() != "PJSIP" or not agent_id:
            raise PbxRefused(f"callbacks ring PJSIP phones, not {agent!r}")
        action = _built(
            lambda: originate(
                # /n: the Local channel stays in the call, so does its recording
                f"Local/{agent_id}@{CALLBACK_AGENT_CONTEXT}/n",
                CALLBACK_CONTEXT,
                number,
                timeout_seconds=self._agent_ring + 5,
                variables={
                    "HOTLINE_CALLBACK": str(callback),
                    "HOTLINE_TICKET": ticket,
                    "HOTLINE_CALLBACK_AGENT": agent,
                    **({"HOTLINE_VISIT": "yes"} if visit else {}),
                },
            )
        )
        try:
            await self.ami.send(action)
        except AmiActionFailed as error:
            raise PbxRefused(str(error)) from None
        except (AmiNotConnected, AmiActionTimeout) as error:
            raise PbxUnavailable(str(error)) from None


def _built(build: Callable[[], AmiAction]) -> AmiAction:
    """The action, or a refusal when a name cannot go to Asterisk (a FreeSWITCH agent name)."""
    try:
        return build()
    except InvalidAction as error:
        raise PbxRefused(str(error)) from None
