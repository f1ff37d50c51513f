"""``hotline enterprise …`` and ``hotline tickets …`` as an operator runs them (real processes,
real SQLite)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.unit.test_cli import hotline, hotline_env


def test_the_enterprise_directory_from_the_shell(tmp_path: Path) -> None:
    env = hotline_env(tmp_path)
    added = hotline("enterprise", "add", "+86 21 6543-2100", "上海电力", env=env)
    assert added.returncode == 0 and added.stdout.split() == ["2165432100", "上海电力"]
    listed = hotline("enterprise", "list", "--json", env=env)
    assert json.loads(listed.stdout) == [{"number": "2165432100", "name": "上海电力"}]
    bad = hotline("enterprise", "add", "<script>", "x", env=env)
    assert bad.returncode == 2 and "not a usable phone number" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0
    assert hotline("enterprise", "remove", "021-65432100", env=env).returncode == 0
    assert hotline("enterprise", "remove", "021-65432100", env=env).returncode == 1


def make_ticket(database: Path, number: str, opened: datetime, **columns: object) -> None:
    values = {
        "number": number,
        "caller_number": "13800138000",
        "caller_name": "张三",
        "category": "",
        "description": "",
        "status": "new",
        "emergency": 0,
        "opened_at": opened.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "updated_at": opened.strftime("%Y-%m-%d %H:%M:%S.%f"),
        **columns,
    }
    with sqlite3.connect(database) as db:
        db.execute(
            # Column names are this test's own literals; the values are bound.
            f"INSERT INTO tickets ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",  # noqa: S608
            list(values.values()),
        )


def test_tickets_from_the_shell(tmp_path: Path) -> None:
    env = hotline_env(tmp_path)
    assert hotline("db", "upgrade", env=env).returncode == 0
    database = tmp_path / "hotline.db"
    now = datetime.now(UTC)
    stamp = lambda at: at.strftime("%Y-%m-%d %H:%M:%S.%f")  # noqa: E731
    # Signed an hour ago and never contacted: the 30-minute contact clock is overdue.
    make_ticket(
        database,
        "12345-20261101-000001",
        now - timedelta(hours=1),
        status="signed",
        owner_agent="PJSIP/agent2",
        signed_at=stamp(now - timedelta(minutes=59)),
    )
    # Opened a minute ago: every clock still running.
    make_ticket(database, "12345-20261101-000002", now - timedelta(minutes=1))

    listed = json.loads(hotline("tickets", "list", "--json", env=env).stdout)
    assert [t["number"] for t in listed] == ["12345-20261101-000002", "12345-20261101-000001"]
    overdue = json.loads(hotline("tickets", "list", "--overdue", "--json", env=env).stdout)
    assert [t["number"] for t in overdue] == ["12345-20261101-000001"]
    assert {c["name"]: c["state"] for c in overdue[0]["clocks"]}["contact"] == "overdue"

    moved = hotline("tickets", "status", "12345-20261101-000001", "contacted", env=env)
    assert moved.returncode == 0 and "contacted" in moved.stdout
    wrong = hotline("tickets", "status", "12345-20261101-000002", "closed", env=env)
    assert wrong.returncode == 2 and "a new ticket cannot become closed" in wrong.stderr
    missing = hotline("tickets", "show", "12345-20991231-000009", env=env)
    assert missing.returncode == 2 and "no ticket" in missing.stderr

    edited = hotline(
        "tickets",
        "edit",
        "12345-20261101-000002",
        "--category",
        "路灯",
        "--satisfaction",
        "4",
        env=env,
    )
    assert edited.returncode == 0
    shown = json.loads(
        hotline("tickets", "show", "12345-20261101-000002", "--json", env=env).stdout
    )
    assert (shown["category"], shown["satisfaction"], shown["caller_name"]) == ("路灯", 4, "张三")
    assert shown["calls"] == [] and shown["on_time"] is None

    rate = json.loads(hotline("tickets", "sla", "--json", env=env).stdout)
    assert (rate["tickets"], rate["late"], rate["on_time_rate"]) == (2, 1, 0.0)
    assert rate["clocks"]["contact"] == 0.0 and rate["clocks"]["callback"] is None
    text = hotline("tickets", "list", env=env).stdout
    assert "late: contact" in text and "running" in text
