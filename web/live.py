"""``WS /api/v1/live``: the statistics snapshot on connect, then every change as it is published.

One subscription per bus channel serves every viewer.

Each change is framed once (``text_frame``) and the same bytes are written straight to every
viewer's connection: with 2,000 viewers and 20 changes a second, waking a task per viewer and
framing each message again was most of the bridge process's CPU, and that CPU was the time its
database thread waited for Python's GIL while it held SQLite's write lock, which routing (in the
other process) then waited on. A viewer whose connection buffers more than ``VIEWER_BUFFER_BYTES``
unread is disconnected rather than allowed to grow memory; its page reconnects and starts again
from a fresh snapshot.

A viewer's login is checked again every ``recheck_seconds`` while the socket is open: a logout,
a new password or role, or a removed user closes it within that time. One hub task checks every
open socket on the same beat (their session checks share one query).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from infra.bus import Bus
from web.auth import current_user, same_origin, still_signed_in
from web.users import HEARS_EVERY_CALL, User

log = logging.getLogger(__name__)

VIEWER_BUFFER_BYTES = 512 * 1024  # about 250 board changes unread: the viewer is gone or stuck
RECHECK_SECONDS = 5.0
# A change goes to every viewer in one burst of writes, and on loopback each write also runs
# the reader's side of TCP: 2,000 viewers held a core for about 10 ms. The routing process may be
# waiting for that core, so the burst gives it away every so many writes (routes beside 2,000
# viewers, benchmarks/route_beside_web.py: p95 7.3-7.7 ms without, 5.6-6.9 ms with; p99
# 10.5-12.8 ms without, 8.7-10.3 ms with).
YIELD_EVERY_WRITES = 100
CHANNELS = ("stats", "calls")
# Messages of these channels are about one agent's call: an agent sees only their own.
PER_AGENT_CHANNELS = frozenset({"calls"})


@dataclass(frozen=True, slots=True)
class Outgoing:
    text: str
    agent: str | None  # set for a message only that agent (and supervisors) may see
    text_for_agents: str | None = None  # the same without other people's callers, if different


def text_frame(text: str) -> bytes:
    """``text`` as one unmasked WebSocket text frame (RFC 6455, 5.2), as a server sends it."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        head = bytes((0x81, size))
    elif size < 1 << 16:
        head = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return head + payload


@dataclass(slots=True)
class Viewer:
    """One open socket. Until its snapshot is sent, changes wait in ``held`` (so none is lost
    or sent before the snapshot); then they go straight to its connection."""

    request: web.Request
    user: User
    socket: web.WebSocketResponse
    sees_calls: bool
    ended: asyncio.Future[int | None]  # the close code to send, None for a plain close
    held: list[bytes] | None = field(default_factory=list)
    held_bytes: int = 0

    def frame_for(self, message: Framed) -> bytes | None:
        if self.sees_calls:
            return message.frame
        if message.agent not in (None, self.user.agent_interface):
            return None
        return message.frame_for_agents or message.frame


@dataclass(frozen=True, slots=True)
class Framed:
    frame: bytes
    agent: str | None
    frame_for_agents: bytes | None

    @classmethod
    def of(cls, message: Outgoing) -> Framed:
        hidden = message.text_for_agents
        return cls(
            text_frame(message.text), message.agent, None if hidden is None else text_frame(hidden)
        )


SESSION_ENDED = 1008  # the close code of a socket whose login ended


def without_callers(message: dict[str, Any]) -> dict[str, Any]:
    """A statistics message as agents get it: the board without whom each agent is talking to
    (an agent sees only their own calls; their own caller reaches them as ``call.ringing``)."""
    agents = message.get("agents")
    if not isinstance(agents, dict) or not any(
        isinstance(entry, dict) and entry.get("caller") for entry in agents.values()
    ):
        return message
    hidden = {
        name: {**entry, "caller": None} if isinstance(entry, dict) else entry
        for name, entry in agents.items()
    }
    return {**message, "agents": hidden}


class LiveHub:
    def __init__(
        self,
        bus: Bus,
        snapshot: Callable[[], Awaitable[dict[str, Any] | None]],
        *,
        recheck_seconds: float = RECHECK_SECONDS,
        buffer_bytes: int = VIEWER_BUFFER_BYTES,
    ) -> None:
        self.bus = bus
        self.snapshot = snapshot
        self.recheck_seconds = recheck_seconds
        self.buffer_bytes = buffer_bytes
        self._viewers: dict[int, Viewer] = {}
        self._loading: asyncio.Future[dict[str, Any] | None] | None = None
        self.counters = {
            "viewers": 0,
            "sent": 0,
            "dropped_slow_viewers": 0,
            "snapshot_loads": 0,
            "snapshot_failures": 0,
            "closed_ended_sessions": 0,
        }

    async def _snapshot_once(self) -> dict[str, Any] | None:
        """One load serves every viewer connecting meanwhile: when all panels reconnect at once
        (a restart), the bus sees one request, not hundreds (Redis' pool holds 100)."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(self.snapshot())
            self.counters["snapshot_loads"] += 1
            self._loading.add_done_callback(lambda _: setattr(self, "_loading", None))
        return await asyncio.shield(self._loading)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/live", self.live, name="live")
        app.cleanup_ctx.append(self._subscriptions)

    async def _subscriptions(self, app: web.Application) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(self._forward(channel), name=f"live-{channel}")
            for channel in CHANNELS
        ]
        tasks.append(asyncio.create_task(self._recheck_viewers(), name="live-recheck"))
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for key in list(self._viewers):
            self._end(key, None)

    async def _recheck_viewers(self) -> None:
        """On every beat, whether each open socket's viewer is still signed in as they were."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(self._next_beat(loop.time()) - loop.time(), 0.0))
            viewers = list(self._viewers.items())
            still = await asyncio.gather(
                *(self._still_viewer(viewer.request, viewer.user) for _, viewer in viewers)
            )
            for (key, _viewer), signed_in in zip(viewers, still, strict=True):
                if not signed_in:
                    self._end(key, SESSION_ENDED)

    def _end(self, key: int, code: int | None) -> None:
        """Send nothing more to this viewer; its handler closes the socket with ``code``."""
        viewer = self._viewers.pop(key, None)
        if viewer is not None and not viewer.ended.done():
            viewer.ended.set_result(code)
        self.counters["viewers"] = len(self._viewers)

    async def _forward(self, channel: str) -> None:
        while True:
            try:
                async for message in self.bus.subscribe(channel):
                    text = json.dumps(message, ensure_ascii=False, default=str)
                    agent, for_agents = None, None
                    if channel in PER_AGENT_CHANNELS:  # "" (nobody's call): supervisors only
                        agent = str(message.get("agent") or "")
                    elif (hidden := without_callers(message)) is not message:
                        for_agents = json.dumps(hidden, ensure_ascii=False, default=str)
                    self.broadcast(Outgoing(text, agent, for_agents))
            except Exception as error:  # the bus went away: resubscribe after a pause
                log.warning("live %s subscription lost: %s", channel, error)
            await asyncio.sleep(1.0)

    def broadcast(self, message: Outgoing) -> None:
        """The same frame bytes to every viewer allowed to see them, without waiting on any."""
        framed = Framed.of(message)
        for count, (key, viewer) in enumerate(list(self._viewers.items()), 1):
            if count % YIELD_EVERY_WRITES == 0:
                os.sched_yield()
            frame = viewer.frame_for(framed)
            if frame is None:
                continue
            if viewer.held is not None:
                viewer.held.append(frame)
                viewer.held_bytes += len(frame)
                if viewer.held_bytes > self.buffer_bytes:  # its snapshot is that late
                    self.counters["dropped_slow_viewers"] += 1
                    self._end(key, None)
                continue
            self._write(key, viewer, frame)

    def _write(self, key: int, viewer: Viewer, frame: bytes) -> None:
        transport = viewer.request.transport
        if transport is None or transport.is_closing() or viewer.socket.closed:
            self._end(key, None)
            return
        if transport.get_write_buffer_size() > self.buffer_bytes:
            self.counters["dropped_slow_viewers"] += 1
            self._end(key, None)
            return
        transport.write(frame)
        self.counters["sent"] += 1

    async def live(self, request: web.Request) -> web.StreamResponse:
        user = current_user(request)
        if not same_origin(request):
            refused = web.Response(status=403, text="cross-site WebSocket refused")
            refused.force_close()  # the upgrade is not done: nothing more on this connection
            return refused
        # No permessage-deflate, though every browser offers it: each change would be deflated
        # once per viewer (2,000 times), and the deltas are small JSON on the office network.
        # The hub writes its own frames, uncompressed, to every viewer.
        socket = web.WebSocketResponse(heartbeat=20, compress=False)
        await socket.prepare(request)
        ended: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        viewer = Viewer(request, user, socket, user.role in HEARS_EVERY_CALL, ended)
        key = id(viewer)
        self._viewers[key] = viewer
        self.counters["viewers"] = len(self._viewers)
        reader = asyncio.create_task(self._read_until_closed(socket, key))
        try:
            try:
                snapshot = await self._snapshot_once()
            except Exception as error:  # the bus is away: say so; the page reconnects
                self.counters["snapshot_failures"] += 1
                log.warning("live snapshot could not be loaded: %s", error)
                await socket.close(code=1011, message=b"statistics unavailable")
                return socket
            first = {"type": "snapshot", "role": user.role.value, **(snapshot or {})}
            if not viewer.sees_calls:
                first = without_callers(first)
            await socket.send_str(json.dumps(first, ensure_ascii=False, default=str))
            held, viewer.held = viewer.held or [], None
            for frame in held:
                if key not in self._viewers:
                    break
                self._write(key, viewer, frame)
            code = await ended
            if code == SESSION_ENDED:
                self.counters["closed_ended_sessions"] += 1
                await socket.close(code=SESSION_ENDED, message=b"session ended")
        finally:
            reader.cancel()
            self._end(key, None)
            await socket.close()
        return socket

    def _next_beat(self, now: float) -> float:
        """Every socket rechecks on the same beat, so their checks share one query."""
        return (now // self.recheck_seconds + 1) * self.recheck_seconds

    @staticmethod
    async def _still_viewer(request: web.Request, user: User) -> bool:
        """Whether the socket's viewer is still logged in as who they were when it opened. A
        database that cannot answer right now keeps the socket: the next check will ask again."""
        try:
            now = await still_signed_in(request)
        except Exception as error:
            log.warning("live viewer's session could not be checked: %s", error)
            return True
        return now == user

    async def _read_until_closed(self, socket: web.WebSocketResponse, key: int) -> None:
        """The page sends nothing that matters; when it goes away, so does its viewer."""
        async for message in socket:
            if message.type == WSMsgType.ERROR:
                break
        self._end(key, None)
