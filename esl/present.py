"""What FreeSWITCH reports at a resync, read from ``callcenter_config`` and ``show channels``.

The list commands answer ``|``-separated tables with a header line and ``+OK`` at the end
(verbatim replies are in ``tests/fixtures/esl/``). Pure: the client asks, this reads.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from esl.callcenter import DEVICE_FREE, DEVICE_OF_STATE, LOGGED_OUT_STATUS, PAUSED_STATUS
from pbx.facts import CallerReported, MemberReported, QueueReported
from queue_stats.pipeline import PresentState

WAITING_MEMBER_STATES = frozenset({"Waiting", "Trying"})


def table_rows(answer: str) -> list[dict[str, str]]:
    """The rows of a ``callcenter_config ... list`` answer, each a dict by the header's names."""
    lines = [line for line in answer.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0].split("|")
    rows = []
    for line in lines[1:]:
        if line.startswith("+OK"):
            break
        values = line.split("|")
        if len(values) != len(header):  # a value with a "|" in it: not ours to guess
            continue
        rows.append(dict(zip(header, values, strict=True)))
    return rows


def channel_uuids(answer: str) -> set[str]:
    """The channels of ``show channels as json`` (``{"row_count": 0}`` when there are none)."""
    listing = json.loads(answer or "{}")
    return {row["uuid"] for row in listing.get("rows", []) if row.get("uuid")}


@dataclass(slots=True)
class FreeswitchAnswers:
    """The answers a resync asks for, verbatim."""

    queues: str = ""
    agents: dict[str, str] = field(default_factory=dict)  # queue -> queue list agents
    tiers: dict[str, str] = field(default_factory=dict)  # queue -> queue list tiers
    members: dict[str, str] = field(default_factory=dict)  # queue -> queue list members
    channels: str = ""


async def ask_freeswitch(api: Callable[[str], Awaitable[str]]) -> FreeswitchAnswers:
    """Ask FreeSWITCH for its queues, and for each queue its agents, tiers and members."""
    answers = FreeswitchAnswers(queues=await api("callcenter_config queue list"))
    for row in table_rows(answers.queues):
        name = row["name"]
        answers.agents[name] = await api(f"callcenter_config queue list agents {name}")
        answers.tiers[name] = await api(f"callcenter_config queue list tiers {name}")
        answers.members[name] = await api(f"callcenter_config queue list members {name}")
    answers.channels = await api("show channels as json")
    return answers


@dataclass(frozen=True, slots=True)
class Roster:
    """Each agent's queues and status and the callers waiting, for the translator
    (mod_callcenter sends no event when a tier is added or removed)."""

    tiers: dict[str, set[str]]
    statuses: dict[str, str]
    waiting: dict[str, str]  # member session uuid -> queue


def read_answers(answers: FreeswitchAnswers, at: datetime) -> tuple[PresentState, Roster]:
    """The present state for the statistics, and the roster for the translator."""
    queues, members, callers = [], [], []
    tiers: dict[str, set[str]] = {}
    statuses: dict[str, str] = {}
    for row in table_rows(answers.queues):
        name = row["name"]
        waiting = [
            m
            for m in table_rows(answers.members.get(name, ""))
            if m.get("state") in WAITING_MEMBER_STATES and m.get("session_uuid")
        ]
        queues.append(
            QueueReported(
                at=at,
                queue=name,
                service_level_seconds=0,
                completed=_number(row.get("calls_answered")),
                abandoned=_number(row.get("calls_abandoned")),
                waiting=len(waiting),
            )
        )
        agents = {a["name"]: a for a in table_rows(answers.agents.get(name, ""))}
        for tier in table_rows(answers.tiers.get(name, "")):
            agent = agents.get(tier["agent"])
            if agent is None:
                continue
            statuses[agent["name"]] = agent["status"]
            if agent["status"] == LOGGED_OUT_STATUS:
                continue
            tiers.setdefault(agent["name"], set()).add(name)
            paused = agent["status"] == PAUSED_STATUS
            device = DEVICE_OF_STATE.get(agent["state"], DEVICE_FREE)
            members.append(
                MemberReported(
                    at=at,
                    queue=name,
                    interface=agent["name"],
                    member_name=agent["name"],
                    device_status=device,
                    paused=paused,
                    pause_reason=agent["status"] if paused else "",
                    in_call=device == DEVICE_OF_STATE["In a queue call"],
                    calls_taken=_number(agent.get("calls_answered")),
                )
            )
        for member in waiting:
            joined = _number(member.get("joined_epoch"))
            wait = max(int(at.timestamp()) - joined, 0) if joined else 0
            callers.append(
                CallerReported(
                    at=at,
                    queue=name,
                    uniqueid=member["session_uuid"],
                    linkedid=member["session_uuid"],
                    channel="",
                    caller_number=member.get("cid_number", ""),
                    caller_name=member.get("cid_name", ""),
                    position=0,
                    wait_seconds=wait,
                )
            )
    channels = channel_uuids(answers.channels)
    state = PresentState(queues, members, callers, channels | {c.uniqueid for c in callers})
    waiting_now = {caller.uniqueid: caller.queue for caller in callers}
    return state, Roster(tiers, statuses, waiting_now)


def _number(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


__all__ = ["FreeswitchAnswers", "Roster", "ask_freeswitch", "read_answers", "table_rows"]
