"""Several ``hotline run`` processes over the two test-bed Asterisks, PostgreSQL and Redis.

Shared by the tests of a hotline of several PBXs (failover; acting on any PBX from any
process): each bridge is a real ``hotline run`` with web and FastAGI ports of its own and its
own log file; all share one throwaway PostgreSQL database and one Redis database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.conftest import free_port, need_service, port_open, throwaway_postgres
from tests.health import MONITOR_AUTHORIZATION, MONITOR_ENV, read_health
from tests.recorder.testbed import Sandbox

PBX_NAMES = {"a": "west", "b": "east"}


@dataclass
class Bridge:
    number: int
    process: subprocess.Popen[bytes]
    web_port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def health(self) -> dict[str, Any]:
        return read_health(self.web_port, timeout=1)[1]

    def owns(self, pbx: str) -> bool:
        """Owner of ``pbx`` and logged in to it."""
        try:
            state = self.health()["pbxs"][pbx]
        except (OSError, ValueError, KeyError):
            return False
        return bool(state.get("owner") and state.get("up"))

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return f"--- bridge {self.number} ---\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class Hotline:
    """The test's bridges, sharing one PostgreSQL database and one Redis."""

    database: str
    env: dict[str, str]
    tmp_path: Path
    agi_ports: Sequence[int]
    redis_db: int
    bridges: list[Bridge] = field(default_factory=list)

    def start(self, number: int) -> Bridge:
        web_port = free_port()
        agi_port = self.agi_ports[number - 1]
        log_path = self.tmp_path / f"bridge{number}.log"
        env = {**self.env, "HOTLINE_AGI_PORT": str(agi_port), "HOTLINE_WEB_PORT": str(web_port)}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "hotline.cli", "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        bridge = Bridge(number, process, web_port, log_path)
        self.bridges.append(bridge)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"bridge {number} exited:\n{bridge.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                if bridge.health() and port_open("127.0.0.1", agi_port):
                    return bridge
            time.sleep(0.2)
        pytest.fail(f"bridge {number} did not start:\n{bridge.log_tail()}")

    def owner_of(self, pbx: str) -> Bridge | None:
        owners = [b for b in self.bridges if b.process.poll() is None and b.owns(pbx)]
        return owners[0] if len(owners) == 1 else None

    def spread_over(self) -> int:
        """How many processes follow the PBXs; 0 while one of them has no owner."""
        owners = [self.owner_of(pbx) for pbx in PBX_NAMES.values()]
        if any(owner is None for owner in owners):
            return 0
        return len({owner.number for owner in owners if owner is not None})

    def logs(self) -> str:
        return "\n".join(bridge.log_tail() for bridge in self.bridges)

    def redis(self, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-n", str(self.redis_db), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return done.stdout.strip()

    def stop_all(self) -> None:
        for bridge in self.bridges:
            if bridge.process.poll() is None:
                bridge.process.send_signal(signal.SIGCONT)
                bridge.process.send_signal(signal.SIGTERM)
        for bridge in self.bridges:
            try:
                bridge.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                bridge.process.kill()


def pbx_entry(pbx: Sandbox, **extra: str) -> dict[str, Any]:
    """``pbx`` as one entry of ``HOTLINE_PBXS``."""
    return {
        "name": PBX_NAMES[pbx.instance],
        "ami_host": pbx.ami_host,
        "ami_port": pbx.ami_port,
        "ami_username": pbx.ami_username,
        "ami_secret": pbx.ami_secret,
        "queue_log": str(pbx.queue_log),
        **extra,
    }


@contextlib.asynccontextmanager
async def hotline_over(
    pbxs: Sequence[dict[str, Any]],
    tmp_path: Path,
    *,
    redis_db: int,
    agi_ports: Sequence[int],
) -> AsyncIterator[Hotline]:
    """A hotline of these PBXs on a throwaway database; its bridges are stopped at the end and
    its Redis database emptied before and after."""
    need_service("Redis", "127.0.0.1", 6379)
    async with throwaway_postgres() as database:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
        env |= {
            "HOTLINE_DATABASE_URL": database,
            "HOTLINE_REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}",
            "HOTLINE_PBXS": json.dumps(list(pbxs)),
            "HOTLINE_ROUTING_PROCESS": "inline",
            "HOTLINE_RECORDINGS_SPOOL": str(tmp_path / "spool"),
            "HOTLINE_RECORDINGS_DIR": str(tmp_path / "recordings"),
            "HOTLINE_LOG_LEVEL": "INFO",
            # One key for every process: a login made on one works on the others.
            "HOTLINE_SESSION_SECRET": Fernet.generate_key().decode(),
            **MONITOR_ENV,
        }
        hotline = Hotline(database, env, tmp_path, agi_ports, redis_db)
        hotline.redis("FLUSHDB")
        try:
            yield hotline
        finally:
            hotline.stop_all()
            hotline.redis("FLUSHDB")


async def wait_for(check: Callable[[], Any], timeout: float, what: str, hotline: Hotline) -> Any:
    """``check``'s first true answer (run in a thread: it may block on HTTP)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{hotline.logs()}")
        await asyncio.sleep(0.2)


def stats_of(bridge: Bridge) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{bridge.web_port}/api/v1/stats",
        headers={"Authorization": MONITOR_AUTHORIZATION},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
        result: dict[str, Any] = json.load(response)
        return result


@contextlib.contextmanager
def every_bridge_routes(agi_ports: Sequence[int], *pbxs: Sandbox) -> Iterator[None]:
    """The PBXs' dialplans ask every bridge in turn (the global is restored by a reload)."""
    urls = "&".join(f"agi://127.0.0.1:{port}/route" for port in agi_ports)
    for pbx in pbxs:
        pbx.cli(f"dialplan set global HOTLINE_AGI_URL {urls}")
        assert urls in pbx.cli("dialplan show globals")
    try:
        yield
    finally:
        for pbx in pbxs:
            pbx.cli("dialplan reload")
