"""Agent actions and callbacks sent to the PBX the agent's phone is on, when there are several.

With one PBX an agent is a phone interface (``PJSIP/agent1``). With several, the hotline's
agent board lists each PBX's agents, and an interface found on two PBXs (two different phones)
is shown as ``<pbx>/<interface>`` for each. The panel's pause and queue buttons, and a callback
(which rings the agent's phone first), name the agent the way the board does, or as
``<pbx>/<interface>`` at any time. ``place`` finds the PBX; ``SeveralPbxControl`` and
``SeveralPbxDialer`` send the action there, over that PBX's own adapter.

Every bridge process can act on every PBX: the adapters here are action links of their own,
not the ingest that only the lease holder runs, so a button works whichever process serves it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pbx.control import AgentControl, PbxRefused, PbxUnavailable
from pbx.naming import SEPARATOR

AgentBoard = Mapping[str, Mapping[str, Any]]  # the merged board: name -> {"pbx": ..., ...}


@dataclass(frozen=True, slots=True)
class Placed:
    """An agent's phone on one PBX: the PBX's name and the interface as that PBX knows it."""

    pbx: str
    interface: str

    @property
    def qualified(self) -> str:
        return f"{self.pbx}{SEPARATOR}{self.interface}"


class AgentNotPlaced(PbxRefused):
    """The agent's PBX cannot be told: on none of the PBXs, or on several (two phones)."""


def place(agent: str, board: AgentBoard, pbx_names: Collection[str]) -> Placed:
    """The one PBX ``agent`` is on.

    ``<pbx>/<interface>`` names it outright (a configured PBX's name before the first ``/``).
    Otherwise the board says: the PBX whose agent it is; an interface two PBXs have is
    ambiguous, and one on no PBX (logged out of every queue) can only be named outright,
    unless the hotline has a single PBX."""
    head, separator, rest = agent.partition(SEPARATOR)
    if separator and rest and head in pbx_names:
        return Placed(head, rest)
    shown = board.get(agent)
    if shown is not None and shown.get("pbx") in pbx_names:
        return Placed(str(shown["pbx"]), agent)
    twins = sorted(name for name in pbx_names if f"{name}{SEPARATOR}{agent}" in board)
    if len(twins) > 1:
        named = " or ".join(Placed(name, agent).qualified for name in twins)
        raise AgentNotPlaced(f"{agent} is a phone on {len(twins)} PBXs: name one, {named}")
    if len(twins) == 1:
        return Placed(twins[0], agent)
    if len(pbx_names) == 1:
        return Placed(next(iter(pbx_names)), agent)
    example = Placed(min(pbx_names), agent).qualified if pbx_names else agent
    raise AgentNotPlaced(
        f"{agent} is in no queue on any PBX now: name its PBX as <pbx>/<interface>, e.g. {example}"
    )


class CallbackDialer(Protocol):
    async def call_back(
        self, agent: str, number: str, *, callback: int, ticket: str, visit: bool = False
    ) -> None: ...


class _Placing:
    def __init__(self, board: Callable[[], AgentBoard], pbx_names: Collection[str]) -> None:
        """``board``: the hotline's merged agent board as this process last saw it."""
        self._board = board
        self._names = frozenset(pbx_names)

    def _place(self, agent: str) -> Placed:
        return place(agent, self._board(), self._names)


class SeveralPbxControl(_Placing):
    """``AgentControl`` over several PBXs: each action goes to the agent's PBX's adapter."""

    def __init__(
        self,
        controls: Mapping[str, AgentControl],
        board: Callable[[], AgentBoard],
    ) -> None:
        super().__init__(board, controls.keys())
        self._controls = dict(controls)

    def _for(self, agent: str) -> tuple[AgentControl, str]:
        placed = self._place(agent)
        return self._controls[placed.pbx], placed.interface

    async def pause(self, agent: str, paused: bool, reason: str) -> None:
        control, interface = self._for(agent)
        await control.pause(interface, paused, reason)

    async def join(self, queue: str, agent: str) -> None:
        control, interface = self._for(agent)
        await control.join(queue, interface)

    async def leave(self, queue: str, agent: str) -> None:
        control, interface = self._for(agent)
        await control.leave(queue, interface)


class SeveralPbxDialer(_Placing):
    """A callback rings the agent's phone first, so it is dialled by the agent's PBX."""

    def __init__(
        self,
        dialers: Mapping[str, CallbackDialer | None],
        board: Callable[[], AgentBoard],
    ) -> None:
        super().__init__(board, dialers.keys())
        self._dialers = dict(dialers)

    async def call_back(
        self, agent: str, number: str, *, callback: int, ticket: str, visit: bool = False
    ) -> None:
        placed = self._place(agent)
        dialer = self._dialers[placed.pbx]
        if dialer is None:
            raise PbxUnavailable(f"PBX {placed.pbx} does not dial callbacks (no AMI)")
        await dialer.call_back(
            placed.interface, number, callback=callback, ticket=ticket, visit=visit
        )
