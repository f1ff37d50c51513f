"""AGI route latency: routing decisions over real FastAGI sockets, 1,000,000 tickets in SQLite.

What is measured: one *route* is one whole FastAGI session as Asterisk runs it, seen from the
PBX's side of a loopback TCP socket: connect, send the ``agi_*`` header block of the ``route``
script, answer the command the server sends as Asterisk 22 does (``EXEC MSet`` with the
``HOTLINE_*`` variables: ``200 result=0``; ``SET VARIABLE``, sent when a value needs quoting:
``200 result=1``), until the server closes the socket. Latency runs from just before
``connect()`` to the end of file. It includes the TCP handshake, header parsing, the decision
(open-ticket and enterprise lookups, a new ticket when the rules ask for one: a write), the
command round trip and the close.

The server is the production one: ``hotline.service.build_route_server`` over
``infra.storage.create_engine`` and ``transactions_for`` (SQLite: one routing thread, WAL),
with default ``Settings`` (50 ms routing budget), on a schema made by the real migrations. It
runs in a child process (this file with ``--serve``) with its own event loop; the clients run in
this process (on uvloop when it is installed, ``--client-loop``: Asterisk's side is C, and the
less the stand-in adds, the more the figure is the server's), so the client side's work is not on
the server's loop (both processes share the machine's cores, which is reported).

Phases: closed loop (every client starts its next route as soon as its last one ended: the
throughput at saturation), then open loop at fixed offered rates (arrivals scheduled in advance,
Poisson by default, each taken by whichever client is free; a route that finds every client busy
waits, and that wait is reported as start lag). Each phase gets a fresh server process (one phase
can leave the server degraded for the next; ``--one-server`` keeps one) and a discarded warm-up at
the lowest offered rate. After each phase the database is checked for a write lock held while no
client calls; one still held after ``busy_timeout`` is tested with ``gc.collect()`` in the server.

Run ``python benchmarks/agi_route.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import logging
import math
import os
import platform
import pstats
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent

# Benchmark the code in this checkout, not whatever copy of the packages is installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import fsync_seconds, machine_cpu_seconds  # noqa: E402
from hotline.loop import EventLoopChoice, loop_name  # noqa: E402
from hotline.loop import run as run_loop  # noqa: E402
from hotline.schema import upgrade_database  # noqa: E402
from hotline.service import build_route_server, settle_heap  # noqa: E402
from infra.config import ENV_PREFIX, Settings  # noqa: E402
from infra.storage import create_engine, transactions_for  # noqa: E402
from tickets.model import TicketNumber, TicketStatus, ticket_day  # noqa: E402

TARGET_P99_MS = 5.0
FSYNC_SAMPLES = 300
REALISTIC_PEAK = 50.0  # routes/s; a city hotline's busiest hour is far below this
HISTORY_DAYS = 730
ENTERPRISES = 2_000
AGENTS = 120
ROUTE_TIMEOUT = 10.0  # a client gives up on one route after this long (counted as an error)
SETTLE_SECONDS = 1.0
LOCK_WAIT = 6.0  # longer than busy_timeout (5 s): a lock still held then is not a busy writer
GIVE_UP_FACTOR = 1.5  # open loop: arrivals not started by 1.5 x --seconds are abandoned
EPOCH = datetime(1970, 1, 1)  # naive UTC, as SQLAlchemy's SQLite DateTime stores values

# The caller mix of every phase: (kind, share).
CALLER_MIX = (
    ("open-ticket", 0.20),  # has an open ticket active within ticket_match_days
    ("known", 0.40),  # any caller with tickets (mostly resolved or closed ones)
    ("unknown", 0.30),  # never called: the rules open a new ticket (a write)
    ("enterprise", 0.05),  # a number in the enterprise directory
    ("withheld", 0.05),  # no caller ID
)
OPEN_STATUSES = (
    (TicketStatus.NEW, 0.15),
    (TicketStatus.SIGNED, 0.20),
    (TicketStatus.CONTACTED, 0.25),
    (TicketStatus.ON_SITE, 0.15),
    (TicketStatus.REOPENED, 0.10),
    (TicketStatus.CALLBACK, 0.15),
)
CATEGORIES = (
    "噪音扰民",
    "道路破损",
    "供水",
    "供暖",
    "物业纠纷",
    "占道经营",
    "公交线路",
    "劳动纠纷",
    "消费投诉",
    "垃圾清运",
    "违章建筑",
    "政策咨询",
)
DEPARTMENTS = (
    "市城管局",
    "市住建委",
    "市交通委",
    "市水务局",
    "市人社局",
    "市市场监管局",
    "区街道办",
    "市生态环境局",
    "市公安局",
    "市卫健委",
)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"
AREA_CODES = ("10", "21", "22", "23", "20", "25", "27", "28", "29", "571", "755", "532")
MOBILE_PREFIXES = ("13", "15", "17", "18", "19")

# --------------------------------------------------------------------------- settings


def scrub_environment() -> list[str]:
    """Drop ``HOTLINE_*`` variables: the benchmark runs the defaults, whatever the shell sets."""
    dropped = sorted(name for name in os.environ if name.startswith(ENV_PREFIX))
    for name in dropped:
        del os.environ[name]
    return dropped


def bench_settings(database_url: str) -> Settings:
    """Default settings on ``database_url``, FastAGI on 127.0.0.1 and a port the kernel picks.

    ``Settings`` refuses ``agi_port=0`` (``ge=1``), so the port is set on a validated copy; the
    server reports the bound port.
    """
    settings = Settings(database_url=database_url, agi_host="127.0.0.1")
    return settings.model_copy(update={"agi_port": 0})


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


# --------------------------------------------------------------------------- progress


class Progress:
    """Progress lines on stderr with the time since the start."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(
            f"[{time.perf_counter() - self._start:6.1f} s] {message}", file=sys.stderr, flush=True
        )


# --------------------------------------------------------------------------- filling the database


@dataclass
class Population:
    """Who can call: numbers with tickets, those with a recent open ticket, enterprises."""

    known: list[str]
    open_recent: list[str]
    enterprises: list[str]
    known_set: set[str] = field(repr=False)


@dataclass
class FillReport:
    tickets: int
    callers: int
    open_tickets: int
    open_recent_callers: int
    enterprises: int
    ticket_days: int
    migrate_seconds: float
    insert_seconds: float
    index_seconds: float
    analyze_seconds: float
    total_seconds: float
    db_bytes: int


def _stamp(ts: float | None) -> str | None:
    """Epoch seconds as SQLAlchemy writes a UTC ``DateTime`` into SQLite."""
    if ts is None:
        return None
    return (EPOCH + timedelta(seconds=ts)).isoformat(sep=" ", timespec="microseconds")


def _weighted(rng: random.Random, choices: Sequence[tuple[Any, float]]) -> Any:
    pick = rng.random() * sum(weight for _, weight in choices)
    for value, weight in choices:
        pick -= weight
        if pick < 0:
            return value
    return choices[-1][0]


class TicketHistory:
    """Rows of the ``tickets`` table: two years of a city hotline, oldest first."""

    def __init__(
        self, count: int, now: float, zone: ZoneInfo, prefix: str, match_days: int, seed: int
    ) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.zone = zone
        self.prefix = prefix
        self.match_since = now - match_days * 86400
        callers = max(1, round(count * 0.3))
        numbers = self.rng.sample(range(10**9), callers)
        self.callers = [f"13{n:09d}" for n in numbers]
        span = HISTORY_DAYS * 86400
        self.opened = sorted(now - self.rng.random() * span for _ in range(count))
        # Every caller has at least one ticket; the rest go mostly to frequent callers.
        self.caller_of = list(range(callers)) + [
            int(callers * self.rng.random() ** 1.5) for _ in range(count - callers)
        ]
        self.rng.shuffle(self.caller_of)
        self.last_serial: dict[str, int] = {}
        self.open_tickets = 0
        self.open_recent: set[str] = set()
        self._day = ""
        self._next_midnight = -math.inf

    def _day_of(self, ts: float) -> str:
        if ts >= self._next_midnight:
            at = datetime.fromtimestamp(ts, UTC)
            self._day = ticket_day(at, self.zone)
            local = at.astimezone(self.zone).date() + timedelta(days=1)
            self._next_midnight = datetime.combine(local, dtime(), tzinfo=self.zone).timestamp()
        return self._day

    def rows(self, start: int, stop: int) -> Iterator[tuple[Any, ...]]:
        rng, now = self.rng, self.now
        for index in range(start, stop):
            opened = self.opened[index]
            caller = self.callers[self.caller_of[index]]
            day = self._day_of(opened)
            serial = self.last_serial.get(day, 0) + 1
            self.last_serial[day] = serial
            age = now - opened
            is_open = rng.random() < (0.6 if age < 30 * 86400 else 0.026)
            owner: str | None = f"PJSIP/agent-{rng.randrange(AGENTS):03d}"
            department: str | None = rng.choice(DEPARTMENTS)
            signed = contacted = on_site = resolved = closed = None
            callback = called_back = None
            satisfaction = None
            if is_open:
                status = _weighted(rng, OPEN_STATUSES)
                active = age if age < 30 * 86400 else min(age, 20 * 86400)
                updated = opened + rng.random() * active
                life = updated - opened
                if status is TicketStatus.NEW:
                    owner, department = None, None
                elif status is TicketStatus.CALLBACK:
                    callback = updated
                    owner = owner if rng.random() < 0.5 else None
                if status not in (TicketStatus.NEW, TicketStatus.CALLBACK):
                    signed = opened + 0.1 * life
                if status in (TicketStatus.CONTACTED, TicketStatus.ON_SITE, TicketStatus.REOPENED):
                    contacted = opened + 0.3 * life
                if status is TicketStatus.ON_SITE:
                    on_site = opened + 0.6 * life
                self.open_tickets += 1
                if updated >= self.match_since:
                    self.open_recent.add(caller)
            else:
                resolved_share = 0.3 if age < 60 * 86400 else 0.05
                status = (
                    TicketStatus.RESOLVED
                    if rng.random() < resolved_share
                    else (TicketStatus.CLOSED)
                )
                life = min(rng.expovariate(1 / (2.5 * 86400)), age)
                updated = opened + life
                signed = opened + 0.05 * life
                contacted = opened + 0.2 * life
                on_site = opened + 0.5 * life if rng.random() < 0.4 else None
                if status is TicketStatus.CLOSED:
                    resolved, closed = opened + 0.8 * life, updated
                    satisfaction = rng.randint(1, 5) if rng.random() < 0.7 else None
                else:
                    resolved = updated
                if rng.random() < 0.1:
                    callback, called_back = opened + 0.01 * life, opened + 0.1 * life
            category = rng.choice(CATEGORIES)
            name = rng.choice(SURNAMES) + rng.choice(GIVEN) if rng.random() < 0.3 else ""
            description = (
                f"市民来电反映{category}问题，地点：{rng.randrange(1, 400)}号附近，"
                f"已持续{rng.randrange(1, 30)}天，请相关部门尽快处理。"
            )
            yield (
                index + 1,
                str(TicketNumber(self.prefix, day, serial)),
                caller,
                name,
                category,
                description,
                status.value,
                owner,
                department,
                rng.random() < 0.003,
                satisfaction,
                _stamp(opened),
                _stamp(updated),
                _stamp(signed),
                _stamp(contacted),
                _stamp(on_site),
                _stamp(resolved),
                _stamp(closed),
                _stamp(callback),
                _stamp(called_back),
            )


TICKET_COLUMNS = (
    "id, number, caller_number, caller_name, category, description, status, owner_agent, "
    "department, emergency, satisfaction, opened_at, updated_at, signed_at, contacted_at, "
    "on_site_at, resolved_at, closed_at, callback_requested_at, called_back_at"
)


def enterprise_rows(rng: random.Random, count: int, now: float) -> list[tuple[str, str, str]]:
    """Directory entries with normalised numbers (area code without the trunk ``0``)."""
    numbers: set[str] = set()
    while len(numbers) < count:
        code = rng.choice(AREA_CODES)
        numbers.add(code + str(rng.randrange(2 * 10**7, 9 * 10**7)))
    rows = []
    for index, number in enumerate(sorted(numbers), start=1):
        name = f"{rng.choice(('华', '中', '东方', '新', '恒', '长城'))}{index:04d}科技有限公司"
        rows.append((number, name, _stamp(now - rng.random() * HISTORY_DAYS * 86400) or ""))
    return rows


async def create_schema(url: str) -> None:
    await upgrade_database(url)


def fill_database(
    path: Path, tickets: int, settings: Settings, seed: int, progress: Progress
) -> tuple[Population, FillReport]:
    """Real migrations, then the rows through the stdlib ``sqlite3`` in big transactions."""
    started = time.perf_counter()
    asyncio.run(create_schema(settings.database_url))
    migrated = time.perf_counter()
    now = time.time()
    history = TicketHistory(
        tickets, now, settings.zone, settings.ticket_prefix, settings.ticket_match_days, seed
    )
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-262144")
        # Build the secondary indexes once after the load (same SQL the migration ran).
        indexes = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tickets' "
            "AND sql IS NOT NULL"
        ).fetchall()
        for name, _sql in indexes:
            db.execute(f'DROP INDEX "{name}"')
        placeholders = ", ".join("?" * 20)
        insert = f"INSERT INTO tickets ({TICKET_COLUMNS}) VALUES ({placeholders})"  # noqa: S608
        batch = 200_000
        for start in range(0, tickets, batch):
            stop = min(tickets, start + batch)
            db.execute("BEGIN")
            db.executemany(insert, history.rows(start, stop))
            db.execute("COMMIT")
            progress(f"  tickets {stop:>11,} / {tickets:,}")
        inserted = time.perf_counter()
        for _name, sql in indexes:
            db.execute(sql)
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO ticket_days (day, last_serial) VALUES (?, ?)",
            sorted(history.last_serial.items()),
        )
        entries = enterprise_rows(history.rng, ENTERPRISES, now)
        db.executemany("INSERT INTO enterprises (number, name, added_at) VALUES (?, ?, ?)", entries)
        db.execute("COMMIT")
        indexed = time.perf_counter()
        progress("  ANALYZE")
        db.execute("ANALYZE")
        db.execute("PRAGMA journal_mode=WAL")  # what create_engine sets on every connection
    finally:
        db.close()
    analyzed = time.perf_counter()
    known_set = set(history.callers)
    population = Population(
        known=history.callers,
        open_recent=sorted(history.open_recent),
        enterprises=[number for number, _, _ in entries],
        known_set=known_set,
    )
    report = FillReport(
        tickets=tickets,
        callers=len(history.callers),
        open_tickets=history.open_tickets,
        open_recent_callers=len(history.open_recent),
        enterprises=len(entries),
        ticket_days=len(history.last_serial),
        migrate_seconds=migrated - started,
        insert_seconds=inserted - migrated,
        index_seconds=indexed - inserted,
        analyze_seconds=analyzed - indexed,
        total_seconds=analyzed - started,
        db_bytes=database_bytes(path),
    )
    return population, report


def database_bytes(path: Path) -> int:
    return sum(
        candidate.stat().st_size
        for candidate in (path, path.with_name(path.name + "-wal"))
        if candidate.exists()
    )


def max_ticket_id(path: Path) -> int:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        return int(db.execute("SELECT coalesce(max(id), 0) FROM tickets").fetchone()[0])
    finally:
        db.close()


def write_locked(path: Path) -> bool:
    """Whether some connection holds the write lock (checked while the server is idle)."""
    db = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        db.close()


async def diagnose_lock(server: ServerProcess, db_path: Path) -> str:
    """After a phase: is the database write-locked although no client is calling, and why?

    Waits up to ``LOCK_WAIT`` seconds for work still running in the server to finish; a lock
    that outlives that and is released by ``gc.collect()`` in the server was held by garbage (a
    connection closed while one of its statements was still referenced).
    """
    if not write_locked(db_path):
        return "free"
    waited = 0.0
    while waited < LOCK_WAIT:
        await asyncio.sleep(0.25)
        waited += 0.25
        if not write_locked(db_path):
            return f"busy: free {waited + SETTLE_SECONDS:.1f} s after the phase"
    tasks = server.ask("stats")["tasks"]
    collected = server.ask("gc")["collected"]
    if not write_locked(db_path):
        return (
            f"stuck: still locked {LOCK_WAIT + SETTLE_SECONDS:g} s after the phase with "
            f"{tasks} server tasks left; gc.collect() in the server ({collected:,} objects) "
            "released it"
        )
    return f"stuck: still locked after {LOCK_WAIT + SETTLE_SECONDS:g} s and gc.collect()"


# --------------------------------------------------------------------------- the server process


async def serve(database_url: str, profile_path: str | None) -> None:
    """The child: the production route server, driven by one-word commands on stdin."""
    settings = bench_settings(database_url)
    engine = create_engine(settings.database_url)
    counters: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    free = frozenset(f"PJSIP/agent-{k:03d}" for k in range(0, AGENTS, 2))

    def on_routed(_uniqueid: str, decision: Any) -> None:
        reasons[decision.reason.value] += 1

    units = transactions_for(engine, sync=settings.database_sync)
    server = build_route_server(
        settings, engine, units, lambda: free, on_routed=on_routed, counters=counters
    )
    # As ``hotline agi`` runs it: WAL checkpoints off the routing thread.
    checkpoints = asyncio.create_task(units.run_checkpoints())
    await server.start()
    settle_heap()  # as hotline agi does once it listens
    hello = {
        "port": server.port,
        "budget_ms": settings.routing_budget_ms,
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }
    print(json.dumps(hello), flush=True)
    profiler: cProfile.Profile | None = None
    try:
        while True:
            command = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if command in ("", "quit"):
                break
            if command == "stats":
                cpu = os.times()
                this = asyncio.current_task()
                stats = {
                    "server": dict(server.counters),
                    "routing": dict(counters),
                    "reasons": dict(reasons),
                    "cpu_seconds": cpu.user + cpu.system,
                    "tasks": sum(1 for task in asyncio.all_tasks() if task is not this),
                }
                print(json.dumps(stats), flush=True)
            elif command == "gc":
                print(json.dumps({"collected": gc.collect()}), flush=True)
            elif command == "profile-start":
                profiler = cProfile.Profile()
                profiler.enable()
                print("{}", flush=True)
            elif command == "profile-stop" and profiler is not None and profile_path:
                profiler.disable()
                profiler.dump_stats(profile_path)
                print("{}", flush=True)
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
    finally:
        await server.close()
        checkpoints.cancel()
        await units.close()
        await engine.dispose()


def serve_main(database_url: str, profile_path: str | None, loop: EventLoopChoice) -> int:
    """On the event loop ``hotline agi`` would pick for ``HOTLINE_EVENT_LOOP=loop``."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    run_loop(serve(database_url, profile_path), loop)
    return 0


class ServerProcess:
    """This file run with ``--serve`` in a fresh interpreter; stderr goes to a log file."""

    started = 0

    def __init__(
        self, database_url: str, workdir: Path, profile: bool, loop: EventLoopChoice = "auto"
    ) -> None:
        ServerProcess.started += 1
        self.log_path = workdir / f"server-{ServerProcess.started}.log"
        self.profile_path = workdir / f"server-{ServerProcess.started}.prof" if profile else None
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", database_url]
        command += ["--server-loop", loop]
        if self.profile_path is not None:
            command += ["--profile-out", str(self.profile_path)]
        self._log: IO[str] = self.log_path.open("w")
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=workdir,
        )
        hello = self._reply()
        self.port = int(hello["port"])
        self.budget_ms = float(hello["budget_ms"])
        self.loop = str(hello["loop"])
        self.pid = self._process.pid

    def _reply(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the server process died; its log:\n{self.log_tail()}")
        return json.loads(line)

    def ask(self, command: str) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._reply()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_lines(self) -> int:
        return len(self.log_path.read_text(errors="replace").splitlines())

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            assert self._process.stdin is not None
            self._process.stdin.write("quit\n")
            self._process.stdin.close()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


# --------------------------------------------------------------------------- the PBX side


class CallerMix:
    """Caller IDs as a trunk presents them, drawn from ``CALLER_MIX``."""

    def __init__(self, population: Population, seed: int) -> None:
        self._rng = random.Random(seed)
        self._population = population
        self._sequence = 0

    def next(self) -> tuple[str, str, str]:
        """(kind, agi_callerid, agi_calleridname)."""
        rng, population = self._rng, self._population
        kind = _weighted(rng, CALLER_MIX)
        if kind == "open-ticket" and not population.open_recent:
            kind = "known"
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) if rng.random() < 0.2 else ""
        if kind == "open-ticket":
            number = self._mobile(rng.choice(population.open_recent))
        elif kind == "known":
            number = self._mobile(rng.choice(population.known))
        elif kind == "unknown":
            digits = rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**9):09d}"
            while digits in population.known_set:
                digits = rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**9):09d}"
            number = self._mobile(digits)
        elif kind == "enterprise":
            digits = rng.choice(population.enterprises)
            number = _weighted(rng, (("0" + digits, 0.7), ("+86" + digits, 0.15), (digits, 0.15)))
            name = ""
        else:
            number, name = rng.choice(("anonymous", "unknown", "unknown", "")), ""
        return kind, number, name

    def _mobile(self, digits: str) -> str:
        return "+86" + digits if self._rng.random() < 0.15 else digits

    def header(self, port: int, callerid: str, name: str) -> bytes:
        """The header block Asterisk 22 sends for ``AGI(agi://host:port/route)``."""
        self._sequence += 1
        seq = self._sequence
        return (
            "agi_network: yes\n"
            "agi_network_script: route\n"
            f"agi_request: agi://127.0.0.1:{port}/route\n"
            f"agi_channel: PJSIP/citizens-{seq:08x}\n"
            "agi_language: zh\n"
            "agi_type: PJSIP\n"
            f"agi_uniqueid: {int(time.time())}.{seq}\n"
            "agi_version: 22.5.2\n"
            f"agi_callerid: {callerid or 'unknown'}\n"
            f"agi_calleridname: {name or 'unknown'}\n"
            "agi_callingpres: 0\n"
            "agi_callingani2: 0\n"
            "agi_callington: 0\n"
            "agi_callingtns: 0\n"
            "agi_dnid: 12345\n"
            "agi_rdnis: unknown\n"
            "agi_context: from-citizens\n"
            "agi_extension: 12345\n"
            "agi_priority: 2\n"
            "agi_enhanced: 0.0\n"
            "agi_accountcode: \n"
            f"agi_threadid: {140_000_000_000_000 + seq}\n"
            "\n"
        ).encode()


@dataclass(slots=True)
class Route:
    kind: str
    scheduled: float  # when the route was due (open loop) or started (closed loop)
    started: float  # just before connect()
    ended: float  # end of file from the server
    reason: str  # HOTLINE_REASON, or "error: ..."
    commands: int


async def one_route(port: int, header: bytes) -> tuple[str, int]:
    """One FastAGI session; returns (HOTLINE_REASON, commands answered)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    reason, commands = "", 0
    try:
        writer.write(header)
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.startswith(b"EXEC MSet "):  # as Asterisk answers it: MSet returns 0
                commands += 1
                for pair in line[10:].strip(b'"\r\n').split(b","):
                    name, _, value = pair.partition(b"=")
                    if name == b"HOTLINE_REASON":
                        reason = value.decode()
                writer.write(b"200 result=0\n")
            elif line.startswith(b"SET VARIABLE "):
                commands += 1
                name, _, value = line[13:].rstrip(b"\r\n").partition(b" ")
                if name == b"HOTLINE_REASON":
                    reason = value.strip(b'"').decode()
                writer.write(b"200 result=1\n")
            else:
                writer.write(b"510 Invalid or unknown command\n")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return reason or "(none)", commands


async def timed_route(port: int, mix: CallerMix, scheduled: float | None, out: list[Route]) -> None:
    kind, callerid, name = mix.next()
    header = mix.header(port, callerid, name)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(ROUTE_TIMEOUT):
            reason, commands = await one_route(port, header)
    except (OSError, TimeoutError) as error:
        reason, commands = f"error: {type(error).__name__}", 0
    ended = time.perf_counter()
    out.append(
        Route(kind, started if scheduled is None else scheduled, started, ended, reason, commands)
    )


async def closed_loop(port: int, mix: CallerMix, clients: int, seconds: float) -> list[Route]:
    """Every client back to back until the deadline; routes still running then are finished."""
    routes: list[Route] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            await timed_route(port, mix, None, routes)

    await asyncio.gather(*(client() for _ in range(clients)))
    return routes


def arrival_offsets(rate: float, seconds: float, poisson: bool, rng: random.Random) -> list[float]:
    offsets: list[float] = []
    at = 0.0
    while True:
        at += rng.expovariate(rate) if poisson else 1 / rate
        if at >= seconds:
            return offsets
        offsets.append(at)


async def open_loop(
    port: int, mix: CallerMix, clients: int, offsets: list[float], give_up_after: float
) -> tuple[list[Route], float, int]:
    """Arrivals at fixed times, each taken by the next free client.

    Returns the routes, the start time and how many arrivals were abandoned: not started
    ``give_up_after`` seconds after the start because every client was still busy.
    """
    routes: list[Route] = []
    start = time.perf_counter() + 0.05
    schedule = iter(offsets)
    abandoned = 0

    async def client() -> None:
        nonlocal abandoned
        for offset in schedule:
            due = start + offset
            now = time.perf_counter()
            if now - start > give_up_after:
                abandoned += 1
                continue
            if due > now:
                await asyncio.sleep(due - now)
            await timed_route(port, mix, due, routes)

    await asyncio.gather(*(client() for _ in range(clients)))
    return routes, start, abandoned


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest rank; ``nan`` for no values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(values_seconds: Sequence[float]) -> dict[str, float]:
    values = sorted(v * 1000 for v in values_seconds)
    return {
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "p999_ms": percentile(values, 99.9),
        "max_ms": values[-1] if values else math.nan,
        "mean_ms": sum(values) / len(values) if values else math.nan,
    }


def counter_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    keys = set(after) | set(before)
    delta = {key: int(after.get(key, 0)) - int(before.get(key, 0)) for key in keys}
    return {key: value for key, value in sorted(delta.items()) if value}


@dataclass
class PhaseResult:
    name: str
    offered_rate: float | None
    clients: int
    seconds: float
    routes: int
    routes_per_second: float
    decided_per_second: float
    latency: dict[str, float]
    latency_from_arrival: dict[str, float] | None
    start_lag_p99_ms: float | None
    start_lag_max_ms: float | None
    fallbacks: int
    errors: int
    incomplete: int
    reasons: dict[str, int]
    reasons_by_kind: dict[str, dict[str, int]]
    kind_p99_ms: dict[str, float]
    new_tickets: int
    server_counters: dict[str, int]
    routing_counters: dict[str, int]
    server_cpu_percent: float
    client_cpu_percent: float
    target_met: bool
    steal_percent: float | None = None  # of one core: the hypervisor ran another guest
    abandoned: int = 0
    locked_before: bool = False
    locked_after: bool = False
    lock_state: str = "free"
    arrivals: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {key: _jsonable(value) for key, value in self.__dict__.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value


def summarise(
    name: str,
    routes: list[Route],
    window: tuple[float, float],
    offered_rate: float | None,
    clients: int,
    server_before: dict[str, Any],
    server_after: dict[str, Any],
    new_tickets: int,
    client_cpu: float,
) -> PhaseResult:
    start, end = window
    wall = max(end - start, 1e-9)
    if offered_rate is None:
        counted = [r for r in routes if r.ended <= end]
        throughput_routes = counted
    else:
        counted = routes
        throughput_routes = routes
    fallbacks = sum(1 for r in counted if r.reason == "fallback")
    errors = sum(1 for r in counted if r.reason.startswith("error"))
    incomplete = sum(
        1 for r in counted if not r.reason.startswith("error") and r.reason == "(none)"
    )
    ok = [r for r in counted if not r.reason.startswith("error")]
    latency = latency_summary([r.ended - r.started for r in ok])
    from_arrival = lag_p99 = lag_max = None
    if offered_rate is not None:
        from_arrival = latency_summary([r.ended - r.scheduled for r in ok])
        lags = latency_summary([r.started - r.scheduled for r in counted])
        lag_p99, lag_max = lags["p99_ms"], lags["max_ms"]
    reasons = Counter(r.reason for r in counted)
    by_kind: dict[str, Counter[str]] = {}
    kind_latency: dict[str, list[float]] = {}
    for r in counted:
        by_kind.setdefault(r.kind, Counter())[r.reason] += 1
        if not r.reason.startswith("error"):
            kind_latency.setdefault(r.kind, []).append(r.ended - r.started)
    decided = len(throughput_routes) - fallbacks - errors
    p99 = latency["p99_ms"]
    if from_arrival is not None:
        p99 = max(p99, from_arrival["p99_ms"])
    return PhaseResult(
        name=name,
        offered_rate=offered_rate,
        clients=clients,
        seconds=wall,
        routes=len(throughput_routes),
        routes_per_second=len(throughput_routes) / wall,
        decided_per_second=decided / wall,
        latency=latency,
        latency_from_arrival=from_arrival,
        start_lag_p99_ms=lag_p99,
        start_lag_max_ms=lag_max,
        fallbacks=fallbacks,
        errors=errors,
        incomplete=incomplete,
        reasons=dict(reasons.most_common()),
        reasons_by_kind={kind: dict(c.most_common()) for kind, c in sorted(by_kind.items())},
        kind_p99_ms={
            kind: latency_summary(values)["p99_ms"] for kind, values in sorted(kind_latency.items())
        },
        new_tickets=new_tickets,
        server_counters=counter_delta(server_after["server"], server_before["server"]),
        routing_counters=counter_delta(server_after["routing"], server_before["routing"]),
        server_cpu_percent=100
        * (server_after["cpu_seconds"] - server_before["cpu_seconds"])
        / wall,
        client_cpu_percent=100 * client_cpu / wall,
        target_met=bool(ok) and p99 <= TARGET_P99_MS and errors == 0,
    )


# --------------------------------------------------------------------------- running the phases


async def run_phases(
    args: argparse.Namespace,
    population: Population,
    db_path: Path,
    workdir: Path,
    progress: Progress,
) -> tuple[list[PhaseResult], int, float]:
    """Each phase on a fresh server process (one for all with ``--one-server``).

    Returns the results, the server log's line count and the routing budget.
    """
    database_url = sqlite_url(db_path)
    mix = CallerMix(population, args.seed + 1)
    arrivals_rng = random.Random(args.seed + 2)
    warm_rate = min(args.rates) if args.rates else 20.0
    results: list[PhaseResult] = []
    log_lines = 0
    budget_ms = math.nan
    shared: ServerProcess | None = None

    def start_server() -> ServerProcess:
        server = ServerProcess(database_url, workdir, args.profile, args.server_loop)
        progress(f"  server pid {server.pid} on 127.0.0.1:{server.port}, {server.loop} loop")
        return server

    async def phase(name: str, rate: float | None, server: ServerProcess) -> PhaseResult:
        if args.warmup > 0:
            progress(f"  warm-up: {warm_rate:g} routes/s for {args.warmup:g} s (discarded)")
            offsets = arrival_offsets(warm_rate, args.warmup, True, arrivals_rng)
            await open_loop(server.port, mix, args.clients, offsets, args.warmup * 2)
        await asyncio.sleep(SETTLE_SECONDS)
        locked_before = write_locked(db_path)
        if locked_before:
            progress("  the warm-up left the database write-locked (measuring anyway)")
        before = server.ask("stats")
        tickets_before = max_ticket_id(db_path)
        profile = args.profile
        if profile:
            server.ask("profile-start")
        cpu_before = time.process_time()
        machine_before = machine_cpu_seconds()
        abandoned = 0
        if rate is None:
            progress(f"  measuring {args.seconds:g} s")
            started = time.perf_counter()
            routes = await closed_loop(server.port, mix, args.clients, args.seconds)
            window = (started, started + args.seconds)
        else:
            offsets = arrival_offsets(rate, args.seconds, args.arrivals == "poisson", arrivals_rng)
            progress(f"  measuring {args.seconds:g} s: {len(offsets):,} arrivals")
            routes, started, abandoned = await open_loop(
                server.port, mix, args.clients, offsets, args.seconds * GIVE_UP_FACTOR
            )
            last_end = max((r.ended for r in routes), default=started)
            window = (started, max(last_end, started + args.seconds))
        client_cpu = time.process_time() - cpu_before
        machine_after = machine_cpu_seconds()
        if profile and server.profile_path is not None:
            server.ask("profile-stop")
            shutil.copyfile(server.profile_path, workdir / f"phase-{len(results) + 1}.prof")
        after = server.ask("stats")
        new_tickets = max_ticket_id(db_path) - tickets_before
        await asyncio.sleep(SETTLE_SECONDS)
        lock_state = await diagnose_lock(server, db_path)
        locked = lock_state != "free"
        result = summarise(
            name, routes, window, rate, args.clients, before, after, new_tickets, client_cpu
        )
        result.abandoned = abandoned
        if machine_before is not None and machine_after is not None:
            wall = max(window[1] - window[0], 1e-9)
            result.steal_percent = 100 * (machine_after["steal"] - machine_before["steal"]) / wall
        result.arrivals = None if rate is None else len(offsets)
        result.locked_after = locked
        result.lock_state = lock_state
        result.locked_before = locked_before
        result.target_met = result.target_met and abandoned == 0
        progress(
            f"  {name}: {result.routes:,} routes, {result.routes_per_second:,.0f}/s, "
            f"p50 {result.latency['p50_ms']:.2f} ms, p99 {result.latency['p99_ms']:.2f} ms, "
            f"fallbacks {result.fallbacks:,}, errors {result.errors:,}"
            + (f", abandoned {abandoned:,}" if abandoned else "")
            + (f"; database write-locked after it ({lock_state})" if locked else "")
        )
        return result

    plan: list[tuple[str, float | None]] = [(f"closed x{args.clients}", None)]
    plan += [(f"open {rate:g}/s", rate) for rate in args.rates]
    try:
        for name, rate in plan:
            if rate is None:
                progress(f"closed loop: {args.clients} clients back to back")
            else:
                progress(f"open loop: {rate:g} routes/s offered ({args.arrivals} arrivals)")
            if args.one_server:
                shared = shared or start_server()
                server = shared
            else:
                server = start_server()
            budget_ms = server.budget_ms
            try:
                results.append(await phase(name, rate, server))
            finally:
                if server is not shared:
                    server.stop()
                    log_lines += server.log_lines()
    finally:
        if shared is not None:
            shared.stop()
            log_lines += shared.log_lines()
    return results, log_lines, budget_ms


# --------------------------------------------------------------------------- reporting


def fmt_ms(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def print_report(
    fill: FillReport,
    results: list[PhaseResult],
    args: argparse.Namespace,
    budget_ms: float,
    dropped_env: list[str],
    log_lines: int,
    fsync_ms: dict[str, float],
) -> None:
    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores "
        "(server process and clients share them); clients on "
        f"{loop_name(args.client_loop)}, server on {loop_name(args.server_loop)}"
    )
    if dropped_env:
        print(f"ignored environment: {', '.join(dropped_env)} (the benchmark runs the defaults)")
    print(
        f"database: {fill.tickets:,} tickets ({fill.callers:,} callers, {fill.open_tickets:,} "
        f"open, {fill.open_recent_callers:,} callers with an open ticket active in the match "
        f"window), {fill.enterprises:,} enterprises, {fill.ticket_days:,} ticket_days rows; "
        f"{fill.db_bytes / 1e6:,.0f} MB after the fill"
    )
    print(
        f"fill: {fill.total_seconds:.1f} s (migrations {fill.migrate_seconds:.1f}, rows "
        f"{fill.insert_seconds:.1f}, indexes {fill.index_seconds:.1f}, ANALYZE "
        f"{fill.analyze_seconds:.1f})"
    )
    print(
        f"disk: fsync of a 4 KB append next to the database, {FSYNC_SAMPLES} samples: "
        f"p50 {fmt_ms(fsync_ms['p50_ms'])}, p99 {fmt_ms(fsync_ms['p99_ms'])}, "
        f"max {fmt_ms(fsync_ms['max_ms'])} ms; a route that opens a ticket commits it into "
        "the WAL before it answers, and the WAL is synced just after (HOTLINE_DATABASE_SYNC="
        "background, the default; in_commit syncs before the answer)"
    )
    print("callers: " + ", ".join(f"{kind} {share:.0%}" for kind, share in CALLER_MIX))
    print(
        "measured: one route = connect, AGI header block, EXEC MSet HOTLINE_* -> 200 result=0, "
        "server closes;\n  latency from connect() to end of file over loopback, taken in the "
        "client process; the server is\n  build_route_server with default settings (routing "
        f"budget {budget_ms:g} ms: past it HOTLINE_REASON is 'fallback')."
    )
    servers = "one server process for all" if args.one_server else "a fresh server process each"
    print(
        f"phases: {servers}; warm-up {args.warmup:g} s at the lowest rate before each, "
        f"{args.seconds:g} s measured; open loop with {args.arrivals} arrivals over "
        f"{args.clients} client connections"
    )
    print()
    header = (
        f"{'phase':<13}{'routes':>8}{'routes/s':>9}{'decided/s':>10}"
        f"{'p50 ms':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}{'max':>8}"
        f"{'fallback':>9}{'errors':>7}{'new tix':>8}{'srv cpu':>8}{'cli cpu':>8}{'steal':>7}"
        "  p99<=5ms"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        lat = r.latency
        print(
            f"{r.name:<13}{r.routes:>8,}{r.routes_per_second:>9,.0f}{r.decided_per_second:>10,.0f}"
            f"{fmt_ms(lat['p50_ms']):>8}{fmt_ms(lat['p90_ms']):>8}{fmt_ms(lat['p99_ms']):>8}"
            f"{fmt_ms(lat['p999_ms']):>8}{fmt_ms(lat['max_ms']):>8}"
            f"{r.fallbacks:>9,}{r.errors:>7,}{r.new_tickets:>8,}"
            f"{r.server_cpu_percent:>7.0f}%{r.client_cpu_percent:>7.0f}%"
            + ("      -" if r.steal_percent is None else f"{r.steal_percent:>6.0f}%")
            + "  "
            + ("met" if r.target_met else "NOT met")
        )
    print(
        "decided/s: routes that got a real decision (not the fallback); cpu: % of one core, "
        "server includes its SQLite threads; steal: % of one core the hypervisor gave another "
        "guest during the phase"
    )
    print()
    print("open loop, latency from the scheduled arrival (adds any wait for a free client):")
    for r in results:
        if r.latency_from_arrival is None:
            continue
        lat = r.latency_from_arrival
        print(
            f"  {r.name:<12} p50 {fmt_ms(lat['p50_ms'])} ms, p99 {fmt_ms(lat['p99_ms'])} ms, "
            f"max {fmt_ms(lat['max_ms'])} ms; start lag p99 {fmt_ms(r.start_lag_p99_ms)} ms, "
            f"max {fmt_ms(r.start_lag_max_ms)} ms"
            + (f"; {r.abandoned:,} arrivals abandoned" if r.abandoned else "")
        )
    print()
    for r in results:
        print(f"{r.name}:")
        print("  reasons: " + ", ".join(f"{k} {v:,}" for k, v in r.reasons.items()))
        print(
            "  p99 by caller kind: "
            + ", ".join(f"{k} {fmt_ms(v)} ms" for k, v in r.kind_p99_ms.items())
        )
        print(f"  server counters: {r.server_counters}; routing counters: {r.routing_counters}")
        if r.incomplete:
            print(f"  {r.incomplete:,} sessions ended without setting HOTLINE_REASON")
        if r.locked_before:
            print(
                "  the warm-up left the database write-locked: every ticket write waits "
                "busy_timeout (5 s) and fails"
            )
        if r.locked_after:
            print(f"  database write lock after the phase: {r.lock_state}")
    print()
    peak_day = REALISTIC_PEAK * 86400 / 1e6
    print(
        f"A real 12345 hotline peaks well under {REALISTIC_PEAK:g} new calls per second "
        f"({REALISTIC_PEAK:g}/s all day long would be {peak_day:.1f} million calls a day); the "
        "closed loop shows the ceiling, not a load a city sees."
    )
    for r in results:
        at = "at saturation" if r.offered_rate is None else f"at {r.offered_rate:g} routes/s"
        if r.offered_rate is not None and r.offered_rate <= REALISTIC_PEAK:
            at += " (realistic)"
        details = [f"p99 {fmt_ms(r.latency['p99_ms'])} ms connect-to-close"]
        if r.latency_from_arrival is not None:
            details.append(f"{fmt_ms(r.latency_from_arrival['p99_ms'])} ms from arrival")
        details.append(f"{r.fallbacks:,} fallbacks of {r.routes:,}")
        if r.errors:
            details.append(f"{r.errors:,} errors")
        if r.arrivals is not None and r.routes < r.arrivals:
            details.append(f"{r.routes:,} of {r.arrivals:,} arrivals served")
        elif r.arrivals is not None and r.seconds > args.seconds * 1.2:
            details.append(f"{r.arrivals:,} arrivals took {r.seconds:.1f} s to serve")
        if r.abandoned:
            details.append(f"{r.abandoned:,} arrivals abandoned")
        state = "met" if r.target_met else "NOT met"
        print(f"target p99 <= {TARGET_P99_MS:g} ms {at}: {state} ({', '.join(details)})")
    if log_lines:
        print(f"server logs: {log_lines:,} lines (ivr_bypass.budget logs each fallback)")


def print_profile(name: str, path: Path, top: int) -> None:
    stream = io.StringIO()
    stats = pstats.Stats(str(path), stream=stream)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(f"\ncProfile of the server's event-loop thread, phase {name} (SQLite's own threads are")
    print("not in it; the profiler inflates the latency figures of this run):")
    print(stream.getvalue())


# --------------------------------------------------------------------------- main


def parse_rates(text: str) -> list[float]:
    rates = [float(part) for part in text.split(",") if part.strip()]
    if any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError("rates must be positive")
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=1_000_000, help="tickets (1,000,000)")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients (200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per phase (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (2)")
    parser.add_argument(
        "--rates",
        type=parse_rates,
        default=[50.0, 200.0, 500.0],
        help="open-loop offered routes/s, comma-separated (50,200,500)",
    )
    parser.add_argument(
        "--arrivals",
        choices=("poisson", "uniform"),
        default="poisson",
        help="open-loop arrival process (poisson)",
    )
    parser.add_argument("--seed", type=int, default=12345, help="random seed (12345)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--one-server",
        action="store_true",
        help="run every phase on one server process (default: a fresh one per phase)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the server in each measured phase (distorts that run's figures)",
    )
    parser.add_argument("--top", type=int, default=30, help="rows of --profile output (30)")
    parser.add_argument(
        "--server-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="the server's event loop, as HOTLINE_EVENT_LOOP (auto: uvloop when installed)",
    )
    parser.add_argument(
        "--client-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="the clients' event loop (auto: uvloop when installed)",
    )
    parser.add_argument("--serve", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve_main(args.serve, args.profile_out, args.server_loop)
    if args.tickets < 1 or args.clients < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--tickets, --clients and --seconds must be positive")

    dropped_env = scrub_environment()
    progress = Progress()
    workdir = Path(tempfile.mkdtemp(prefix="agi-route-"))
    db_path = workdir / "bench.db"
    settings = bench_settings(sqlite_url(db_path))
    try:
        progress(f"filling {db_path} with {args.tickets:,} tickets")
        population, fill = fill_database(db_path, args.tickets, settings, args.seed, progress)
        progress(f"filled in {fill.total_seconds:.1f} s, {fill.db_bytes / 1e6:,.0f} MB")
        progress("timing this disk's fsync next to the database")
        fsync_ms = latency_summary(fsync_seconds(workdir, FSYNC_SAMPLES))
        results, log_lines, budget_ms = run_loop(
            run_phases(args, population, db_path, workdir, progress), args.client_loop
        )
        if args.json:
            document = {
                "measured": "AGI route session latency over loopback: connect, header block, "
                "one EXEC MSet round trip, close; clients in another process than the server",
                "target_p99_ms": TARGET_P99_MS,
                "routing_budget_ms": budget_ms,
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
                "cpus": os.cpu_count(),
                "client_loop": loop_name(args.client_loop),
                "server_loop": loop_name(args.server_loop),
                "options": {
                    key: vars(args)[key]
                    for key in (
                        "tickets",
                        "clients",
                        "seconds",
                        "warmup",
                        "rates",
                        "arrivals",
                        "one_server",
                        "seed",
                    )
                },
                "caller_mix": dict(CALLER_MIX),
                "fill": fill.__dict__,
                "disk_fsync_ms": fsync_ms,
                "phases": [result.as_json() for result in results],
                "server_log_lines": log_lines,
            }
            print(json.dumps(document, indent=2, ensure_ascii=False))
        else:
            print_report(fill, results, args, budget_ms, dropped_env, log_lines, fsync_ms)
            for index, result in enumerate(results, start=1):
                profile_path = workdir / f"phase-{index}.prof"
                if args.profile and profile_path.exists():
                    print_profile(result.name, profile_path, args.top)
    finally:
        if args.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
