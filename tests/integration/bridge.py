"""Run the real ``hotline run`` as its own process against the test bed, as an operator would."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, port_open

AGI_PORT = 4573  # what asterisk-conf/extensions.conf asks for


@dataclass
class RunningBridge:
    process: subprocess.Popen[bytes]
    database: Path
    web_port: int
    log_path: Path

    def health(self) -> dict:
        url = f"http://127.0.0.1:{self.web_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            return json.load(error)

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

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)


def start_bridge(asterisk, tmp_path: Path, **extra_env: str) -> RunningBridge:  # type: ignore[no-untyped-def]
    if port_open("127.0.0.1", AGI_PORT):
        pytest.fail(f"something else already listens on the FastAGI port {AGI_PORT}")
    database = tmp_path / "journal.db"
    web_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env |= {
        "HOTLINE_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "HOTLINE_AMI_HOST": asterisk.ami_host,
        "HOTLINE_AMI_PORT": str(asterisk.ami_port),
        "HOTLINE_AMI_USERNAME": asterisk.ami_username,
        "HOTLINE_AMI_SECRET": asterisk.ami_secret,
        "HOTLINE_AGI_PORT": str(AGI_PORT),
        "HOTLINE_WEB_PORT": str(web_port),
        "HOTLINE_LOG_LEVEL": "DEBUG",
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
            if bridge.health()["ami"]["up"] and port_open("127.0.0.1", AGI_PORT):
                return bridge
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    bridge.stop()
    pytest.fail(f"bridge did not log in to AMI in time:\n{bridge.log_tail()}")
