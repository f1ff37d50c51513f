"""Panel fan-out: 200 WebSocket viewers on loopback while a transcript is replayed at 20x speed.

Why: every supervisor's page holds ``WS /api/v1/live`` open, and each change of the queue
statistics must reach all of them quickly. The issue's target is an event-to-viewer p99 of at most
100 ms with 200 viewers while AMI events arrive 20 times faster than in the recorded session.

What is measured: for each ``stats.delta`` a viewer receives, the time from the moment the
bridge's pipeline was handed the first AMI message that changed the statistics after the previous
snapshot (the oldest change the delta carries) to the moment that viewer's client read the frame.
It is split into event -> publish (``run_publisher``'s coalescing sleep, the snapshot, the diff,
``store_snapshot``) and publish -> viewer, itself split at the moment ``LiveHub.broadcast`` gets
the delta: publish -> hub is the bus (a queue in-process; a Redis round trip), hub -> viewer the
per-viewer queues, the viewers' tasks, the sockets and the client. "first -> last viewer" is, per
delta, how long the fan-out to all viewers took as the clients saw it. Deltas published with no
statistics-changing AMI message since the last snapshot (figures that changed with the clock
only) have no event to start from: they are counted, and only their publish -> viewer is kept.

How: the bridge is the production one, ``hotline.service.build_bridge`` + ``run_bridge``, in a
child process (this file with ``--serve``) with its own event loop, an SQLite database in a
temporary directory and, with no ``HOTLINE_AMI_SECRET``, its replay of an AMI transcript. The
child adds four thin probes and a gate, and changes nothing else:

- ``queues.pipeline.on_event`` is wrapped to note ``time.monotonic()`` before the first
  message whose result says the statistics changed;
- ``queues.snapshot`` is wrapped to take that note when ``publish_changes`` starts a delta;
- ``bus.publish`` is wrapped to file, for each ``stats`` message, its ``seq`` with the note and
  the monotonic times just before and after publishing;
- the ``LiveHub``'s ``broadcast`` is wrapped to note when the hub got each delta;
- ``hotline.service.replay`` is replaced by a wrapper that says "ready" (the web server is
  listening by the time the replay task runs) and waits for the word ``start`` on stdin.

``time.monotonic()`` is one clock for every process on Linux, so the parent subtracts the child's
times from its own. The parent opens the viewers with aiohttp: HTTP Basic login as an admin the
bridge creates at start from ``HOTLINE_ADMIN_USER``/``HOTLINE_ADMIN_PASSWORD``. All of them open
their sockets at once by default (``--connect-at-once`` limits that): the hub loads one snapshot
for every viewer connecting meanwhile and the login cache checks one password once, as when every
panel reconnects after a restart. Once every
snapshot is in, the parent says ``start``, notes the receive time of every frame (with the
collector off: its full passes over the frames would stall the client by 100 ms and more), and
after the replay asks the child for its records.

Both processes share the machine's cores. Shown for the measured window: each one's CPU, the
rest of the machine, interrupts and steal (``/proc/stat``: the hypervisor ran another guest), and
both event loops' stalls (a 5 ms sleep woken 10 ms or more late), with how many of the slowest 1 %
of (viewer, delta) pairs had a stall of either process inside their span.

The transcript is ``tests/fixtures/hotline-3-agents-40-calls.ami`` (a real Asterisk 22 session:
40 calls, 108 s of session time, so 5.4 s at 20x) played ``--passes`` (4) times in a row: each
later copy has every ``<epoch>.<n>`` id moved on by the session's length plus 2 s, so that the
replay clock (which follows the ids' epochs) keeps pacing and every call is new. ``--redis`` adds
a second phase, on a fresh bridge, with Redis as the bus (pub/sub is global to a Redis server,
whatever the database number: frames that match no record of the child are counted as foreign).
A run takes about 30 s, 55 s with ``--redis``.

The run exits 1 when the measurement is broken (a viewer that could not connect or got no delta,
a delta frame the child did not file, no delta carrying an event); a missed target is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import logging
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parent.parent

# Benchmark the code in this checkout, not whatever copy of the packages is installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

import hotline.service as bridge_service  # noqa: E402
from ami.feed import keep_event  # noqa: E402
from ami.replay import ReplayClock, read_transcript  # noqa: E402
from benchmarks.machine import machine_cpu_seconds  # noqa: E402
from infra.bus import CHANNEL_PREFIX  # noqa: E402
from infra.config import ENV_PREFIX, Settings  # noqa: E402
from pbx.facts import DomainEvent  # noqa: E402
from queue_stats.pipeline import PipelineResult  # noqa: E402
from queue_stats.service import SNAPSHOT_KEY, STATS_CHANNEL  # noqa: E402
from web.live import Outgoing  # noqa: E402

TARGET_P99_MS = 100.0
DEFAULT_TRANSCRIPT = ROOT / "tests" / "fixtures" / "hotline-3-agents-40-calls.ami"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
PASS_GAP_SECONDS = 2.0  # session time between two copies of the transcript
VIEWER_ADDRESSES = [f"127.0.1.{n}" for n in range(1, 9)]
ADMIN_USER = "bench-admin"
HEAD_CHARS = 120  # of each frame, kept for the analysis: type, seq and at come first
SETTLE_SECONDS = 1.5  # after the replay: the last burst's delta (50 ms window) and an idle tick
CONNECT_TIMEOUT = 60.0
READY_TIMEOUT = 60.0
CATCH_UP_TIMEOUT = 5.0
CATCH_UP_POLL = 0.05
STALL_PROBE_SECONDS = 0.005
STALL_SECONDS = 0.010  # a loop that wakes a sleeper this late has held something up
STOP_TIMEOUT = 20.0
EPOCH_ID = re.compile(rb"\b(\d{10})\.(\d+)\b")
DELTA_HEAD = re.compile(r'^\{"type": "stats\.delta", "seq": (\d+), "at": "([^"]*)"')
SOCKET_ENDS = frozenset(
    {
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSING,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.ERROR,
    }
)
TYPE_HEAD = re.compile(r'^\{"type": "([^"]*)"')


class Progress:
    """Progress lines on stderr with the time since the start."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(
            f"[{time.perf_counter() - self._start:6.1f} s] {message}", file=sys.stderr, flush=True
        )


def scrub_environment() -> list[str]:
    """Drop ``HOTLINE_*`` variables: the bridge runs the defaults, whatever the shell sets."""
    dropped = sorted(name for name in os.environ if name.startswith(ENV_PREFIX))
    for name in dropped:
        del os.environ[name]
    return dropped


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LoopStalls:
    """Notes when this process's event loop woke a short sleep late, and by how much: the time
    it spent on other work (or waiting for a core) while timers and sockets waited."""

    def __init__(self) -> None:
        self.stalls: list[tuple[float, float]] = []  # (woke at, seconds late), late >= STALL

    async def run(self) -> None:
        while True:
            asleep = time.monotonic()
            await asyncio.sleep(STALL_PROBE_SECONDS)
            woke = time.monotonic()
            late = woke - asleep - STALL_PROBE_SECONDS
            if late >= STALL_SECONDS:
                self.stalls.append((woke, late))


# --------------------------------------------------------------------------- the transcript


@dataclass(frozen=True)
class Transcript:
    path: Path
    source: Path
    passes: int
    messages: int
    session_seconds: float

    def replay_seconds(self, speed: float) -> float:
        return self.session_seconds / speed


def looped_transcript(source: Path, passes: int, target: Path) -> Transcript:
    """``passes`` copies of ``source`` in one file, each later one with its ids moved on in time.

    The replay clock takes its time from the epoch in each new ``Uniqueid`` and never goes back,
    so a plain second copy would be fed all at once; moved ids keep the pacing and make each
    copy's calls new ones.
    """
    raw = source.read_bytes()
    epochs = [int(match.group(1)) for match in EPOCH_ID.finditer(raw)]
    if not epochs:
        raise ValueError(f"{source} has no <epoch>.<n> ids to move")
    shift = max(epochs) - min(epochs) + PASS_GAP_SECONDS
    body = raw.split(b"\n", 1)[1] if raw.startswith(b"Asterisk Call Manager/") else raw
    if not body.endswith(b"\r\n\r\n"):
        body = body.rstrip(b"\r\n") + b"\r\n\r\n"
    parts = [raw if raw.endswith(b"\r\n\r\n") else raw.rstrip(b"\r\n") + b"\r\n\r\n"]
    for index in range(1, passes):
        offset = round(index * shift)

        def moved(match: re.Match[bytes], offset: int = offset) -> bytes:
            return b"%d.%s" % (int(match.group(1)) + offset, match.group(2))

        parts.append(EPOCH_ID.sub(moved, body))
    target.write_bytes(b"".join(parts))
    messages = list(read_transcript(target, keep_event))
    clock = ReplayClock()
    clock.seed(messages)
    first = clock.current()
    last = first
    for message in messages:
        last = clock.advance(message)
    return Transcript(target, source, passes, len(messages), (last - first).total_seconds())


# --------------------------------------------------------------------------- the bridge process


@dataclass
class DeltaRecord:
    """One published ``stats.delta`` as the child saw it (monotonic seconds)."""

    seq: int
    at: str
    first_event: float | None  # handed to the pipeline: the oldest change in the delta
    events: int  # statistics-changing AMI messages folded into it
    snapshot: float  # publish_changes took the snapshot
    publish: float  # just before bus.publish
    published: float  # bus.publish returned
    hub: float | None = None  # LiveHub.broadcast began copying it into the viewers' queues


class PublishProbe:
    """Notes when the statistics first changed since the last snapshot, and files each delta."""

    def __init__(self) -> None:
        self.deltas: list[DeltaRecord] = []
        self.changes_without_delta = 0  # statistics changes that left the snapshot as it was
        self.hub_times: dict[int, float] = {}  # seq -> when LiveHub.broadcast got the delta
        self._first_event: float | None = None
        self._events = 0
        self._taken: tuple[float | None, int, float] | None = None

    def install(self, bridge: bridge_service.Bridge) -> None:
        queues, bus, hub = bridge.queues, bridge.bus, bridge.web.live
        broadcast = hub.broadcast
        handle = queues.pipeline.on_event
        take_snapshot = queues.snapshot
        publish = bus.publish

        def probed_handle(fact: DomainEvent) -> PipelineResult:
            handed = time.monotonic()
            result = handle(fact)
            if result.stats_changed:
                if self._first_event is None:
                    self._first_event = handed
                self._events += 1
            return result

        def probed_snapshot() -> dict[str, Any]:
            if self._taken is not None:  # the last snapshot published nothing
                self.changes_without_delta += self._taken[1]
            self._taken = (self._first_event, self._events, time.monotonic())
            self._first_event, self._events = None, 0
            return take_snapshot()

        async def probed_publish(channel: str, message: dict[str, Any]) -> None:
            if channel != STATS_CHANNEL or self._taken is None:
                await publish(channel, message)
                return
            (first_event, events, snapshot), self._taken = self._taken, None
            before = time.monotonic()
            await publish(channel, message)
            self.deltas.append(
                DeltaRecord(
                    int(message["seq"]),
                    str(message["at"]),
                    first_event,
                    events,
                    snapshot,
                    before,
                    time.monotonic(),
                )
            )

        def probed_broadcast(message: Outgoing) -> None:
            delta = DELTA_HEAD.match(message.text)
            if delta is not None:
                self.hub_times[int(delta.group(1))] = time.monotonic()
            broadcast(message)

        # Instance attributes shadow the methods: the service and the hub call these.
        hub.broadcast = probed_broadcast  # type: ignore[method-assign]
        queues.pipeline.on_event = probed_handle  # type: ignore[method-assign]
        queues.snapshot = probed_snapshot  # type: ignore[method-assign]
        bus.publish = probed_publish  # type: ignore[method-assign]


def emit(kind: str, **values: Any) -> None:
    """One line of the child's answer protocol on stdout."""
    print(json.dumps({"kind": kind, **values}), flush=True)


async def serve(config: dict[str, Any]) -> None:
    """The child: the production bridge, its replay held until ``start`` arrives on stdin."""
    workdir = Path(config["workdir"])
    settings = Settings(
        database_url=config["database_url"],
        redis_url=config["redis_url"],
        web_host="127.0.0.1",
        web_port=config["web_port"],
        agi_host="127.0.0.1",
        recordings_dir=workdir / "recordings",
        recordings_spool=workdir / "spool",
    ).model_copy(update={"agi_port": 0})  # the FastAGI server is not used: any free port
    (workdir / "spool").mkdir(exist_ok=True)
    bridge = bridge_service.build_bridge(
        settings, replay_path=Path(config["transcript"]), replay_speed=config["speed"]
    )
    probe = PublishProbe()
    probe.install(bridge)
    stalls = LoopStalls()
    start = asyncio.Event()
    stop = asyncio.Event()
    timing: dict[str, float] = {}
    real_replay = bridge_service.replay

    async def gated_replay(*args: Any, **kwargs: Any) -> int:
        emit("ready")
        await start.wait()
        timing["started"] = time.monotonic()
        cpu = os.times()
        timing["cpu_at_start"] = cpu.user + cpu.system
        count = await real_replay(*args, **kwargs)
        timing["ended"] = time.monotonic()
        emit("replayed", messages=count, started=timing["started"], ended=timing["ended"])
        return count

    bridge_service.replay = gated_replay  # type: ignore[assignment]

    async def commands() -> None:
        while True:
            command = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if command == "start":
                start.set()
            elif command == "report":
                cpu = os.times()
                emit(
                    "report",
                    deltas=[
                        {**record.__dict__, "hub": probe.hub_times.get(record.seq)}
                        for record in probe.deltas
                    ],
                    changes_without_delta=probe.changes_without_delta,
                    stalls=stalls.stalls,
                    hub=dict(bridge.web.live.counters),
                    queues=dict(bridge.queues.counters),
                    bus_dropped=getattr(bridge.bus, "dropped", None),
                    cpu_seconds=cpu.user + cpu.system - timing.get("cpu_at_start", 0.0),
                    wall_seconds=time.monotonic() - timing.get("started", time.monotonic()),
                )
            else:  # "quit" or the end of stdin
                stop.set()
                return

    reader = asyncio.create_task(commands())
    watcher = asyncio.create_task(stalls.run())
    try:
        await bridge_service.run_bridge(bridge, stop)
    finally:
        reader.cancel()
        watcher.cancel()


def serve_main(raw_config: str) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(json.loads(raw_config)))
    return 0


class BridgeProcess:
    """This file with ``--serve`` in a fresh interpreter: JSON lines on stdout, log on stderr."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    @classmethod
    async def start(
        cls, config: dict[str, Any], env: dict[str, str], log_path: Path
    ) -> BridgeProcess:
        with log_path.open("w") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(THIS_FILE),
                "--serve",
                json.dumps(config),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                env=env,
                cwd=config["workdir"],
            )
        return cls(process, log_path)

    async def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        """The next line of the child's protocol, which must be of ``kind``."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the bridge process ended; its log:\n{self.log_tail()}")
        answer = json.loads(line)
        if answer.get("kind") != kind:
            raise RuntimeError(f"expected {kind!r} from the bridge, got {line[:200]!r}")
        return answer

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    async def stop(self) -> None:
        """Close stdin (the bridge shuts down in order); kill it if that takes too long."""
        if self.process.returncode is None and self.process.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


# --------------------------------------------------------------------------- the viewers


@dataclass
class Viewer:
    """One panel's socket and every frame it got: (monotonic receive time, head, length)."""

    index: int
    frames: list[tuple[float, str, int]] = field(default_factory=list)
    socket: aiohttp.ClientWebSocketResponse | None = None
    closing: bool = False
    closed_early: bool = False
    error: str | None = None


async def watch(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    viewer: Viewer,
    gate: asyncio.Semaphore,
    connected: Callable[[], None],
) -> None:
    """Open the live socket and read the snapshot (``gate`` bounds how many do that at once),
    then note the receive time of every frame until the socket closes."""
    announced = False
    try:
        async with gate:
            ws = await session.ws_connect(url, headers=headers, autoping=True)
            viewer.socket = ws
            first = await ws.receive()
            if first.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"first frame was {first.type.name}, not the snapshot")
            snapshot = json.loads(first.data)
            if snapshot.get("type") != "snapshot":
                raise RuntimeError(f"first frame was {snapshot.get('type')!r}, not the snapshot")
        announced = True
        connected()
        frames = viewer.frames
        while True:
            message = await ws.receive()
            received = time.monotonic()
            if message.type is aiohttp.WSMsgType.TEXT:
                frames.append((received, message.data[:HEAD_CHARS], len(message.data)))
            elif message.type in SOCKET_ENDS:
                viewer.closed_early = not viewer.closing
                return
    except Exception as error:  # reported with the viewer, the others go on
        if announced:
            viewer.closed_early = True
        else:
            viewer.error = f"{type(error).__name__}: {error}"
    finally:
        if viewer.socket is not None:
            with contextlib.suppress(Exception):
                await viewer.socket.close()
        if not announced:
            connected()


# --------------------------------------------------------------------------- one phase


@dataclass
class PhaseResult:
    bus: str
    viewers: int
    viewer_errors: list[str]
    transcript_messages: int
    replay_seconds: float
    deltas: int  # published from the start of the replay to the report
    deltas_with_event: int
    deltas_time_only: int
    events_per_delta: float
    changes_without_delta: int
    delivered: int  # (viewer, delta) pairs received
    other_frames: dict[str, int]  # frames that are not stats deltas, by type
    foreign_frames: int
    late_frames: int  # deltas published after the report (not in the records)
    missed: int  # (viewer, delta) pairs never received
    viewers_missing: int
    closed_early: int
    hub: dict[str, int]
    queues: dict[str, int]
    bus_dropped: int | None
    delta_bytes_mean: float
    event_to_viewer_ms: list[float]
    event_to_publish_ms: list[float]
    snapshot_to_publish_ms: list[float]
    publish_to_viewer_ms: list[float]
    publish_to_hub_ms: list[float]
    hub_to_viewer_ms: list[float]
    time_only_publish_to_viewer_ms: list[float]
    spread_ms: list[float]  # per delta: first viewer to last viewer
    server_cpu_percent: float
    client_cpu_percent: float
    machine_cpu_percent: dict[str, float] | None  # machine_cpu_seconds' keys, % of one core
    log_lines: int
    log_last: str
    bridge_stalls_ms: list[float]  # the event loop's late wake-ups in the measured window
    viewer_stalls_ms: list[float]
    slowest_pairs: int  # the slowest 1 % of (viewer, delta) pairs, event -> viewer
    slowest_bridge_stalled_ms: list[float]  # per slowest pair: bridge stalls inside its span
    slowest_viewer_stalled_ms: list[float]
    problems: list[str]

    @property
    def target_met(self) -> bool:
        p99 = percentile(sorted(self.event_to_viewer_ms), 99)
        return math.isfinite(p99) and p99 <= TARGET_P99_MS and self.missed == 0


async def run_phase(
    bus_name: str,
    redis_url: str,
    transcript: Transcript,
    args: argparse.Namespace,
    workdir: Path,
    progress: Progress,
) -> PhaseResult:
    """A fresh bridge process and database, ``args.viewers`` sockets, one replay."""
    phase_dir = workdir / bus_name
    phase_dir.mkdir()
    password = secrets.token_urlsafe(18)
    port = free_port()
    config = {
        "workdir": str(phase_dir),
        "database_url": f"sqlite+aiosqlite:///{phase_dir / 'bench.db'}",
        "redis_url": redis_url,
        "web_port": port,
        "transcript": str(transcript.path),
        "speed": args.speed,
    }
    env = dict(os.environ)
    env[f"{ENV_PREFIX}ADMIN_USER"] = ADMIN_USER
    env[f"{ENV_PREFIX}ADMIN_PASSWORD"] = password
    env[f"{ENV_PREFIX}SESSION_SECRET"] = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    started_at = time.perf_counter()
    bridge = await BridgeProcess.start(config, env, phase_dir / "bridge.log")
    viewers = [Viewer(index) for index in range(args.viewers)]
    tasks: list[asyncio.Task[None]] = []
    try:
        await bridge.expect("ready", READY_TIMEOUT)
        progress(f"  bridge pid {bridge.process.pid} listening on 127.0.0.1:{port}")
        url = f"http://127.0.0.1:{port}/api/v1/live"
        headers = {"Authorization": aiohttp.encode_basic_auth(ADMIN_USER, password)}
        async with contextlib.AsyncExitStack() as sessions:
            # Viewers come from several loopback addresses, as people sit at many computers:
            # the web port admits 128 connections per address.
            by_address = [
                await sessions.enter_async_context(
                    aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=0, local_addr=(address, 0))
                    )
                )
                for address in VIEWER_ADDRESSES
            ]
            pending = len(viewers)
            all_connected = asyncio.Event()

            def connected() -> None:
                nonlocal pending
                pending -= 1
                if pending == 0:
                    all_connected.set()

            gate = asyncio.Semaphore(args.connect_at_once)
            for viewer in viewers:
                session = by_address[viewer.index % len(by_address)]
                task = watch(session, url, headers, viewer, gate, connected)
                tasks.append(asyncio.create_task(task))
            await asyncio.wait_for(all_connected.wait(), CONNECT_TIMEOUT)
            errors = [f"viewer {v.index}: {v.error}" for v in viewers if v.error]
            progress(
                f"  {len(viewers) - len(errors)} viewers have their snapshot; replaying "
                f"{transcript.replay_seconds(args.speed):.1f} s at {args.speed:g}x"
            )
            cpu_before = time.process_time()
            machine_before = machine_cpu_seconds()
            client_stalls = LoopStalls()
            watcher = asyncio.create_task(client_stalls.run())
            tasks.append(watcher)
            # The frames pile up by the ten thousand: the collector's full passes over them would
            # hold this loop for 100 ms and more, and that delay would count as latency.
            gc.disable()
            await bridge.send("start")
            replayed = await bridge.expect(
                "replayed", transcript.replay_seconds(args.speed) * 2 + 30
            )
            await asyncio.sleep(SETTLE_SECONDS)
            await bridge.send("report")
            report = await bridge.expect("report", 30)
            last_seq = max((record["seq"] for record in report["deltas"]), default=0)
            for _ in range(round(CATCH_UP_TIMEOUT / CATCH_UP_POLL)):
                if all(caught_up(v, last_seq) for v in viewers if v.error is None):
                    break
                await asyncio.sleep(CATCH_UP_POLL)
            client_cpu = time.process_time() - cpu_before
            machine_after = machine_cpu_seconds()
            machine_cpu = (
                None
                if machine_before is None or machine_after is None
                else {key: machine_after[key] - machine_before[key] for key in machine_after}
            )
            window = time.monotonic() - replayed["started"]
            watcher.cancel()
            for viewer in viewers:
                viewer.closing = True
            await asyncio.gather(
                *(v.socket.close() for v in viewers if v.socket is not None),
                return_exceptions=True,
            )
            await asyncio.wait(tasks, timeout=10)
    finally:
        gc.enable()
        for task in tasks:
            task.cancel()
        await bridge.stop()
    progress(f"  phase done in {time.perf_counter() - started_at:.1f} s")
    return analyse(
        Measured(
            bus_name,
            viewers,
            errors,
            replayed,
            report,
            client_cpu,
            machine_cpu,
            window,
            bridge.log(),
            client_stalls.stalls,
        )
    )


def stalled_within(stalls: Sequence[Sequence[float]], begin: float, end: float) -> float:
    """Seconds of the ``(woke, late)`` stalls that fall inside ``begin .. end``."""
    return sum(max(0.0, min(end, woke) - max(begin, woke - late)) for woke, late in stalls)


def caught_up(viewer: Viewer, last_seq: int) -> bool:
    """Whether the viewer's latest frame is the last delta the bridge filed (or later)."""
    for _received, head, _length in reversed(viewer.frames):
        match = DELTA_HEAD.match(head)
        if match:
            return int(match.group(1)) >= last_seq
    return last_seq == 0


@dataclass
class Measured:
    """What one phase collected, before the analysis."""

    bus_name: str
    viewers: list[Viewer]
    viewer_errors: list[str]
    replayed: dict[str, Any]  # the child's "replayed" line: message count, start and end
    report: dict[str, Any]  # the child's "report" line: records and counters
    client_cpu: float
    machine_cpu: dict[str, float] | None
    window: float
    log: list[str]
    client_stalls: list[tuple[float, float]]


def analyse(measured: Measured) -> PhaseResult:
    """Match every frame to the child's records; latencies in milliseconds."""
    viewers, replayed, report = measured.viewers, measured.replayed, measured.report
    log = measured.log
    log_lines, log_last = len(log), log[-1] if log else ""
    started, ended = float(replayed["started"]), float(replayed["ended"])
    records = {
        record.seq: record
        for record in (DeltaRecord(**raw) for raw in report["deltas"])
        if record.publish >= started
    }
    earlier = {raw["seq"] for raw in report["deltas"] if raw["publish"] < started}
    last_seq = max(records, default=0)
    with_event = [r for r in records.values() if r.first_event is not None]
    problems: list[str] = list(measured.viewer_errors)
    event_to_viewer: list[float] = []
    spans: list[tuple[float, float]] = []  # (event, received) of each pair in event_to_viewer
    publish_to_viewer: list[float] = []
    hub_to_viewer: list[float] = []
    time_only: list[float] = []
    arrivals: dict[int, list[float]] = {seq: [] for seq in records}
    other: Counter[str] = Counter()
    foreign = late = missed = viewers_missing = closed_early = 0
    sizes: list[int] = []
    for viewer in viewers:
        if viewer.error is not None:
            continue
        closed_early += viewer.closed_early
        seen: set[int] = set()
        for received, head, length in viewer.frames:
            match = DELTA_HEAD.match(head)
            if match is None:
                kind = TYPE_HEAD.match(head)
                other[kind.group(1) if kind else "?"] += 1
                continue
            seq, at = int(match.group(1)), match.group(2)
            record = records.get(seq)
            if record is None:
                if seq > last_seq:
                    late += 1
                elif seq not in earlier:
                    foreign += 1
                continue
            if record.at != at or seq in seen:
                foreign += 1
                continue
            seen.add(seq)
            sizes.append(length)
            arrivals[seq].append(received)
            publish_to_viewer.append((received - record.publish) * 1000)
            if record.hub is not None:
                hub_to_viewer.append((received - record.hub) * 1000)
            if record.first_event is None:
                time_only.append((received - record.publish) * 1000)
            else:
                event_to_viewer.append((received - record.first_event) * 1000)
                spans.append((record.first_event, received))
        lost = len(records) - len(seen)
        missed += lost
        viewers_missing += lost > 0
        if not seen:
            problems.append(f"viewer {viewer.index} received no delta of the replay")
    if not with_event:
        problems.append("no delta carried a statistics-changing AMI message")
    if foreign:
        problems.append(f"{foreign} delta frames match no delta the bridge filed")
    spreads = [(max(times) - min(times)) * 1000 for times in arrivals.values() if len(times) > 1]
    duration = max(ended - started, 1e-9)
    window_end = started + measured.window
    bridge_stalls = [s for s in report["stalls"] if started <= s[0] <= window_end]
    viewer_stalls = [s for s in measured.client_stalls if started <= s[0] <= window_end]
    by_latency = sorted(spans, key=lambda span: span[1] - span[0], reverse=True)
    slowest = by_latency[: math.ceil(len(spans) / 100)]
    client_cpu, machine_cpu, window = measured.client_cpu, measured.machine_cpu, measured.window
    return PhaseResult(
        bus=measured.bus_name,
        viewers=len(viewers),
        viewer_errors=measured.viewer_errors,
        transcript_messages=int(replayed["messages"]),
        replay_seconds=duration,
        deltas=len(records),
        deltas_with_event=len(with_event),
        deltas_time_only=len(records) - len(with_event),
        events_per_delta=sum(r.events for r in with_event) / max(len(with_event), 1),
        changes_without_delta=int(report["changes_without_delta"]),
        delivered=len(publish_to_viewer),
        other_frames=dict(other.most_common()),
        foreign_frames=foreign,
        late_frames=late,
        missed=missed,
        viewers_missing=viewers_missing,
        closed_early=closed_early,
        hub=report["hub"],
        queues=report["queues"],
        bus_dropped=report["bus_dropped"],
        delta_bytes_mean=sum(sizes) / max(len(sizes), 1),
        event_to_viewer_ms=event_to_viewer,
        event_to_publish_ms=[
            (r.publish - first_event) * 1000
            for r in with_event
            if (first_event := r.first_event) is not None
        ],
        snapshot_to_publish_ms=[(r.publish - r.snapshot) * 1000 for r in records.values()],
        publish_to_viewer_ms=publish_to_viewer,
        publish_to_hub_ms=[
            (r.hub - r.publish) * 1000 for r in records.values() if r.hub is not None
        ],
        hub_to_viewer_ms=hub_to_viewer,
        time_only_publish_to_viewer_ms=time_only,
        spread_ms=spreads,
        server_cpu_percent=100 * float(report["cpu_seconds"]) / max(report["wall_seconds"], 1e-9),
        client_cpu_percent=100 * client_cpu / max(window, 1e-9),
        machine_cpu_percent=None
        if machine_cpu is None
        else {key: 100 * value / max(window, 1e-9) for key, value in machine_cpu.items()},
        log_lines=log_lines,
        log_last=log_last,
        bridge_stalls_ms=[late * 1000 for _woke, late in bridge_stalls],
        viewer_stalls_ms=[late * 1000 for _woke, late in viewer_stalls],
        slowest_pairs=len(slowest),
        slowest_bridge_stalled_ms=[stalled_within(bridge_stalls, *s) * 1000 for s in slowest],
        slowest_viewer_stalled_ms=[stalled_within(viewer_stalls, *s) * 1000 for s in slowest],
        problems=problems,
    )


# --------------------------------------------------------------------------- the report


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list; ``nan`` when it is empty."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def spread_line(label: str, values_ms: Sequence[float], unit: str) -> str:
    ordered = sorted(values_ms)
    if not ordered:
        return f"{label:<26} (none)"
    figures = "  ".join(
        f"{name} {percentile(ordered, p):7.1f}"
        for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
    )
    return f"{label:<26} {figures} ms  ({len(ordered):,} {unit})"


def stalls_line(result: PhaseResult) -> str:
    def summary(stalls_ms: list[float]) -> str:
        if not stalls_ms:
            return "none"
        return f"{len(stalls_ms)} (max {max(stalls_ms):.0f} ms, total {sum(stalls_ms):,.0f} ms)"

    return (
        f"event-loop stalls (a {STALL_PROBE_SECONDS * 1000:g} ms sleep woken "
        f">= {STALL_SECONDS * 1000:g} ms late): bridge {summary(result.bridge_stalls_ms)}, "
        f"viewers {summary(result.viewer_stalls_ms)}"
    )


def slowest_line(result: PhaseResult) -> str:
    def share(stalled_ms: list[float]) -> str:
        hit = [value for value in stalled_ms if value > 0]
        mean = sum(hit) / len(hit) if hit else 0.0
        return f"{100 * len(hit) / result.slowest_pairs:.0f}% (mean {mean:.0f} ms of it)"

    return (
        f"slowest 1% of pairs ({result.slowest_pairs:,}): a bridge stall within "
        f"{share(result.slowest_bridge_stalled_ms)}, a viewers' stall within "
        f"{share(result.slowest_viewer_stalled_ms)}"
    )


def machine_text(result: PhaseResult) -> str:
    """The rest of the machine's CPU time in the window, when ``/proc/stat`` told it."""
    machine = result.machine_cpu_percent
    if machine is None:
        return ""
    rest = machine["busy"] - machine["interrupts"]
    rest -= result.server_cpu_percent + result.client_cpu_percent
    return (
        f"; other processes {max(rest, 0):.0f}%, interrupts {machine['interrupts']:.0f}%, "
        f"steal {machine['steal']:.0f}% (the hypervisor ran another guest)"
    )


def shown_path(path: Path) -> str:
    """``path`` relative to the checkout when it is inside it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(ROOT))
    return str(path)


def print_report(
    results: list[PhaseResult],
    transcript: Transcript,
    args: argparse.Namespace,
    dropped_env: list[str],
) -> None:
    print(
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores "
        "(the bridge process and the viewers' process share them)"
    )
    if dropped_env:
        print(f"ignored environment: {', '.join(dropped_env)} (the bridge runs the defaults)")
    print(
        f"transcript: {shown_path(transcript.source)} x {transcript.passes} (later "
        f"copies moved on in time): {transcript.messages:,} AMI messages kept by the pipeline, "
        f"{transcript.session_seconds:.0f} s of session time, "
        f"{transcript.replay_seconds(args.speed):.1f} s at {args.speed:g}x"
    )
    print(
        f"viewers: {args.viewers} aiohttp WebSocket clients of WS /api/v1/live from 127.0.1.1-8, "
        "HTTP Basic login (admin), one asyncio process"
    )
    print(
        "latency: event = the first statistics-changing AMI message handed to the pipeline "
        "since the\n  previous snapshot; viewer = the client read the stats.delta frame; "
        "publish = just before bus.publish"
    )
    for result in results:
        print()
        print(f"bus: {result.bus}")
        print(
            f"  replay {result.replay_seconds:.1f} s, {result.transcript_messages:,} messages, "
            f"{result.queues.get('calls_finished', 0):,} calls finished; deltas "
            f"{result.deltas:,} ({result.deltas / result.replay_seconds:.1f}/s): "
            f"{result.deltas_with_event:,} carrying AMI events "
            f"({result.events_per_delta:.1f} changes each on average), "
            f"{result.deltas_time_only:,} time-only"
        )
        others = ", ".join(f"{count:,} {kind}" for kind, count in result.other_frames.items())
        print(
            f"  delivered {result.delivered:,} (viewer, delta) pairs, mean "
            f"{result.delta_bytes_mean:,.0f} bytes; other frames: {others or 'none'}; "
            f"missed {result.missed:,} pairs ({result.viewers_missing} viewers); "
            f"hub dropped {result.hub.get('dropped_slow_viewers', 0)} slow viewers; "
            f"{result.closed_early} sockets closed early"
        )
        extras = []
        if result.bus_dropped:
            extras.append(f"in-process bus dropped {result.bus_dropped} messages")
        if result.foreign_frames:
            extras.append(f"{result.foreign_frames} foreign delta frames")
        if result.late_frames:
            extras.append(f"{result.late_frames} frames of deltas published after the report")
        if result.changes_without_delta:
            extras.append(
                f"{result.changes_without_delta} statistics changes left the snapshot unchanged"
            )
        if result.viewer_errors:
            extras.append(f"{len(result.viewer_errors)} viewers failed to connect")
        if extras:
            print("  " + "; ".join(extras))
        rows: list[tuple[str, list[float], str]] = [
            ("event -> viewer", result.event_to_viewer_ms, "pairs"),
            ("event -> publish", result.event_to_publish_ms, "deltas"),
            ("  of it snapshot -> publish", result.snapshot_to_publish_ms, "deltas"),
            ("publish -> viewer", result.publish_to_viewer_ms, "pairs"),
            ("  of it publish -> hub", result.publish_to_hub_ms, "deltas"),
            ("  and hub -> viewer", result.hub_to_viewer_ms, "pairs"),
        ]
        if result.time_only_publish_to_viewer_ms:
            rows.append(
                ("time-only: publish -> viewer", result.time_only_publish_to_viewer_ms, "pairs")
            )
        rows.append(("first -> last viewer", result.spread_ms, "deltas"))
        for label, values, unit in rows:
            print("  " + spread_line(label, values, unit))
        print(
            f"  cpu (% of one core, from the start of the replay): bridge "
            f"{result.server_cpu_percent:.0f}%, viewers {result.client_cpu_percent:.0f}%"
            + machine_text(result)
        )
        print("  " + stalls_line(result))
        if result.slowest_pairs:
            print("  " + slowest_line(result))
        print(f"  bridge log: {result.log_lines} lines")
        if result.log_last:
            print(f"  last bridge log line: {result.log_last[:160]}")
    print()
    for result in results:
        p99 = percentile(sorted(result.event_to_viewer_ms), 99)
        state = "met" if result.target_met else "NOT met"
        notes = f", {result.missed:,} pairs missed" if result.missed else ""
        if result.machine_cpu_percent is not None:
            notes += f"; steal {result.machine_cpu_percent['steal']:.0f}% of a core"
        print(
            f"target p99 <= {TARGET_P99_MS:g} ms ({result.bus} bus, {result.viewers} viewers, "
            f"{args.speed:g}x): {state} (p99 {p99:.1f} ms{notes})"
        )


# --------------------------------------------------------------------------- main


async def redis_check(url: str) -> tuple[str, int]:
    """Redis's version and how many others listen on the bridge's channels already."""
    from redis import asyncio as redis_asyncio

    client = redis_asyncio.from_url(url, decode_responses=True)
    try:
        info = await client.info("server")
        listeners = await client.pubsub_numsub(
            CHANNEL_PREFIX + STATS_CHANNEL, CHANNEL_PREFIX + "calls"
        )
        return str(info.get("redis_version", "?")), sum(count for _name, count in listeners)
    finally:
        await client.aclose()


async def redis_cleanup(url: str) -> None:
    """Remove the snapshot the bridge left in the benchmark's Redis database."""
    from redis import asyncio as redis_asyncio

    client = redis_asyncio.from_url(url)
    try:
        await client.delete(f"{CHANNEL_PREFIX}snapshot:{SNAPSHOT_KEY}")
    finally:
        await client.aclose()


async def run(
    args: argparse.Namespace, transcript: Transcript, workdir: Path, progress: Progress
) -> list[PhaseResult]:
    phases = [("in-process", "")]
    if args.redis:
        version, listeners = await redis_check(args.redis)
        progress(f"Redis {version} at {args.redis}; {listeners} other listeners on our channels")
        if listeners:
            progress("  others listen on the bridge's channels: their traffic may mix with ours")
        phases.append(("redis", args.redis))
    results = []
    for name, url in phases:
        progress(f"phase: {name} bus")
        try:
            results.append(await run_phase(name, url, transcript, args, workdir, progress))
        finally:
            if url:
                with contextlib.suppress(Exception):
                    await redis_cleanup(url)
    return results


def stop_on_signal(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=200, help="WebSocket viewers (200)")
    parser.add_argument("--speed", type=float, default=20.0, help="replay speed (20)")
    parser.add_argument(
        "--passes", type=int, default=4, help="copies of the transcript played in a row (4)"
    )
    parser.add_argument(
        "--transcript", type=Path, default=DEFAULT_TRANSCRIPT, help="AMI transcript to replay"
    )
    parser.add_argument(
        "--redis",
        nargs="?",
        const=DEFAULT_REDIS_URL,
        default="",
        metavar="URL",
        help=f"add a phase with Redis as the bus ({DEFAULT_REDIS_URL} without a URL)",
    )
    parser.add_argument(
        "--connect-at-once",
        type=int,
        default=200,
        metavar="N",
        help="viewers opening their socket at the same time (200: all, as after a restart)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--serve", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve_main(args.serve)
    if args.viewers < 1 or args.speed <= 0 or args.passes < 1 or args.connect_at_once < 1:
        parser.error("--viewers, --speed, --passes and --connect-at-once must be positive")

    # A plain kill then unwinds like Ctrl-C: the bridge is stopped and the files removed.
    signal.signal(signal.SIGTERM, stop_on_signal)
    dropped_env = scrub_environment()
    progress = Progress()
    workdir = Path(tempfile.mkdtemp(prefix="panel-fanout-"))
    try:
        transcript = looped_transcript(
            args.transcript.resolve(), args.passes, workdir / "session.ami"
        )
        progress(
            f"transcript: {transcript.messages:,} messages, {transcript.session_seconds:.0f} s "
            f"of session time"
        )
        results = asyncio.run(run(args, transcript, workdir, progress))
        print_report(results, transcript, args, dropped_env)
        problems = [f"{r.bus}: {problem}" for r in results for problem in r.problems]
        if problems:
            print("\nthe measurement is broken:", file=sys.stderr)
            for problem in problems[:20]:
                print(f"  {problem}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        progress("interrupted: the bridge is stopped")
        return 130
    finally:
        if args.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
