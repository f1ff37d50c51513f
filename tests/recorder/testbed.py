"""The sandbox Asterisk and the SIPp phones: one implementation for the recorder and the tests.

``scripts/record-transcript`` drives them directly; ``tests/integration/conftest.py`` wraps
them in pytest fixtures.  Plain Python (no pytest), so the recorder runs as a program.

The test bed is ``scripts/asterisk-sandbox``: Asterisk in a chroot with the production
configuration plus ``tests/asterisk-overlay/``.  Phones are SIPp processes (scenarios in
``tests/sipp/``): citizens call from 127.0.0.2, agents answer on 127.0.0.1:5071..5074
(static contacts of PJSIP/agent1..4).

A second Asterisk, instance "b", can run beside it from the same chroot (two PBXs of one
hotline): AMI 5039, SIP 5062, its agents on 127.0.0.1:5171..5174, its own queue_log.
Everything here takes ``instance="a"`` by default, which is the single PBX as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, overload

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_SCRIPT = REPO_ROOT / "scripts" / "asterisk-sandbox"
SIPP_SCENARIOS = REPO_ROOT / "tests" / "sipp"

AMI_HOST = "127.0.0.1"
AMI_PORT = 5038
AMI_USERNAME = "hotline"  # the bridge's own account, with its event filters
AMI_SECRET = "hotline-dev-secret"  # asterisk-conf/manager.conf (development secret)
# Test-only AMI account from tests/asterisk-overlay/manager_site.conf: all events, no filters.
AMI_PROBE_USERNAME = "probe"
AMI_PROBE_SECRET = "probe-test-secret"
SIP_HOST = "127.0.0.1"
SIP_PORT = 5060
SIP_TARGET = f"{SIP_HOST}:{SIP_PORT}"
CITIZEN_IP = "127.0.0.2"
AGENT_IP = "127.0.0.1"
AGENT_PORTS = {"agent1": 5071, "agent2": 5072, "agent3": 5073, "agent4": 5074}
CITIZEN_PHONE_PORT = 5090  # the citizens' trunk's AOR (pjsip_site.conf): callbacks ring here
QUEUES = ("hotline", "enterprise", "emergency")
# Instance b (HOTLINE_SANDBOX_INSTANCE=b): scripts/asterisk-sandbox derives its configuration
# from a's sources with these ports; the citizens' trunk and phone are the same as a's.
AMI_PORT_B = 5039
SIP_PORT_B = 5062
AGENT_PORTS_B = {"agent1": 5171, "agent2": 5172, "agent3": 5173, "agent4": 5174}


@dataclass(frozen=True)
class Instance:
    """One Asterisk of the sandbox chroot: where it listens and which directories are its own
    (``scripts/asterisk-sandbox`` keeps the same table for the daemon)."""

    name: str
    ami_port: int
    sip_port: int
    agent_ports: Mapping[str, int]
    suffix: str  # of its own directories in the chroot: /var/log/asterisk<suffix> ...

    @property
    def sip_target(self) -> str:
        return f"{SIP_HOST}:{self.sip_port}"

    @property
    def asterisk_options(self) -> tuple[str, ...]:
        """b's ctl socket is in its own run directory: every ``asterisk -r`` needs its config."""
        return ("-C", f"/etc/asterisk{self.suffix}/asterisk.conf") if self.suffix else ()


INSTANCES: dict[str, Instance] = {
    "a": Instance("a", AMI_PORT, SIP_PORT, AGENT_PORTS, ""),
    "b": Instance("b", AMI_PORT_B, SIP_PORT_B, AGENT_PORTS_B, "-b"),
}


class TestbedError(RuntimeError):
    pass


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def get_instance(name: str) -> Instance:
    try:
        return INSTANCES[name]
    except KeyError:
        raise TestbedError(f"no sandbox instance {name!r} (one of {sorted(INSTANCES)})") from None


def run_sandbox(
    *args: str, timeout: float = 120.0, instance: str = "a"
) -> subprocess.CompletedProcess[str]:
    # Always named: an exported HOTLINE_SANDBOX_INSTANCE must not turn a's calls into b's.
    env = {**os.environ, "HOTLINE_SANDBOX_INSTANCE": get_instance(instance).name}
    return subprocess.run(
        [str(SANDBOX_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


# --------------------------------------------------------------------------- Asterisk


def _stop_instance(instance: str = "a") -> None:
    run_sandbox("stop", timeout=120, instance=instance)


class _StopAny(Protocol):
    def __call__(self, instance: str = "a") -> None: ...


class _StopInstance:
    """``Sandbox.stop(instance="a")`` on the class; ``sandbox.stop()`` stops that sandbox's own
    instance, so a test holding b can never stop a by mistake."""

    @overload
    def __get__(self, sandbox: None, owner: type[Sandbox]) -> _StopAny: ...

    @overload
    def __get__(self, sandbox: Sandbox, owner: type[Sandbox]) -> Callable[[], None]: ...

    def __get__(
        self, sandbox: Sandbox | None, owner: type[Sandbox]
    ) -> _StopAny | Callable[[], None]:
        if sandbox is None:
            return _stop_instance
        return lambda: _stop_instance(sandbox.instance)


@dataclass
class Sandbox:
    """A running ``scripts/asterisk-sandbox`` Asterisk (instance a, or b beside it)."""

    chroot: Path
    ami_host: str = AMI_HOST
    ami_port: int = AMI_PORT
    ami_username: str = AMI_USERNAME
    ami_secret: str = AMI_SECRET
    sip_host: str = SIP_HOST
    sip_port: int = SIP_PORT
    ami_probe_username: str = AMI_PROBE_USERNAME
    ami_probe_secret: str = AMI_PROBE_SECRET
    instance: str = "a"

    @classmethod
    def start(cls, instance: str = "a") -> tuple[Sandbox, bool]:
        """Start (or reuse) the sandbox's ``instance``; returns it and whether it was already
        running."""
        spec = get_instance(instance)
        if os.geteuid() != 0:
            raise TestbedError("the Asterisk sandbox needs root (it runs Asterisk in a chroot)")
        if shutil.which("chroot") is None:
            raise TestbedError("chroot(8) is not available")
        was_running = run_sandbox("status", instance=spec.name).returncode == 0
        try:
            # A cold start builds the chroot with debootstrap (about a minute).
            started = run_sandbox("start", timeout=1800, instance=spec.name)
        except subprocess.TimeoutExpired:
            raise TestbedError(
                f"scripts/asterisk-sandbox start (instance {spec.name}) timed out"
            ) from None
        if started.returncode != 0:
            raise TestbedError(
                f"scripts/asterisk-sandbox start (instance {spec.name}) failed"
                f" (exit {started.returncode}):\n" + tail(started.stdout + "\n" + started.stderr)
            )
        chroot = Path(run_sandbox("path").stdout.strip())
        sandbox = cls(chroot, ami_port=spec.ami_port, sip_port=spec.sip_port, instance=spec.name)
        return sandbox, was_running

    stop = _StopInstance()

    @property
    def spec(self) -> Instance:
        return get_instance(self.instance)

    @property
    def sip_target(self) -> str:
        """Where citizens call this PBX (``Phones.call(target=...)``)."""
        return f"{self.sip_host}:{self.sip_port}"

    @property
    def log_dir(self) -> Path:
        return self.chroot / "var" / "log" / f"asterisk{self.spec.suffix}"

    @property
    def queue_log(self) -> Path:
        return self.log_dir / "queue_log"

    def cli(self, command: str, timeout: float = 20.0) -> str:
        """Run one CLI command (``asterisk -rx``) and return its output."""
        asterisk = ["/usr/sbin/asterisk", *self.spec.asterisk_options]
        result = subprocess.run(
            ["chroot", str(self.chroot), *asterisk, "-rx", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise TestbedError(
                f"asterisk -rx {command!r} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result.stdout

    @property
    def recordings_spool(self) -> Path:
        """MixMonitor's folder (the dialplan's HOTLINE_RECORDINGS_SPOOL) as this host sees it."""
        return self.chroot / "var" / "spool" / f"asterisk{self.spec.suffix}" / "monitor" / "hotline"

    def agent_voice(self, sound: str = "demo-instruct") -> Path:
        """A real prompt of Debian's asterisk-core-sounds-en (``demo-instruct`` speaks for 73 s),
        converted by Asterisk itself to raw u-law for SIPp's rtp_stream; the host path."""
        inside = f"/tmp/hotline-{sound}.ulaw"
        target = self.chroot / inside.lstrip("/")
        if not target.exists():
            found = list(
                (self.chroot / "usr" / "share" / "asterisk" / "sounds").glob(f"*/{sound}.gsm")
            )
            if not found:
                raise TestbedError(f"no {sound}.gsm: is asterisk-core-sounds-en in the chroot?")
            source = "/" + found[0].relative_to(self.chroot).as_posix()
            if "res_convert" not in self.cli("module show like res_convert"):
                self.cli("module load res_convert.so")
            self.cli(f"file convert {source} {inside}")
        if not target.exists() or target.stat().st_size == 0:
            raise TestbedError(f"Asterisk did not convert {sound} to {inside}")
        return target

    def hangup_channel(self, channel: str) -> None:
        with contextlib.suppress(TestbedError):  # already gone
            self.cli(f"channel request hangup {channel}")

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
            # "Agent One (PJSIP/agent1) ..."; a member added with no name: "PJSIP/agent4 ..."
            match = re.search(r"\((\w+/[^)\s]+)\)", line) or re.match(r"\s*(\w+/\S+)", line)
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

    def wait_idle(self, timeout: float = 40.0) -> None:
        """No channels and no queue callers; leftovers are hung up half-way through."""
        deadline = time.monotonic() + timeout
        hung_up = False
        while self.active_channels() or any(self.queue_callers(q) for q in QUEUES):
            if not hung_up and time.monotonic() > deadline - timeout / 2:
                self.cli("channel request hangup all")
                hung_up = True
            if time.monotonic() > deadline:
                raise TestbedError(
                    "Asterisk did not become idle:\n" + self.cli("core show channels")
                )
            time.sleep(0.2)

    def reset_queues(self) -> None:
        """Static members only, none paused, statistics of every queue reset."""
        for queue in QUEUES:
            for member in self.queue_members(queue):
                if member["dynamic"]:
                    self.cli(f"queue remove member {member['interface']} from {queue}")
                elif member["paused"]:
                    self.cli(f"queue unpause member {member['interface']} queue {queue}")
        for queue in QUEUES:
            self.cli(f"queue reset stats {queue}")

    def reset_state(self, idle_timeout: float = 40.0) -> None:
        """A quiet Asterisk: no calls, static members only and unpaused, statistics reset."""
        self.wait_idle(idle_timeout)
        self.reset_queues()

    def queue_log_lines(self) -> list[str]:
        try:
            return self.queue_log.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def log_lines(self) -> list[str]:
        """Asterisk's messages.log (notices, warnings, dialplan traces at verbose level 3)."""
        try:
            path = self.log_dir / "messages.log"
            return path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def queue_log_size(self) -> int:
        try:
            return self.queue_log.stat().st_size
        except FileNotFoundError:
            return 0

    def queue_log_since(self, offset: int) -> bytes:
        """The bytes Asterisk appended to queue_log since ``offset`` (whole lines only)."""
        with self.queue_log.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
        return data[: data.rfind(b"\n") + 1]


# --------------------------------------------------------------------------- SIPp


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise TestbedError("sipp is not installed (Debian package sip-tester)")
    return path


def udp_port_free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True


def fixed_ports() -> set[tuple[str, int]]:
    """Addresses the test bed always uses: both PBXs' SIP and AMI ports, every agent's contact
    of either PBX and the citizens' phone.  The pool never hands them out, so a citizen's
    ephemeral SIP port cannot take a phone's or an Asterisk's place (were the kernel's
    ephemeral range ever set that low)."""
    ports = {(CITIZEN_IP, CITIZEN_PHONE_PORT)}
    for spec in INSTANCES.values():
        ports |= {(SIP_HOST, spec.sip_port), (AMI_HOST, spec.ami_port)}
        ports |= {(AGENT_IP, port) for port in spec.agent_ports.values()}
    return ports


@dataclass
class PortPool:
    """Hands out SIP and media ports that this run has not used before.

    One pool may serve phones of both PBXs at once: agents' ports are fixed per PBX
    (5071.. / 5171..) and never come from the pool, which leaves them and the other
    fixed ports (``fixed_ports()``) alone."""

    used: set[tuple[str, int]] = field(default_factory=set)
    reserved: set[tuple[str, int]] = field(default_factory=fixed_ports)

    def sip_port(self, ip: str) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((ip, 0))
                port: int = probe.getsockname()[1]
            if (ip, port) not in self.used and (ip, port) not in self.reserved:
                self.used.add((ip, port))
                return port
        raise TestbedError(f"no free UDP port on {ip}")

    def media_base(self, ip: str) -> int:
        """Base of four free consecutive UDP ports (SIPp binds RTP/RTCP audio+video)."""
        for _ in range(500):
            base = random.randrange(20000, 29996, 4)
            ports = [(ip, base + i) for i in range(4)]
            if any(p in self.used or p in self.reserved for p in ports):
                continue
            if all(udp_port_free(*p) for p in ports):
                self.used.update(ports)
                return base
        raise TestbedError(f"no free media port range on {ip}")


@dataclass
class SippProcess:
    """One SIPp process (an agent's softphone or one citizen's call) with its log files."""

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
        """``wait()`` for async code (does not block the event loop)."""
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

    def errors(self) -> str:
        """SIPp's error log (unexpected messages, failures)."""
        return "\n".join(
            line
            for line in self._read(self.error_path).splitlines()
            # the citizen scenario polls for BYE in 200 ms slices; not errors
            if "receive timeout on message" not in line
        )

    @property
    def stderr_log(self) -> str:
        """SIPp's error log plus its screen output."""
        return (self.errors() + "\n" + self._read(self.stdout_path)).strip()

    @property
    def messages(self) -> str:
        """The SIP messages SIPp sent and received."""
        return self._read(self.message_path)

    def diagnostics(self) -> str:
        return (
            f"{self.name}: exit {self.returncode}; command: {' '.join(self.args)}\n"
            f"--- errors/screen ---\n{tail(self.stderr_log, 60)}\n"
            f"--- last SIP messages ---\n{tail(self.messages, 60)}"
        )


def _listening(phone: SippProcess, ip: str, port: int, timeout: float) -> SippProcess:
    """``phone`` once its SIP port is bound; stopped, and a ``TestbedError``, if it never is."""
    deadline = time.monotonic() + timeout
    while udp_port_free(ip, port):
        if not phone.running() or time.monotonic() > deadline:
            phone.stop()
            raise TestbedError(f"SIPp {phone.name} did not start:\n{phone.diagnostics()}")
        time.sleep(0.02)
    return phone


def agent_key(agent: str, instance: str = "a") -> str:
    """The name of an agent's phone in ``Phones.agents``: ``agent1`` for a, ``agent1@b`` for b
    (agent1 of each PBX is a phone of its own)."""
    return agent if get_instance(instance).name == "a" else f"{agent}@{instance}"


class Phones:
    """Starts SIPp agents and citizens; ``stop_all()`` ends every process it started.

    ``ports`` may be shared between several ``Phones`` (pytest: one pool per test run).
    One ``Phones`` may hold phones of both PBXs at once (``instance="b"``).
    """

    def __init__(self, log_dir: Path, ports: PortPool | None = None) -> None:
        self.log_dir = log_dir
        self.sipp = sipp_binary()
        self.ports = ports if ports is not None else PortPool()
        self.agents: dict[str, SippProcess] = {}
        self.citizens: list[SippProcess] = []
        self._count = 0

    def _spawn(self, name: str, args: list[str]) -> SippProcess:
        self._count += 1
        name = f"{name}-{self._count}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        command = [
            self.sipp, *args, "-nostdin",
            "-trace_err", "-error_file", str(self.log_dir / f"{name}.errors.log"),
            "-trace_msg", "-message_file", str(self.log_dir / f"{name}.messages.log"),
        ]  # fmt: skip
        with open(self.log_dir / f"{name}.out", "wb") as out:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.log_dir,
                start_new_session=True,
            )
        return SippProcess(name=name, args=command, proc=proc, log_dir=self.log_dir)

    def start_agent(
        self,
        agent: str,
        *,
        answer: bool = True,
        voice: Path | None = None,
        hang_up_after: float | None = None,
        ready_timeout: float = 5.0,
        instance: str = "a",
    ) -> SippProcess:
        """Start ``agent`` (agent1..agent4): answering, or ringing without answer. With
        ``voice`` (raw u-law audio) the agent answers and talks, streaming it as RTP. With
        ``hang_up_after`` the agent answers and hangs up that many seconds later, leaving the
        citizen on the line (for the survey). ``instance="b"``: the phone the second PBX rings
        (127.0.0.1:5171..5174), kept in ``agents`` as ``agent1@b`` (``agent_key``)."""
        port = get_instance(instance).agent_ports[agent]
        key = agent_key(agent, instance)
        if key in self.agents and self.agents[key].running():
            raise TestbedError(f"{key} is already running")
        if not udp_port_free(AGENT_IP, port):
            raise TestbedError(f"{AGENT_IP}:{port}/udp is taken (a stray SIPp from another run?)")
        scenario = "agent_answer.xml" if answer else "agent_noanswer.xml"
        if voice is not None:
            scenario = "agent_speaks.xml"
            self.log_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(voice, self.log_dir / "agent-voice.ulaw")
        keys: list[str] = []
        if hang_up_after is not None:
            scenario = "agent_hangs_up.xml"
            keys = ["-key", "talk_ms", str(max(0, int(hang_up_after * 1000)))]
        phone = self._spawn(
            key,
            [
                "-sf", str(SIPP_SCENARIOS / scenario),
                "-i", AGENT_IP, "-bind_local", "-p", str(port),
                "-mp", str(self.ports.media_base(AGENT_IP)),
                "-aa", *keys,
            ],
        )  # fmt: skip
        self.agents[key] = phone
        return _listening(phone, AGENT_IP, port, ready_timeout)

    def start_citizen_phone(
        self,
        *,
        answer: bool,
        hang_up_after: float = 3.0,
        rate: tuple[float, str] | None = None,
        ready_timeout: float = 5.0,
    ) -> SippProcess:
        """The phone a callback reaches on 127.0.0.2:5090: it answers and hangs up
        ``hang_up_after`` seconds later, or (``answer=False``) rings until Asterisk gives up,
        or (``rate``: seconds after answering, digit) answers and presses the digit as SIP INFO,
        then waits for Asterisk to hang up. Serves any number of calls, from either PBX (both
        dial the one citizens' trunk)."""
        if not udp_port_free(CITIZEN_IP, CITIZEN_PHONE_PORT):
            raise TestbedError(f"{CITIZEN_IP}:{CITIZEN_PHONE_PORT}/udp is taken")
        scenario = "agent_hangs_up.xml" if answer else "agent_noanswer.xml"
        keys = ["-key", "talk_ms", str(int(hang_up_after * 1000))] if answer else []
        if rate is not None:
            scenario = "citizen_phone_rates.xml"
            keys = ["-key", "key", rate[1], "-key", "press_ms", str(int(rate[0] * 1000)),
                    "-key", "bye_ms", "30000"]  # fmt: skip
        phone = self._spawn(
            "citizen-phone",
            [
                "-sf", str(SIPP_SCENARIOS / scenario),
                "-i", CITIZEN_IP, "-bind_local", "-p", str(CITIZEN_PHONE_PORT),
                "-mp", str(self.ports.media_base(CITIZEN_IP)),
                "-aa", *keys,
            ],
        )  # fmt: skip
        self.agents["citizen-phone"] = phone
        return _listening(phone, CITIZEN_IP, CITIZEN_PHONE_PORT, ready_timeout)

    def stop_agent(self, agent: str, instance: str = "a") -> None:
        """Stop ``agent``'s phone of ``instance``; ``agent`` may also be a key of ``agents``."""
        phone = self.agents.pop(agent if "@" in agent else agent_key(agent, instance), None)
        if phone is not None:
            phone.stop()

    def call(
        self,
        caller: str,
        name: str,
        line_seconds: float,
        service: str = "12345",
        target: str | None = None,
        *,
        instance: str = "a",
    ) -> SippProcess:
        """A citizen calls ``service`` and hangs up ``line_seconds`` after Asterisk answers
        (Asterisk answers before the FastAGI lookup and the queue), unless Asterisk hangs
        up first.  ``wait()`` gives 0 when the call was answered and ended cleanly.  The call
        goes to ``target`` (host:port), by default to ``instance``'s SIP port (a: 5060,
        b: 5062)."""
        target = target if target is not None else get_instance(instance).sip_target
        phone = self._spawn(
            f"citizen-{caller}",
            [
                "-sf", str(SIPP_SCENARIOS / "citizen.xml"),
                "-i", CITIZEN_IP, "-bind_local", "-p", str(self.ports.sip_port(CITIZEN_IP)),
                "-mp", str(self.ports.media_base(CITIZEN_IP)),
                "-m", "1", "-l", "1",
                "-key", "caller", caller,
                "-key", "name", name,
                "-key", "talk_ms", str(max(0, int(line_seconds * 1000))),
                "-s", service,
                "-timeout", f"{int(line_seconds) + 120}s", "-timeout_error",
                target,
            ],
        )  # fmt: skip
        self.citizens.append(phone)
        return phone

    def call_and_rate(
        self,
        caller: str,
        name: str,
        keys: list[tuple[float, str]],
        *,
        hang_up_after: float = 30.0,
        service: str = "12345",
        target: str | None = None,
        instance: str = "a",
    ) -> SippProcess:
        """A citizen who stays on after the agent and presses ``keys`` (one or two of
        ``(seconds after Asterisk answered, digit)``) as SIP INFO; hangs up ``hang_up_after``
        seconds after the last key unless Asterisk ends the call first.  ``target`` as for
        ``call``."""
        target = target if target is not None else get_instance(instance).sip_target
        if not 1 <= len(keys) <= 2:
            raise TestbedError("a rating citizen presses one or two keys")
        (at1, key1), (at2, key2) = keys[0], (keys[1] if len(keys) == 2 else (0.0, "0"))
        phone = self._spawn(
            f"citizen-{caller}",
            [
                "-sf", str(SIPP_SCENARIOS / "citizen_rates.xml"),
                "-i", CITIZEN_IP, "-bind_local", "-p", str(self.ports.sip_port(CITIZEN_IP)),
                "-mp", str(self.ports.media_base(CITIZEN_IP)),
                "-m", "1", "-l", "1",
                "-key", "caller", caller,
                "-key", "name", name,
                "-key", "key1", key1, "-key", "press1_ms", str(int(at1 * 1000)),
                "-key", "key2", key2, "-key", "press2_ms", str(int(at2 * 1000)),
                "-key", "bye_ms", str(int(hang_up_after * 1000)),
                "-s", service,
                "-timeout", f"{int(max(at1, at2) + hang_up_after) + 60}s", "-timeout_error",
                target,
            ],
        )  # fmt: skip
        self.citizens.append(phone)
        return phone

    def stop_citizens(self) -> None:
        for phone in self.citizens:
            phone.stop()

    def stop_all(self) -> None:
        for agent in list(self.agents):
            self.stop_agent(agent)
        self.stop_citizens()


def stray_sipp_processes() -> list[str]:
    """SIPp processes not started by us (another test run would spoil the recording)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and Path(cmdline[0].decode(errors="replace")).name == "sipp":
            found.append(f"{entry.name}: {b' '.join(cmdline).decode(errors='replace')}")
    return found
