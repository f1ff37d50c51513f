"""A guard on the web port: deadlines for request headers and caps on open connections.

Anyone who can reach the port can open TCP connections and send nothing, or drip header bytes
(slowloris), and keep them open; enough of them use up the process's file descriptors, and then
FastAGI routing, ``/healthz`` and recording ingest fail with "Too many open files". aiohttp times
a connection only while it waits for a whole request, and by default for an hour.

``GuardedSite`` listens in place of ``web.TCPSite`` and wraps aiohttp's protocol factory, so each
accepted connection is watched from its first moment:

* its request headers must be in within ``header_timeout`` seconds of connecting, or of the first
  byte of the next request after a response; after a response it may stay idle (nothing sent)
  ``idle_timeout`` seconds. Once a request's headers are in, nothing is timed until its handler
  returns: a WebSocket or a long recording download lives as long as its handler does.
* it takes a place under two caps, per client address (per /64 for IPv6, which an attacker gets
  whole) and in total; a connection over a cap is closed at once, counted and, at most every
  ``LOG_EVERY_SECONDS``, logged. When the total is reached, the connection that has waited
  longest without a request under way (connected or idle, no headers yet) is closed to make
  room, so a flood of idle connections cannot keep a monitor or a supervisor out until the
  header deadline clears it; only when every connection is busy with a request is the newcomer
  refused.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import resource
import time
from collections import Counter
from dataclasses import dataclass
from typing import cast

from aiohttp import web

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 10.0
# The web side keeps at most this share of the process's descriptors; the rest is for FastAGI
# (a descriptor per call being routed), the database pool, Redis, AMI, recording files and logs.
FD_SHARE = 0.5
COUNTER_NAMES = (
    "open",
    "accepted",
    "refused_per_address",
    "refused_total",
    "closed_header_timeout",
    "closed_idle_timeout",
    "evicted_for_room",
    "anomalies",
)


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client, and all of them together, may hold on the web port.

    The defaults are the ``HOTLINE_WEB_*`` settings' defaults. A total of 4096 serves a
    1,500-seat centre (a live socket per agent desk, a keep-alive connection or two beside it) and
    is held under half the process's descriptor limit at start (``hotline run`` first raises its
    soft limit to the hard one), so the database and files always keep the other half.
    """

    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    per_address: int = 128
    total: int = 4096

    def __post_init__(self) -> None:
        for name in ("header_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0 seconds, got {getattr(self, name)}")
        for name in ("per_address", "total"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def fd_budget(total: int, soft_limit: int) -> int:
    """``total``, or less when it would let the web side take over ``FD_SHARE`` of the
    descriptors (``soft_limit`` < 0 is RLIM_INFINITY: no limit to respect)."""
    if soft_limit < 0:
        return total
    return max(1, min(total, int(soft_limit * FD_SHARE)))


def address_key(peername: object) -> str:
    """The client a cap counts a connection against: its IP address, or its /64 for IPv6."""
    host = peername[0] if isinstance(peername, tuple) and peername else peername
    text = str(host or "")
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Phase(enum.Enum):
    HEADERS = "headers"  # waiting for a request's headers: header_timeout runs
    REQUEST = "request"  # a handler is running (a download, a WebSocket): not timed
    IDLE = "idle"  # a response was given, nothing of the next request yet: idle_timeout runs
    CLOSED = "closed"


class Event(enum.Enum):
    BYTES = "bytes"
    REQUEST_STARTED = "request started"
    REQUEST_ENDED = "request ended"


# Every possible transition; anything else is a counted anomaly that leaves the phase alone.
TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (Phase.HEADERS, Event.BYTES): Phase.HEADERS,  # the deadline set on entering stays
    (Phase.HEADERS, Event.REQUEST_STARTED): Phase.REQUEST,
    (Phase.REQUEST, Event.BYTES): Phase.REQUEST,  # a body, WebSocket frames, a pipelined request
    (Phase.REQUEST, Event.REQUEST_ENDED): Phase.IDLE,
    (Phase.IDLE, Event.BYTES): Phase.HEADERS,
    (Phase.IDLE, Event.REQUEST_STARTED): Phase.REQUEST,  # pipelined: its headers were in already
}


class _CapLog:
    """One warning line at most every ``LOG_EVERY_SECONDS`` however fast connections are refused;
    it says how many were refused since the previous line."""

    def __init__(self, every: float = LOG_EVERY_SECONDS) -> None:
        self.every = every
        self._next_at = 0.0
        self._unlogged: Counter[str] = Counter()

    def refused(self, cap: str, address: str, open_now: int) -> None:
        self._unlogged[cap] += 1
        now = time.monotonic()
        if now < self._next_at:
            return
        self._next_at = now + self.every
        refused = ", ".join(f"{count} over the {name}" for name, count in self._unlogged.items())
        self._unlogged.clear()
        log.warning(
            "web connections refused: %s (latest from %s; %d open)", refused, address, open_now
        )


class _Guard:
    """The bookkeeping shared by one site's connections: caps, counters, handler lookups."""

    def __init__(
        self, server: web.Server, limits: ConnectionLimits, counters: Counter[str]
    ) -> None:
        self.server = server
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.counters = counters
        self.per_address: Counter[str] = Counter()
        self.by_handler: dict[web.RequestHandler, GuardedConnection] = {}
        # Connections with no request under way, the longest waiting first: evicted for room.
        self.waiting: dict[GuardedConnection, None] = {}
        self.cap_log = _CapLog()

    def protocol(self) -> GuardedConnection:
        """The protocol factory ``loop.create_server`` calls for each accepted connection."""
        return GuardedConnection(self)

    def admit(self, address: str) -> str | None:
        """The cap that refuses a new connection from ``address``, or None if it may stay."""
        if self.per_address[address] >= self.limits.per_address:
            return "per_address"
        if self.counters["open"] >= self.limits.total and not self._evict_longest_waiting():
            return "total"
        self.counters["open"] += 1
        self.counters["accepted"] += 1
        self.per_address[address] += 1
        return None

    def _evict_longest_waiting(self) -> bool:
        """Close the connection that has waited longest without a request; False if none."""
        for connection in self.waiting:
            connection.evict()
            self.counters["evicted_for_room"] += 1
            return True
        return False

    def release(self, address: str) -> None:
        self.counters["open"] -= 1
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]

    def refuse(self, cap: str, address: str) -> None:
        self.counters[f"refused_{cap}"] += 1
        self.cap_log.refused(f"{cap.replace('_', '-')} cap", address, self.counters["open"])


class GuardedConnection(asyncio.Protocol):
    """Stands between the transport and aiohttp's own protocol for one connection.

    aiohttp's protocol is made only once the connection is admitted, and gets every callback
    unchanged; this one times the phases in ``TRANSITIONS`` and closes the connection when the
    phase's deadline passes.
    """

    def __init__(self, guard: _Guard) -> None:
        self.guard = guard
        self.phase = Phase.HEADERS
        self.address = ""
        self.transport: asyncio.Transport | None = None
        self.handler: web.RequestHandler | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._buffered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (asyncio's, or uvloop's, which is not an asyncio.Transport subclass).
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.address = address_key(transport.get_extra_info("peername"))
        cap = self.guard.admit(self.address)
        if cap is not None:
            self.phase = Phase.CLOSED
            self.guard.refuse(cap, self.address)
            transport.abort()
            return
        self._arm(self.guard.limits.header_timeout)
        self.guard.waiting[self] = None
        self.handler = self.guard.server()  # aiohttp's RequestHandler for this connection
        self.guard.by_handler[self.handler] = self
        self.handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handler is None:  # refused: aiohttp never saw it
            return
        if self.phase is not Phase.CLOSED:
            self._close_books()
        self.guard.by_handler.pop(self.handler, None)
        self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.handler is None:
            return
        if self.phase is Phase.IDLE:
            self.happened(Event.BYTES)
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler is not None else None

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def _close_books(self) -> None:
        """Give back this connection's place under the caps (once; it is closed or closing)."""
        self.phase = Phase.CLOSED
        self._disarm()
        self.guard.waiting.pop(self, None)
        self.guard.release(self.address)

    def evict(self) -> None:
        """Closed for a newcomer's room: its place is free at once, before the close is done."""
        self._close_books()
        if self.transport is not None:
            self.transport.abort()

    def happened(self, event: Event) -> None:
        """Move to the next phase; entering a timed phase starts its clock."""
        if self.phase is Phase.CLOSED:
            return
        following = TRANSITIONS.get((self.phase, event))
        if following is None:
            self.guard.counters["anomalies"] += 1
            log.warning("web guard: %s while in phase %s", event.value, self.phase.value)
            return
        if following is self.phase:
            return
        self.phase = following
        if following is Phase.REQUEST:
            self.guard.waiting.pop(self, None)
        else:  # waiting again, and now the newest to wait
            self.guard.waiting.pop(self, None)
            self.guard.waiting[self] = None
        if following is Phase.HEADERS:
            self._arm(self.guard.limits.header_timeout)
        elif following is Phase.IDLE:
            self._buffered = -1
            self._arm(self.guard.limits.idle_timeout)
        else:
            self._disarm()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.guard.loop.call_later(seconds, self._deadline_passed)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadline_passed(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or self.phase is Phase.CLOSED:
            return
        if self.phase is Phase.HEADERS:
            self.guard.counters["closed_header_timeout"] += 1
            transport.abort()
        elif self.phase is Phase.IDLE:
            # A Response is written after its handler returns: while a slow reader still takes
            # it in, the clock starts again. One that took nothing for a whole period is cut
            # off: close() would wait for it to take the rest, holding the descriptor.
            buffered = transport.get_write_buffer_size()
            if buffered and buffered != self._buffered:
                self._buffered = buffered
                self._arm(self.guard.limits.idle_timeout)
                return
            self.guard.counters["closed_idle_timeout"] += 1
            if buffered:
                transport.abort()
            else:
                transport.close()


def _watch_requests(server: web.Server, guard: _Guard) -> None:
    """Tell each guarded connection when a handler starts (its headers are all in) and ends.

    The one place that reaches into aiohttp beyond its documented API: ``web.Server`` keeps the
    application's handler in ``request_handler``, and each ``RequestHandler`` takes it from there
    when it is made. The guard's connections make theirs after this runs, so all of them call
    the wrapper; connections of other sites pass straight through.
    """
    handle = getattr(server, "request_handler", None)
    if not callable(handle):
        raise RuntimeError(
            "aiohttp's web.Server has no request_handler to wrap: this aiohttp version cannot "
            "be guarded; see web/guard.py"
        )

    async def watched(request: web.BaseRequest) -> web.StreamResponse:
        connection = guard.by_handler.get(request.protocol)
        if connection is None:
            return await handle(request)
        connection.happened(Event.REQUEST_STARTED)
        try:
            return await handle(request)
        finally:
            connection.happened(Event.REQUEST_ENDED)

    server.request_handler = watched


LISTEN_BACKLOG = 1024
"""Connections the kernel holds for accept. aiohttp's 128 overflows when a shift's viewers
reconnect at once: the overflow's handshakes are dropped and retried seconds later, so those
viewers wait, and the header deadline starts only when the guard finally sees them."""


class GuardedSite(web.BaseSite):
    """``web.TCPSite`` with the guard: registered with its runner like any site, so
    ``runner.cleanup()`` stops it too."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        limits: ConnectionLimits,
        *,
        backlog: int = LISTEN_BACKLOG,
    ) -> None:
        super().__init__(runner, backlog=backlog)  # refuses a runner not set up
        if runner.server is None:
            raise RuntimeError("call runner.setup() before making a site")
        self.web_server = runner.server
        self.backlog = backlog
        self.host = host
        self.requested_port = port
        self.limits = limits
        self.counters: Counter[str] = Counter(dict.fromkeys(COUNTER_NAMES, 0))
        self.listener: asyncio.Server | None = None
        self._stopped = False

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose when 0 was asked for)."""
        if self.listener is not None and self.listener.sockets:
            return int(self.listener.sockets[0].getsockname()[1])
        return self.requested_port

    async def start(self) -> None:
        await super().start()
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        total = fd_budget(self.limits.total, soft_limit)
        if total < self.limits.total:
            log.warning(
                "web: at most %d connections, not %d: the process may open %d files and the "
                "rest is for FastAGI and the database (raise the limit, e.g. LimitNOFILE=)",
                total,
                self.limits.total,
                soft_limit,
            )
            self.limits = ConnectionLimits(
                self.limits.header_timeout,
                self.limits.idle_timeout,
                min(self.limits.per_address, total),
                total,
            )
        guard = _Guard(self.web_server, self.limits, self.counters)
        _watch_requests(self.web_server, guard)
        loop = asyncio.get_running_loop()
        self.listener = await loop.create_server(
            guard.protocol, self.host, self.requested_port, backlog=self.backlog
        )
        # BaseSite.stop() and runner.addresses read the listener from this slot, which every
        # aiohttp site fills the same way.
        self._server = self.listener

    async def stop(self) -> None:
        """Stop listening. Open connections end with ``runner.cleanup()``, as with TCPSite."""
        if self._stopped:
            return
        self._stopped = True
        await super().stop()


async def start_guarded_site(
    runner: web.AppRunner, host: str, port: int, limits: ConnectionLimits
) -> GuardedSite:
    """Listen on ``host:port`` for ``runner``'s app with the guard; use in place of TCPSite."""
    site = GuardedSite(runner, host, port, limits)
    await site.start()
    return site
