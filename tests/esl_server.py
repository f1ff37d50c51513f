"""FreeSWITCH's side of a recorded inbound Event Socket session, served on a loopback socket.

It speaks as mod_event_socket did in the recording: the ``auth/request`` greeting, replies to
``auth`` and ``event plain``, the recorded events byte for byte in their recorded TCP chunks, and
``api``/``bgapi`` answers from the replies FreeSWITCH gave in that session (``queue-list`` of the
shared fixtures, verbatim; members waiting and channels up are answered as of the events sent so
far). Every epoch time is moved by whole days to today (``moved_to_today``), as a FreeSWITCH
running now would stamp it. ``cut_after`` closes the first connection after that many event
frames, so the client's reconnect and resync can be seen; the next connection goes on from the
next event.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from esl.codec import EslFrameDecoder, parse_event
from infra.config import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "esl"
PASSWORD = "FixtureEsl2026"


def recorded_event_frames(session: str) -> list[bytes]:
    """Each ``text/event-plain`` frame of the transcript, as the bytes FreeSWITCH sent (an event
    frame is always ``Content-Length`` then ``Content-Type``, then the body)."""
    data = gzip.decompress((FIXTURES / f"{session}.esl.gz").read_bytes())
    return [
        b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(frame.body), frame.body)
        for frame in EslFrameDecoder().feed(data)
        if frame.content_type == "text/event-plain"
    ]


# Epoch times in FreeSWITCH's events: microseconds, or whole seconds (mod_callcenter's own).
MICROSECOND_TIMES = re.compile(
    rb"^((?:Event-Date-Timestamp|variable_Event-Date-Timestamp|(?:Caller|Other-Leg)-[\w-]+-Time"
    rb"|variable_\w+_uepoch)): (\d+)$",
    re.MULTILINE,
)
SECOND_TIMES = re.compile(rb"^((?:CC-[\w-]+-Time|variable_\w+_epoch)): (\d+)$", re.MULTILINE)
RECORDING_ZONE = ZoneInfo(Settings.model_fields["timezone"].default)


def moved_to_today(frames: list[bytes], today: date | None = None) -> list[bytes]:
    """The frames with every epoch time moved by whole days to ``today`` (the centre's local
    date), as a FreeSWITCH running now would stamp them: the bridge counts a day's figures from
    local midnight, so a session recorded on another day would be counted in a past day.
    Whole days keep each time of day (the sessions do not cross midnight); 0 stays 0."""
    first = min(
        stamp
        for frame in frames
        if (stamp := parse_event(frame.split(b"\n\n", 1)[1]).timestamp_us) is not None
    )
    recorded_on = datetime.fromtimestamp(first / 1e6, RECORDING_ZONE).date()
    days = ((today or datetime.now(RECORDING_ZONE).date()) - recorded_on).days
    seconds = days * 86_400

    def moved(unit: int):  # type: ignore[no-untyped-def]
        def replace(match: re.Match[bytes]) -> bytes:
            value = int(match[2])
            return b"%s: %d" % (match[1], value + seconds * unit if value else 0)

        return replace

    shifted = []
    for frame in frames:
        body = frame.split(b"\n\n", 1)[1]
        body = SECOND_TIMES.sub(moved(1), MICROSECOND_TIMES.sub(moved(1_000_000), body))
        shifted.append(
            b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(body), body)
        )
    return shifted


MEMBERS_HEADER = (
    "queue|instance_id|uuid|session_uuid|cid_number|cid_name|system_epoch|joined_epoch|"
    "rejoined_epoch|bridge_epoch|abandoned_epoch|base_score|skill_score|serving_agent|"
    "serving_system|state|score"
)


def frame_effect(frame: bytes) -> tuple[str, ...] | None:
    """What a sent event changes in FreeSWITCH's lists: a member waiting or gone, a channel."""
    event = parse_event(frame.split(b"\n\n", 1)[1])
    action = event.get("CC-Action")
    if action == "member-queue-start":
        return (
            "join", event.get("CC-Queue"), event.get("CC-Member-UUID"),
            event.get("CC-Member-Session-UUID"), event.get("CC-Member-CID-Number"),
            event.get("CC-Member-CID-Name"), str((event.timestamp_us or 0) // 1_000_000),
        )  # fmt: skip
    if action in ("member-queue-end", "bridge-agent-start"):
        return ("leave", event.get("CC-Member-Session-UUID"))
    if event.name == "CHANNEL_CREATE":
        return ("create", event.get("Unique-ID"))
    if event.name == "CHANNEL_DESTROY":
        return ("destroy", event.get("Unique-ID"))
    return None


def recorded_api_replies(session: str) -> dict[str, str]:
    """``api`` command -> FreeSWITCH's answer at the end of the session (queue-list, verbatim)."""
    replies: dict[str, str] = {}
    command, lines = None, []
    for line in (FIXTURES / f"{session}.queue-list.txt").read_text().splitlines():
        if line.startswith("$ api "):
            if command is not None:
                replies[command] = "\n".join(lines).strip("\n") + "\n"
            command, lines = line[len("$ api ") :], []
        elif command is not None:
            lines.append(line)
    if command is not None:
        replies[command] = "\n".join(lines).strip("\n") + "\n"
    return replies


def reply(text: str) -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


def api_response(body: str) -> bytes:
    data = body.encode()
    return b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(data), data)


def background_job(job: str, command: str, body: str) -> bytes:
    data = body.encode()
    headers = (
        f"Event-Name: BACKGROUND_JOB\nJob-UUID: {job}\nJob-Command: {command}\n"
        f"Event-Date-Timestamp: 1796638840000000\nContent-Length: {len(data)}\n\n"
    ).encode()
    event = headers + data
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n%s" % (len(event), event)


@dataclass
class RecordedFreeswitch:
    session: str
    password: str = PASSWORD
    cut_after: int | None = None
    cut_not_before_commands: int = 0  # ...and not before this many commands came on it
    silent: bool = False  # accept and greet, then never answer a command (a hung FreeSWITCH)
    answer_only: int | None = None  # answer this many commands per connection, then none
    stream: bool = True  # send the recorded events once subscribed
    today: bool = True  # times moved to today, as a live FreeSWITCH would stamp them
    extra_replies: dict[str, str] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)  # per connection, as received
    port: int = 0
    _server: asyncio.AbstractServer | None = None
    _sent: int = 0

    async def __aenter__(self) -> RecordedFreeswitch:
        self._events = recorded_event_frames(self.session)
        if self.today:
            self._events = moved_to_today(self._events)
        self._effects = [frame_effect(frame) for frame in self._events]
        self._replies = {**recorded_api_replies(self.session), **self.extra_replies}
        self._waiting: dict[str, tuple[str, ...]] = {}  # session -> its join, while waiting
        self._channels: set[str] = set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def events_sent(self) -> int:
        return self._sent

    @property
    def all_sent(self) -> bool:
        return self._sent >= len(self._events)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received: list[str] = []
        self.commands.append(received)
        first_connection = len(self.commands) == 1
        streaming: asyncio.Task[None] | None = None
        writer.write(b"Content-Type: auth/request\n\n")
        try:
            while True:
                raw = await reader.readuntil(b"\n\n")
                command = raw.decode().strip()
                received.append(command)
                answered_enough = self.answer_only is not None and len(received) > self.answer_only
                if self.silent or answered_enough:
                    continue
                if command.startswith("auth "):
                    if command[5:] != self.password:
                        writer.write(reply("-ERR invalid"))
                        await writer.drain()
                        return
                    writer.write(reply("+OK accepted"))
                elif command.startswith("event plain"):
                    writer.write(reply("+OK event listener enabled plain"))
                    cut = self.cut_after if first_connection else None
                    # FreeSWITCH sends a session only the events it asked for: a session that
                    # asked for the heartbeat alone (a bridge's action link) gets no call events.
                    if self.stream and set(command.split()[2:]) - {"HEARTBEAT"}:
                        streaming = asyncio.create_task(self._stream(writer, cut, received))
                elif command.startswith("api "):
                    answer = self._now(command[4:]) or self._replies.get(command[4:])
                    writer.write(api_response(answer or f"-ERR {command[4:]} Command not found!\n"))
                elif command.startswith("bgapi "):
                    job = str(uuid.uuid4())
                    writer.write(
                        b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: %s\n"
                        b"Job-UUID: %s\n\n" % (job.encode(), job.encode())
                    )
                    answer = self._replies.get(command[6:], "-ERR Command not found!\n")
                    writer.write(background_job(job, command[6:].split(" ", 1)[0], answer))
                else:
                    writer.write(reply("-ERR command not found"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if streaming is not None:
                streaming.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await streaming
            writer.close()

    def _now(self, command: str) -> str | None:
        """Members waiting and channels up as of the events sent so far, in FreeSWITCH's form
        (the recorded lists are the session's end: a resync mid-session must see the middle)."""
        if command.startswith("callcenter_config queue list members "):
            queue = command.rsplit(" ", 1)[1]
            rows = [
                f"{q}|single_box|{member}|{session}|{number}|{name}|{joined}|{joined}|0|0|0|0|0"
                f"|||Waiting|0"
                for _, q, member, session, number, name, joined in self._waiting.values()
                if q == queue
            ]
            return "\n".join([MEMBERS_HEADER, *rows, "+OK"]) + "\n"
        if command.startswith(("callcenter_config agent set status ", "callcenter_config tier ")):
            return "+OK\n"  # as FreeSWITCH accepts a status or tier change
        if command == "show channels as json":
            rows = [{"uuid": uuid_} for uuid_ in sorted(self._channels)]
            listing = {"row_count": len(rows), **({"rows": rows} if rows else {})}
            return json.dumps(listing) + "\n"
        return None

    def _apply(self, effect: tuple[str, ...] | None) -> None:
        if effect is None:
            return
        kind, key = effect[0], effect[3] if effect[0] == "join" else effect[1]
        if kind == "join":
            self._waiting[key] = effect
        elif kind == "leave":
            self._waiting.pop(key, None)
        elif kind == "create":
            self._channels.add(key)
        else:
            self._channels.discard(key)

    async def _stream(
        self, writer: asyncio.StreamWriter, cut_after: int | None, received: list[str]
    ) -> None:
        """The recorded events from where the last connection stopped; ``cut_after`` frames
        into this connection it is dropped, as a FreeSWITCH restart or a lost link would."""
        count = 0
        while self._sent < len(self._events):
            if cut_after is not None and count == cut_after:
                while len(received) < self.cut_not_before_commands:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)  # a fake's patience: no event to wait on
                writer.close()  # what was written goes out first: no event is lost here
                return
            writer.write(self._events[self._sent])
            self._apply(self._effects[self._sent])
            self._sent += 1
            count += 1
            if count % 50 == 0:
                await writer.drain()
                await asyncio.sleep(0)
        await writer.drain()
