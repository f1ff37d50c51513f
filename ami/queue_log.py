"""Asterisk's ``queue_log`` as the journal's second witness: the calls AMI could not show us.

AMI only speaks of the present. A call that joins a queue and ends while the bridge is away
(restarting, or its AMI session lost) leaves no event for it, so it would have no journal row,
no ticket signature and no callback. app_queue writes every queue call to ``queue_log`` on the
PBX host, with its own hold and talk seconds; after each login the bridge reads the lines since
its last known call and rebuilds the calls it has no row for. This module is the pure part
(lines in, :class:`CallRecord` out), the file reading, and ``AsteriskQueueLog``, the core's
``queue_stats.absence.AbsenceLog`` for Asterisk (the service runs it in a thread).

Line format (``queue_log = yes`` in logger.conf)::

    epoch|callid|queue|agent|EVENT|data1|data2|...

``callid`` is the caller channel's Uniqueid, the journal's key; ``agent`` is the member name
(``log_membername_as_agent = yes``). The events used, with their data fields as Asterisk 22
writes them: ``ENTERQUEUE`` url|callerid|position, ``CONNECT`` holdtime|member uniqueid|ringtime,
``COMPLETECALLER``/``COMPLETEAGENT`` holdtime|calltime|origposition, ``ABANDON``
position|origposition|waittime, ``EXITWITHTIMEOUT``/``EXITEMPTY`` position|origposition|waittime,
``EXITWITHKEY`` key|position|origposition|waittime, and the transfers, whose last three fields
are holdtime|calltime|origposition.

Our dialplan adds two lines of its own per call (asterisk-conf/extensions.conf):
``HOTLINECALL`` dialled|reason|ticket|caller|name before its Dial or Queue, and ``HOTLINEEND``
dialstatus|answeredtime|agent|cause|caller from a hangup handler. They give a rebuilt call what
Queue's lines lack, and rebuild the calls that never reached a queue: the preferred agent's
answered Dial, a hang-up while being routed. A log written before those lines existed gives the
queue calls only.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from ami.events import interface_of
from pbx.naming import PbxName
from queue_stats.absence import Recovery
from queue_stats.calls import CallOutcome, CallRecord
from survey.scale import NOT_RATED

SOURCE_QUEUE_LOG = "queue_log"
ROUTE_EVENT = "HOTLINECALL"
"""Our dialplan's line before a call's Dial or Queue: dialled|reason|ticket|caller|name."""
END_EVENT = "HOTLINEEND"
"""Our dialplan's hangup handler: dialstatus|answeredtime|agent|cause|caller."""
SURVEY_EVENT = "HOTLINESURVEY"
"""Our dialplan's survey step begins (the agent has left): talk (the preferred agent's Dial)."""
RATING_EVENT = "HOTLINERATING"
"""The survey's result: rating|key (a scale code or not_rated)."""
FIRST_EVENTS = frozenset({ROUTE_EVENT, "ENTERQUEUE", END_EVENT})
TIMEOUT_EXITS = frozenset({"EXITWITHTIMEOUT", "EXITEMPTY", "EXITWITHKEY"})
TRANSFERS = frozenset({"BLINDTRANSFER", "ATTENDEDTRANSFER"})
COMPLETIONS = frozenset({"COMPLETECALLER", "COMPLETEAGENT"}) | TRANSFERS


@dataclass(frozen=True, slots=True)
class QueueLogEntry:
    """One queue_log line."""

    time: int
    callid: str
    queue: str
    agent: str
    event: str
    data: tuple[str, ...] = ()

    def field(self, index: int) -> str:
        """``data1`` is ``field(1)``; a missing field is ``""``."""
        return self.data[index - 1] if 0 < index <= len(self.data) else ""

    def number(self, index: int) -> int:
        """``field(index)`` as an integer; empty or garbage counts as 0."""
        try:
            return int(self.field(index))
        except ValueError:
            return 0

    def from_end(self, back: int) -> int:
        """The field ``back`` places before the last one (transfers have a variable middle)."""
        try:
            return int(self.data[-1 - back])
        except (IndexError, ValueError):
            return 0


def parse_line(line: str) -> QueueLogEntry | None:
    """One line (with or without its newline); ``None`` if it is not a queue_log line."""
    parts = line.rstrip("\r\n").split("|")
    if len(parts) < 5 or not parts[0].isdigit() or not parts[4]:
        return None
    return QueueLogEntry(int(parts[0]), parts[1], parts[2], parts[3], parts[4], tuple(parts[5:]))


def recover_calls(
    entries: Iterable[QueueLogEntry],
    *,
    since: datetime,
    skip: Container[str] = frozenset(),
    partial: Mapping[str, CallRecord] | None = None,
    agent_interfaces: Mapping[str, str] | None = None,
) -> Recovery:
    """The calls that began at or after ``since`` and ended, rebuilt from their lines.

    ``skip`` holds the calls the bridge has already journalled or is still following live.
    ``partial`` holds calls the bridge saw begin but not end (the tracker closed them at the
    resync): they keep what AMI told (channel, dialled number, ticket, routing) and take the
    rest from queue_log. ``agent_interfaces`` maps member names to interfaces (``PJSIP/…``).
    """
    partial = partial or {}
    interfaces = agent_interfaces or {}
    floor = int(since.timestamp())
    lines: dict[str, list[QueueLogEntry]] = {}
    for entry in entries:
        if entry.callid == "NONE" or (entry.callid in skip and entry.callid not in partial):
            continue
        known = lines.get(entry.callid)
        if known is None:
            if entry.event not in FIRST_EVENTS or (
                entry.time < floor and entry.callid not in partial
            ):
                continue  # calls are taken whole, from their first line in the window
            known = lines[entry.callid] = []
        known.append(entry)
    calls: list[CallRecord] = []
    going: set[str] = set()
    for callid, call_lines in lines.items():
        call = _rebuild(callid, call_lines, partial.get(callid), interfaces)
        if call is None:
            going.add(callid)
        else:
            calls.append(call)
    calls.sort(key=lambda call: (call.started_at, call.uniqueid))
    return Recovery(calls, frozenset(going))


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _seconds(start: datetime, end: datetime) -> int:
    return max(0, round((end - start).total_seconds()))


def _created_at(callid: str, fallback: int) -> datetime:
    """A Uniqueid begins with the channel's creation time in epoch seconds."""
    head = callid.partition(".")[0]
    return _at(int(head)) if head.isdigit() else _at(fallback)


def _rebuild(
    callid: str,
    call_lines: list[QueueLogEntry],
    seen: CallRecord | None,
    interfaces: Mapping[str, str],
) -> CallRecord | None:
    """One call from its lines, in order; ``None`` while it has not ended."""
    fields: dict[str, object] = {}
    route = next((entry for entry in call_lines if entry.event == ROUTE_EVENT), None)
    end = next((entry for entry in reversed(call_lines) if entry.event == END_EVENT), None)
    caller = ""
    if route is not None:  # the dialplan's own line: what Queue's lines do not say
        caller = route.field(4)
        fields.update(
            dialled_number=route.field(1),
            routing_reason=route.field(2) or None,
            ticket=route.field(3) or None,
            caller_name="|".join(route.data[4:]),
        )
    queued = left_queue = False
    for entry in call_lines:
        event = entry.event
        if event == "ENTERQUEUE":
            caller = caller or entry.field(2)
            fields.update(
                queue=entry.queue,
                entered_queue_at=fields.get("entered_queue_at") or _at(entry.time),
                left_queue_at=None,
                outcome=None,
            )
            queued, left_queue = True, False
        elif event == "CONNECT":
            fields.update(
                outcome=CallOutcome.ANSWERED,
                queue=entry.queue,
                left_queue_at=_at(entry.time),
                answered_at=_at(entry.time),
                hold_seconds=entry.number(1),
                agent_name=entry.agent,
                agent_interface=interfaces.get(entry.agent),
            )
        elif event in COMPLETIONS and fields.get("outcome") is CallOutcome.ANSWERED:
            talk = entry.from_end(1) if event in TRANSFERS else entry.number(2)
            fields.update(talk_seconds=talk, ended_at=_at(entry.time))
            left_queue = True
        elif event == "ABANDON" or event in TIMEOUT_EXITS:
            # The wait is the last field of each. A timed-out caller left the queue alive: the
            # channel's own end is the HOTLINEEND line.
            fields.update(
                outcome=CallOutcome.ABANDONED if event == "ABANDON" else CallOutcome.TIMEOUT,
                left_queue_at=_at(entry.time),
                ended_at=_at(entry.time),
                hold_seconds=entry.from_end(0),
            )
            left_queue = True
    survey = next((entry for entry in call_lines if entry.event == SURVEY_EVENT), None)
    rating = next((entry for entry in call_lines if entry.event == RATING_EVENT), None)
    if rating is not None:
        fields.update(
            rating=rating.field(1) or NOT_RATED,
            rating_key=rating.field(2) or None,
            rated_at=_at(rating.time),
        )
    first = call_lines[0]
    started = _at(route.time) if route is not None else _at(first.time)
    if end is not None:
        caller = caller or end.field(5)
        _end_of_channel(fields, end, started, queued, interfaces, survey)
    elif not (queued and left_queue):
        return None
    if seen is not None:
        kept = {name: value for name, value in fields.items() if getattr(seen, name) is None}
        kept["outcome"] = fields["outcome"]
        return replace(seen, **kept)  # type: ignore[arg-type]
    fields.setdefault("caller_name", "")
    fields.setdefault("dialled_number", "")
    if route is None and not queued:
        started = _created_at(callid, first.time)  # hung up while being routed
    return CallRecord(
        uniqueid=callid,
        linkedid=callid,
        channel="",
        caller_number=caller,
        started_at=started,
        source=SOURCE_QUEUE_LOG,
        **fields,  # type: ignore[arg-type]
    )


def _end_of_channel(
    fields: dict[str, object],
    end: QueueLogEntry,
    started: datetime,
    queued: bool,
    interfaces: Mapping[str, str],
    survey: QueueLogEntry | None = None,
) -> None:
    """What the HOTLINEEND line (dialstatus|answeredtime|agent|cause|caller) adds to a call;
    ``survey``: the HOTLINESURVEY line, where the talk ended if the caller stayed to rate."""
    ended = _at(end.time)
    fields.update(ended_at=ended, hangup_cause=end.number(4) or None)
    if queued:
        outcome = fields.get("outcome")
        if outcome is None:  # hung up in the queue with no ABANDON line
            entered = cast(datetime, fields["entered_queue_at"])
            fields.update(
                outcome=CallOutcome.ABANDONED,
                left_queue_at=ended,
                hold_seconds=_seconds(entered, ended),
            )
        elif outcome is CallOutcome.ANSWERED and fields.get("talk_seconds") is None:
            fields["talk_seconds"] = _seconds(cast(datetime, fields["answered_at"]), ended)
        return
    if end.field(1) != "ANSWER":
        fields["outcome"] = CallOutcome.HUNG_UP_BEFORE_QUEUE
        return
    # The preferred agent's own Dial answered: ANSWEREDTIME is the talk.
    talk = end.number(2)
    talk_ended = survey.time if survey is not None else end.time
    answered = _at(talk_ended - talk)
    interface = interface_of(end.field(3)) or None
    names = {value: name for name, value in interfaces.items()}
    fields.update(
        outcome=CallOutcome.ANSWERED,
        answered_at=answered,
        talk_seconds=talk,
        hold_seconds=_seconds(started, answered),
        agent_interface=interface,
        agent_name=names.get(interface) if interface else None,
    )


def queue_log_files(path: Path, modified_since: float) -> list[Path]:
    """``path`` and its rotated copies (``logger rotate``: ``queue_log.0``, ``queue_log.1``,
    or a timestamp suffix) written to at or after ``modified_since``, oldest first."""
    candidates = [path, *path.parent.glob(path.name + ".*")]
    found = []
    for candidate in candidates:
        try:
            stat = candidate.stat()
        except FileNotFoundError:
            continue
        if candidate.is_file() and stat.st_mtime >= modified_since:
            found.append((stat.st_mtime, candidate))
    return [candidate for _, candidate in sorted(found)]


def read_entries(path: Path, since: datetime) -> list[QueueLogEntry]:
    """Every line of ``path`` and its rotated copies from ``since`` on, in time order.

    Blocking file I/O: the service calls it in a thread. Lines that are not queue_log lines
    (a torn last line while Asterisk writes) are skipped. A missing ``path`` is an error: a
    running Asterisk always has it (it reopens a new one when rotating), so the setting is wrong.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no queue_log at {path}")
    floor = int(since.timestamp())
    entries = []
    for file in queue_log_files(path, floor):
        with file.open(encoding="utf-8", errors="replace", newline="") as lines:
            for line in lines:
                entry = parse_line(line)
                if entry is not None and entry.time >= floor:
                    entries.append(entry)
    entries.sort(key=lambda entry: entry.time)  # stable: a file's own order is kept
    return entries


class AsteriskQueueLog:
    """``queue_stats.absence.AbsenceLog`` on Asterisk's ``queue_log`` file (and its rotations).
    With ``pbx``, each call's id is named as the live facts' are (``pbx.naming``)."""

    def __init__(self, path: Path, pbx: PbxName | None = None) -> None:
        self.path = path
        self.pbx = pbx

    def recover(
        self,
        since: datetime,
        *,
        skip: Container[str],
        partial: Mapping[str, CallRecord],
        agent_interfaces: Mapping[str, str],
        only: Container[str] | None = None,
    ) -> Recovery:
        entries = read_entries(self.path, since)
        if self.pbx is not None:
            named = self.pbx.call_id
            entries = [
                entry if entry.callid == "NONE" else replace(entry, callid=named(entry.callid))
                for entry in entries
            ]
        if only is not None:
            entries = [entry for entry in entries if entry.callid in only]
        return recover_calls(
            entries, since=since, skip=skip, partial=partial, agent_interfaces=agent_interfaces
        )
