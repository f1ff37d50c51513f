"""Several PBXs into one bridge process: calls per second and CPU per call, the whole process.

N loopback AMI servers each play one PBX: they accept the bridge's login, answer its resync
(QueueStatus, QueueSummary, CoreShowChannels) with empty lists, then send the events of the
recorded real session ``tests/fixtures/hotline-3-agents-40-calls.ami`` (40 calls) ``--repeat``
times, each repetition with fresh uniqueids, as fast as the socket takes them. One real
``hotline run`` (the production composition root, ``pbxs`` set to the N servers, PostgreSQL and
Redis as in production, routing inline) follows all of them: it owns every PBX's lease, runs
each PBX's pipeline, puts each finished call on the Redis stream ``hotline:calls``, and its own
consumer in the ``journal`` group writes the calls to PostgreSQL (fenced by the lease token),
with the tickets of the answered calls.

Timed from the moment the servers start sending until the journal holds every call. The CPU is
the bridge process's own (user + system, from ``/proc``), pinned to one core (``--cpu``), over
that span. Printed: calls, seconds, calls/s, CPU seconds, CPU ms per call, the core's share, and
the target (100 calls/s on one core at <= 5 ms CPU per call).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "hotline-3-agents-40-calls.ami"
CALLS_PER_SESSION = 40
TARGET_CALLS_PER_SECOND, TARGET_CPU_MS = 100.0, 5.0
UNIQUEID = re.compile(rb"\b(\d{10})\.(\d+)\b")
LIST_ACTIONS = {
    "QueueStatus": "QueueStatusComplete",
    "QueueSummary": "QueueSummaryComplete",
    "CoreShowChannels": "CoreShowChannelsComplete",
}
REDIS_DB = 12


def session_events(path: Path) -> list[bytes]:
    """The transcript's event frames (greeting and login answer left out)."""
    frames = path.read_bytes().split(b"\r\n\r\n")
    return [frame + b"\r\n\r\n" for frame in frames if frame.startswith(b"Event: ")]


def repeated(events: list[bytes], repeat: int) -> bytes:
    """``events`` ``repeat`` times, each time with uniqueids of its own."""
    parts = []
    for round_number in range(repeat):

        def renumber(match: re.Match[bytes], base: int = round_number * 100_000) -> bytes:
            return match.group(1) + b"." + str(base + int(match.group(2))).encode()

        parts.append(UNIQUEID.sub(renumber, b"".join(events)))
    return b"".join(parts)


@dataclass
class FakePbx:
    """One PBX's AMI, as far as the bridge needs it; sends its calls once resynced."""

    payload: bytes
    go: asyncio.Event
    port: int = 0
    started_sending: float | None = None
    done_sending: float | None = None
    server: asyncio.Server | None = None
    answered: set[str] = field(default_factory=set)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        sending: asyncio.Task[None] | None = None
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                lines = raw.decode().strip().split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines if ": " in line)
                action, action_id = headers.get("Action", ""), headers.get("ActionID", "")
                if action in LIST_ACTIONS:
                    answer = (
                        f"Response: Success\r\nActionID: {action_id}\r\nEventList: start\r\n"
                        f"Message: will follow\r\n\r\nEvent: {LIST_ACTIONS[action]}\r\n"
                        f"ActionID: {action_id}\r\nEventList: Complete\r\nListItems: 0\r\n\r\n"
                    )
                    writer.write(answer.encode())
                    self.answered.add(action)
                else:
                    writer.write(
                        f"Response: Success\r\nActionID: {action_id}\r\n"
                        "Message: Authentication accepted\r\n\r\n".encode()
                    )
                await writer.drain()
                if sending is None and self.answered >= set(LIST_ACTIONS):
                    sending = asyncio.create_task(self._send(writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            return  # the benchmark is over and its loop is closing: nothing to report
        finally:
            if sending is not None:
                sending.cancel()
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        await self.go.wait()
        self.started_sending = time.monotonic()
        view = memoryview(self.payload)
        for start in range(0, len(view), 65536):
            writer.write(view[start : start + 65536])
            await writer.drain()
        self.done_sending = time.monotonic()


def flush_redis() -> None:
    subprocess.run(["redis-cli", "-n", str(REDIS_DB), "FLUSHDB"], capture_output=True, check=False)


def start_bridge(env: dict[str, str], log_path: Path, profile: str | None) -> subprocess.Popen:
    """The real ``hotline run``; under cProfile when ``profile`` names a stats file."""
    profiling = ["-m", "cProfile", "-o", profile] if profile else []
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, *profiling, "-m", "hotline.cli", "run"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def database_connections(database: str) -> int:
    """The bridge's open connections to its database (pg_stat_activity)."""
    done = subprocess.run(
        ["psql", database.replace("+asyncpg", ""), "-qAtc",
         "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return int(done.stdout.strip() or 0) - 1 if done.returncode == 0 else -1  # less psql's own


def journal_count(database: str) -> int:
    done = subprocess.run(
        ["psql", database.replace("+asyncpg", ""), "-qAtc", "SELECT count(*) FROM calls"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return int(done.stdout.strip() or 0) if done.returncode == 0 else -1


def health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
        return json.load(answer)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def throwaway_database(admin_url: str):  # type: ignore[no-untyped-def]
    name = f"hotline_fleet_{uuid.uuid4().hex[:10]}"
    subprocess.run(["psql", admin_url, "-qc", f'CREATE DATABASE "{name}"'], check=True)
    try:
        base = admin_url.rsplit("/", 1)[0]
        yield f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    finally:
        subprocess.run(
            ["psql", admin_url, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
            check=False,
        )


async def measure(args: argparse.Namespace, database: str, workdir: Path) -> dict:
    events = session_events(FIXTURE)
    go = asyncio.Event()
    pbxs = [FakePbx(repeated(events, args.repeat), go) for _ in range(args.pbxs)]
    for pbx in pbxs:
        await pbx.start()
    try:
        return await _measure(args, database, workdir, pbxs, go)
    finally:
        for pbx in pbxs:
            if pbx.server is not None:
                pbx.server.close()


async def _measure(
    args: argparse.Namespace, database: str, workdir: Path, pbxs: list[FakePbx], go: asyncio.Event
) -> dict:
    expected = args.pbxs * args.repeat * CALLS_PER_SESSION
    web_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env |= {
        "HOTLINE_DATABASE_URL": database,
        "HOTLINE_REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "HOTLINE_PBXS": json.dumps(
            [
                {"name": f"pbx{i + 1}", "ami_port": pbx.port, "ami_secret": "bench"}
                for i, pbx in enumerate(pbxs)
            ]
        ),
        "HOTLINE_ROUTING_PROCESS": "inline",
        "HOTLINE_WEB_PORT": str(web_port),
        "HOTLINE_AGI_PORT": str(free_port()),
        "HOTLINE_RECORDINGS_SPOOL": str(workdir / "spool"),
        "HOTLINE_RECORDINGS_DIR": str(workdir / "recordings"),
        "HOTLINE_LOG_LEVEL": "WARNING",
    }
    flush_redis()
    log_path = workdir / "bridge.log"
    bridge = start_bridge(env, log_path, args.profile)
    try:
        if args.cpu is not None:
            os.sched_setaffinity(bridge.pid, {args.cpu})
        deadline = time.monotonic() + 60
        while not all(pbx.answered >= set(LIST_ACTIONS) for pbx in pbxs):
            if bridge.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bridge did not follow every PBX:\n" + log_path.read_text())
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # let the start settle (leases, first snapshots)
        idle_cpu = process_cpu_seconds(bridge.pid)
        await asyncio.sleep(2)
        idle_per_second = (process_cpu_seconds(bridge.pid) - idle_cpu) / 2
        cpu_before = process_cpu_seconds(bridge.pid)
        started = time.monotonic()
        go.set()
        count, last_change, last, connections = 0, time.monotonic(), -1, 0
        while count < expected and time.monotonic() - last_change < args.stall_seconds:
            await asyncio.sleep(0.05)
            count = await asyncio.to_thread(journal_count, database)
            connections = max(connections, await asyncio.to_thread(database_connections, database))
            if count != last:
                last, last_change = count, time.monotonic()
        finished = time.monotonic()
        cpu = process_cpu_seconds(bridge.pid) - cpu_before
        report = health(web_port)
    finally:
        bridge.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            bridge.wait(timeout=30)
        if bridge.poll() is None:
            bridge.kill()
        flush_redis()
    seconds = finished - started
    sent = max(pbx.done_sending or finished for pbx in pbxs) - started
    return {
        "pbxs": args.pbxs,
        "calls_expected": expected,
        "calls_journalled": count,
        "seconds": round(seconds, 2),
        "sending_seconds": round(sent, 2),
        "calls_per_second": round(count / seconds, 1) if seconds else None,
        "cpu_seconds": round(cpu, 2),
        "cpu_ms_per_call": round(cpu * 1000 / count, 2) if count else None,
        "idle_cpu_ms_per_second": round(idle_per_second * 1000, 1),
        "core_share": round(cpu / seconds, 2) if seconds else None,
        "ok": report.get("ok"),
        "database_connections_at_most": connections,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pbxs", type=int, default=4, help="PBXs (AMI servers), default 4")
    parser.add_argument(
        "--repeat", type=int, default=25, help="sessions per PBX (40 calls each), default 25"
    )
    parser.add_argument("--cpu", type=int, default=0, help="pin the bridge to this CPU (0)")
    parser.add_argument("--stall-seconds", type=float, default=20.0)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "HOTLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="an admin URL of the PostgreSQL server (a throwaway database is made there)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--profile", help="run the bridge under cProfile, its stats to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir, throwaway_database(args.postgres) as database:
        figures = asyncio.run(measure(args, database, Path(workdir)))
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"{figures['pbxs']} PBXs x {args.repeat} recorded sessions into one `hotline run` "
            f"(PostgreSQL, Redis stream, pinned to CPU {args.cpu})"
        )
        print(
            f"calls journalled {figures['calls_journalled']} of {figures['calls_expected']} in "
            f"{figures['seconds']} s (the PBXs finished sending after "
            f"{figures['sending_seconds']} s)"
        )
        print(
            f"calls/s per process {figures['calls_per_second']}; bridge CPU "
            f"{figures['cpu_seconds']} s = {figures['cpu_ms_per_call']} ms per call "
            f"({figures['core_share']:.0%} of the core; idle it uses "
            f"{figures['idle_cpu_ms_per_second']} ms/s); at most "
            f"{figures['database_connections_at_most']} database connections open"
        )
        met = (
            figures["calls_per_second"] is not None
            and figures["calls_per_second"] >= TARGET_CALLS_PER_SECOND
            and figures["cpu_ms_per_call"] is not None
            and figures["cpu_ms_per_call"] <= TARGET_CPU_MS
        )
        print(
            f"target: >= {TARGET_CALLS_PER_SECOND:.0f} calls/s on one core at <= "
            f"{TARGET_CPU_MS:.0f} ms CPU per call: {'met' if met else 'NOT met'}"
        )
    return 0 if figures["calls_journalled"] == figures["calls_expected"] else 1


if __name__ == "__main__":
    sys.exit(main())
