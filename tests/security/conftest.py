"""A real ``hotline run`` for each attack module, and the tools an attacker brings to it.

Each module gets a process of its own (``hotline``, module-scoped): the login throttle, the
connection caps and the audit log keep their state per process, so one attack can neither make
another pass nor fail. The process runs as an operator starts it (``python -m hotline.cli run``,
a working directory of its own, SQLite, no PBX: the recorded session is replayed at once), with
the web guard's timeouts short enough that its deadlines can be watched within seconds. Users
are added with ``hotline users add`` in other processes, as an operator adds them.

Where a limit is kept per client address, attacks come from loopback source addresses of their
own (127.0.1.1 and up, a block per module), the way a botnet or a NAT full of desks would.
Nothing leaves 127.0.0.0/8; every loop has a count and a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.agi_commands import variables_set
from tests.conftest import free_port
from tests.health import MONITOR_ENV, read_health

T = TypeVar("T")

# Fixed, so a restarted process reads the cookies the first one issued (32 bytes, url-safe).
SESSION_SECRET = base64.urlsafe_b64encode(b"hotline-security-suite-fixed-key").decode()
HEADER_TIMEOUT, IDLE_TIMEOUT, PER_ADDRESS = 1.0, 2.0, 50
GUARD_ENV = {
    "HOTLINE_WEB_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "HOTLINE_WEB_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
    "HOTLINE_WEB_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
}
START_SECONDS = 40.0
STOP_SECONDS = 30.0
# What a refusal must never show a client: the code behind it.
LEAK_MARKERS = ("traceback", "error(", "exception", 'file "')


@dataclass(frozen=True)
class Person:
    username: str
    password: str
    role: str
    phones: tuple[str, ...] = ()

    @property
    def login(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}

    @property
    def basic(self) -> str:
        return basic_authorization(self.username, self.password)


def basic_authorization(username: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP Basic, as curl sends it."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


AGENT = Person("agent1", "agent one's password", "agent", ("PJSIP/agent1",))
AGENT2 = Person("agent2", "agent two's password", "agent", ("PJSIP/agent2",))
SUPERVISOR = Person("boss", "the supervisor's password", "supervisor")
PEOPLE = (AGENT, AGENT2, SUPERVISOR)


def hotline_env(home: Path, **extra: str) -> dict[str, str]:
    """The settings of a test process: nothing inherited from the shell's ``HOTLINE_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    return {
        **env,
        "HOTLINE_DATABASE_URL": f"sqlite+aiosqlite:///{home / 'hotline.db'}",
        "HOTLINE_WEB_PORT": str(free_port()),
        "HOTLINE_AGI_PORT": str(free_port()),
        "HOTLINE_RECORDINGS_DIR": str(home / "recordings"),
        "HOTLINE_RECORDINGS_SPOOL": str(home / "spool"),
        "HOTLINE_AMI_SECRET": "",
        "HOTLINE_REDIS_URL": "",
        "HOTLINE_SESSION_SECRET": SESSION_SECRET,
        **GUARD_ENV,
        **MONITOR_ENV,
        **extra,
    }


def wait_until(check: Callable[[], T | None], seconds: float, what: str) -> T:
    """``check()``'s first true answer, asked every 0.1 s for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(OSError, sqlite3.Error):
            answer = check()
            if answer:
                return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.1)


def read_database(database: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Read a SQLite file as another program would, read-only."""
    with contextlib.closing(
        sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    ) as db:
        return db.execute(sql, params).fetchall()


def run_cli(
    home: Path, env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``hotline ARGS`` in ``home`` with ``env``, to its end (a minute at most)."""
    return subprocess.run(
        [sys.executable, "-m", "hotline.cli", *args],
        cwd=home,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass
class Hotline:
    """One running ``hotline run``: where it listens, its files and what it holds of the host."""

    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def web_port(self) -> int:
        return int(self.env["HOTLINE_WEB_PORT"])

    @property
    def agi_port(self) -> int:
        return int(self.env["HOTLINE_AGI_PORT"])

    @property
    def database(self) -> Path:
        return self.home / "hotline.db"

    @property
    def log_path(self) -> Path:
        return self.home / "hotline.log"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def rss_kb(self) -> int:
        """Resident memory of the web process (the routing child is another process)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc status")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def health(self) -> dict[str, Any]:
        """The whole /healthz report, read with the monitor's login."""
        status, report = read_health(self.web_port, timeout=5)
        assert status == 200, report
        return report

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        return read_database(self.database, sql, *params)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``hotline ARGS`` on this process's settings and database, as an operator runs it."""
        return run_cli(self.home, self.env, *args, stdin=stdin)

    def add_people(self, *people: Person) -> None:
        """``hotline users add`` for each, in parallel processes (the schema is up already)."""
        started = []
        for person in people:
            phones = [arg for phone in person.phones for arg in ("--agent", phone)]
            command = ["users", "add", person.username, "--role", person.role, *phones]
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "hotline.cli", *command, "--password-stdin"],
                    cwd=self.home,
                    env=self.env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        for person, process in zip(people, started, strict=True):
            output, _ = process.communicate(person.password + "\n", timeout=60)
            assert process.returncode == 0, f"users add {person.username}: {output}"

    def drop_recording(self, uniqueid: str = "1796000999.1") -> int:
        """A finished MixMonitor file put in the spool, as Asterisk leaves it; the id the
        process gives it when it ingests it (it scans the spool every second)."""
        folder = Path(self.env["HOTLINE_RECORDINGS_SPOOL"]) / "2026" / "11" / "25"
        folder.mkdir(parents=True, exist_ok=True)
        writing = folder / f"{uniqueid}_none.recording.wav"
        with wave.open(str(writing), "wb") as audio:
            audio.setnchannels(1)
            audio.setsampwidth(2)
            audio.setframerate(8000)
            audio.writeframes(bytes(16000))  # a second of silence
        writing.rename(folder / f"{uniqueid}_none.wav")
        rows = wait_until(
            lambda: self.query("SELECT id FROM recordings WHERE uniqueid = ?", uniqueid),
            15,
            "the recording is ingested",
        )
        return int(rows[0][0])

    def wait_until_healthy(self) -> None:
        def healthy() -> bool:
            code = self.process.poll()
            if code is not None:
                raise AssertionError(f"hotline run exited {code} at start")
            return read_health(self.web_port, timeout=1)[0] == 200

        try:
            wait_until(healthy, START_SECONDS, "hotline run answers /healthz")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.log_tail()}") from None

    def wait_until_replayed(self) -> dict[str, Any]:
        """The health report once the recorded session is replayed and its calls written."""

        def replayed() -> dict[str, Any] | None:
            report = self.health()
            if "replay finished" not in self.log():
                return None
            return report if report["journal"]["pending_writes"] == 0 else None

        return wait_until(replayed, START_SECONDS, "the recorded session is replayed")

    def stop(self) -> None:
        """SIGTERM, as systemd stops it: it must exit 0, having written what it holds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(
                f"hotline run still running {STOP_SECONDS} s after SIGTERM:\n{self.log_tail()}"
            ) from None
        assert code == 0, f"hotline run exited {code}:\n{self.log_tail()}"


def start_hotline(home: Path, *args: str, env: dict[str, str] | None = None) -> Hotline:
    """``hotline run --speed 0 ARGS`` in ``home``, once it answers /healthz."""
    env = env if env is not None else hotline_env(home)
    with (home / "hotline.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "hotline.cli", "run", "--speed", "0", *args],
            cwd=home,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = Hotline(home, env, process)
    try:
        running.wait_until_healthy()
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        raise
    return running


@contextlib.contextmanager
def running_hotline(home: Path, *args: str) -> Iterator[Hotline]:
    """A process with the suite's users, stopped (and checked to stop cleanly) at the end."""
    running = start_hotline(home, *args)
    try:
        running.add_people(*PEOPLE)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def hotline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hotline]:
    """The module's own process: what one attack leaves in the throttle, the caps and the
    database cannot decide another module's attack."""
    with running_hotline(tmp_path_factory.mktemp("hotline")) as running:
        yield running


# -- web clients --------------------------------------------------------------------------------


def web_client(address: str = "127.0.0.1", *, limit: int = 20) -> aiohttp.ClientSession:
    """A browser-like client whose connections come from ``address``.

    It keeps the cookies of an IP-address host (as browsers do) and lets an idle connection go
    after 1 s, before the server's 2 s idle deadline could cut it under a new request.
    """
    connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=limit, keepalive_timeout=1.0)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def log_in(client: aiohttp.ClientSession, hotline: Hotline, person: Person) -> str:
    """Log ``client`` in (its cookie jar keeps the session); the session's CSRF token."""
    async with client.post(hotline.url("/api/v1/login"), json=person.login) as response:
        assert response.status == 200, (response.status, await response.text())
        return str((await response.json())["csrf"])


def session_cookie(client: aiohttp.ClientSession) -> str:
    cookies = {cookie.key: cookie.value for cookie in client.cookie_jar}
    return cookies["hotline_session"]


def assert_refusal(status: int, body: bytes) -> str:
    """A 4xx that says what was wrong in a short ``{"error": ...}`` and nothing of the code."""
    assert 400 <= status < 500, (status, body[:300])
    assert len(body) < 400, body[:400]
    document = json.loads(body)
    assert isinstance(document, dict) and set(document) == {"error"}, document
    assert isinstance(document["error"], str), document
    lowered = body.decode("utf-8", "replace").lower()
    assert not any(marker in lowered for marker in LEAK_MARKERS), body
    return document["error"]


# -- raw sockets --------------------------------------------------------------------------------


async def connect_from(
    address: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))


async def ended_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server ends the connection (EOF or reset) within ``within`` seconds; what
    it sends meanwhile is read and dropped."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    return True


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_answer(reader: asyncio.StreamReader, within: float = 10) -> RawAnswer:
    """One HTTP/1.1 response with a Content-Length, read off a raw socket."""
    async with asyncio.timeout(within):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawAnswer(status, headers, body)


# -- FastAGI, as Asterisk asks ------------------------------------------------------------------

_UNIQUEIDS = itertools.count(1)
_CALLERS = itertools.count(1)


class Highest:
    """The highest value ``read`` gave while a block ran, sampled every ``every`` seconds
    (``async with Highest(hotline.rss_kb, 0.05) as memory: ...``, then ``memory.value``)."""

    def __init__(self, read: Callable[[], int], every: float, most_seconds: float = 100) -> None:
        self._read = read
        self._every = every
        self._samples = int(most_seconds / every)
        self._done = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self.value = read()

    async def __aenter__(self) -> Highest:
        self._watcher = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._done.set()
        if self._watcher is not None:
            await self._watcher

    async def _watch(self) -> None:
        for _ in range(self._samples):
            self.value = max(self.value, self._read())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self._every)
                return


def fresh_caller() -> str:
    """A caller number no test has routed yet: routing opens a new ticket for it."""
    return f"139{next(_CALLERS):08d}"


async def route_call(hotline: Hotline, caller: str, *, caller_name: str = "") -> dict[str, str]:
    """One FastAGI ``route`` session as Asterisk 22 runs it: the variables the answer sets."""
    uniqueid = f"1796000000.{next(_UNIQUEIDS)}"
    headers = {
        "agi_network": "yes",
        "agi_network_script": "route",
        "agi_request": f"agi://127.0.0.1:{hotline.agi_port}/route",
        "agi_channel": f"PJSIP/citizens-{uniqueid.replace('.', '')}",
        "agi_uniqueid": uniqueid,
        "agi_callerid": caller,
        "agi_calleridname": caller_name,
        "agi_context": "from-citizens",
        "agi_extension": "12345",
        "agi_dnid": "12345",
    }
    request = "".join(f"{name}: {value}\n" for name, value in headers.items()) + "\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", hotline.agi_port)
    commands: list[str] = []
    try:
        writer.write(request.encode())
        async with asyncio.timeout(5):
            while len(commands) < 20 and (line := await reader.readline()):
                commands.append(line.decode().rstrip("\n"))
                writer.write(b"200 result=0\n")
    finally:
        writer.close()
    return variables_set(commands)


async def new_ticket(hotline: Hotline, caller: str, *, caller_name: str = "") -> str:
    """A ticket opened the way the hotline opens them: a new caller routed over FastAGI."""
    answer = await route_call(hotline, caller, caller_name=caller_name)
    assert answer["HOTLINE_TICKET"], answer
    return answer["HOTLINE_TICKET"]
