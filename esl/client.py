"""The live inbound Event Socket shell: one session with FreeSWITCH's mod_event_socket, kept up.

Our own small client over ``esl.codec`` rather than a library: the bytes of a live connection
and of a recorded transcript go through the very same decoder, each event reaches the pure
core synchronously and in wire order (no task per event), and the limits (frame size, action
deadlines, watchdog) are ours to set.

- ``auth``, then ``event plain`` for the events the bridge uses; then ``on_login`` (the resync).
- Replies come in the order commands were sent (the protocol has no ids but bgapi's
  ``Job-UUID``): ``api`` and plain commands wait in a FIFO, ``bgapi`` by its Job-UUID.
- Every command has a deadline; one asked while disconnected fails at once.
- Each event goes to the sink inside its own ``try``: one failing handler never drops the
  connection or the rest of the TCP chunk.
- Reconnects back off exponentially up to a ceiling, forever; a refused password is retried the
  same way. FreeSWITCH sends HEARTBEAT every 20 s: a connection silent for longer than
  ``silence_timeout`` gets an ``api status`` with a deadline, and is dropped without an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from esl.codec import EslEvent, EslFrame, EslFrameDecoder, EslProtocolError, parse_event
from pbx.link import PbxLink

log = logging.getLogger(__name__)

# What the bridge subscribes to: mod_callcenter's events, the member channels' hang-ups, the
# results of background jobs, and the heartbeat the watchdog listens for.
BRIDGE_EVENTS = (
    "CHANNEL_HANGUP_COMPLETE",
    "BACKGROUND_JOB",
    "HEARTBEAT",
    "RECORD_STOP",
    "CUSTOM",
    "callcenter::info",
)
READ_CHUNK = 64 * 1024
MAX_EARLY_RESULTS = 64


class EslNotConnected(ConnectionError):
    """A command was asked while no authenticated session exists."""


class EslCommandFailed(RuntimeError):
    """FreeSWITCH answered a command with ``-ERR``."""


class EslCommandTimeout(TimeoutError):
    """FreeSWITCH did not answer a command before its deadline."""


EventSink = Callable[[EslEvent], None]


def _reply_text(frame: EslFrame) -> str:
    """What a reply says: ``Reply-Text`` of a command/reply, the body of an api/response."""
    if frame.content_type == "api/response":
        return frame.body.decode("utf-8", errors="replace")
    return frame.headers.get("Reply-Text", "")


def _check_command(command: str) -> None:
    if not command or any(ch in command for ch in "\r\n"):
        raise ValueError(f"an Event Socket command must be one line: {command[:40]!r}")


class EslClient(PbxLink):
    """One inbound Event Socket session kept alive for the life of the service."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        password: str,
        sink: EventSink,
        events: tuple[str, ...] = BRIDGE_EVENTS,
        command_timeout: float = 5.0,
        max_backoff: float = 30.0,
        silence_timeout: float = 45.0,
    ) -> None:
        super().__init__(f"Event Socket session with {host}:{port}", max_backoff=max_backoff)
        self._host, self._port, self._password = host, port, password
        self._sink = sink
        self._events = events
        self._command_timeout = command_timeout
        self._silence_timeout = silence_timeout
        self._writer: asyncio.StreamWriter | None = None
        # Each command's reply, in order; with it, what to do the moment it is read (before the
        # frames after it in the same TCP chunk): the subscription's reply starts the resync.
        self._replies: deque[tuple[asyncio.Future[EslFrame], Callable[[EslFrame], None] | None]]
        self._replies = deque()
        self._jobs: dict[str, asyncio.Future[EslEvent]] = {}
        # Results that came before their bgapi's reply was read (same TCP chunk): kept a while.
        self._early_results: OrderedDict[str, EslEvent] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._last_heard = time.monotonic()
        self.counters: dict[str, int] = {"events": 0, "sink_errors": 0, "protocol_errors": 0}

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin connecting; returns at once. FreeSWITCH may come up later: we keep trying."""
        if self.running:
            return
        self.running = True
        self._task = asyncio.create_task(self._run(), name="esl-session")

    async def close(self) -> None:
        self.running = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.note_down("closed")

    async def _run(self) -> None:
        while self.running:
            try:
                await self._session()
            except (OSError, EslProtocolError, EslCommandFailed, TimeoutError) as error:
                self.note_down(f"{type(error).__name__}: {error}")
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a bug here must not end the connector for good
                log.exception("Event Socket session failed")
                self.note_down(f"{type(error).__name__}: {error}")
            else:
                self.note_down("connection closed")
            if not self.running:
                return
            pause = self.next_backoff()
            log.warning(
                "Event Socket at %s:%s: %s; retrying in %.1f s",
                self._host,
                self._port,
                self.last_problem,
                pause,
            )
            await asyncio.sleep(pause)

    async def _session(self) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self._host, self._port), self._command_timeout
        )
        self._writer = writer
        decoder = EslFrameDecoder()
        greeting = self._expect_reply()  # before reading: the greeting may come at once
        reading = asyncio.create_task(self._read(reader, decoder), name="esl-reader")
        watching: asyncio.Task[None] | None = None
        try:
            login = asyncio.create_task(self._log_in(greeting), name="esl-login")
            done, _ = await asyncio.wait({login, reading}, return_when=asyncio.FIRST_COMPLETED)
            if login not in done:
                login.cancel()
                raise ConnectionError("closed during login")
            login.result()
            watching = asyncio.create_task(self._watch(), name="esl-watchdog")
            await reading
        finally:
            for task in (reading, watching):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            self._writer = None
            writer.close()
            self._fail_waiting(EslNotConnected("the Event Socket session ended"))

    async def _log_in(self, greeting: asyncio.Future[EslFrame]) -> None:
        await asyncio.wait_for(greeting, self._command_timeout)
        if greeting.result().content_type != "auth/request":
            raise EslProtocolError("no auth/request from FreeSWITCH")
        answer = await self._command(f"auth {self._password}")
        if not answer.startswith("+OK"):
            raise EslCommandFailed(f"password refused ({answer.strip()})")
        answer = await self._command(
            "event plain " + " ".join(self._events), at_once=self._subscribed
        )
        if not answer.startswith("+OK"):
            raise EslCommandFailed(f"subscription refused ({answer.strip()})")

    def _subscribed(self, reply: EslFrame) -> None:
        """Up as soon as the subscription is read: the events behind it in the same chunk
        already belong to the new session, so the resync must begin before them."""
        if _reply_text(reply).startswith("+OK"):
            self.note_up()

    async def _read(self, reader: asyncio.StreamReader, decoder: EslFrameDecoder) -> None:
        while chunk := await reader.read(READ_CHUNK):
            self._last_heard = time.monotonic()
            try:
                frames = list(decoder.feed(chunk))
            except EslProtocolError:
                self.counters["protocol_errors"] += 1
                raise
            for frame in frames:
                self._dispatch(frame)

    def _dispatch(self, frame: EslFrame) -> None:
        kind = frame.content_type
        if kind == "text/event-plain":
            try:
                event = parse_event(frame.body)
            except EslProtocolError as error:
                self.counters["protocol_errors"] += 1
                log.warning("ignored an unreadable Event Socket event: %s", error)
                return
            self._deliver(event)
        elif kind == "text/disconnect-notice":
            log.warning("FreeSWITCH ends the session: %s", frame.body[:80].decode(errors="replace"))
        elif self._replies:
            waiting, at_once = self._replies.popleft()
            if not waiting.done():
                waiting.set_result(frame)
            if at_once is not None:
                at_once(frame)
        else:
            log.debug("an Event Socket reply nobody waits for: %s", kind)

    def _deliver(self, event: EslEvent) -> None:
        self.counters["events"] += 1
        if event.name == "BACKGROUND_JOB":
            job = self._jobs.pop(event.get("Job-UUID"), None)
            if job is not None and not job.done():
                job.set_result(event)
            elif job is None:
                self._early_results[event.get("Job-UUID")] = event
                while len(self._early_results) > MAX_EARLY_RESULTS:
                    self._early_results.popitem(last=False)
        try:
            self._sink(event)
        except Exception:
            self.counters["sink_errors"] += 1
            log.exception("Event Socket event %s failed in its handler; others go on", event.name)

    async def _watch(self) -> None:
        """A connection silent past ``silence_timeout`` must answer ``api status`` in time."""
        while True:
            await asyncio.sleep(min(5.0, self._silence_timeout / 3))
            if time.monotonic() - self._last_heard < self._silence_timeout:
                continue
            try:
                await self.api("status")
            except (EslCommandTimeout, EslNotConnected, EslCommandFailed) as error:
                log.warning("Event Socket watchdog: %s; dropping the session to reconnect", error)
                writer = self._writer
                if writer is not None:
                    writer.transport.abort()
                return

    # -- waiting commands ----------------------------------------------------------------------

    def _fail_waiting(self, error: Exception) -> None:
        waiting: list[asyncio.Future[Any]] = [future for future, _ in self._replies]
        waiting += self._jobs.values()
        for future in waiting:
            if not future.done():
                future.set_exception(error)
        self._replies.clear()
        self._jobs.clear()

    # -- commands --------------------------------------------------------------------------------

    def _expect_reply(
        self, at_once: Callable[[EslFrame], None] | None = None
    ) -> asyncio.Future[EslFrame]:
        future: asyncio.Future[EslFrame] = asyncio.get_running_loop().create_future()
        self._replies.append((future, at_once))
        return future

    async def _command(
        self,
        command: str,
        timeout: float | None = None,
        at_once: Callable[[EslFrame], None] | None = None,
    ) -> str:
        _check_command(command)
        writer = self._writer
        if writer is None:
            raise EslNotConnected(f"the Event Socket is down ({self.last_problem})")
        reply = self._expect_reply(at_once)
        writer.write(command.encode() + b"\n\n")
        try:
            frame = await asyncio.wait_for(asyncio.shield(reply), timeout or self._command_timeout)
        except TimeoutError:
            # Its reply may still come: it must be taken off the FIFO in its turn, not matched
            # to the next command. The session is no longer trustworthy: drop it.
            writer.transport.abort()
            raise EslCommandTimeout(f"{command.split(' ', 1)[0]} got no answer in time") from None
        return _reply_text(frame)

    async def api(self, command: str, *, timeout: float | None = None) -> str:
        """``api <command>``: its whole answer; ``-ERR ...`` raises ``EslCommandFailed``."""
        if not self.connected:
            raise EslNotConnected(f"the Event Socket is down ({self.last_problem})")
        answer = await self._command(f"api {command}", timeout)
        if answer.startswith("-ERR"):
            raise EslCommandFailed(f"{command.split(' ', 1)[0]}: {answer.strip()}")
        return answer

    async def bgapi(self, command: str, *, timeout: float | None = None) -> str:
        """``bgapi <command>``: its result, from the BACKGROUND_JOB event with its Job-UUID."""
        if not self.connected:
            raise EslNotConnected(f"the Event Socket is down ({self.last_problem})")
        deadline = timeout or self._command_timeout
        started = time.monotonic()
        accepted = await self._command(f"bgapi {command}", deadline)
        if not accepted.startswith("+OK"):
            raise EslCommandFailed(f"bgapi {command.split(' ', 1)[0]}: {accepted.strip()}")
        job_uuid = accepted.rsplit(" ", 1)[-1].strip()
        job: asyncio.Future[EslEvent] = asyncio.get_running_loop().create_future()
        early = self._early_results.pop(job_uuid, None)
        if early is not None:
            job.set_result(early)
        else:
            self._jobs[job_uuid] = job
        try:
            left = max(deadline - (time.monotonic() - started), 0.001)
            event = await asyncio.wait_for(job, left)
        except TimeoutError:
            name = command.split(" ", 1)[0]
            raise EslCommandTimeout(f"bgapi {name}: no result in time") from None
        finally:
            self._jobs.pop(job_uuid, None)
        answer = event.body.decode("utf-8", errors="replace")
        if answer.startswith("-ERR"):
            raise EslCommandFailed(f"{command.split(' ', 1)[0]}: {answer.strip()}")
        return answer
