"""Run the real ``hotline run`` as its own process against the test bed, as an operator would."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, port_open
from tests.health import MONITOR_ENV, read_health

AGI_PORT = 4573  # what asterisk-conf/extensions.conf asks for


@dataclass
class RunningBridge:
    process: subprocess.Popen[bytes]
    database: Path
    web_port: int
    log_path: Path

    def health(self) -> dict:
        return read_health(self.web_port)[1]

    def call_row(self, caller: str, timeout: float = 20) -> sqlite3.Row:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with sqlite3.connect(self.database) as db:
                db.row_factory = sqlite3.Row
                rows = db.execute(
                    "SELECT * FROM calls WHERE caller_number = ?", (caller,)
                ).fetchall()
            if rows:
                assert len(rows) == 1, [dict(row) for row in rows]
                return rows[0]
            time.sleep(0.2)
        raise AssertionError(f"no journal row for {caller}; bridge log:\n{self.log_tail()}")

    def rows(self, query: str, *params: object) -> list[sqlite3.Row]:
        with sqlite3.connect(self.database) as db:
            db.row_factory = sqlite3.Row
            return db.execute(query, params).fetchall()

    def ticket(self, number: str) -> sqlite3.Row:
        rows = self.rows("SELECT * FROM tickets WHERE number = ?", number)
        assert len(rows) == 1, f"ticket {number}: {len(rows)} rows"
        return rows[0]

    def wait_for_row(self, query: str, *params: object, timeout: float = 20) -> sqlite3.Row:
        return self.wait_for_rows(query, *params, count=1, timeout=timeout)[0]

    def wait_for_rows(
        self, query: str, *params: object, count: int, timeout: float = 20
    ) -> list[sqlite3.Row]:
        """The journal writes a call's row on its hangup event, a moment after SIPp has exited."""
        deadline = time.monotonic() + timeout
        rows: list[sqlite3.Row] = []
        while time.monotonic() < deadline:
            rows = self.rows(query, *params)
            if len(rows) >= count:
                return rows
            time.sleep(0.2)
        raise AssertionError(
            f"{len(rows)} of {count} rows for {query} {params}; bridge log:\n{self.log_tail()}"
        )

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)


def hotline_env(database: Path, **extra_env: str) -> dict[str, str]:
    """The environment of a ``hotline`` process of the test: only the given HOTLINE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    return env | {
        "HOTLINE_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        **MONITOR_ENV,
        **extra_env,
    }


def hotline_command(database: Path, *args: str, **extra_env: str) -> str:
    """Run one ``hotline`` command (e.g. ``enterprise add``) against the test's database."""
    done = subprocess.run(
        [sys.executable, "-m", "hotline.cli", *args],
        env=hotline_env(database, **extra_env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass
class RunningRouter:
    """``hotline agi``: the routing FastAGI server in its own process."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)


def start_router(tmp_path: Path, database: Path, **extra_env: str) -> RunningRouter:
    if port_open("127.0.0.1", AGI_PORT):
        pytest.fail(f"something else already listens on the FastAGI port {AGI_PORT}")
    log_path = tmp_path / "agi.log"
    env = hotline_env(
        database, HOTLINE_AGI_PORT=str(AGI_PORT), HOTLINE_LOG_LEVEL="DEBUG", **extra_env
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "hotline.cli", "agi"], env=env, stdout=log, stderr=log
        )
    router = RunningRouter(process, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"hotline agi exited with {process.returncode}:\n{router.log_tail()}")
        if port_open("127.0.0.1", AGI_PORT):
            return router
        time.sleep(0.1)
    router.stop()
    pytest.fail(f"hotline agi did not listen in time:\n{router.log_tail()}")


def start_bridge(  # type: ignore[no-untyped-def]
    asterisk, tmp_path: Path, *, serve_agi: bool = True, **extra_env: str
) -> RunningBridge:
    """``hotline run``; with ``serve_agi=False`` its FastAGI listens where Asterisk never asks
    (another process, ``hotline agi``, routes the calls)."""
    agi_port = AGI_PORT if serve_agi else free_port()
    if serve_agi and port_open("127.0.0.1", AGI_PORT):
        pytest.fail(f"something else already listens on the FastAGI port {AGI_PORT}")
    database = tmp_path / "journal.db"
    web_port = free_port()
    env = hotline_env(database)
    env |= {
        "HOTLINE_AMI_HOST": asterisk.ami_host,
        "HOTLINE_AMI_PORT": str(asterisk.ami_port),
        "HOTLINE_AMI_USERNAME": asterisk.ami_username,
        "HOTLINE_AMI_SECRET": asterisk.ami_secret,
        "HOTLINE_AGI_PORT": str(agi_port),
        "HOTLINE_WEB_PORT": str(web_port),
        "HOTLINE_LOG_LEVEL": "DEBUG",
        "HOTLINE_RECORDINGS_SPOOL": str(asterisk.recordings_spool),
        "HOTLINE_RECORDINGS_DIR": str(tmp_path / "recordings"),
        **extra_env,
    }
    log_path = tmp_path / "bridge.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "hotline.cli", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    bridge = RunningBridge(process, database, web_port, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"hotline run exited with {process.returncode}:\n{bridge.log_tail()}")
        try:
            if bridge.health()["ami"]["up"] and port_open("127.0.0.1", agi_port):
                return bridge
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    bridge.stop()
    pytest.fail(f"bridge did not log in to AMI in time:\n{bridge.log_tail()}")


def add_user(bridge: RunningBridge, name: str, password: str, role: str, agent: str) -> None:
    """``hotline users add`` against the bridge's database, the password on standard input."""
    done = subprocess.run(
        [sys.executable, "-m", "hotline.cli", "users", "add", name, "--role", role,
         "--agent", agent, "--password-stdin"],
        input=password + "\n",
        env=hotline_env(bridge.database),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
