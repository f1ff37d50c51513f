"""Routing in a process of its own: ``hotline run``'s FastAGI child over real sockets.

The child is the real ``hotline agi --link-fd``, on a real SQLite database; FastAGI requests
are sent as Asterisk sends them. The parent's side is ``RoutingProcess``, as ``hotline run``
builds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

import pytest

from hotline.routing_process import RoutingProcess
from hotline.schema import upgrade_database
from infra.storage import create_engine, session_factory, transactions_for
from ivr_bypass.decision import RoutingDecision, RoutingReason
from tests.agi_commands import variables_set
from tests.conftest import port_open
from tests.health import MONITOR_ENV, read_health
from tickets.store import TicketStore

CALLER = "13800138000"
OWNER = "PJSIP/agent1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def route_request(caller: str, uniqueid: str) -> bytes:
    headers = {
        "agi_network": "yes",
        "agi_network_script": "route",
        "agi_request": "agi://127.0.0.1/route",
        "agi_channel": "PJSIP/citizens-00000001",
        "agi_uniqueid": uniqueid,
        "agi_callerid": caller,
        "agi_calleridname": "",
        "agi_context": "from-citizens",
        "agi_extension": "12345",
        "agi_dnid": "12345",
    }
    return "".join(f"{k}: {v}\n" for k, v in headers.items()).encode() + b"\n"


async def route(port: int, caller: str, uniqueid: str) -> dict[str, str]:
    """One FastAGI session as Asterisk 22 runs it; the variables it leaves set."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(route_request(caller, uniqueid))
    commands = []
    while line := await asyncio.wait_for(reader.readline(), 5):
        commands.append(line.decode().rstrip("\n"))
        writer.write(b"200 result=0\n")
    writer.close()
    return variables_set(commands)


async def eventually(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


class Parent:
    """What ``hotline run`` gives the routing process: free agents, and a journal's ear."""

    def __init__(self) -> None:
        self.free: frozenset[str] = frozenset()
        self.routed: list[tuple[str, RoutingDecision]] = []
        self.routing_counters: Counter[str] = Counter()


@pytest.fixture
async def routing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[RoutingProcess, Parent, str]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
    monkeypatch.setenv("HOTLINE_DATABASE_URL", url)
    monkeypatch.setenv("HOTLINE_AGI_HOST", "127.0.0.1")
    port = free_port()
    monkeypatch.setenv("HOTLINE_AGI_PORT", str(port))
    await upgrade_database(url)
    engine = create_engine(url)
    units = transactions_for(engine)
    store = TicketStore(session_factory(engine), ZoneInfo("Asia/Shanghai"), units=units)
    ticket = await store.create(CALLER, datetime.now(UTC))
    await store.sign(ticket, OWNER, datetime.now(UTC))
    await units.close()
    await engine.dispose()
    parent = Parent()
    process = RoutingProcess(
        free_agents=lambda: parent.free,
        on_routed=lambda uid, decision: parent.routed.append((uid, decision)),
        routing_counters=parent.routing_counters,
        port=port,
    )
    await process.start()
    yield process, parent, ticket
    await process.close()


async def test_calls_are_routed_by_another_process_that_reports_each_route(routing) -> None:  # type: ignore[no-untyped-def]
    process, parent, ticket = routing
    assert process.up and process.pid not in (None, os.getpid())
    # The owner is busy: the caller's open ticket raises their priority in the queue.
    busy = await route(process.port, CALLER, "1.1")
    assert (busy["HOTLINE_REASON"], busy["HOTLINE_TICKET"]) == ("open-ticket", ticket)
    # The parent sees the owner go idle; the child hears of it and rings the owner alone.
    parent.free = frozenset({OWNER})
    await asyncio.sleep(0.6)
    free = await route(process.port, CALLER, "1.2")
    assert (free["HOTLINE_REASON"], free["HOTLINE_AGENT"]) == ("ticket-owner", OWNER)
    # Each route reaches the parent (the journal links the call to its ticket) ...
    await eventually(lambda: len(parent.routed) == 2)
    assert [(uid, d.reason, d.ticket) for uid, d in parent.routed] == [
        ("1.1", RoutingReason.OPEN_TICKET, ticket),
        ("1.2", RoutingReason.TICKET_OWNER, ticket),
    ]
    # ... and so do the child's counters, for /healthz and /metrics.
    await eventually(lambda: parent.routing_counters["routed"] == 2)
    assert process.health()["up"] is True


async def test_a_killed_routing_process_is_replaced(routing) -> None:  # type: ignore[no-untyped-def]
    process, _parent, _ticket = routing
    first = process.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await eventually(lambda: not process.up)
    await eventually(lambda: process.up and process.pid != first)
    assert process.health()["restarts"] == 1
    answer = await route(process.port, "13900139000", "2.1")
    assert answer["HOTLINE_REASON"] == "default"


def start_hotline_run(
    tmp_path: Path, agi_port: int, web_port: int, **settings: str
) -> tuple[subprocess.Popen[bytes], BinaryIO]:
    """``hotline run`` on a fresh SQLite file, no PBX (the demo replay), its output in run.log."""
    env = {
        **os.environ,
        "HOTLINE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}",
        "HOTLINE_AGI_PORT": str(agi_port),
        "HOTLINE_WEB_PORT": str(web_port),
        "HOTLINE_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "HOTLINE_RECORDINGS_SPOOL": str(tmp_path / "spool"),
        "HOTLINE_AMI_SECRET": "",
        "HOTLINE_REDIS_URL": "",
        **settings,
        **MONITOR_ENV,
    }
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen(
        [sys.executable, "-m", "hotline.cli", "run", "--speed", "0"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return run, log


def test_the_routing_process_does_not_outlive_hotline_run(tmp_path: Path) -> None:
    """``kill -9`` of ``hotline run``: its routing child lets go of the FastAGI port at once."""
    agi_port, web_port = free_port(), free_port()
    run, log = start_hotline_run(tmp_path, agi_port, web_port)
    try:
        child = None
        deadline = time.monotonic() + 30
        while child is None and time.monotonic() < deadline:
            try:
                child = read_health(web_port)[1].get("agi", {}).get("process")
            except OSError:
                time.sleep(0.2)
        assert isinstance(child, int), (tmp_path / "run.log").read_text()
        with socket.create_connection(("127.0.0.1", agi_port), timeout=2):
            pass  # the child listens
        run.kill()
        run.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", agi_port), timeout=2):
            pass
    finally:
        if run.poll() is None:
            run.kill()
        log.close()


def _alive(pid: int) -> bool:
    """Running, not a zombie nobody has reaped yet."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


async def test_a_fastagi_port_in_use_stops_the_start_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As FastAGI in the bridge's own process did: a port in use is an error at start, not a
    child started again and again until a timeout."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
    await upgrade_database(url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("HOTLINE_DATABASE_URL", url)
        monkeypatch.setenv("HOTLINE_AGI_HOST", "127.0.0.1")
        monkeypatch.setenv("HOTLINE_AGI_PORT", str(port))
        process = RoutingProcess(
            free_agents=frozenset,
            on_routed=lambda uid, decision: None,
            routing_counters=Counter(),
            port=port,
        )
        started = time.monotonic()
        with pytest.raises(OSError, match="exited"):
            await process.start()
    assert time.monotonic() - started < 15
    assert process.counters["restarts"] == 0


def _niceness(pid: int) -> dict[int, int]:
    """Each thread's niceness (field 19 of /proc/PID/task/TID/stat)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            fields = task.joinpath("stat").read_text().rsplit(")", 1)[1].split()
            found[int(task.name)] = int(fields[16])
    return found


def test_hotline_run_yields_the_cpu_to_its_routing_process_even_a_restarted_one(
    tmp_path: Path,
) -> None:
    """Loaded, the web side must not take the CPU a route needs: ``hotline run`` adds
    HOTLINE_BRIDGE_NICE to its own threads; its routing process, restarted too, keeps the
    priority ``hotline run`` was started with."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if base > 19 - 5:
        pytest.skip("this test process is already at the lowest priority")
    agi_port, web_port = free_port(), free_port()
    run, log = start_hotline_run(tmp_path, agi_port, web_port, HOTLINE_BRIDGE_NICE="5")

    def routing_child(not_this: int | None = None) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                child = read_health(web_port)[1].get("agi", {}).get("process")
                if isinstance(child, int) and child != not_this:
                    return child
            time.sleep(0.2)
        raise AssertionError((tmp_path / "run.log").read_text())

    try:
        first = routing_child()
        bridge = _niceness(run.pid)
        # Every thread of hotline run but one yields: the one left is the thread that starts
        # routing processes, so that a restarted one gets the priority the first one had.
        assert sorted(bridge.values()).count(base + 5) == len(bridge) - 1, bridge
        assert sorted(bridge.values()).count(base) == 1, bridge
        assert set(_niceness(first).values()) == {base}
        os.kill(first, signal.SIGKILL)
        second = routing_child(not_this=first)
        assert set(_niceness(second).values()) == {base}
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", agi_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert port_open("127.0.0.1", agi_port), "the restarted routing process does not listen"
    finally:
        run.terminate()
        try:
            run.wait(timeout=15)
        except subprocess.TimeoutExpired:
            run.kill()
        log.close()
