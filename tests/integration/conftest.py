"""Fixtures for integration tests against a real Asterisk 22 test bed.

The test bed is ``scripts/asterisk-sandbox``: Debian sid's Asterisk in a chroot with
the production configuration (``asterisk-conf/``) plus ``tests/asterisk-overlay/``.
Phones are SIPp processes (scenarios in ``tests/sipp/``): citizens call from
127.0.0.2, agents answer on 127.0.0.1:5071..5074 (static contacts of PJSIP/agent1..4).

Fixtures
--------
``asterisk`` (session)
    Starts the sandbox (building the chroot on first use) and yields an
    :class:`AsteriskSandbox` (``ami_host``, ``ami_port``, ``ami_username``,
    ``ami_secret``, ``chroot``, ``cli(cmd)``, ``queue_log_lines()`` ...).  Stops Asterisk
    at the end of the session unless it was already running before (or
    ``HOTLINE_SANDBOX_KEEP=1``).  When it cannot start, the test is skipped, or
    errors if ``HOTLINE_REQUIRE_ASTERISK=1`` (CI).
``sipp_agents`` (function)
    A :class:`SippAgents`: agent1 and agent2 answer, agent3 rings forever; more with
    ``sipp_agents.start("agent4")``.  All are killed at teardown.
``place_citizen_call`` (function)
    ``place_citizen_call(caller, talk_seconds, name=None, *, service="12345")`` runs
    one SIPp citizen call in the background and returns a :class:`SippProcess`
    (``wait()``, ``returncode``, ``stderr_log``, ``diagnostics()``).
``ami_events`` (function)
    ``async with ami_events() as ami:`` logs into AMI (raw asyncio socket) and
    records every frame; ``await ami.wait_for("AgentConnect", timeout=15, Queue="hotline")``.

Every test that uses ``asterisk`` starts from a quiet Asterisk: no channels, no
callers, no paused or dynamic queue members, queue statistics reset.

Example::

    async def test_call(asterisk, sipp_agents, place_citizen_call, ami_events):
        async with ami_events() as ami:
            call = place_citizen_call("13800138000", talk_seconds=3, name="张三")
            event = await ami.wait_for("AgentConnect", timeout=15, Queue="hotline")
            assert call.wait(timeout=30) == 0, call.diagnostics()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_SCRIPT = REPO_ROOT / "scripts" / "asterisk-sandbox"
SIPP_SCENARIOS = REPO_ROOT / "tests" / "sipp"
INTEGRATION_DIR = Path(__file__).resolve().parent

AMI_HOST = "127.0.0.1"
AMI_PORT = 5038
AMI_USERNAME = "hotline"
AMI_SECRET = "hotline-dev-secret"
# Test-only AMI account from tests/asterisk-overlay/manager_site.conf: all events, no filters.
AMI_PROBE_USERNAME = "probe"
AMI_PROBE_SECRET = "probe-test-secret"

SIP_HOST = "127.0.0.1"
SIP_PORT = 5060
CITIZEN_IP = "127.0.0.2"
AGENT_IP = "127.0.0.1"
AGENT_PORTS = {"agent1": 5071, "agent2": 5072, "agent3": 5073, "agent4": 5074}
QUEUES = ("hotline", "enterprise", "emergency")
STATIC_MEMBERS = ("PJSIP/agent1", "PJSIP/agent2", "PJSIP/agent3")


# --------------------------------------------------------------------------- markers


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs the real Asterisk 22 test bed and SIPp")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def asterisk_required() -> bool:
    """CI sets HOTLINE_REQUIRE_ASTERISK=1: then a missing test bed errors, never skips."""
    return os.environ.get("HOTLINE_REQUIRE_ASTERISK") == "1"


def _unavailable(reason: str) -> None:
    if asterisk_required():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------- Asterisk


class AsteriskCliError(RuntimeError):
    pass


@dataclass
class AsteriskSandbox:
    """A running sandbox Asterisk; see scripts/asterisk-sandbox."""

    chroot: Path
    ami_host: str = AMI_HOST
    ami_port: int = AMI_PORT
    ami_username: str = AMI_USERNAME
    ami_secret: str = AMI_SECRET
    sip_host: str = SIP_HOST
    sip_port: int = SIP_PORT
    # test-only account (tests/asterisk-overlay/manager_site.conf): all events, no filters
    ami_probe_username: str = AMI_PROBE_USERNAME
    ami_probe_secret: str = AMI_PROBE_SECRET

    @property
    def log_dir(self) -> Path:
        return self.chroot / "var" / "log" / "asterisk"

    @property
    def queue_log(self) -> Path:
        return self.log_dir / "queue_log"

    def cli(self, command: str, timeout: float = 20.0) -> str:
        """Run one CLI command (``asterisk -rx``) and return its output."""
        result = subprocess.run(
            ["chroot", str(self.chroot), "/usr/sbin/asterisk", "-rx", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AsteriskCliError(
                f"asterisk -rx {command!r} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result.stdout

    def queue_log_lines(self) -> list[str]:
        try:
            return self.queue_log.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def active_channels(self) -> int:
        match = re.search(r"(\d+) active channels?", self.cli("core show channels count"))
        return int(match.group(1)) if match else 0

    def queue_callers(self, queue: str = "hotline") -> int:
        match = re.search(r"has (\d+) calls?", self.cli(f"queue show {queue}"))
        return int(match.group(1)) if match else 0

    def queue_members(self, queue: str) -> list[dict[str, Any]]:
        """Members of a queue as shown by ``queue show``: interface, paused, dynamic."""
        members = []
        for line in self.cli(f"queue show {queue}").splitlines():
            match = re.search(r"\((\w+/[^)\s]+)\)", line)
            if not match or "has taken" not in line:
                continue
            members.append(
                {
                    "interface": match.group(1),
                    "paused": "(paused" in line,
                    "dynamic": "(dynamic)" in line,
                    "line": line.strip(),
                }
            )
        return members

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait for no channels and no queue callers; hang up leftovers after a while."""
        deadline = time.monotonic() + timeout
        hung_up = False
        while True:
            busy = self.active_channels() or any(self.queue_callers(q) for q in QUEUES)
            if not busy:
                return
            if not hung_up and time.monotonic() > deadline - timeout / 2:
                self.cli("channel request hangup all")
                hung_up = True
            if time.monotonic() > deadline:
                raise AssertionError(
                    "Asterisk did not become idle:\n" + self.cli("core show channels")
                )
            time.sleep(0.2)

    def reset_state(self) -> None:
        """Quiet Asterisk: no calls, static members only and unpaused, stats reset."""
        self.wait_idle()
        for queue in QUEUES:
            for member in self.queue_members(queue):
                if member["dynamic"]:
                    self.cli(f"queue remove member {member['interface']} from {queue}")
                elif member["paused"]:
                    self.cli(f"queue unpause member {member['interface']} queue {queue}")
        self.cli("queue reset stats")


def _run_sandbox(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SANDBOX_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def asterisk() -> Iterator[AsteriskSandbox]:
    if os.geteuid() != 0:
        _unavailable("the Asterisk sandbox needs root (it runs Asterisk in a chroot)")
    if shutil.which("chroot") is None:
        _unavailable("chroot(8) is not available")
    was_running = _run_sandbox("status").returncode == 0
    try:
        # A cold start builds the chroot with debootstrap (about a minute).
        started = _run_sandbox("start", timeout=1800)
    except subprocess.TimeoutExpired:
        _unavailable("scripts/asterisk-sandbox start timed out")
    if started.returncode != 0:
        _unavailable(
            f"scripts/asterisk-sandbox start failed (exit {started.returncode}):\n"
            + _tail(started.stdout + "\n" + started.stderr)
        )
    chroot = Path(_run_sandbox("path").stdout.strip())
    sandbox = AsteriskSandbox(chroot=chroot)
    try:
        yield sandbox
    finally:
        if not was_running and os.environ.get("HOTLINE_SANDBOX_KEEP") != "1":
            _run_sandbox("stop", timeout=60)


@pytest.fixture(autouse=True)
def _quiet_asterisk(request: pytest.FixtureRequest) -> None:
    """Tests that use ``asterisk`` start with no calls and default queue members."""
    if "asterisk" in request.fixturenames:
        request.getfixturevalue("asterisk").reset_state()


# --------------------------------------------------------------------------- SIPp

_reserved_ports: set[tuple[str, int]] = set()


def _udp_port_free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True


def pick_udp_port(ip: str) -> int:
    """A free UDP port on ``ip`` that this test run has not handed out before."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((ip, 0))
            port = probe.getsockname()[1]
        if (ip, port) not in _reserved_ports:
            _reserved_ports.add((ip, port))
            return port
    raise RuntimeError(f"no free UDP port on {ip}")


def pick_media_ports(ip: str) -> int:
    """Base of four free consecutive UDP ports (SIPp binds RTP/RTCP audio+video)."""
    for _ in range(500):
        base = random.randrange(20000, 29996, 4)
        ports = [(ip, base + i) for i in range(4)]
        if any(p in _reserved_ports for p in ports):
            continue
        if all(_udp_port_free(*p) for p in ports):
            _reserved_ports.update(ports)
            return base
    raise RuntimeError(f"no free media port range on {ip}")


def _sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        _unavailable("sipp is not installed (Debian package sip-tester)")
    return str(path)


_counter = itertools.count(1)


@dataclass
class SippProcess:
    """One SIPp process (an agent UAS or a citizen call) with its log files."""

    name: str
    args: list[str]
    proc: subprocess.Popen[bytes]
    log_dir: Path
    started_at: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}.out"

    @property
    def error_path(self) -> Path:
        return self.log_dir / f"{self.name}.errors.log"

    @property
    def message_path(self) -> Path:
        return self.log_dir / f"{self.name}.messages.log"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for SIPp to exit; 0 = the call(s) succeeded."""
        return self.proc.wait(timeout=timeout)

    async def wait_async(self, timeout: float | None = None) -> int:
        """``wait()`` for async tests (does not block the event loop)."""
        return await asyncio.to_thread(self.proc.wait, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=3)

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def stderr_log(self) -> str:
        """SIPp's error log (unexpected messages, failures) plus its screen output."""
        errors = "\n".join(
            line
            for line in self._read(self.error_path).splitlines()
            # the citizen scenario polls for BYE in 200 ms slices; not errors
            if "receive timeout on message" not in line
        )
        return (errors + "\n" + self._read(self.stdout_path)).strip()

    @property
    def messages(self) -> str:
        """The SIP messages SIPp sent and received."""
        return self._read(self.message_path)

    def diagnostics(self) -> str:
        return (
            f"{self.name}: exit {self.returncode}; command: {' '.join(self.args)}\n"
            f"--- errors/screen ---\n{_tail(self.stderr_log, 60)}\n"
            f"--- last SIP messages ---\n{_tail(self.messages, 60)}"
        )


def _start_sipp(sipp: str, name: str, log_dir: Path, args: list[str]) -> SippProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sipp,
        *args,
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(log_dir / f"{name}.errors.log"),
        "-trace_msg",
        "-message_file",
        str(log_dir / f"{name}.messages.log"),
    ]
    with open(log_dir / f"{name}.out", "wb") as out:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log_dir,
            start_new_session=True,
        )
    return SippProcess(name=name, args=command, proc=proc, log_dir=log_dir)


class SippAgents:
    """Agents' softphones as SIPp UAS processes on 127.0.0.1:5071..5074."""

    def __init__(self, sipp: str, log_dir: Path) -> None:
        self._sipp = sipp
        self._log_dir = log_dir
        self.procs: dict[str, SippProcess] = {}

    def start(self, agent: str, *, answer: bool = True, ready_timeout: float = 5.0) -> SippProcess:
        """Start ``agent`` (agent1..agent4): answering, or ringing without answer."""
        port = AGENT_PORTS[agent]
        if agent in self.procs and self.procs[agent].running():
            raise RuntimeError(f"{agent} is already running")
        if not _udp_port_free(AGENT_IP, port):
            raise RuntimeError(f"{AGENT_IP}:{port}/udp is taken; a stray SIPp from another run?")
        scenario = "agent_answer.xml" if answer else "agent_noanswer.xml"
        proc = _start_sipp(
            self._sipp,
            f"{agent}-{next(_counter)}",
            self._log_dir,
            [
                "-sf", str(SIPP_SCENARIOS / scenario),
                "-i", AGENT_IP, "-bind_local", "-p", str(port),
                "-mp", str(pick_media_ports(AGENT_IP)),
                "-aa",
            ],
        )  # fmt: skip
        self.procs[agent] = proc
        deadline = time.monotonic() + ready_timeout
        while _udp_port_free(AGENT_IP, port):
            if not proc.running() or time.monotonic() > deadline:
                proc.stop()
                raise RuntimeError(f"SIPp {agent} did not start:\n{proc.diagnostics()}")
            time.sleep(0.02)
        return proc

    def stop(self, agent: str) -> None:
        proc = self.procs.pop(agent, None)
        if proc is not None:
            proc.stop()

    def stop_all(self) -> None:
        for agent in list(self.procs):
            self.stop(agent)

    def __getitem__(self, agent: str) -> SippProcess:
        return self.procs[agent]


@pytest.fixture
def sipp_log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "sipp"
    path.mkdir()
    return path


@pytest.fixture
def sipp_agents(asterisk: AsteriskSandbox, sipp_log_dir: Path) -> Iterator[SippAgents]:
    """agent1 and agent2 answer at once, agent3 rings and never answers."""
    agents = SippAgents(_sipp_binary(), sipp_log_dir)
    try:
        agents.start("agent1")
        agents.start("agent2")
        agents.start("agent3", answer=False)
        yield agents
    finally:
        agents.stop_all()


CitizenCallFactory = Callable[..., SippProcess]


@pytest.fixture
def place_citizen_call(
    asterisk: AsteriskSandbox, sipp_log_dir: Path
) -> Iterator[CitizenCallFactory]:
    """Factory: ``place_citizen_call(caller, talk_seconds, name=None, *, service="12345")``.

    Starts one SIPp citizen call from 127.0.0.2 (own SIP and media ports) in the
    background and returns its :class:`SippProcess`; ``wait()`` gives SIPp's exit
    code (0 = the call was answered and ended cleanly by either side).
    """
    sipp = _sipp_binary()
    calls: list[SippProcess] = []

    def place(
        caller: str,
        talk_seconds: float,
        name: str | None = None,
        *,
        service: str = "12345",
    ) -> SippProcess:
        talk_ms = max(0, int(talk_seconds * 1000))
        call = _start_sipp(
            sipp,
            f"citizen-{caller}-{next(_counter)}",
            sipp_log_dir,
            [
                "-sf", str(SIPP_SCENARIOS / "citizen.xml"),
                "-i", CITIZEN_IP, "-bind_local", "-p", str(pick_udp_port(CITIZEN_IP)),
                "-mp", str(pick_media_ports(CITIZEN_IP)),
                "-m", "1", "-l", "1",
                "-key", "caller", caller,
                "-key", "name", name if name is not None else f"Citizen {caller}",
                "-key", "talk_ms", str(talk_ms),
                "-s", service,
                "-timeout", f"{int(talk_seconds) + 120}s", "-timeout_error",
                f"{asterisk.sip_host}:{asterisk.sip_port}",
            ],
        )  # fmt: skip
        calls.append(call)
        return call

    try:
        yield place
    finally:
        for call in calls:
            call.stop()


# --------------------------------------------------------------------------- AMI


class AmiError(RuntimeError):
    pass


def parse_ami_frame(frame: str) -> dict[str, str]:
    """``Key: Value`` lines to a dict (a repeated key keeps its last value)."""
    message: dict[str, str] = {}
    for line in frame.split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            message[key.strip()] = value.strip()
    return message


class AmiSession:
    """A minimal AMI client that records every frame; for tests.

    ``events`` holds every event frame (parsed) in arrival order, ``frames`` every
    raw frame (events and responses) exactly as Asterisk sent it.
    """

    def __init__(self, host: str, port: int, username: str, secret: str) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.banner = ""
        self.events: list[dict[str, str]] = []
        self.frames: list[str] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[dict[str, str]]] = {}
        self._lists: dict[str, list[dict[str, str]]] = {}
        self._list_done: dict[str, asyncio.Future[None]] = {}
        self._changed = asyncio.Event()
        self._ids = itertools.count(1)
        self._closed_error: BaseException | None = None

    async def __aenter__(self) -> AmiSession:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self, timeout: float = 10.0) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout
        )
        self.banner = (await asyncio.wait_for(self._reader.readline(), timeout)).decode().strip()
        if not self.banner.startswith("Asterisk Call Manager/"):
            raise AmiError(f"unexpected AMI banner {self.banner!r}")
        self._task = asyncio.create_task(self._read_loop())
        response = await self.action(
            "Login", timeout=timeout, Username=self.username, Secret=self.secret, Events="on"
        )
        if response.get("Response") != "Success":
            await self.close()
            raise AmiError(f"AMI login as {self.username!r} failed: {response}")

    async def close(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(Exception):
                await self.action("Logoff", timeout=2)
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                raw = await self._reader.readuntil(b"\r\n\r\n")
                frame = raw.decode("utf-8", errors="replace")[:-4]
                self.frames.append(frame)
                self._dispatch(parse_ami_frame(frame))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self._closed_error = exc
            for future in [*self._pending.values(), *self._list_done.values()]:
                if not future.done():
                    future.set_exception(AmiError(f"AMI connection closed: {exc!r}"))
        finally:
            self._changed.set()

    def _dispatch(self, message: dict[str, str]) -> None:
        action_id = message.get("ActionID", "")
        # Some events carry a "Response" header too (OriginateResponse): check Event first.
        if "Event" not in message:
            future = self._pending.pop(action_id, None)
            if future is not None and not future.done():
                future.set_result(message)
            return
        self.events.append(message)
        if action_id in self._lists:
            self._lists[action_id].append(message)
            if message.get("EventList") == "Complete":
                done = self._list_done.get(action_id)
                if done is not None and not done.done():
                    done.set_result(None)
        self._changed.set()

    def _new_action_id(self) -> str:
        return f"test-{next(self._ids)}"

    async def _send(
        self, name: str, headers: dict[str, Any], action_id: str | None = None
    ) -> asyncio.Future[dict[str, str]]:
        if self._writer is None:
            raise AmiError("not connected")
        action_id = action_id or self._new_action_id()
        future: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        lines = [f"Action: {name}", f"ActionID: {action_id}"]
        for key, value in headers.items():
            values = value if isinstance(value, list | tuple) else [value]
            lines.extend(f"{key}: {item}" for item in values)
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        return future

    async def action(self, name: str, timeout: float = 10.0, **headers: Any) -> dict[str, str]:
        """Send an action and return its response (``Response: Success|Error``)."""
        future = await self._send(name, headers)
        return await asyncio.wait_for(future, timeout)

    async def action_list(
        self, name: str, timeout: float = 10.0, **headers: Any
    ) -> tuple[dict[str, str], list[dict[str, str]]]:
        """Send a list action (QueueStatus, CoreShowChannels ...): response + its events,
        the last one being the ``EventList: Complete`` event."""
        events: list[dict[str, str]] = []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        action_id = self._new_action_id()
        # register the collector before sending: events may follow the response at once
        self._lists[action_id] = events
        self._list_done[action_id] = done
        try:
            future = await self._send(name, headers, action_id)
            response = await asyncio.wait_for(future, timeout)
            if response.get("Response") != "Success":
                return response, events
            await asyncio.wait_for(done, timeout)
            return response, events
        finally:
            self._lists.pop(action_id, None)
            self._list_done.pop(action_id, None)

    def mark(self) -> int:
        """Index of the next event; pass it as ``since`` to ignore older events."""
        return len(self.events)

    @staticmethod
    def _matches(event: dict[str, str], name: str | None, match: dict[str, str]) -> bool:
        if name is not None and event.get("Event") != name:
            return False
        return all(event.get(key) == value for key, value in match.items())

    def find(self, name: str | None = None, since: int = 0, **match: str) -> list[dict[str, str]]:
        return [e for e in self.events[since:] if self._matches(e, name, match)]

    def event_names(self, since: int = 0) -> set[str]:
        return {e.get("Event", "") for e in self.events[since:]}

    async def wait_for(
        self,
        name: str | None = None,
        timeout: float = 10.0,
        *,
        since: int = 0,
        predicate: Callable[[dict[str, str]], bool] | None = None,
        **match: str,
    ) -> dict[str, str]:
        """First event (from index ``since``) named ``name`` whose headers equal ``match``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        index = since
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if self._matches(event, name, match) and (predicate is None or predicate(event)):
                    return event
            if self._closed_error is not None:
                raise AmiError(f"AMI connection closed while waiting for {name}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"no {name or 'event'} {match or ''} within {timeout}s; "
                    f"saw {sorted(self.event_names(since))}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


AmiFactory = Callable[..., AmiSession]


@pytest.fixture
def ami_events(asterisk: AsteriskSandbox) -> AmiFactory:
    """Factory for ``async with ami_events() as ami:`` (default: the ``hotline`` user)."""

    def open_session(username: str | None = None, secret: str | None = None) -> AmiSession:
        return AmiSession(
            asterisk.ami_host,
            asterisk.ami_port,
            username or asterisk.ami_username,
            secret or asterisk.ami_secret,
        )

    return open_session
