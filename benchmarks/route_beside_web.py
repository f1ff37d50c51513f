"""Routing while the web port is under load: does a call pay for the panel?

What is measured: FastAGI route latency (connect to close, as Asterisk runs a ``route`` session)
and fallbacks to the default queue, against a whole ``hotline run`` process as a user starts it
(SQLite, in-process bus, a recorded session replayed at 5x so the panel has figures to push:
about 2 calls a second, Beijing 12345's peak with 600-700 operators on duty; ``--speed 20`` is
a stress figure, 8 calls a second).
Two phases per run, the same offered routes in each (Poisson arrivals, 20/s by default):

- idle: nobody on the web port;
- loaded: 2,000 logged-in viewers hold ``WS /api/v1/live`` open and read every change, while 500
  slowloris peers drip header bytes at the web port and reconnect whenever they are closed.

The viewers and the slowloris peers run in a separate process (this file with ``--load``), at a
lower CPU priority (nice 10): on this 2-core machine they stand in for browsers on other
computers, and they should not take the CPU that the server would have on its own. The viewers
come from 40 loopback addresses (127.0.1.x), as 2,000 people would come from many machines; the
slowloris peers from 4 others.

Each run is done with routing in its own process (``HOTLINE_ROUTING_PROCESS=process``, the
default) and, for comparison, in the bridge's own event loop (``inline``, as before). The target
(issue: hardening, item 3): with the routing process, loaded p99 within 2x the idle p99, and 0
fallbacks.

``python benchmarks/route_beside_web.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

THIS_FILE = Path(__file__).resolve()
ROOT = THIS_FILE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from benchmarks.machine import (  # noqa: E402
    child_pids,
    fsync_seconds,
    machine_cpu_seconds,
    process_cpu_seconds,
)
from benchmarks.panel_fanout import looped_transcript  # noqa: E402
from hotline.service import DEMO_SESSION  # noqa: E402

USER, PASSWORD = "bench-supervisor", "bench password 1"
VIEWER_ADDRESSES = [f"127.0.1.{n}" for n in range(1, 41)]
SLOWLORIS_ADDRESSES = [f"127.0.2.{n}" for n in range(1, 5)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


# --------------------------------------------------------------------------- routes (Asterisk)


def route_header(port: int, caller: str, uniqueid: str) -> bytes:
    fields = {
        "agi_network": "yes",
        "agi_network_script": "route",
        "agi_request": f"agi://127.0.0.1:{port}/route",
        "agi_channel": f"PJSIP/citizens-{uniqueid}",
        "agi_uniqueid": uniqueid,
        "agi_callerid": caller,
        "agi_calleridname": "",
        "agi_context": "from-citizens",
        "agi_extension": "12345",
        "agi_dnid": "12345",
    }
    return "".join(f"{k}: {v}\n" for k, v in fields.items()).encode() + b"\n"


async def one_route(port: int, caller: str, uniqueid: str) -> tuple[float, str]:
    """(seconds from connect to close, HOTLINE_REASON) of one FastAGI session."""
    started = time.monotonic()
    reason = "(none)"
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(route_header(port, caller, uniqueid))
        while line := await asyncio.wait_for(reader.readline(), 10):
            if line.startswith(b"EXEC MSet "):
                for pair in line[10:].strip(b'"\r\n').split(b","):
                    name, _, value = pair.partition(b"=")
                    if name == b"HOTLINE_REASON":
                        reason = value.decode()
                writer.write(b"200 result=0\n")
            elif line.startswith(b"SET VARIABLE HOTLINE_REASON "):
                reason = line.split(b" ", 3)[3].strip(b'"\r\n').decode()
                writer.write(b"200 result=1\n")
            else:
                writer.write(b"200 result=1\n")
        writer.close()
    except (OSError, TimeoutError) as error:
        reason = f"error: {type(error).__name__}"
    return time.monotonic() - started, reason


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    cpu_shares: dict[str, float] = field(default_factory=dict)  # process -> CPU share
    fsyncs: list[float] = field(default_factory=list)  # the disk's own fsync latency meanwhile

    @property
    def fallbacks(self) -> int:
        return sum(n for r, n in self.reasons.items() if r == "fallback" or r.startswith("error"))

    def line(self) -> str:
        ms = [v * 1000 for v in self.latencies]
        return (
            f"{self.name:<26}{len(ms):>7}{percentile(ms, 50):>9.2f}{percentile(ms, 95):>9.2f}"
            f"{percentile(ms, 99):>9.2f}{max(ms):>9.2f}{self.fallbacks:>11}"
            + "".join(f"{share:>9.0%}" for share in self.cpu_shares.values())
        )


class PhaseCpu:
    """CPU share (one core = 100%) over a phase of each process on the machine's two cores:
    ``hotline run``'s bridge and routing processes, the load process (viewers and slowloris,
    loaded phase only) and this one, the FastAGI client that times the routes."""

    def __init__(self, pid: int, load_pid: int | None = None) -> None:
        children = child_pids(pid)
        self._pids: dict[str, int | None] = {
            "bridge": pid,
            "routing": children[0] if children else None,
            "load": load_pid,
            "client": os.getpid(),
        }
        self._started = time.monotonic()
        self._before = {
            name: None if pid is None else process_cpu_seconds(pid)
            for name, pid in self._pids.items()
        }

    def shares(self) -> dict[str, float]:
        wall = time.monotonic() - self._started
        shares: dict[str, float] = {}
        for name, pid in self._pids.items():
            before = self._before[name]
            after = None if pid is None else process_cpu_seconds(pid)
            shares[name] = 0.0
            if before is not None and after is not None and wall > 0:
                shares[name] = (after - before) / wall
        return shares


FSYNC_GAP = 0.05


async def disk_fsyncs(workdir: Path, seconds: float) -> list[float]:
    """The disk's fsync latency (4 KB appended, every 50 ms) over a phase. With
    ``HOTLINE_DATABASE_SYNC=in_commit`` every route waits for one WAL sync, so a slower disk is a
    slower route whatever the web side does; with ``background`` the sync follows the answer."""
    return await asyncio.to_thread(fsync_seconds, workdir, int(seconds / FSYNC_GAP), FSYNC_GAP)


async def routes_at(port: int, rate: float, seconds: float, name: str, seed: int) -> Phase:
    """Poisson arrivals at ``rate``; each a new caller (a lookup and a new ticket: a write)."""
    rng = random.Random(seed)
    phase = Phase(name)
    tasks = []
    begin = time.monotonic()
    at = 0.0
    index = 0
    while at < seconds:
        delay = begin + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        caller = f"139{rng.randrange(10**8):08d}"
        tasks.append(asyncio.create_task(one_route(port, caller, f"{seed}.{index}")))
        index += 1
        at += rng.expovariate(rate)
    for latency, reason in await asyncio.gather(*tasks):
        phase.latencies.append(latency)
        phase.reasons[reason] = phase.reasons.get(reason, 0) + 1
    return phase


# --------------------------------------------------------------------------- the web load


async def viewer(
    session: aiohttp.ClientSession, url: str, cookie: str, stop: asyncio.Event, tally: dict
) -> None:
    try:
        async with session.ws_connect(  # offering permessage-deflate, as browsers do
            url, headers={"Cookie": cookie}, heartbeat=None, autoping=True, compress=15
        ) as socket_:
            tally["connected"] += 1
            reader = asyncio.ensure_future(_read_all(socket_, tally))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in (reader, stopping):
                task.cancel()
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        tally["failed"] += 1
        tally.setdefault("errors", {}).setdefault(type(error).__name__, 0)
        tally["errors"][type(error).__name__] += 1


async def _read_all(socket_: aiohttp.ClientWebSocketResponse, tally: dict) -> None:
    async for _message in socket_:
        tally["messages"] += 1
    tally["closed_by_server"] += 1


async def slowloris(port: int, address: str, stop: asyncio.Event, tally: dict) -> None:
    """Send a request line and then one header byte a second; reconnect when closed."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(address, 0)
            )
        except OSError:
            tally["refused"] += 1
            await asyncio.sleep(0.5)
            continue
        tally["opened"] += 1
        try:
            writer.write(b"GET /api/v1/tickets HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            while not stop.is_set():
                await asyncio.sleep(1.0)
                if reader.at_eof():
                    break
                writer.write(b"a")
                await writer.drain()
        except OSError:
            pass
        tally["closed"] += 1
        writer.close()
        await asyncio.sleep(0.2)


async def load(args: argparse.Namespace) -> None:
    """The ``--load`` process: viewers and slowloris until ``--seconds`` or SIGTERM."""
    raise_file_limit()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    views = {"connected": 0, "failed": 0, "messages": 0, "closed_by_server": 0}
    loris = {"opened": 0, "closed": 0, "refused": 0}
    url = f"http://127.0.0.1:{args.web_port}/api/v1/live"
    sessions = [
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, local_addr=(address, 0), force_close=True)
        )
        for address in VIEWER_ADDRESSES
    ]
    viewers = [
        asyncio.create_task(viewer(sessions[n % len(sessions)], url, args.cookie, stop, views))
        for n in range(args.viewers)
    ]
    lorises = [
        asyncio.create_task(
            slowloris(args.web_port, SLOWLORIS_ADDRESSES[n % len(SLOWLORIS_ADDRESSES)], stop, loris)
        )
        for n in range(args.slowloris)
    ]
    deadline = time.monotonic() + args.seconds
    announced = False
    while not stop.is_set() and time.monotonic() < deadline:
        if not announced and views["connected"] + views["failed"] >= args.viewers:
            print(json.dumps({"ready": views}), flush=True)
            announced = True
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*viewers, *lorises, return_exceptions=True)
    for session in sessions:
        await session.close()
    print(json.dumps({"done": {"viewers": views, "slowloris": loris}}), flush=True)


# --------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    mode: str
    idle: Phase
    loaded: Phase
    load_report: dict[str, Any]
    routing_counters: dict[str, Any]
    web_counters: dict[str, Any]
    steal_share: float | None


async def wait_healthy(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as answer:
                    if answer.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError("hotline run did not become healthy in time")


async def login(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/api/v1/login",
            json={"username": USER, "password": PASSWORD},
        ) as answer,
    ):
        if answer.status != 200:
            raise RuntimeError(f"login refused: {answer.status} {await answer.text()}")
        cookie = answer.cookies["hotline_session"].value
    return f"hotline_session={cookie}"


async def full_health(port: int, cookie: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz", headers={"Cookie": cookie}) as answer,
    ):
        return dict(await answer.json())


@contextlib.asynccontextmanager
async def database_for(mode: str, args: argparse.Namespace, workdir: Path) -> Any:
    """SQLite in the work folder, or a new database on the PostgreSQL server of ``--postgres``
    (dropped afterwards)."""
    if not args.postgres:
        yield f"sqlite+aiosqlite:///{workdir / f'{mode}.db'}"
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    server = make_url(args.postgres)
    name = f"route_beside_web_{mode}_{os.getpid()}"
    admin = await asyncpg.connect(server.set(drivername="postgresql").render_as_string(False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield server.set(drivername="postgresql+asyncpg", database=name).render_as_string(False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def run_mode(mode: str, args: argparse.Namespace, workdir: Path, replay: Path) -> RunResult:
    async with database_for(mode, args, workdir) as database_url:
        return await run_mode_on(mode, args, workdir, replay, database_url)


async def run_mode_on(
    mode: str, args: argparse.Namespace, workdir: Path, replay: Path, database_url: str
) -> RunResult:
    web_port, agi_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")},
        "HOTLINE_DATABASE_URL": database_url,
        "HOTLINE_ROUTING_PROCESS": mode,
        "HOTLINE_WEB_PORT": str(web_port),
        "HOTLINE_AGI_PORT": str(agi_port),
        "HOTLINE_RECORDINGS_DIR": str(workdir / "recordings"),
        "HOTLINE_RECORDINGS_SPOOL": str(workdir / "spool"),
        "HOTLINE_LOG_LEVEL": "WARNING",
        **({"PYTHONPATH": str(args.checkout)} if args.checkout else {}),
        **({"HOTLINE_DATABASE_SYNC": args.database_sync} if args.database_sync else {}),
        **({"HOTLINE_BRIDGE_NICE": str(args.bridge_nice)} if args.bridge_nice is not None else {}),
    }
    adding = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotline.cli", "users", "add", USER, "--role", "supervisor",
        "--password-stdin", env=env, cwd=workdir, stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, problem = await asyncio.wait_for(adding.communicate((PASSWORD + "\n").encode()), 120)
    if adding.returncode != 0:
        raise RuntimeError(f"users add failed: {problem.decode(errors='replace')}")
    log = (workdir / f"{mode}.log").open("wb")
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotline.cli", "run", "--replay", str(replay), "--speed",
        str(args.speed), env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        try:
            await wait_healthy(web_port)
        except RuntimeError:
            log.flush()
            tail = (workdir / f"{mode}.log").read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError("hotline run did not start:\n" + "\n".join(tail)) from None
        cookie = await login(web_port)
        await routes_at(agi_port, args.rate, 3, "warm-up", seed=1)
        cpu_before = machine_cpu_seconds()
        wall_before = time.monotonic()
        cpu = PhaseCpu(server.pid)
        idle, fsyncs = await asyncio.gather(
            routes_at(agi_port, args.rate, args.seconds, "idle", seed=2),
            disk_fsyncs(workdir, args.seconds),
        )
        idle.cpu_shares, idle.fsyncs = cpu.shares(), fsyncs
        loader = await asyncio.create_subprocess_exec(
            sys.executable, str(THIS_FILE), "--load", "--web-port", str(web_port),
            "--cookie", cookie, "--viewers", str(args.viewers), "--slowloris",
            str(args.slowloris), "--seconds", str(args.seconds + 90),
            stdout=asyncio.subprocess.PIPE, preexec_fn=lambda: os.nice(10),
        )  # fmt: skip
        if loader.stdout is None:
            raise RuntimeError("no pipe from the load process")
        ready_line = await asyncio.wait_for(loader.stdout.readline(), 90)
        ready = json.loads(ready_line or b"{}").get("ready", {})
        await asyncio.sleep(2)  # the slowloris peers are connected and dripping
        cpu = PhaseCpu(server.pid, loader.pid)
        loaded, fsyncs = await asyncio.gather(
            routes_at(
                agi_port, args.rate, args.seconds, f"{args.viewers} viewers + slowloris", seed=3
            ),
            disk_fsyncs(workdir, args.seconds),
        )
        loaded.cpu_shares, loaded.fsyncs = cpu.shares(), fsyncs
        health = await full_health(web_port, cookie)
        loader.send_signal(signal.SIGTERM)
        done_line = await asyncio.wait_for(loader.stdout.readline(), 60)
        await loader.wait()
        report = json.loads(done_line or b"{}").get("done", {})
        report["viewers_ready"] = ready
        cpu_after = machine_cpu_seconds()
        steal = None
        if cpu_before and cpu_after:
            wall = (time.monotonic() - wall_before) * (os.cpu_count() or 1)
            steal = (cpu_after["steal"] - cpu_before["steal"]) / wall
        return RunResult(
            mode,
            idle,
            loaded,
            report,
            dict(health.get("routing", {})),
            dict(health.get("web", {})),
            steal,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(server.wait(), 30)
        except TimeoutError:
            server.kill()
            await server.wait()
        log.close()


def print_run(result: RunResult) -> None:
    print(
        f"\nrouting: {result.mode}"
        + (
            f"   (hypervisor steal {result.steal_share:.0%})"
            if result.steal_share is not None
            else ""
        )
    )
    cpu_names = "".join(f"{name:>9}" for name in result.idle.cpu_shares)
    print(f"{'phase':<26}{'routes':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'fallbacks':>11}{cpu_names}")  # fmt: skip
    print(result.idle.line())
    print(result.loaded.line())
    if cpu_names:
        print(
            "(CPU shares, 100% = one core: bridge and routing are hotline run's processes, load"
            " the viewers and slowloris peers, client this process timing the routes)"
        )
    print(
        "the disk meanwhile, fsync of 4 KB every 50 ms: p50/p99 "
        + ", ".join(
            f"{label} {percentile(phase.fsyncs, 50) * 1000:.2f}/"
            f"{percentile(phase.fsyncs, 99) * 1000:.2f} ms"
            for label, phase in (("idle", result.idle), ("loaded", result.loaded))
        )
    )
    viewers = result.load_report.get("viewers", {})
    loris = result.load_report.get("slowloris", {})
    print(
        f"viewers connected {viewers.get('connected')} (failed {viewers.get('failed')}), "
        f"messages read {viewers.get('messages')}; slowloris connections opened "
        f"{loris.get('opened')}, closed {loris.get('closed')}, refused {loris.get('refused')}"
    )
    fallback_counters = {
        k: v for k, v in result.routing_counters.items() if k.startswith(("fallback", "late"))
    }
    print(f"bridge's routing counters: routed {result.routing_counters.get('routed')}, "
          f"{fallback_counters or 'no fallbacks'}")  # fmt: skip
    if result.web_counters:
        print(f"web connection guard: {result.web_counters}")


def verdict(result: RunResult) -> str:
    idle_p99 = percentile(result.idle.latencies, 99)
    loaded_p99 = percentile(result.loaded.latencies, 99)
    ratio = loaded_p99 / idle_p99
    met = ratio <= 2 and result.loaded.fallbacks == 0 and result.idle.fallbacks == 0
    return (
        f"target (routing process): loaded p99 <= 2x idle p99 and 0 fallbacks: "
        f"{loaded_p99 * 1000:.2f} ms / {idle_p99 * 1000:.2f} ms = {ratio:.2f}x, "
        f"{result.loaded.fallbacks} fallbacks: {'met' if met else 'NOT met'}"
    )


async def main_async(args: argparse.Namespace) -> int:
    limit = raise_file_limit()
    if args.checkout:
        print(f"hotline of checkout {args.checkout.name}")
    print(
        f"route latency beside a loaded web port: {args.viewers} viewers + {args.slowloris} "
        f"slowloris, {args.rate:g} routes/s for {args.seconds:g} s per phase, session replayed "
        f"at {args.speed:g}x; {os.cpu_count()} CPUs, file limit {limit}; database sync "
        f"{args.database_sync or 'default'}, bridge niceness "
        f"{'default' if args.bridge_nice is None else args.bridge_nice}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="route-beside-web-") as tmp:
        workdir = Path(tmp)
        one = looped_transcript(DEMO_SESSION, 1, workdir / "one.ami")
        # The panel must have figures to push through both phases, the viewers' connecting and
        # the start-up included: replay for the whole run and a minute more.
        wanted_seconds = (2 * args.seconds + 90) * args.speed
        passes = args.passes or math.ceil(wanted_seconds / max(one.session_seconds, 1.0))
        looped = looped_transcript(DEMO_SESSION, passes, workdir / "looped.ami")
        replay = looped.path
        print(
            f"replay: {passes} passes of the recorded session, "
            f"{looped.replay_seconds(args.speed):.0f} s at {args.speed:g}x"
        )
        for mode in args.modes.split(","):
            result = await run_mode(mode, args, workdir, replay)
            print_run(result)
            results.append(result)
    for result in results:
        if result.mode == "process":
            print("\n" + verdict(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--slowloris", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0, help="routes per second")
    parser.add_argument(
        "--seconds",
        type=float,
        default=40.0,
        help="length of each phase (40: 800 routes, p99 = the 8th slowest)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=5.0,
        help="replay speed of the session (5: about 2 calls/s, a large city line's peak)",
    )
    parser.add_argument(
        "--passes", type=int, default=0, help="copies of the session replayed (0: long enough)"
    )
    parser.add_argument("--modes", default="process,inline", help="routing modes to run")
    parser.add_argument(
        "--checkout", type=Path, help="run the hotline of this checkout (an earlier commit)"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL server (postgresql://user@host/db) to make each run's database on",
    )
    parser.add_argument(
        "--database-sync",
        choices=("background", "in_commit"),
        help="HOTLINE_DATABASE_SYNC for the run (default: the hotline's own default)",
    )
    parser.add_argument(
        "--bridge-nice",
        type=int,
        help="HOTLINE_BRIDGE_NICE for the run (default: the hotline's own default)",
    )
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--web-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cookie", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load:
        asyncio.run(load(args))
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
