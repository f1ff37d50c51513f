"""Agent actions and callbacks sent to the agent's own PBX when a hotline has several."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hotline.pbx_actions import TierRelay, follow_tier_changes
from infra.bus import InProcessBus
from pbx.control import PbxRefused, PbxUnavailable
from pbx.dispatch import AgentNotPlaced, Placed, SeveralPbxControl, SeveralPbxDialer, place
from queue_stats.merge import merge_snapshots

PBXS = ("west", "east")


def board_of(**agents_by_pbx: list[str]) -> dict[str, Any]:
    """The merged agent board of PBX snapshots listing these interfaces."""
    snapshots = {
        pbx: {"agents": {name: {"state": "idle"} for name in names}, "counts": {}}
        for pbx, names in agents_by_pbx.items()
    }
    states = {pbx: {"up": True} for pbx in agents_by_pbx}
    board: dict[str, Any] = merge_snapshots(snapshots, states)["agents"]
    return board


def test_an_agent_on_one_pbx_is_acted_on_there() -> None:
    board = board_of(west=["PJSIP/agent1"], east=["PJSIP/agent2"])
    assert place("PJSIP/agent2", board, PBXS) == Placed("east", "PJSIP/agent2")
    assert place("PJSIP/agent1", board, PBXS) == Placed("west", "PJSIP/agent1")


def test_a_phone_name_on_two_pbxs_must_be_named_with_its_pbx() -> None:
    board = board_of(west=["PJSIP/agent1"], east=["PJSIP/agent1"])
    assert set(board) == {"west/PJSIP/agent1", "east/PJSIP/agent1"}  # as the board shows them
    with pytest.raises(AgentNotPlaced, match="east/PJSIP/agent1 or west/PJSIP/agent1"):
        place("PJSIP/agent1", board, PBXS)
    assert place("east/PJSIP/agent1", board, PBXS) == Placed("east", "PJSIP/agent1")


def test_an_agent_in_no_queue_is_named_with_its_pbx_unless_there_is_one_pbx() -> None:
    board = board_of(west=["PJSIP/agent1"], east=[])
    with pytest.raises(AgentNotPlaced, match="in no queue on any PBX"):
        place("PJSIP/agent9", board, PBXS)
    assert place("east/PJSIP/agent9", board, PBXS) == Placed("east", "PJSIP/agent9")
    assert place("agent9", {}, ("fs1",)) == Placed("fs1", "agent9")
    # A name before the slash that is no PBX of the hotline is part of the interface.
    with pytest.raises(AgentNotPlaced):
        place("north/PJSIP/agent1", board, PBXS)


def test_an_agent_not_placed_is_a_refusal_the_panel_shows() -> None:
    assert issubclass(AgentNotPlaced, PbxRefused)  # 409 with the message, like the PBX's own


class Recording:
    """An adapter that remembers what it was asked (the real ones are tested on the bed)."""

    def __init__(self, name: str, calls: list[tuple[str, ...]]) -> None:
        self.name, self.calls = name, calls

    async def pause(self, agent: str, paused: bool, reason: str) -> None:
        self.calls.append((self.name, "pause", agent, str(paused), reason))

    async def join(self, queue: str, agent: str) -> None:
        self.calls.append((self.name, "join", queue, agent))

    async def leave(self, queue: str, agent: str) -> None:
        self.calls.append((self.name, "leave", queue, agent))

    async def call_back(
        self, agent: str, number: str, *, callback: int, ticket: str, visit: bool = False
    ) -> None:
        self.calls.append((self.name, "call_back", agent, number, str(callback), ticket))


async def test_each_action_goes_to_the_agents_pbx_with_the_pbxs_own_interface() -> None:
    calls: list[tuple[str, ...]] = []
    board = board_of(west=["PJSIP/agent1", "PJSIP/agent2"], east=["PJSIP/agent1"])
    control = SeveralPbxControl({name: Recording(name, calls) for name in PBXS}, lambda: board)
    await control.pause("east/PJSIP/agent1", True, "lunch")
    await control.pause("PJSIP/agent2", False, "")
    await control.leave("hotline", "west/PJSIP/agent1")
    await control.join("hotline", "east/PJSIP/agent4")
    assert calls == [
        ("east", "pause", "PJSIP/agent1", "True", "lunch"),
        ("west", "pause", "PJSIP/agent2", "False", ""),
        ("west", "leave", "hotline", "PJSIP/agent1"),
        ("east", "join", "hotline", "PJSIP/agent4"),
    ]
    with pytest.raises(AgentNotPlaced):
        await control.pause("PJSIP/agent1", True, "")
    assert len(calls) == 4  # nothing was sent for the ambiguous name


async def test_a_callback_is_dialled_by_the_agents_pbx() -> None:
    calls: list[tuple[str, ...]] = []
    board = board_of(west=["PJSIP/agent1"], east=["PJSIP/agent2"], fs1=["1001@default"])
    dialer = SeveralPbxDialer(
        {"west": Recording("west", calls), "east": Recording("east", calls), "fs1": None},
        lambda: board,
    )
    await dialer.call_back("PJSIP/agent2", "13800138000", callback=7, ticket="T-1")
    assert calls == [("east", "call_back", "PJSIP/agent2", "13800138000", "7", "T-1")]
    with pytest.raises(PbxUnavailable, match="fs1 does not dial callbacks"):
        await dialer.call_back("1001@default", "13800138000", callback=8, ticket="T-2")


class Feed:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def tier_changed(self, queue: str, agent: str, added: bool) -> None:
        self.seen.append(("tier", queue, agent, added))

    def pause_reason(self, agent: str, reason: str) -> None:
        self.seen.append(("reason", agent, reason))


async def test_a_freeswitch_change_made_elsewhere_reaches_the_owners_feed() -> None:
    bus, feed = InProcessBus(), Feed()
    following = asyncio.create_task(follow_tier_changes(bus, "fs1", feed))
    await asyncio.sleep(0)  # subscribed
    relay = TierRelay(bus, "fs1")
    relay.pause_reason("1001@default", "lunch")
    relay.tier_changed("support", "1001@default", added=False)
    TierRelay(bus, "fs2").tier_changed("support", "1002@default", added=True)  # another PBX's
    for _ in range(20):
        if len(feed.seen) == 2:
            break
        await asyncio.sleep(0.01)
    following.cancel()
    assert feed.seen == [
        ("reason", "1001@default", "lunch"),
        ("tier", "support", "1001@default", False),
    ]
    assert relay.counters == {"relayed": 2, "relay_failures": 0}
