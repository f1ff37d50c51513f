"""``WS /api/v1/live``: the statistics snapshot on connect, then every change as it is published.

One subscription per bus channel serves every viewer: the hub copies each message into the
viewers' own bounded queues. A viewer that falls behind is disconnected rather than allowed to
slow the others; its page reconnects and starts again from a fresh snapshot.

A viewer's login is checked again every ``recheck_seconds`` while the socket is open: a logout,
a new password or role, or a removed user closes it within that time. One hub task checks every
open socket on the same beat (their session checks share one query), and each viewer only waits
on its own queue: with 2,000 viewers and 20 changes a second, a timer or a task per message and
viewer was most of the web side's CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from hotline.bus import Bus
from web.auth import current_user, same_origin, still_signed_in
from web.users import HEARS_EVERY_CALL, User

log = logging.getLogger(__name__)

VIEWER_QUEUE = 256
RECHECK_SECONDS = 5.0
CHANNELS = ("stats", "calls")
# Messages of these channels are about one agent's call: an agent sees only their own.
PER_AGENT_CHANNELS = frozenset({"calls"})


@dataclass(frozen=True, slots=True)
class Outgoing:
    text: str
    agent: str | None  # set for a message only that agent (and supervisors) may see
    text_for_agents: str | None = None  # the same without other people's callers, if different


# What a viewer's queue may hold besides messages: None ends the socket (the hub stops, the
# viewer fell behind, the browser left); SESSION_ENDED ends it with 1008 "session ended".
SESSION_ENDED = Outgoing("", None)


@dataclass(frozen=True, slots=True)
class Viewer:
    request: web.Request
    user: User


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
    ) -> None:
        self.bus = bus
        self.snapshot = snapshot
        self.recheck_seconds = recheck_seconds
        self._viewers: dict[asyncio.Queue[Outgoing | None], Viewer] = {}
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
        for queue in list(self._viewers):
            self._end(queue, None)

    async def _recheck_viewers(self) -> None:
        """On every beat, whether each open socket's viewer is still signed in as they were."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(self._next_beat(loop.time()) - loop.time(), 0.0))
            viewers = list(self._viewers.items())
            still = await asyncio.gather(
                *(self._still_viewer(viewer.request, viewer.user) for _, viewer in viewers)
            )
            for (queue, _viewer), signed_in in zip(viewers, still, strict=True):
                if not signed_in and queue in self._viewers:
                    self._end(queue, SESSION_ENDED)

    def _end(self, queue: asyncio.Queue[Outgoing | None], last: Outgoing | None) -> None:
        """Make ``last`` the next thing the viewer reads, and take it off the broadcast list."""
        self._viewers.pop(queue, None)
        with contextlib.suppress(asyncio.QueueEmpty):
            while queue.full():
                queue.get_nowait()
        queue.put_nowait(last)

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
        for queue in list(self._viewers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self.counters["dropped_slow_viewers"] += 1
                self._end(queue, None)

    async def live(self, request: web.Request) -> web.StreamResponse:
        user = current_user(request)
        if not same_origin(request):
            refused = web.Response(status=403, text="cross-site WebSocket refused")
            refused.force_close()  # the upgrade is not done: nothing more on this connection
            return refused
        # No permessage-deflate, though every browser offers it: each change would be deflated
        # once per viewer (2,000 times), and the deltas are small JSON on the office network.
        socket = web.WebSocketResponse(heartbeat=20, compress=False)
        await socket.prepare(request)
        queue: asyncio.Queue[Outgoing | None] = asyncio.Queue(VIEWER_QUEUE)
        self._viewers[queue] = Viewer(request, user)
        self.counters["viewers"] = len(self._viewers)
        reader: asyncio.Task[None] | None = None
        try:
            try:
                snapshot = await self._snapshot_once()
            except Exception as error:  # the bus is away: say so; the page reconnects
                self.counters["snapshot_failures"] += 1
                log.warning("live snapshot could not be loaded: %s", error)
                await socket.close(code=1011, message=b"statistics unavailable")
                return socket
            sees_calls = user.role in HEARS_EVERY_CALL
            first = {"type": "snapshot", "role": user.role.value, **(snapshot or {})}
            if not sees_calls:
                first = without_callers(first)
            await socket.send_str(json.dumps(first, ensure_ascii=False, default=str))
            reader = asyncio.create_task(self._read_until_closed(socket, queue))
            while (message := await queue.get()) is not None:
                if message is SESSION_ENDED:
                    self.counters["closed_ended_sessions"] += 1
                    await socket.close(code=1008, message=b"session ended")
                    break
                if sees_calls or message.agent in (None, user.agent_interface):
                    if not sees_calls and message.text_for_agents is not None:
                        await socket.send_str(message.text_for_agents)
                    else:
                        await socket.send_str(message.text)
                    self.counters["sent"] += 1
        finally:
            if reader is not None:
                reader.cancel()
            self._viewers.pop(queue, None)
            self.counters["viewers"] = len(self._viewers)
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

    async def _read_until_closed(
        self, socket: web.WebSocketResponse, queue: asyncio.Queue[Outgoing | None]
    ) -> None:
        """The page sends nothing that matters; when it goes away, so does its viewer."""
        async for message in socket:
            if message.type == WSMsgType.ERROR:
                break
        self._end(queue, None)
