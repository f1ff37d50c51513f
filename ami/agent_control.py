"""Agents acted on over AMI: QueuePause, QueueAdd, QueueRemove."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ami.actions import AmiAction, InvalidAction, queue_add, queue_pause, queue_remove
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


def _built(build: Callable[[], AmiAction]) -> AmiAction:
    """The action, or a refusal when a name cannot go to Asterisk (a FreeSWITCH agent name)."""
    try:
        return build()
    except InvalidAction as error:
        raise PbxRefused(str(error)) from None
