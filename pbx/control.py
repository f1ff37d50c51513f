"""Acting on agents, PBX-neutral: the panel's pause and queue buttons, Asterisk or FreeSWITCH.

An adapter raises ``PbxRefused`` when the PBX answered no (not a member of that queue, unknown
agent) and ``PbxUnavailable`` when it could not be asked (disconnected, no answer in time).
"""

from __future__ import annotations

from typing import Protocol


class PbxRefused(RuntimeError):
    """The PBX answered the request with a refusal; the message is its own."""


class PbxUnavailable(ConnectionError):
    """The PBX could not be asked: no session, or no answer before the deadline."""


class AgentControl(Protocol):
    async def pause(self, agent: str, paused: bool, reason: str) -> None: ...

    async def join(self, queue: str, agent: str) -> None: ...

    async def leave(self, queue: str, agent: str) -> None: ...
