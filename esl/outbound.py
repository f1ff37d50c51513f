"""Routing on FreeSWITCH: the bridge serves the outbound event socket (``socket ... async full``).

FreeSWITCH connects for each call; the bridge answers with the same decision FastAGI gives on
Asterisk (``ivr_bypass.budget.BudgetedRouter``) and sets the same ``HOTLINE_*`` variables.

The recorded sessions show why this needs care: a router that closes before ``connect`` left the
caller parked in silence until they hung up; one that never spoke, 25 s and then the same. The
dialplan in ``freeswitch-conf/`` makes both impossible, whatever the router does: it sets
``socket_resume=true`` before ``socket`` (a closed socket goes on in the dialplan within 60 ms)
and schedules a transfer to the queue 2 to 3.5 s later (a router that accepts and never
speaks), cancelled once ``socket`` returns; after it, an empty or unknown ``HOTLINE_QUEUE``
becomes the default queue. Tried on FreeSWITCH 1.11.1 built for the purpose: a refused
connection queued the call at once, one closed at once in 0.06 s, a silent one in 2.5 s.

So this side must never send ``resume``: it sets ``socket_resume`` again, and a router that
finishes after the guard has moved the call on would then drop a call already in its queue
(seen on that FreeSWITCH). It sends ``connect`` first, the moment the connection is accepted;
when the channel is no longer in ``socket`` (the guard fired) only ``exit``; otherwise the
decision within its budget, one ``sendmsg`` running ``multiset`` with the variables (values
checked: FreeSWITCH splits the argument on the delimiter), then ``exit``. The whole exchange has
a deadline of 1.5 s, inside the guard's 2 s; past it, or on any error, the socket is closed and
the dialplan's default applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter
from collections.abc import Mapping
from urllib.parse import unquote

from esl.codec import EslFrame, EslFrameDecoder, EslProtocolError
from ivr_bypass.budget import BudgetedRouter
from ivr_bypass.decision import IncomingCall, RoutingDecision

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
# Seconds for the whole exchange (the decision's budget is within it): before the dialplan's
# guard, which fires 2.0 to 3.5 s after ``socket`` starts.
CONNECTION_DEADLINE = 1.5
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.@/+:-]{0,128}")


def channel_data(frame: EslFrame) -> dict[str, str]:
    """The channel's headers from the reply to ``connect``: URL-encoded values, decoded."""
    return {
        name: unquote(value, encoding="utf-8", errors="replace")
        for name, value in frame.headers.items()
    }


def incoming_call(data: Mapping[str, str]) -> IncomingCall:
    """The call as routing sees it, from FreeSWITCH's channel data."""
    uniqueid = data.get("Unique-ID") or data.get("Channel-Unique-ID", "")
    if not uniqueid:
        raise EslProtocolError("the connect reply carries no Unique-ID")

    def first(*names: str) -> str:
        return next((data[name] for name in names if data.get(name)), "")

    return IncomingCall(
        caller_number=first("Caller-Caller-ID-Number", "Channel-Caller-ID-Number"),
        dialled_number=first("Caller-Destination-Number", "Channel-Destination-Number"),
        uniqueid=uniqueid,
        caller_name=first("Caller-Caller-ID-Name", "Channel-Caller-ID-Name"),
    )


def multiset_command(variables: Mapping[str, str]) -> bytes:
    """One ``sendmsg`` that sets every variable; a value FreeSWITCH could misread is refused."""
    pairs = []
    for name, value in variables.items():
        if not _SAFE_VALUE.fullmatch(value):
            raise ValueError(f"{name} value not safe for FreeSWITCH: {value[:40]!r}")
        pairs.append(f"{name}={value}")
    return (
        "sendmsg\ncall-command: execute\nexecute-app-name: multiset\n"
        f"execute-app-arg: ^^|{'|'.join(pairs)}\nevent-lock: true\n\n"
    ).encode()


class _Conversation:
    """One outbound connection: commands out, replies in, in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._decoder = EslFrameDecoder()
        self._frames: list[EslFrame] = []

    async def reply(self) -> EslFrame:
        """The next reply (``command/reply``); events and notices in between are skipped."""
        while True:
            while self._frames:
                frame = self._frames.pop(0)
                if frame.content_type == "command/reply":
                    return frame
            chunk = await self._reader.read(READ_CHUNK)
            if not chunk:
                raise ConnectionError("FreeSWITCH closed the socket")
            self._frames.extend(self._decoder.feed(chunk))

    async def ask(self, command: bytes) -> EslFrame:
        self._writer.write(command)
        return await self.reply()


class OutboundRouter:
    """The outbound socket server: ``start`` listens, ``close`` stops."""

    def __init__(
        self,
        router: BudgetedRouter,
        *,
        host: str = "127.0.0.1",
        port: int = 8084,
        deadline: float = CONNECTION_DEADLINE,
    ) -> None:
        self._router = router
        self.host, self.port = host, port
        self._deadline = deadline
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.counters: Counter[str] = Counter()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("FreeSWITCH outbound socket router on %s:%s", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        self.counters["connections"] += 1
        # First, before anything can fail: FreeSWITCH waits for connect (25 s, then parks).
        writer.write(b"connect\n\n")
        try:
            async with asyncio.timeout(self._deadline):
                await self._converse(_Conversation(reader, writer))
        except (TimeoutError, ConnectionError, EslProtocolError, ValueError) as error:
            self.counters["failed_connections"] += 1
            log.warning("FreeSWITCH socket ended early (%s); the dialplan's defaults apply", error)
        except Exception:
            self.counters["failed_connections"] += 1
            log.exception("FreeSWITCH socket failed; the dialplan's defaults apply")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    async def _converse(self, talk: _Conversation) -> None:
        connected = await talk.reply()
        data = channel_data(connected)
        if not data.get("Reply-Text", "").startswith("+OK"):
            raise EslProtocolError(f"connect refused: {data.get('Reply-Text', '')[:60]!r}")
        application = data.get("variable_current_application", "socket")
        if application != "socket":  # the dialplan's guard moved the call on: leave it alone
            self.counters["too_late"] += 1
            await talk.ask(b"exit\n\n")
            return
        decision: RoutingDecision = await self._router.route(incoming_call(data))
        set_reply = await talk.ask(multiset_command(decision.channel_variables()))
        if not set_reply.headers.get("Reply-Text", "").startswith("+OK"):
            raise EslProtocolError(f"multiset refused: {set_reply.headers.get('Reply-Text')!r}")
        self.counters["routed"] += 1
        await talk.ask(b"exit\n\n")
