"""``hotline recordings`` and ``hotline users`` as an operator runs them, on real files."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from recording.naming import RecordingName
from recording.wav import wav_header
from tests.unit.test_cli import hotline, hotline_env

TODAY = date.today()
LONG_AGO = TODAY - timedelta(days=40)


def write_spool(spool: Path, day: date, uniqueid: str, ticket: str | None, body: bytes) -> None:
    path = spool / RecordingName(day, uniqueid, ticket).key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


def speech(seconds: int) -> bytes:
    data = b"\x10\x27" * 8000 * seconds
    return wav_header(8000, len(data)) + data


def add_ticket(database: Path, number: str, status: str) -> None:
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(database) as db:
        db.execute(
            "INSERT INTO tickets (number, caller_number, caller_name, category, description,"
            " status, emergency, opened_at, updated_at) VALUES (?, '13800138000', '', '', '',"
            " ?, 0, ?, ?)",
            (number, status, now, now),
        )


def test_ingest_verify_purge_and_list_from_the_shell(tmp_path: Path) -> None:
    spool, store = tmp_path / "spool", tmp_path / "store"
    env = hotline_env(
        tmp_path, HOTLINE_RECORDINGS_SPOOL=str(spool), HOTLINE_RECORDINGS_DIR=str(store)
    )
    write_spool(spool, LONG_AGO, "1790000000.1", "T-OPEN", speech(2))
    write_spool(spool, LONG_AGO, "1790000000.2", "T-DONE", speech(3))
    write_spool(spool, LONG_AGO, "1790000000.3", None, speech(1))
    write_spool(spool, TODAY, "1796215475.4", "T-NEW", speech(2))
    write_spool(spool, TODAY, "1796215475.5", None, b"RIFF but not really a wave file")

    ingested = hotline("recordings", "ingest", env=env)
    assert ingested.returncode == 0, ingested.stderr
    assert "1 quarantined, 4 stored" in ingested.stdout
    assert "in quarantine: 1" in ingested.stdout
    database = tmp_path / "hotline.db"
    add_ticket(database, "T-OPEN", "signed")
    add_ticket(database, "T-DONE", "closed")

    verified = hotline("recordings", "verify", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "checked 4 recordings: 4 ok, 0 missing, 0 changed" in verified.stdout

    dry = hotline("recordings", "purge", "--older-than", "30", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 2 recordings" in dry.stdout and "1 of open tickets kept" in dry.stdout
    assert len(list(store.glob("*/*/*/*.wav"))) == 4

    applied = hotline("recordings", "purge", "--older-than", "30", "--apply", env=env)
    assert applied.returncode == 0, applied.stderr
    assert "deleted 2 recordings" in applied.stdout
    assert "purge: 2/2 (100%)" in applied.stderr  # progress, on a pipe one line per tenth
    left = sorted(p.name for p in store.glob("*/*/*/*.wav"))
    assert left == ["1790000000.1_T-OPEN.wav", "1796215475.4_T-NEW.wav"]

    listed = hotline("recordings", "list", "--ticket", "T-OPEN", "--json", env=env)
    [only] = json.loads(listed.stdout)
    assert (only["ticket"], only["duration_seconds"]) == ("T-OPEN", 2.0)

    # Someone edits one stored file and deletes another: verify says so and exits 1.
    edited = store / RecordingName(TODAY, "1796215475.4", "T-NEW").key
    edited.write_bytes(edited.read_bytes()[:-2] + b"\x00\x00")
    (store / RecordingName(LONG_AGO, "1790000000.1", "T-OPEN").key).unlink()
    (store / RecordingName(TODAY, "1796215475.9", None).key).write_bytes(speech(1))
    damaged = hotline("recordings", "verify", "--json", env=env)
    assert damaged.returncode == 1
    report = json.loads(damaged.stdout)
    assert report["ok"] == 0 and report["checked"] == 2
    assert report["changed"] == [RecordingName(TODAY, "1796215475.4", "T-NEW").key]
    assert report["missing"] == [RecordingName(LONG_AGO, "1790000000.1", "T-OPEN").key]
    assert report["not-in-database"] == [RecordingName(TODAY, "1796215475.9", None).key]
    with sqlite3.connect(database) as db:
        verdicts = dict(db.execute("SELECT ticket, integrity FROM recordings").fetchall())
    assert verdicts == {"T-OPEN": "missing", "T-NEW": "changed"}


def test_purge_needs_a_number_of_days(tmp_path: Path) -> None:
    result = hotline("recordings", "purge", "--older-than", "soon", env=hotline_env(tmp_path))
    assert result.returncode == 2 and "whole number of days" in result.stderr


def run_with_input(env: dict[str, str], stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hotline.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_users_are_added_checked_listed_and_removed(tmp_path: Path) -> None:
    env = hotline_env(tmp_path)
    added = run_with_input(
        env, "long enough pass\n", "users", "add", "li", "--role", "agent",
        "--agent", "PJSIP/agent1", "--agent", "PJSIP/agent4", "--password-stdin",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added li (agent)"
    for args, stdin, message in (
        (["li", "--role", "agent"], "long enough pass\n", "needs --agent"),
        (["li", "--role", "agent", "--agent", "SIP/x;rm"], "long enough pass\n", "interface"),
        (["Li Wei", "--role", "admin"], "long enough pass\n", "user names"),
        (["wang", "--role", "admin"], "short\n", "at least 8"),
    ):
        refused = run_with_input(env, stdin, "users", "add", *args, "--password-stdin")
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1
    no_terminal = run_with_input(env, "", "users", "add", "wang", "--role", "admin")
    assert no_terminal.returncode == 2 and "--password-stdin" in no_terminal.stderr

    listed = hotline("users", "list", "--json", env=env)
    assert json.loads(listed.stdout) == [
        {"username": "li", "role": "agent", "phones": ["PJSIP/agent1", "PJSIP/agent4"]}
    ]
    with sqlite3.connect(tmp_path / "hotline.db") as db:
        [(stored,)] = db.execute("SELECT password_hash FROM users").fetchall()
    assert stored.startswith("scrypt$") and "long enough pass" not in stored
    assert hotline("users", "remove", "li", env=env).returncode == 0
    assert hotline("users", "remove", "li", env=env).returncode == 1
