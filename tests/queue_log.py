"""Asterisk's own ``queue_log``, reduced to counts that replay statistics can be checked against.

Pure: lines in, a :class:`QueueLogStats` out; no I/O except :func:`read_queue_log` and
:func:`service_levels` (both take a path).

Line format (``queue_log = yes`` in logger.conf, written by app_queue)::

    epoch|callid|queue|agent|EVENT|data1|data2|data3...

``callid`` is the caller channel's Uniqueid (``NONE`` for member events such as PAUSE),
``queue`` is ``NONE`` for events not tied to one queue (QUEUESTART, PAUSEALL), ``agent`` is
the member name (``log_membername_as_agent = yes``: "Agent One") or ``NONE``.

Events and their data fields, as Asterisk 22 writes them (observed in the recorded logs
under ``tests/fixtures/*.queue_log``; names as in Asterisk's "Queue Logs" documentation):

``ENTERQUEUE``       url | callerid | position.  The caller joined the queue (offered call).
``CONNECT``          holdtime | member channel uniqueid | ringtime.  An agent answered;
                     holdtime = seconds in the queue, ringtime = seconds the answering
                     member rang.
``COMPLETECALLER``   holdtime | calltime | origposition.  The caller hung up after a connect.
``COMPLETEAGENT``    holdtime | calltime | origposition.  The agent hung up after a connect.
``ABANDON``          position | origposition | waittime.  The caller hung up while waiting.
``EXITWITHTIMEOUT``  position | origposition | waittime.  The queue's timeout (the Queue()
                     timeout argument, ``HOTLINE_MAX_WAIT``) ran out.
``EXITEMPTY``        position | origposition | waittime.  Left because the queue had no
                     usable members (``leavewhenempty``; off in this project).
``EXITWITHKEY``      key | position | origposition | waittime.  Left by a DTMF key.
``RINGNOANSWER``     ringtime in milliseconds.  A member rang and did not answer.
``RINGCANCELED``     ringtime in milliseconds.  A member's ringing was cancelled (the caller
                     left or another member answered).
``BLINDTRANSFER``    extension | context | holdtime | calltime | origposition.
``ATTENDEDTRANSFER`` method | data... | holdtime | calltime | origposition (variable).
``PAUSE``            reason.  A member was paused in this queue (``PAUSEALL`` with queue
                     ``NONE`` is logged once more when no queue was named).
``UNPAUSE``          reason.  Likewise ``UNPAUSEALL``.
``ADDMEMBER``        (empty, or ``PAUSED`` when added paused).  Dynamic member added.
``REMOVEMEMBER``     (empty).  Dynamic member removed.
``QUEUESTART``       (empty), queue ``NONE``: app_queue was loaded.
``AGENTDUMP``, ``SYSCOMPAT``, ``CONFIGRELOAD``: counted in :attr:`QueueLogStats.events` only.

Asterisk's own counters (QueueStatus ``QueueParams``) for comparison, as observed in the
recorded runs: ``Completed`` counts calls that connected and ended (CONNECT), *except* a call
whose member was removed (QueueRemove) while it was still talking; ``Abandoned`` counts
ABANDON *and* EXITWITHTIMEOUT (app_queue's ``record_abandoned()`` runs for both; EXITEMPTY
presumably too); ``ServicelevelPerf`` = answered within SL / answered, ``ServicelevelPerf2``
= (answered within SL + "abandoned" within SL) / (answered + "abandoned").  QueueMember
``CallsTaken`` is per agent over *all* queues (``shared_lastcall = yes``), not per queue.
On AMI a timed-out caller gets ``QueueCallerAbandon`` too, so only queue_log tells the two
apart.  RINGNOANSWER is also logged when the queue timeout cuts a ring short (ringtime <
the member's 8 s); a ring ended by the caller's hang-up is RINGCANCELED.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ami.queue_log import QueueLogEntry, parse_line

DEFAULT_SERVICE_LEVEL = 20  # asterisk-conf/queues.conf: servicelevel = 20 for every queue

UNANSWERED_EXITS = ("ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY", "EXITWITHKEY")


@dataclass(slots=True)
class QueueCounts:
    """Counts for one queue."""

    offered: int = 0  # ENTERQUEUE
    answered: int = 0  # CONNECT
    abandoned: int = 0  # ABANDON
    timed_out: int = 0  # EXITWITHTIMEOUT
    exited_empty: int = 0  # EXITEMPTY
    exited_with_key: int = 0  # EXITWITHKEY
    answered_within_sl: int = 0  # CONNECT holdtime <= service level
    unanswered_within_sl: int = 0  # ABANDON/EXIT* waittime <= service level
    hold_seconds_answered: int = 0  # sum of CONNECT holdtime
    wait_seconds_unanswered: int = 0  # sum of ABANDON/EXIT* waittime
    talk_seconds: int = 0  # sum of COMPLETE* calltime (+ transfers' calltime)
    completed_by_caller: int = 0  # COMPLETECALLER
    completed_by_agent: int = 0  # COMPLETEAGENT
    transferred: int = 0  # BLINDTRANSFER / ATTENDEDTRANSFER
    ring_no_answer: int = 0  # RINGNOANSWER

    @property
    def asterisk_abandoned(self) -> int:
        """What Asterisk's QueueParams ``Abandoned`` counts: every unanswered exit."""
        return self.abandoned + self.timed_out + self.exited_empty + self.exited_with_key

    def service_level_percent(self) -> float:
        """Like QueueParams ``ServicelevelPerf``: answered within SL / answered."""
        return 100.0 * self.answered_within_sl / self.answered if self.answered else 0.0

    def service_level2_percent(self) -> float:
        """Like QueueParams ``ServicelevelPerf2``: (answered + unanswered within SL) / both."""
        total = self.answered + self.asterisk_abandoned
        within = self.answered_within_sl + self.unanswered_within_sl
        return 100.0 * within / total if total else 0.0


@dataclass(slots=True)
class AgentCounts:
    """Counts for one agent (member name as logged), over all queues or in one queue."""

    answered: int = 0  # CONNECT
    ring_no_answer: int = 0  # RINGNOANSWER
    ring_no_answer_ms: int = 0  # sum of RINGNOANSWER ringtime
    completed: int = 0  # COMPLETECALLER + COMPLETEAGENT + transfers
    talk_seconds: int = 0  # sum of calltime


@dataclass(frozen=True, slots=True)
class PauseChange:
    """A PAUSE/UNPAUSE (one queue) or PAUSEALL/UNPAUSEALL (queue ``NONE``) line."""

    time: int
    queue: str
    agent: str
    paused: bool
    reason: str
    all_queues: bool


@dataclass(frozen=True, slots=True)
class MemberChange:
    """An ADDMEMBER/REMOVEMEMBER line."""

    time: int
    queue: str
    agent: str
    added: bool


@dataclass(slots=True)
class QueueLogStats:
    queues: dict[str, QueueCounts] = field(default_factory=dict)
    agents: dict[str, AgentCounts] = field(default_factory=dict)
    queue_agents: dict[tuple[str, str], AgentCounts] = field(default_factory=dict)
    pauses: list[PauseChange] = field(default_factory=list)
    members: list[MemberChange] = field(default_factory=list)
    events: Counter[tuple[str, str]] = field(default_factory=Counter)  # (queue, EVENT)
    ignored: list[str] = field(default_factory=list)  # lines that are not queue_log lines

    def queue(self, name: str) -> QueueCounts:
        return self.queues.setdefault(name, QueueCounts())

    def agent(self, name: str, queue: str | None = None) -> AgentCounts:
        if queue is None:
            return self.agents.setdefault(name, AgentCounts())
        return self.queue_agents.setdefault((queue, name), AgentCounts())

    def event_counts(self, queue: str) -> Counter[str]:
        return Counter({event: n for (q, event), n in self.events.items() if q == queue})


def _level(service_level: int | Mapping[str, int], queue: str) -> int:
    if isinstance(service_level, int):
        return service_level
    return service_level.get(queue, DEFAULT_SERVICE_LEVEL)


def summarize(
    lines: Iterable[str], service_level: int | Mapping[str, int] = DEFAULT_SERVICE_LEVEL
) -> QueueLogStats:
    """Count queue_log ``lines``; ``service_level`` in seconds, one for all or per queue."""
    stats = QueueLogStats()
    for line in lines:
        if not line.strip():
            continue
        entry = parse_line(line)
        if entry is None:
            stats.ignored.append(line)
            continue
        stats.events[(entry.queue, entry.event)] += 1
        _count(stats, entry, _level(service_level, entry.queue))
    return stats


def _count(stats: QueueLogStats, entry: QueueLogEntry, service_level: int) -> None:
    event = entry.event
    if event in ("PAUSE", "UNPAUSE", "PAUSEALL", "UNPAUSEALL"):
        stats.pauses.append(
            PauseChange(
                entry.time,
                entry.queue,
                entry.agent,
                paused=not event.startswith("UN"),
                reason=entry.field(1),
                all_queues=event.endswith("ALL"),
            )
        )
        return
    if event in ("ADDMEMBER", "REMOVEMEMBER"):
        stats.members.append(
            MemberChange(entry.time, entry.queue, entry.agent, event == "ADDMEMBER")
        )
        return
    if entry.queue == "NONE":
        return
    queue = stats.queue(entry.queue)
    agents = (stats.agent(entry.agent), stats.agent(entry.agent, entry.queue))
    if event == "ENTERQUEUE":
        queue.offered += 1
    elif event == "CONNECT":
        holdtime = entry.number(1)
        queue.answered += 1
        queue.hold_seconds_answered += holdtime
        queue.answered_within_sl += holdtime <= service_level
        for agent in agents:
            agent.answered += 1
    elif event in ("COMPLETECALLER", "COMPLETEAGENT", "BLINDTRANSFER", "ATTENDEDTRANSFER"):
        # holdtime and calltime are the 3rd- and 2nd-last fields of transfers, 1 and 2 otherwise
        calltime = entry.number(2) if event.startswith("COMPLETE") else entry.from_end(1)
        queue.talk_seconds += calltime
        if event == "COMPLETECALLER":
            queue.completed_by_caller += 1
        elif event == "COMPLETEAGENT":
            queue.completed_by_agent += 1
        else:
            queue.transferred += 1
        for agent in agents:
            agent.completed += 1
            agent.talk_seconds += calltime
    elif event in UNANSWERED_EXITS:
        waittime = entry.number(4) if event == "EXITWITHKEY" else entry.number(3)
        if event == "ABANDON":
            queue.abandoned += 1
        elif event == "EXITWITHTIMEOUT":
            queue.timed_out += 1
        elif event == "EXITEMPTY":
            queue.exited_empty += 1
        else:
            queue.exited_with_key += 1
        queue.wait_seconds_unanswered += waittime
        queue.unanswered_within_sl += waittime <= service_level
    elif event == "RINGNOANSWER":
        queue.ring_no_answer += 1
        for agent in agents:
            agent.ring_no_answer += 1
            agent.ring_no_answer_ms += entry.number(1)


def read_queue_log(
    path: Path, service_level: int | Mapping[str, int] = DEFAULT_SERVICE_LEVEL
) -> QueueLogStats:
    return summarize(path.read_text(encoding="utf-8", errors="replace").splitlines(), service_level)


_SECTION = re.compile(r"^\[([^\]]+)\](?:\(([^)]*)\))?")


def service_levels(queues_conf: Path) -> dict[str, int]:
    """``servicelevel`` of every queue in a queues.conf, templates (``[x](!)``) resolved."""
    sections: dict[str, dict[str, str]] = {}
    parents: dict[str, list[str]] = {}
    templates: set[str] = set()
    current: str | None = None
    for raw in queues_conf.read_text(encoding="utf-8").splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        match = _SECTION.match(line)
        if match:
            current = match.group(1).strip()
            options = [o.strip() for o in (match.group(2) or "").split(",") if o.strip()]
            if "!" in options:
                templates.add(current)
            parents[current] = [o for o in options if o not in ("!", "+")]
            sections.setdefault(current, {})
            continue
        key, sep, value = line.partition("=")
        if current is not None and sep:
            sections[current][key.strip().rstrip(">").strip()] = value.strip()

    def lookup(section: str, key: str) -> str | None:
        if key in sections.get(section, {}):
            return sections[section][key]
        for parent in parents.get(section, []):
            found = lookup(parent, key)
            if found is not None:
                return found
        return None

    levels = {}
    for name in sections:
        if name == "general" or name in templates:
            continue
        value = lookup(name, "servicelevel")
        levels[name] = int(value) if value and value.isdigit() else 0
    return levels
