"""Fixtures for integration tests against a real Asterisk 22 test bed.

The test bed is ``scripts/asterisk-sandbox``: Debian sid's Asterisk in a chroot with
the production configuration (``asterisk-conf/``) plus ``tests/asterisk-overlay/``.
Phones are SIPp processes (scenarios in ``tests/sipp/``): citizens call from
127.0.0.2, agents answer on 127.0.0.1:5071..5074 (static contacts of PJSIP/agent1..4).
The sandbox, SIPp and AMI code lives in ``tests/recorder/testbed.py`` and
``tests/recorder/wire.py`` (shared with ``scripts/record-transcript``); these fixtures
wrap it.

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
``sipp_phones`` (function)
    The test's :class:`Phones` (SIPp launcher) behind the two fixtures above and below.
``place_citizen_call`` (function)
    ``place_citizen_call(caller, talk_seconds, name=None, *, service="12345")`` runs
    one SIPp citizen call in the background and returns a :class:`SippProcess`
    (``wait()``, ``returncode``, ``stderr_log``, ``diagnostics()``).
``ami_events`` (function)
    ``async with ami_events() as ami:`` logs into AMI (raw asyncio socket) and
    records every frame; ``await ami.wait_for("AgentConnect", timeout=15, Queue="hotline")``.
``asterisk_b`` (session)
    A second PBX beside ``asterisk``: instance b of the same chroot
    (``HOTLINE_SANDBOX_INSTANCE=b scripts/asterisk-sandbox``), AMI 5039, SIP 5062, its
    agents' phones on 127.0.0.1:5171..5174 (``sipp_phones.start_agent("agent1",
    instance="b")``), its own queue_log.  Started, stopped, skipped or failed like
    ``asterisk``.  Citizens call it with ``sipp_phones.call(..., instance="b")``.
``ami_events_b`` (function)
    ``ami_events`` for ``asterisk_b``.

Every test that uses ``asterisk`` starts from a quiet Asterisk: no channels, no
callers, no paused or dynamic queue members, queue statistics reset; so does every
test that uses ``asterisk_b`` for b.

Example::

    async def test_call(asterisk, sipp_agents, place_citizen_call, ami_events):
        async with ami_events() as ami:
            call = place_citizen_call("13800138000", talk_seconds=3, name="张三")
            event = await ami.wait_for("AgentConnect", timeout=15, Queue="hotline")
            assert call.wait(timeout=30) == 0, call.diagnostics()
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.recorder.testbed import Phones, PortPool, Sandbox, SippProcess, TestbedError
from tests.recorder.wire import AmiWireError, Message, WireRecorder

INTEGRATION_DIR = Path(__file__).resolve().parent

AsteriskSandbox = Sandbox
AmiError = AmiWireError

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


def _unavailable(reason: str) -> NoReturn:
    if asterisk_required():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------- Asterisk


def _running_sandbox(instance: str) -> Iterator[Sandbox]:
    """The sandbox's ``instance`` for the session; stopped at the end unless it was running
    before (or ``HOTLINE_SANDBOX_KEEP=1``)."""
    try:
        sandbox, was_running = Sandbox.start(instance=instance)
    except TestbedError as error:
        _unavailable(str(error))
    try:
        yield sandbox
    finally:
        if not was_running and os.environ.get("HOTLINE_SANDBOX_KEEP") != "1":
            sandbox.stop()


@pytest.fixture(scope="session")
def asterisk() -> Iterator[Sandbox]:
    yield from _running_sandbox("a")


@pytest.fixture(scope="session")
def asterisk_b() -> Iterator[Sandbox]:
    """The second PBX (instance b of the chroot), for tests of one hotline over two PBXs."""
    yield from _running_sandbox("b")


@pytest.fixture(autouse=True)
def _quiet_pbxs(request: pytest.FixtureRequest) -> None:
    """Tests that use ``asterisk`` (or ``asterisk_b``) start with no calls and default queue
    members on it; b is never started for the others."""
    for name in ("asterisk", "asterisk_b"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset_state(idle_timeout=30.0)


# --------------------------------------------------------------------------- SIPp

# SIP and media ports are handed out once per test run.
_ports = PortPool()


@pytest.fixture
def sipp_log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "sipp"
    path.mkdir()
    return path


@pytest.fixture
def sipp_phones(sipp_log_dir: Path) -> Iterator[Phones]:
    """The test's SIPp processes (agents and citizens), all stopped at teardown."""
    try:
        phones = Phones(sipp_log_dir, _ports)
    except TestbedError as error:
        _unavailable(str(error))
    try:
        yield phones
    finally:
        phones.stop_all()


class SippAgents:
    """Agents' softphones as SIPp UAS processes on 127.0.0.1:5071..5074."""

    def __init__(self, phones: Phones) -> None:
        self.phones = phones
        self.procs = phones.agents

    def start(
        self,
        agent: str,
        *,
        answer: bool = True,
        voice: Path | None = None,
        ready_timeout: float = 5.0,
    ) -> SippProcess:
        """Start ``agent`` (agent1..agent4): answering, ringing without answer, or (``voice``)
        answering and talking."""
        return self.phones.start_agent(
            agent, answer=answer, voice=voice, ready_timeout=ready_timeout
        )

    def stop(self, agent: str) -> None:
        self.phones.stop_agent(agent)

    def stop_all(self) -> None:
        for agent in list(self.procs):
            self.stop(agent)

    def __getitem__(self, agent: str) -> SippProcess:
        return self.procs[agent]


@pytest.fixture
def sipp_agents(asterisk: Sandbox, sipp_phones: Phones) -> Iterator[SippAgents]:
    """agent1 and agent2 answer at once, agent3 rings and never answers."""
    agents = SippAgents(sipp_phones)
    try:
        agents.start("agent1")
        agents.start("agent2")
        agents.start("agent3", answer=False)
        yield agents
    finally:
        agents.stop_all()


CitizenCallFactory = Callable[..., SippProcess]


@pytest.fixture
def place_citizen_call(asterisk: Sandbox, sipp_phones: Phones) -> Iterator[CitizenCallFactory]:
    """Factory: ``place_citizen_call(caller, talk_seconds, name=None, *, service="12345")``.

    Starts one SIPp citizen call from 127.0.0.2 (own SIP and media ports) in the
    background and returns its :class:`SippProcess`; ``wait()`` gives SIPp's exit
    code (0 = the call was answered and ended cleanly by either side).
    """

    def place(
        caller: str,
        talk_seconds: float,
        name: str | None = None,
        *,
        service: str = "12345",
    ) -> SippProcess:
        return sipp_phones.call(
            caller,
            name if name is not None else f"Citizen {caller}",
            talk_seconds,
            service,
            target=f"{asterisk.sip_host}:{asterisk.sip_port}",
        )

    try:
        yield place
    finally:
        sipp_phones.stop_citizens()


# --------------------------------------------------------------------------- AMI


class AmiSession:
    """A minimal AMI client that records every frame; for tests (on :class:`WireRecorder`).

    ``events`` holds every event frame (parsed) in arrival order, ``frames`` every
    raw frame (events and responses) exactly as Asterisk sent it.
    """

    def __init__(self, host: str, port: int, username: str, secret: str) -> None:
        self.username = username
        self.events: list[Message] = []
        self.frames: list[str] = []
        self.wire = WireRecorder(host, port, username, secret)
        self.wire.on_frame = self._on_frame

    def _on_frame(self, frame: bytes, message: Message) -> None:
        self.frames.append(frame.decode("utf-8", errors="replace"))
        if "Event" in message:
            self.events.append(message)

    @property
    def banner(self) -> str:
        return self.wire.banner

    async def __aenter__(self) -> AmiSession:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self, timeout: float = 10.0) -> None:
        await self.wire.connect(timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.action("Logoff", timeout=2)
        await self.wire.close()

    async def action(self, name: str, timeout: float = 10.0, **headers: Any) -> Message:
        """Send an action and return its response (``Response: Success|Error``)."""
        return await self.wire.action(name, "test", timeout, **headers)

    async def action_list(
        self, name: str, timeout: float = 10.0, **headers: Any
    ) -> tuple[Message, list[Message]]:
        """Send a list action (QueueStatus, CoreShowChannels ...): response + its events,
        the last one being the ``EventList: Complete`` event."""
        response, events = await self.wire.list_action(name, "test", timeout, **headers)
        return response, [event for _, event in events]

    def mark(self) -> int:
        """Index of the next event; pass it as ``since`` to ignore older events."""
        return len(self.events)

    @staticmethod
    def _matches(event: Message, name: str | None, match: dict[str, str]) -> bool:
        if name is not None and event.get("Event") != name:
            return False
        return all(event.get(key) == value for key, value in match.items())

    def find(self, name: str | None = None, since: int = 0, **match: str) -> list[Message]:
        return [e for e in self.events[since:] if self._matches(e, name, match)]

    def event_names(self, since: int = 0) -> set[str]:
        return {e.get("Event", "") for e in self.events[since:]}

    async def wait_for(
        self,
        name: str | None = None,
        timeout: float = 10.0,
        *,
        since: int = 0,
        predicate: Callable[[Message], bool] | None = None,
        **match: str,
    ) -> Message:
        """First event (from index ``since``) named ``name`` whose headers equal ``match``."""
        index = since
        found: list[Message] = []

        def seen() -> bool:
            nonlocal index
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if self._matches(event, name, match) and (predicate is None or predicate(event)):
                    found.append(event)
                    return True
            return False

        try:
            await self.wire.wait(seen, timeout, f"{name or 'event'} {match or ''}")
        except TimeoutError as error:
            raise TimeoutError(f"{error}; saw {sorted(self.event_names(since))}") from None
        return found[0]

    async def wait_for_completion(self, connect: Message, timeout: float = 15.0) -> Message:
        """The AgentComplete of the call that ``connect`` (its AgentConnect) began.

        Matched on the member's channel as well as the caller's: when the caller's channel is
        gone first, Asterisk sends AgentComplete without the caller's fields.
        """

        def same_call(event: Message) -> bool:
            member = connect.get("DestUniqueid")
            return (member is not None and event.get("DestUniqueid") == member) or (
                event.get("Uniqueid") == connect.get("Uniqueid")
            )

        try:
            return await self.wait_for("AgentComplete", timeout, predicate=same_call)
        except TimeoutError as error:
            completes = [dict(event) for event in self.find("AgentComplete")]
            raise TimeoutError(f"{error}; connect {dict(connect)}; completes {completes}") from None


AmiFactory = Callable[..., AmiSession]


@pytest.fixture
def ami_events(asterisk: Sandbox) -> AmiFactory:
    """Factory for ``async with ami_events() as ami:`` (default: the ``hotline`` user)."""

    def open_session(username: str | None = None, secret: str | None = None) -> AmiSession:
        return AmiSession(
            asterisk.ami_host,
            asterisk.ami_port,
            username or asterisk.ami_username,
            secret or asterisk.ami_secret,
        )

    return open_session


@pytest.fixture
def ami_events_b(asterisk_b: Sandbox) -> AmiFactory:
    """``ami_events`` for the second PBX (its AMI on port 5039)."""

    def open_session(username: str | None = None, secret: str | None = None) -> AmiSession:
        return AmiSession(
            asterisk_b.ami_host,
            asterisk_b.ami_port,
            username or asterisk_b.ami_username,
            secret or asterisk_b.ami_secret,
        )

    return open_session
