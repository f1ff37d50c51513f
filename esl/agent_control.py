"""Agents acted on over the Event Socket: mod_callcenter's ``callcenter_config`` commands.

- Pause: the agent's status ``On Break``; back: ``Available``. FreeSWITCH keeps no reason with
  a status, so the reason the panel gives is kept by the bridge (the feed shows it with the
  break FreeSWITCH reports).
- Queue login and logout: ``tier add`` and ``tier del``. FreeSWITCH sends no event for either,
  so once it says ``+OK`` the feed tells the core itself.

Names are checked before anything is sent: FreeSWITCH reads the command line split on spaces
and quotes, so an agent or queue with one would be another command.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Protocol

from esl.client import EslCommandFailed, EslCommandTimeout, EslNotConnected
from pbx.control import PbxRefused, PbxUnavailable

# An agent or queue name FreeSWITCH reads as one word (no space, quote or line break).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")


class TierListener(Protocol):
    """What the feed is told once FreeSWITCH accepted a change it will not report itself."""

    def tier_changed(self, queue: str, agent: str, added: bool) -> None: ...

    def pause_reason(self, agent: str, reason: str) -> None: ...


def _name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise PbxRefused(f"not a FreeSWITCH {what} name: {value[:70]!r}")
    return value


class EslAgentControl:
    def __init__(self, api: Callable[[str], Awaitable[str]], listener: TierListener) -> None:
        self._api = api
        self._listener = listener

    async def _run(self, command: str) -> str:
        try:
            return await self._api(command)
        except EslCommandFailed as error:
            raise PbxRefused(str(error)) from None
        except (EslNotConnected, EslCommandTimeout) as error:
            raise PbxUnavailable(str(error)) from None

    async def pause(self, agent: str, paused: bool, reason: str) -> None:
        agent = _name(agent, "agent")
        if paused:
            self._listener.pause_reason(agent, reason)
        status = "'On Break'" if paused else "'Available'"
        await self._run(f"callcenter_config agent set status {agent} {status}")

    async def join(self, queue: str, agent: str) -> None:
        queue, agent = _name(queue, "queue"), _name(agent, "agent")
        await self._run(f"callcenter_config tier add {queue} {agent} 1 1")
        self._listener.tier_changed(queue, agent, added=True)

    async def leave(self, queue: str, agent: str) -> None:
        queue, agent = _name(queue, "queue"), _name(agent, "agent")
        await self._run(f"callcenter_config tier del {queue} {agent}")
        self._listener.tier_changed(queue, agent, added=False)
