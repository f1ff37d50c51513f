"""The sandbox Asterisk and the SIPp phones, as the recorder drives them.

Same command lines as ``tests/integration/conftest.py`` (agents on 127.0.0.1:5071..5074,
citizens from 127.0.0.2), but without pytest, so the recorder runs as a plain program.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_SCRIPT = REPO_ROOT / "scripts" / "asterisk-sandbox"
SIPP_SCENARIOS = REPO_ROOT / "tests" / "sipp"

AMI_HOST = "127.0.0.1"
AMI_PORT = 5038
SIP_TARGET = "127.0.0.1:5060"
CITIZEN_IP = "127.0.0.2"
AGENT_IP = "127.0.0.1"
AGENT_PORTS = {"agent1": 5071, "agent2": 5072, "agent3": 5073, "agent4": 5074}
QUEUES = ("hotline", "enterprise", "emergency")


class TestbedError(RuntimeError):
    pass


def run_sandbox(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SANDBOX_SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Sandbox:
    """A running ``scripts/asterisk-sandbox`` Asterisk."""

    chroot: Path

    @classmethod
    def start(cls) -> tuple[Sandbox, bool]:
        """Start (or reuse) the sandbox; returns it and whether it was already running."""
        was_running = run_sandbox("status").returncode == 0
        started = run_sandbox("start", timeout=1800)
        if started.returncode != 0:
            raise TestbedError(f"asterisk-sandbox start failed:\n{started.stdout}{started.stderr}")
        chroot = Path(run_sandbox("path").stdout.strip())
        return cls(chroot), was_running

    @staticmethod
    def stop() -> None:
        run_sandbox("stop", timeout=120)

    @property
    def queue_log(self) -> Path:
        return self.chroot / "var" / "log" / "asterisk" / "queue_log"

    def cli(self, command: str, timeout: float = 20.0) -> str:
        result = subprocess.run(
            ["chroot", str(self.chroot), "/usr/sbin/asterisk", "-rx", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise TestbedError(f"asterisk -rx {command!r}: {result.stderr or result.stdout}")
        return result.stdout

    def active_channels(self) -> int:
        match = re.search(r"(\d+) active channels?", self.cli("core show channels count"))
        return int(match.group(1)) if match else 0

    def queue_callers(self, queue: str) -> int:
        match = re.search(r"has (\d+) calls?", self.cli(f"queue show {queue}"))
        return int(match.group(1)) if match else 0

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
            for line in self.cli(f"queue show {queue}").splitlines():
                match = re.search(r"\((\w+/[^)\s]+)\)", line)
                if not match or "has taken" not in line:
                    continue
                if "(dynamic)" in line:
                    self.cli(f"queue remove member {match.group(1)} from {queue}")
                elif "(paused" in line:
                    self.cli(f"queue unpause member {match.group(1)} queue {queue}")
        for queue in QUEUES:
            self.cli(f"queue reset stats {queue}")

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

    def hangup_channel(self, channel: str) -> None:
        with contextlib.suppress(TestbedError):  # already gone
            self.cli(f"channel request hangup {channel}")


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


@dataclass
class PortPool:
    """Hands out SIP and media ports that this run has not used before."""

    used: set[tuple[str, int]] = field(default_factory=set)

    def sip_port(self, ip: str) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((ip, 0))
                port = probe.getsockname()[1]
            if (ip, port) not in self.used:
                self.used.add((ip, port))
                return port
        raise TestbedError(f"no free UDP port on {ip}")

    def media_base(self, ip: str) -> int:
        for _ in range(500):
            base = random.randrange(20000, 29996, 4)
            ports = [(ip, base + i) for i in range(4)]
            if any(p in self.used for p in ports):
                continue
            if all(udp_port_free(*p) for p in ports):
                self.used.update(ports)
                return base
        raise TestbedError(f"no free media port range on {ip}")


@dataclass
class Phone:
    """One SIPp process: an agent's softphone or one citizen's call."""

    name: str
    proc: subprocess.Popen[bytes]
    log_dir: Path

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=3)

    def errors(self) -> str:
        path = self.log_dir / f"{self.name}.errors.log"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(line for line in lines if "receive timeout on message" not in line)


class Phones:
    """Starts SIPp agents and citizens; ``stop_all()`` ends every process it started."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.sipp = sipp_binary()
        self.ports = PortPool()
        self.agents: dict[str, Phone] = {}
        self.citizens: list[Phone] = []
        self._count = 0

    def _spawn(self, name: str, args: list[str]) -> Phone:
        self._count += 1
        name = f"{name}-{self._count}"
        command = [
            self.sipp, *args, "-nostdin",
            "-trace_err", "-error_file", str(self.log_dir / f"{name}.errors.log"),
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
        return Phone(name, proc, self.log_dir)

    def start_agent(self, agent: str, *, answer: bool = True) -> Phone:
        port = AGENT_PORTS[agent]
        if agent in self.agents and self.agents[agent].running():
            raise TestbedError(f"{agent} is already running")
        if not udp_port_free(AGENT_IP, port):
            raise TestbedError(f"{AGENT_IP}:{port}/udp is taken (a stray SIPp from another run?)")
        scenario = "agent_answer.xml" if answer else "agent_noanswer.xml"
        phone = self._spawn(
            agent,
            [
                "-sf", str(SIPP_SCENARIOS / scenario),
                "-i", AGENT_IP, "-bind_local", "-p", str(port),
                "-mp", str(self.ports.media_base(AGENT_IP)),
                "-aa",
            ],
        )  # fmt: skip
        self.agents[agent] = phone
        deadline = time.monotonic() + 5
        while udp_port_free(AGENT_IP, port):
            if not phone.running() or time.monotonic() > deadline:
                phone.stop()
                raise TestbedError(f"SIPp {agent} did not start: {phone.errors()}")
            time.sleep(0.02)
        return phone

    def stop_agent(self, agent: str) -> None:
        phone = self.agents.pop(agent, None)
        if phone is not None:
            phone.stop()

    def call(self, caller: str, name: str, line_seconds: float, service: str = "12345") -> Phone:
        """A citizen calls ``service`` and hangs up ``line_seconds`` after Asterisk answers
        (Asterisk answers before the FastAGI lookup and the queue), unless Asterisk hangs
        up first."""
        phone = self._spawn(
            f"citizen-{caller}",
            [
                "-sf", str(SIPP_SCENARIOS / "citizen.xml"),
                "-i", CITIZEN_IP, "-bind_local", "-p", str(self.ports.sip_port(CITIZEN_IP)),
                "-mp", str(self.ports.media_base(CITIZEN_IP)),
                "-m", "1", "-l", "1",
                "-key", "caller", caller,
                "-key", "name", name,
                "-key", "talk_ms", str(int(line_seconds * 1000)),
                "-s", service,
                "-timeout", f"{int(line_seconds) + 120}s", "-timeout_error",
                SIP_TARGET,
            ],
        )  # fmt: skip
        self.citizens.append(phone)
        return phone

    def stop_all(self) -> None:
        for phone in [*self.agents.values(), *self.citizens]:
            phone.stop()
        self.agents.clear()


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
