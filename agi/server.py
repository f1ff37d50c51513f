"""The FastAGI stream server: accepts Asterisk's connections and runs the handler of the route.

It exists because panoramisk's server spins on a client that connects and closes without headers
and pyst2's is Python 2 only. Every exchange (the header block, each command's reply) has a read
deadline, a peer that sends garbage or closes early is dropped quietly, and a failing handler
only ends its own connection; the dialplan then falls back to the default queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

from agi.codec import (
    MAX_LINE_BYTES,
    AgiProtocolError,
    AgiReply,
    AgiRequest,
    is_continued,
    mset_command,
    parse_reply,
    parse_request,
    set_variable_command,
)

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024
MAX_REPLY_LINES = 200  # a 520 usage text is ~20 lines; an endless one must not hold the session


class AgiHangup(ConnectionError):
    """The channel hung up (or the socket closed) while we were still talking to it."""


class AgiSession:
    """Commands to one channel over an open FastAGI connection."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, read_timeout: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._read_timeout = read_timeout

    def deadline(self, seconds: float | None = None) -> asyncio.Timeout:
        """One read deadline for a whole exchange (the header block, or one command's reply):
        one timer per exchange instead of one per line. ``seconds`` for a command that waits on
        purpose (a prompt and the caller's key) instead of the read timeout."""
        return asyncio.timeout(self._read_timeout if seconds is None else seconds)

    async def read_line(self) -> str:
        async with self.deadline():
            return await self.next_line()

    async def next_line(self) -> str:
        """One line, inside an exchange's ``deadline()``."""
        try:
            raw = await self._reader.readline()
        except (asyncio.LimitOverrunError, ValueError):
            raise AgiProtocolError("AGI line too long") from None
        if not raw:
            raise AgiHangup("peer closed the AGI connection")
        if not raw.endswith(b"\n"):
            raise AgiHangup("AGI connection closed in the middle of a line")
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")

    async def command(self, line: str, *, within: float | None = None) -> AgiReply:
        """Send one command and read its reply; ``within`` replaces the read timeout for a
        command that plays or listens (the reply comes when the prompt and the wait end)."""
        self._writer.write(line.encode("utf-8"))
        async with self.deadline(within):
            await self._writer.drain()
            reply_line = await self.next_line()
            if reply_line == "HANGUP":
                # Asterisk announces a hangup in-band, then still answers the command.
                reply_line = await self.next_line()
            continued = 0
            while is_continued(reply_line):
                continued += 1
                if continued > MAX_REPLY_LINES:
                    raise AgiProtocolError("AGI reply never ends")
                reply_line = await self.next_line()
        reply = parse_reply(reply_line)
        if reply.code == 511:
            raise AgiHangup("channel is gone")
        return reply

    async def set_variable(self, name: str, value: str) -> AgiReply:
        return await self.command(set_variable_command(name, value))

    async def set_variables(self, variables: Mapping[str, str]) -> None:
        """Every variable in one ``EXEC MSet`` when the values are plain (the usual case), else,
        or when Asterisk refuses MSet (``result=-2``: no such application), one ``SET VARIABLE``
        each."""
        command = mset_command(variables)
        if command is not None:
            reply = await self.command(command)
            if reply.code == 200 and not reply.result.startswith("-"):
                return
            log.warning("FastAGI: MSet refused (%s); setting the variables one by one", reply.text)
        for name, value in variables.items():
            await self.set_variable(name, value)


AgiHandler = Callable[[AgiRequest, AgiSession], Awaitable[None]]


class FastAgiServer:
    """``agi://HOST:PORT/<script>``: each script name maps to one handler in ``routes``."""

    def __init__(
        self,
        routes: Mapping[str, AgiHandler],
        *,
        host: str,
        port: int,
        read_timeout: float = 5.0,
        warm_up: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._routes = dict(routes)
        self._warm_up = warm_up
        self._host = host
        self._port = port
        self._read_timeout = read_timeout
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.counters: Counter[str] = Counter()

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Warm the handlers' resources up (so the first call does not pay for connecting to the
        database), then listen. A failed warm-up is logged: the routes fall back as usual."""
        if self._warm_up is not None:
            try:
                await self._warm_up()
            except Exception as error:
                log.warning("FastAGI warm-up failed (%s); first calls may fall back", error)
        self._server = await asyncio.start_server(
            self._accept,
            self._host,
            self._port,
            backlog=LISTEN_BACKLOG,
            limit=MAX_LINE_BYTES,
            reuse_address=True,
        )
        log.info("FastAGI listening on %s:%s", self._host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        self.counters["connections"] += 1
        session = AgiSession(reader, writer, self._read_timeout)
        try:
            request = await self._read_request(session)
            handler = self._routes.get(request.script)
            if handler is None:
                self.counters["unknown_route"] += 1
                log.warning("FastAGI: no route %r (channel %s)", request.script, request.channel)
                return
            await handler(request, session)
            self.counters["handled"] += 1
        except ConnectionError as error:  # AgiHangup, or a reset/broken pipe from the peer
            self.counters["hangups"] += 1
            log.debug("FastAGI peer went away: %s", error)
        except AgiProtocolError as error:
            self.counters["protocol_errors"] += 1
            log.warning("FastAGI: dropped a peer that is not speaking AGI: %s", error)
        except TimeoutError:
            self.counters["timeouts"] += 1
            log.warning("FastAGI: peer was silent past %.1f s", self._read_timeout)
        except Exception:
            self.counters["handler_errors"] += 1
            log.exception("FastAGI handler failed; the dialplan falls back to the default queue")
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _read_request(self, session: AgiSession) -> AgiRequest:
        lines: list[str] = []
        async with session.deadline():  # Asterisk sends the whole block at once
            while True:
                line = await session.next_line()
                if line == "":
                    return parse_request(lines)
                lines.append(line)
                if len(lines) > 128:
                    raise AgiProtocolError("AGI request header block is too long")
