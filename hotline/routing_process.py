"""FastAGI routing in a process of its own, started and watched over by ``hotline run``.

Why: a call's route must never wait on the web side. In one process, 2,000 panel viewers (or a
flood on the web port) share the event loop and the GIL with FastAGI, and routes went late enough
to fall back to the default queue. In its own process, routing has a loop, a GIL and file
descriptors that nothing on the web port can take.

The two processes talk over one Unix socket pair, a JSON object per line:

- parent to child: ``{"free_agents": [...]}`` whenever the set of idle agents changes (routing
  prefers a ticket's owner only while that agent is free);
- child to parent: ``{"listening": port}`` once FastAGI accepts calls, ``{"routed": uniqueid,
  "decision": {...}}`` for each call it routed (the journal links the call to its ticket), and
  ``{"counters": {...}}`` every second for ``/healthz`` and ``/metrics``.

The child exits when the link closes, so it never outlives its parent. If the child dies, the
parent starts another after a short back-off; meanwhile the dialplan's own fallback queues calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from hotline.priority import ChildLauncher
from ivr_bypass.decision import RoutingDecision, RoutingReason

log = logging.getLogger(__name__)

FREE_AGENTS_POLL_SECONDS = 0.2
COUNTERS_EVERY_SECONDS = 1.0
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
MAX_RESTART_BACKOFF_SECONDS = 10.0
MAX_LINK_LINE_BYTES = 1 << 20


class ChildProcess(Protocol):
    """The child as ``RoutingProcess`` uses it: an asyncio subprocess or a ``LaunchedChild``."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def send_signal(self, signal_number: int) -> None: ...

    def kill(self) -> None: ...

    async def wait(self) -> int: ...


class RoutingLinkError(ValueError):
    """A line on the routing link that is not one of the messages above."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def decision_to_json(decision: RoutingDecision) -> dict[str, Any]:
    return {**asdict(decision), "reason": decision.reason.value}


def decision_from_json(fields: dict[str, Any]) -> RoutingDecision:
    try:
        return RoutingDecision(**{**fields, "reason": RoutingReason(fields["reason"])})
    except (KeyError, TypeError, ValueError) as error:
        raise RoutingLinkError(f"not a routing decision: {error}") from None


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:
        raise RoutingLinkError("a routing link line that is not JSON") from None
    if not isinstance(message, dict):
        raise RoutingLinkError("a routing link line that is not a JSON object")
    return message


class RoutingProcess:
    """The parent's side: spawns ``hotline agi --link-fd N`` and keeps it running.

    ``free_agents`` is read every 200 ms and sent when it changed; ``on_routed`` gets each
    decision the child made. ``counters`` and ``routing_counters`` mirror the child's.
    """

    def __init__(
        self,
        *,
        free_agents: Callable[[], frozenset[str]],
        on_routed: Callable[[str, RoutingDecision], None],
        routing_counters: Counter[str],
        port: int,
        config_path: Path | None = None,
        command: list[str] | None = None,
        launcher: ChildLauncher | None = None,
    ) -> None:
        self._free_agents = free_agents
        self._on_routed = on_routed
        self.routing_counters = routing_counters
        self.port = port
        self._config_path = config_path
        self._command = command or [sys.executable, "-m", "hotline.cli", "agi"]
        self._launcher = launcher
        self._process: ChildProcess | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False
        self._listening = asyncio.Event()
        self._ever_listened = False
        self.exit_status: int | None = None
        self._last_free_agents: frozenset[str] | None = None
        self.agi_counters: dict[str, Any] = {}
        self.counters: Counter[str] = Counter()
        self.since = time.time()

    @property
    def up(self) -> bool:
        return self._listening.is_set()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Start the child and wait until it listens; ``OSError`` if it cannot (port in use)."""
        reader = await self._spawn()
        self._watcher = asyncio.create_task(self._watch(reader), name="routing-process")
        listening = asyncio.create_task(self._listening.wait())
        done, _ = await asyncio.wait(
            {listening, self._watcher},
            timeout=START_TIMEOUT_SECONDS,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if listening not in done:
            listening.cancel()
            await self.close()
            if self.exit_status is not None:
                raise OSError(
                    f"the routing process exited (status {self.exit_status}) before it listened "
                    "for FastAGI; see its log above"
                )
            raise OSError("the routing process did not start listening; see its log above")

    async def _spawn(self) -> asyncio.StreamReader:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        environment = dict(os.environ)
        if self._config_path is not None:
            environment["HOTLINE_CONFIG"] = str(self._config_path)
        argv = [*self._command, "--link-fd", str(theirs.fileno())]
        options: dict[str, Any] = {
            "pass_fds": (theirs.fileno(),),
            "env": environment,
            "stdin": subprocess.DEVNULL,
            # A terminal's Ctrl-C reaches only ``hotline run``, which stops the child itself.
            "start_new_session": True,
        }
        try:
            if self._launcher is not None:  # keeps the priority hotline run started with
                self._process = await self._launcher.launch(argv, **options)
            else:
                self._process = await asyncio.create_subprocess_exec(*argv, **options)
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(
            sock=ours, limit=MAX_LINK_LINE_BYTES
        )
        self._listening.clear()
        self._last_free_agents = None  # a new child knows nothing yet
        log.info("routing process %d started", self._process.pid)
        return reader

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        """Read the child's messages, push free agents, and start a new child if it dies."""
        backoff = 0.5
        while True:
            pusher = asyncio.create_task(self._push_free_agents(), name="routing-free-agents")
            try:
                await self._read_link(reader)
            finally:
                pusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pusher
            code = await self._process.wait() if self._process is not None else None
            self.exit_status = code
            self._listening.clear()
            if self._closing or not self._ever_listened:  # a child that never listened: the
                return  # start fails at once (a port in use), as FastAGI in the process would
            self.counters["restarts"] += 1
            log.error("routing process exited (%s); starting another in %.1f s", code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_RESTART_BACKOFF_SECONDS)
            if self._closing:
                return
            try:
                reader = await self._spawn()
            except OSError as error:
                log.error("routing process could not be started: %s", error)
                reader = asyncio.StreamReader()
                reader.feed_eof()

    async def _read_link(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ConnectionError, ValueError) as error:  # ValueError: an over-long line
                log.error("routing link broken: %s", error)
                return
            if not line:
                return
            try:
                self._receive(decode(line))
            except RoutingLinkError as error:
                self.counters["bad_link_messages"] += 1
                log.warning("routing link: %s", error)

    def _receive(self, message: dict[str, Any]) -> None:
        if "routed" in message:
            self._on_routed(str(message["routed"]), decision_from_json(message["decision"]))
        elif "counters" in message:
            counters = message["counters"]
            self.agi_counters = dict(counters.get("agi", {}))
            self.routing_counters.clear()
            self.routing_counters.update(counters.get("routing", {}))
        elif "listening" in message:
            self.port = int(message["listening"])  # the port it got, when asked for port 0
            self._ever_listened = True
            self.since = time.time()
            self._listening.set()
            log.info("routing process listens for FastAGI on port %s", message["listening"])
        else:
            raise RoutingLinkError(f"unknown routing link message {sorted(message)[:3]}")

    async def _push_free_agents(self) -> None:
        while True:
            agents = self._free_agents()
            if agents != self._last_free_agents and self._writer is not None:
                self._writer.write(encode({"free_agents": sorted(agents)}))
                self._last_free_agents = agents
            await asyncio.sleep(FREE_AGENTS_POLL_SECONDS)

    async def close(self) -> None:
        """SIGTERM, then SIGKILL after 10 s: the child finishes the routes it has started."""
        self._closing = True
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                log.error("routing process did not stop in time; killing it")
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._writer is not None:
            self._writer.close()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "up": self.up,
            "port": self.port,
            "process": self.pid,
            "since": self.since,
            **self.agi_counters,
            **self.counters,
        }
        if not self.up:
            report["problem"] = "routing process not listening"
        return report


class ParentLink:
    """The child's side of the link: the free agents it was last told, and its reports."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.free_agents_now: frozenset[str] | None = None  # None: not told yet

    @classmethod
    async def open(cls, fd: int) -> ParentLink:
        sock = socket.socket(fileno=fd)
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_LINK_LINE_BYTES)
        return cls(reader, writer)

    def free_agents(self) -> frozenset[str] | None:
        return self.free_agents_now

    def routed(self, uniqueid: str, decision: RoutingDecision) -> None:
        self._send({"routed": uniqueid, "decision": decision_to_json(decision)})

    def listening(self, port: int) -> None:
        self._send({"listening": port})

    def report(self, agi: dict[str, Any], routing: dict[str, Any]) -> None:
        self._send({"counters": {"agi": agi, "routing": routing}})

    def _send(self, message: dict[str, Any]) -> None:
        if not self._writer.is_closing():
            self._writer.write(encode(message))

    async def follow(self) -> None:
        """Until the parent goes away: take each free-agents update as it comes."""
        while True:
            try:
                line = await self._reader.readline()
            except (ConnectionError, ValueError) as error:
                log.error("link to hotline run broken: %s", error)
                return
            if not line:
                return
            try:
                message = decode(line)
                agents = message["free_agents"]
                if not isinstance(agents, list):
                    raise RoutingLinkError("free_agents is not a list")
                self.free_agents_now = frozenset(str(agent) for agent in agents)
            except (RoutingLinkError, KeyError) as error:
                log.warning("routing link: %s", error)

    def close(self) -> None:
        self._writer.close()
