"""Two PBXs side by side: instances a and b of the Asterisk sandbox, at the same time.

The ground for one hotline over two PBXs (and the bridge's failover between them): each
Asterisk must answer its own citizens with its own agents' phones, and log each call in
its own queue_log only.  Both name their calls ``<epoch>.<n>``, so a uniqueid alone never
tells the PBXs apart: the test tells the calls apart by caller number.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.recorder.testbed import Phones, Sandbox, SippProcess

if TYPE_CHECKING:  # conftest is pytest's to import, not a module of the tests
    from tests.integration.conftest import AmiFactory, AmiSession

pytestmark = pytest.mark.integration

CALLER_A = "13800138001"
CALLER_B = "13800138002"
UNIQUEID = re.compile(r"\d+\.\d+")


def queue_log_fields(pbx: Sandbox, offset: int) -> list[list[str]]:
    """The queue_log lines ``pbx`` wrote since ``offset``, split into fields."""
    text = pbx.queue_log_since(offset).decode("utf-8", errors="replace")
    return [line.split("|") for line in text.splitlines()]


def verbs_of(fields: list[list[str]], uniqueid: str) -> list[str]:
    return [f[4] for f in fields if len(f) > 4 and f[1] == uniqueid]


def callers_entering(fields: list[list[str]]) -> set[str]:
    """Caller numbers of the ENTERQUEUE lines (``...|ENTERQUEUE|url|callerid|position``)."""
    return {f[6] for f in fields if len(f) > 6 and f[4] == "ENTERQUEUE"}


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


def invites(agent: SippProcess) -> list[str]:
    """The INVITEs the agent's phone received, one per call (retransmissions left out)."""
    found: dict[str, str] = {}
    for block in re.split(r"^-{10,}.*$", agent.messages, flags=re.M):
        head, _, message = block.partition("\n\n")
        if "message received" in head and message.startswith("INVITE "):
            call_id = re.search(r"^Call-ID:\s*(\S+)", message, re.M | re.I)
            found.setdefault(call_id.group(1) if call_id else message, message)
    return list(found.values())


async def answered_call(ami: AmiSession, caller: str) -> tuple[dict[str, str], dict[str, str]]:
    """The caller's QueueCallerJoin and AgentConnect on one PBX's AMI."""
    join = await ami.wait_for("QueueCallerJoin", timeout=15, Queue="hotline", CallerIDNum=caller)
    connect = await ami.wait_for("AgentConnect", timeout=20, Uniqueid=join["Uniqueid"])
    return dict(join), dict(connect)


async def test_two_pbxs_answer_and_log_their_own_calls(
    asterisk: Sandbox,
    asterisk_b: Sandbox,
    sipp_phones: Phones,
    ami_events: AmiFactory,
    ami_events_b: AmiFactory,
    record_property: Callable[[str, object], None],
) -> None:
    assert (asterisk.instance, asterisk.ami_port, asterisk.sip_port) == ("a", 5038, 5060)
    assert (asterisk_b.instance, asterisk_b.ami_port, asterisk_b.sip_port) == ("b", 5039, 5062)
    assert asterisk_b.chroot == asterisk.chroot  # one rootfs, two daemons
    assert asterisk_b.queue_log == asterisk_b.chroot / "var/log/asterisk-b/queue_log"
    assert asterisk.queue_log == asterisk.chroot / "var/log/asterisk/queue_log"
    # Each CLI reaches its own daemon: b's agents' contacts are on 5171.., a's on 5071..
    assert "sip:agent1@127.0.0.1:5171" in asterisk_b.cli("pjsip show aor agent1")
    assert "sip:agent1@127.0.0.1:5071" in asterisk.cli("pjsip show aor agent1")

    # Only agent1 takes calls on either PBX, so each call has one phone to ring.
    for pbx in (asterisk, asterisk_b):
        for agent in ("agent2", "agent3"):
            pbx.cli(f"queue pause member PJSIP/{agent} queue hotline reason second-pbx-test")
    agent_a = sipp_phones.start_agent("agent1")
    agent_b = sipp_phones.start_agent("agent1", instance="b")
    assert set(sipp_phones.agents) >= {"agent1", "agent1@b"}

    offset_a, offset_b = asterisk.queue_log_size(), asterisk_b.queue_log_size()
    async with ami_events() as ami_a, ami_events_b() as ami_b:
        call_a = sipp_phones.call(CALLER_A, "Citizen A", 4)
        call_b = sipp_phones.call(CALLER_B, "Citizen B", 4, instance="b")
        (join_a, connect_a), (join_b, connect_b) = await asyncio.gather(
            answered_call(ami_a, CALLER_A), answered_call(ami_b, CALLER_B)
        )
        assert connect_a["Interface"] == connect_b["Interface"] == "PJSIP/agent1"
        await asyncio.gather(
            ami_a.wait_for_completion(connect_a, timeout=20),
            ami_b.wait_for_completion(connect_b, timeout=20),
        )
        assert await call_a.wait_async(timeout=30) == 0, call_a.diagnostics()
        assert await call_b.wait_async(timeout=30) == 0, call_b.diagnostics()

    # Neither PBX saw the other's citizen.
    assert not ami_a.find("QueueCallerJoin", CallerIDNum=CALLER_B)
    assert not ami_b.find("QueueCallerJoin", CallerIDNum=CALLER_A)
    # Each agent1 phone was rung once, by its own PBX (the Via names the PBX's SIP port).
    [invite_a], [invite_b] = invites(agent_a), invites(agent_b)
    assert "127.0.0.1:5060" in invite_a and "127.0.0.1:5062" not in invite_a, invite_a
    assert "127.0.0.1:5062" in invite_b and "127.0.0.1:5060" not in invite_b, invite_b

    uniqueid_a, uniqueid_b = join_a["Uniqueid"], join_b["Uniqueid"]
    # Both PBXs name calls alike; equal ids are possible, which is why a consumer of two
    # PBXs must key calls by PBX and uniqueid.
    assert UNIQUEID.fullmatch(uniqueid_a) and UNIQUEID.fullmatch(uniqueid_b)
    record_property("uniqueid_a", uniqueid_a)
    record_property("uniqueid_b", uniqueid_b)

    def ended(pbx: Sandbox, offset: int, uniqueid: str) -> Callable[[], bool]:
        return lambda: "HOTLINEEND" in verbs_of(queue_log_fields(pbx, offset), uniqueid)

    await wait_until(ended(asterisk, offset_a, uniqueid_a), 5, "HOTLINEEND in a's queue_log")
    await wait_until(ended(asterisk_b, offset_b, uniqueid_b), 5, "HOTLINEEND in b's queue_log")
    log_a, log_b = queue_log_fields(asterisk, offset_a), queue_log_fields(asterisk_b, offset_b)
    assert "CONNECT" in verbs_of(log_a, uniqueid_a), log_a
    assert "CONNECT" in verbs_of(log_b, uniqueid_b), log_b
    assert callers_entering(log_a) == {CALLER_A}, log_a
    assert callers_entering(log_b) == {CALLER_B}, log_b

    # Recordings are named by uniqueid: each PBX writes them in its own spool.
    def recorded(pbx: Sandbox, uniqueid: str) -> Callable[[], bool]:
        return lambda: any(pbx.recordings_spool.rglob(f"{uniqueid}_*.wav"))

    await wait_until(recorded(asterisk, uniqueid_a), 5, "a's recording in a's spool")
    await wait_until(recorded(asterisk_b, uniqueid_b), 5, "b's recording in b's spool")
    assert "/asterisk-b/" in str(asterisk_b.recordings_spool)
