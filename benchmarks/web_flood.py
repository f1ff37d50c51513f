"""The web port flooded as an outsider would: what it costs the whole ``hotline run`` process.

Two attacks on loopback, each on a fresh process (SQLite, no PBX: a recorded session replayed):

- chunked logins: ``--logins`` (1,300) login requests without ``Content-Length``, each with a
  1 MB user name, ``--at-once`` (1,300) at a time, from one address. Printed: the process's
  resident memory before, at its highest, and after, and the answers' statuses.
- idle connections: ``--idle`` (20,000) TCP connections that never send a byte, from 64 loopback
  addresses, held by two helper processes (one process may not hold 20,000 descriptors).
  Printed: the process's open descriptors at their highest and 15 s later, what the web port
  accepted and closed, and whether ``/healthz`` and a FastAGI route still answered while the
  connections were held.

``--checkout DIR`` runs the ``hotline`` of another checkout (e.g. a ``git worktree`` of an earlier
commit) with this venv, to print the figures before a change. Bounded: every request and
connection count is fixed, and every phase stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
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

from benchmarks.route_beside_web import one_route  # noqa: E402

IDLE_ADDRESSES = [f"127.0.3.{n}" for n in range(1, 65)]
ATTACKER = "127.0.4.1"  # the login flood's one address; the probes come from 127.0.0.1
MB = 1 << 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


@dataclass
class Server:
    process: asyncio.subprocess.Process
    web_port: int
    agi_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


async def start_server(workdir: Path, checkout: Path | None) -> Server:
    web_port, agi_port = free_port(), free_port()
    # Only the settings below, and the event loop when asked for (uvloop and asyncio's own loop
    # buffer a flood differently).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HOTLINE_") or k == "HOTLINE_EVENT_LOOP"
    }
    env |= {
        "HOTLINE_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'hotline.db'}",
        "HOTLINE_WEB_PORT": str(web_port),
        "HOTLINE_AGI_PORT": str(agi_port),
        "HOTLINE_RECORDINGS_DIR": str(workdir / "recordings"),
        "HOTLINE_RECORDINGS_SPOOL": str(workdir / "spool"),
        "HOTLINE_LOG_LEVEL": "WARNING",
    }
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    log_path = workdir / "hotline.log"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hotline.cli", "run", env=env, cwd=workdir,
            stdout=log, stderr=log,
        )  # fmt: skip
    server = Server(process, web_port, agi_port, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await healthz_status(web_port) == 200:
            await asyncio.sleep(2)  # the replay has begun; memory settles
            return server
        await asyncio.sleep(0.2)
    raise RuntimeError("hotline run did not start:\n" + log_path.read_text()[-3000:])


async def stop_server(server: Server) -> int:
    with contextlib.suppress(ProcessLookupError):
        server.process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(server.process.wait(), 30)
    except TimeoutError:
        server.process.kill()
        return await server.process.wait()


async def healthz_status(port: int, timeout: float = 3.0) -> int | str:
    """The status line's code of ``GET /healthz``, or what went wrong."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            line = await reader.readline()
            writer.close()
    except (OSError, TimeoutError) as error:
        return type(error).__name__
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else repr(line[:40])


# --------------------------------------------------------------------------- chunked logins


async def chunked_login(port: int, size: int) -> str:
    """One login whose JSON body (a ``size``-byte user name) comes in 64 KB chunks."""
    try:
        async with asyncio.timeout(60):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(ATTACKER, 0)
            )
            writer.write(
                b"POST /api/v1/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            body = b'{"username": "' + b"a" * size + b'", "password": "x"}'
            for first in range(0, len(body), 65536):
                piece = body[first : first + 65536]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            line = await reader.readline()
            writer.close()
    except (OSError, TimeoutError) as error:
        return type(error).__name__
    parts = line.split()
    return parts[1].decode() if len(parts) > 1 else "closed"


@dataclass
class FloodResult:
    rss_before: float
    rss_peak: float
    rss_after: float
    statuses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    healthz_during: list[Any] = field(default_factory=list)
    route_during: list[str] = field(default_factory=list)


async def login_flood(server: Server, logins: int, at_once: int) -> FloodResult:
    result = FloodResult(rss_mb(server.pid), rss_mb(server.pid), 0.0)
    gate = asyncio.Semaphore(at_once)
    stop = asyncio.Event()

    async def one() -> None:
        async with gate:
            status = await chunked_login(server.web_port, MB)
        result.statuses[status] = result.statuses.get(status, 0) + 1

    async def watch() -> None:
        while not stop.is_set():
            result.rss_peak = max(result.rss_peak, rss_mb(server.pid))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    tasks = [asyncio.create_task(one()) for _ in range(logins)]
    probes = 0
    while not all(task.done() for task in tasks) and probes < 5:
        await asyncio.sleep(1)
        result.healthz_during.append(await healthz_status(server.web_port))
        result.route_during.append(await route_status(server.agi_port, f"9.{probes}"))
        probes += 1
    await asyncio.gather(*tasks)
    result.seconds = time.monotonic() - started
    stop.set()
    await watcher
    await asyncio.sleep(2)
    result.rss_after = rss_mb(server.pid)
    return result


async def route_status(port: int, uniqueid: str) -> str:
    try:
        latency, reason = await asyncio.wait_for(one_route(port, "13700000000", uniqueid), 5)
    except TimeoutError:
        return "timeout"
    return f"{reason} {latency * 1000:.0f} ms"


# --------------------------------------------------------------------------- idle connections


async def hold_idle(port: int, count: int, seconds: float, first_address: int) -> None:
    """The ``--hold`` helper process: open ``count`` idle connections, keep them ``seconds``."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sockets: list[socket.socket] = []
    refused = 0
    loop = asyncio.get_running_loop()
    for index in range(count):
        address = IDLE_ADDRESSES[(first_address + index) % len(IDLE_ADDRESSES)]
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.bind((address, 0))
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 2)
            sockets.append(sock)
        except (OSError, TimeoutError):
            refused += 1
            sock.close()
        if index % 500 == 0:
            await asyncio.sleep(0)
    print(json.dumps({"opened": len(sockets), "refused": refused}), flush=True)
    await asyncio.sleep(seconds)
    closed_by_server = 0
    for sock in sockets:
        try:
            if sock.recv(1, socket.MSG_PEEK) == b"":
                closed_by_server += 1
        except BlockingIOError:
            pass
        except OSError:
            closed_by_server += 1
        sock.close()
    print(json.dumps({"closed_by_server": closed_by_server}), flush=True)


@dataclass
class IdleResult:
    fds_before: int
    fds_peak: int = 0
    fds_later: int = 0
    opened: int = 0
    refused: int = 0
    closed_by_server: int = 0
    healthz_during: list[Any] = field(default_factory=list)
    route_during: list[str] = field(default_factory=list)


async def idle_flood(server: Server, count: int, hold_seconds: float) -> IdleResult:
    result = IdleResult(open_fds(server.pid))
    holders = []
    for half in range(2):
        holder = await asyncio.create_subprocess_exec(
            sys.executable, str(THIS_FILE), "--holder", "--port", str(server.web_port),
            "--count", str(count // 2), "--seconds", str(hold_seconds),
            "--first-address", str(half * 32), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        holders.append(holder)
    for holder in holders:
        if holder.stdout is None:
            raise RuntimeError("no pipe from a holder")
        opened = json.loads(await asyncio.wait_for(holder.stdout.readline(), 120))
        result.opened += opened["opened"]
        result.refused += opened["refused"]
    result.fds_peak = open_fds(server.pid)
    for probe in range(3):
        result.healthz_during.append(await healthz_status(server.web_port))
        result.route_during.append(await route_status(server.agi_port, f"8.{probe}"))
        result.fds_peak = max(result.fds_peak, open_fds(server.pid))
        await asyncio.sleep(1)
    await asyncio.sleep(max(0.0, hold_seconds - 5))
    result.fds_later = open_fds(server.pid)
    for holder in holders:
        assert holder.stdout is not None
        closed = json.loads(await asyncio.wait_for(holder.stdout.readline(), 120))
        result.closed_by_server += closed["closed_by_server"]
        await holder.wait()
    return result


async def main_async(args: argparse.Namespace) -> int:
    label = f"checkout {args.checkout.name}" if args.checkout else "this checkout"
    print(f"web port flood against a whole hotline run process ({label}); {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="web-flood-") as tmp:
        workdir = Path(tmp)
        (workdir / "logins").mkdir()
        server = await start_server(workdir / "logins", args.checkout)
        try:
            flood = await login_flood(server, args.logins, args.at_once)
        finally:
            code = await stop_server(server)
        print(
            f"\nchunked logins: {args.logins} x 1 MB user name, {args.at_once} at a time "
            f"from {ATTACKER}, "
            f"{flood.seconds:.1f} s\n"
            f"  resident memory: {flood.rss_before:.0f} MB before, {flood.rss_peak:.0f} MB at "
            f"most, {flood.rss_after:.0f} MB after\n"
            f"  answers: {dict(sorted(flood.statuses.items()))}\n"
            f"  meanwhile /healthz: {flood.healthz_during}; routes: {flood.route_during}\n"
            f"  exit status {code}"
        )
        (workdir / "idle").mkdir()
        server = await start_server(workdir / "idle", args.checkout)
        try:
            idle = await idle_flood(server, args.idle, args.hold)
        finally:
            code = await stop_server(server)
        print(
            f"\nidle connections: {args.idle} from {len(IDLE_ADDRESSES)} addresses, held "
            f"{args.hold:.0f} s\n"
            f"  connects completed {idle.opened}, failed {idle.refused}; closed by the server "
            f"by the end {idle.closed_by_server}\n"
            f"  open descriptors of the process: {idle.fds_before} before, {idle.fds_peak} at "
            f"most, {idle.fds_later} {args.hold - 5:.0f} s later\n"
            f"  meanwhile /healthz: {idle.healthz_during}; routes: {idle.route_during}\n"
            f"  exit status {code}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, help="run the hotline of this checkout")
    parser.add_argument("--logins", type=int, default=1300)
    parser.add_argument("--at-once", type=int, default=1300)
    parser.add_argument("--idle", type=int, default=20000)
    parser.add_argument("--hold", type=float, default=20.0, help="seconds to hold them")
    parser.add_argument("--holder", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.holder:
        helper = argparse.ArgumentParser()
        helper.add_argument("--port", type=int)
        helper.add_argument("--count", type=int)
        helper.add_argument("--seconds", type=float)
        helper.add_argument("--first-address", type=int)
        options = helper.parse_args(rest)
        asyncio.run(hold_idle(options.port, options.count, options.seconds, options.first_address))
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
