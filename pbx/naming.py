"""Call ids that name their PBX, so that two PBXs never collide.

Asterisk's uniqueid (``1764666000.42``) is unique on one server only: two Asterisks started in
the same second hand out the same ids, and the journal (keyed by uniqueid) would merge their
calls. FreeSWITCH's uuids do not collide, but nothing says which PBX they came from. With a PBX
name configured (``HOTLINE_PBX_NAME``), every id a PBX gives is carried as ``<name>/<own id>``:
the PBX's name with its own id, whole, so either can be read back (``own_id``). Without a name
the ids stay exactly as the PBX gave them (and every figure and journal stays as it was).

Applied where ids enter the core: each fact (``fact``), the present a resync reports, a route's
call id, a rebuilt call from the PBX's own log, a recording's row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TypeVar

from pbx.facts import CallerReported, ChannelEvent, ChannelReported, DomainEvent

SEPARATOR = "/"
WithIds = TypeVar("WithIds", bound=ChannelEvent | CallerReported | ChannelReported)
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,16}")


class PbxNameError(ValueError):
    """A PBX name that could not be part of a call id."""


@dataclass(frozen=True, slots=True)
class PbxName:
    name: str

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise PbxNameError(
                f"a PBX name is 1 to 16 letters, digits, '.', '_' or '-': {self.name[:40]!r}"
            )

    def call_id(self, own: str) -> str:
        """``own`` (the PBX's id) as the bridge carries it; an empty id stays empty."""
        return f"{self.name}{SEPARATOR}{own}" if own else own

    def own_id(self, call_id: str) -> str:
        """The PBX's own id back from ``call_id``; ``PbxNameError`` for another PBX's."""
        prefix = self.name + SEPARATOR
        if not call_id.startswith(prefix):
            raise PbxNameError(f"{call_id[:80]!r} is not a call of PBX {self.name!r}")
        return call_id[len(prefix) :]

    def ids_of(self, fact: WithIds) -> WithIds:
        """``fact`` (one that carries call ids) with its uniqueid and linkedid named."""
        return replace(
            fact, uniqueid=self.call_id(fact.uniqueid), linkedid=self.call_id(fact.linkedid)
        )

    def fact(self, fact: DomainEvent) -> DomainEvent:
        """``fact`` with its call ids named; facts about queues and members have none."""
        if isinstance(fact, ChannelEvent | CallerReported | ChannelReported):
            return self.ids_of(fact)
        return fact
