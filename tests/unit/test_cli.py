"""The ``hotline`` command as an operator runs it: a real process, real sockets, real SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.health import MONITOR_ENV, read_health


def hotline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env |= {
        "HOTLINE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/hotline.db",
        "HOTLINE_WEB_PORT": str(free_port()),
        "HOTLINE_AGI_PORT": str(free_port()),
        **MONITOR_ENV,
        **extra,
    }
    return env


def hotline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hotline.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["db", "upgrade", "--help"]])
def test_help(args: list[str]) -> None:
    result = hotline(*args)
    assert result.returncode == 0
    assert "usage: hotline" in result.stdout


def test_bad_config_value_stops_run_with_a_one_line_reason(tmp_path: Path) -> None:
    result = hotline("run", env=hotline_env(tmp_path, HOTLINE_AMI_PORT="five"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "HOTLINE_AMI_PORT='five'" in result.stderr
    assert not (tmp_path / "hotline.db").exists()


def test_db_upgrade(tmp_path: Path) -> None:
    result = hotline("db", "upgrade", env=hotline_env(tmp_path))
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "hotline.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == ("0010",)
        assert db.execute("SELECT count(*) FROM calls").fetchone() == (0,)


@pytest.fixture
def running(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[dict, Path]]:
    env = hotline_env(tmp_path, **getattr(request, "param", {}))
    log = (tmp_path / "hotline.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "hotline.cli", "run", "--speed", "0"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield env, tmp_path
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        log.close()
        assert code == 0, (tmp_path / "hotline.log").read_text()


def health(env: dict[str, str]) -> tuple[int, dict]:
    return read_health(int(env["HOTLINE_WEB_PORT"]))


def wait_for(check, seconds: float = 20):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, sqlite3.Error):
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def test_run_without_a_pbx_replays_the_recorded_session(running) -> None:  # type: ignore[no-untyped-def]
    env, tmp_path = running

    def forty_rows() -> list | None:
        with sqlite3.connect(tmp_path / "hotline.db") as db:
            rows = db.execute("SELECT outcome, count(*) FROM calls GROUP BY outcome").fetchall()
        return rows if sum(n for _, n in rows) == 40 else None

    assert dict(wait_for(forty_rows)) == {"answered": 22, "abandoned": 18}
    status, report = health(env)
    assert status == 200
    assert report["ami"]["mode"] == "replay"
    assert report["database"]["up"] and report["bus"]["up"]

    def metrics() -> str | None:
        url = f"http://127.0.0.1:{env['HOTLINE_WEB_PORT']}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
        return text if 'hotline_queue_calls_offered{queue="hotline"} 40' in text else None

    # The statistics count the session's day (not the wall clock's): all 40 calls, live.
    assert 'hotline_queue_calls_answered{queue="hotline"} 22' in wait_for(metrics)


@pytest.mark.parametrize(
    "running", [{"HOTLINE_AMI_SECRET": "x", "HOTLINE_AMI_PORT": str(free_port())}], indirect=True
)
def test_run_keeps_agi_and_web_up_while_the_pbx_is_away(running) -> None:  # type: ignore[no-untyped-def]
    env, _ = running

    def after_the_first_attempt() -> tuple[int, dict] | None:
        status, report = health(env)
        return (status, report) if report["ami"]["problem"] != "not started" else None

    status, report = wait_for(after_the_first_attempt)
    assert status == 503
    assert report["ami"]["up"] is False
    assert "cannot connect" in report["ami"]["problem"]
    assert report["agi"]["up"] and report["database"]["up"]

    async def ask_route() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(env["HOTLINE_AGI_PORT"]))
        writer.write(b"agi_network_script: route\nagi_channel: PJSIP/c-1\nagi_uniqueid: 1.1\n\n")
        line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        return line

    first = asyncio.run(ask_route())
    assert first.startswith(b'EXEC MSet "HOTLINE_QUEUE=hotline,'), first


async def test_demo_serves_the_panel_with_a_printed_login_and_live_figures(tmp_path: Path) -> None:
    """``hotline demo`` as a newcomer runs it: the printed login works, the replayed session's
    40 calls reach /api/v1/stats, the live socket starts with them, the pages are served."""
    import aiohttp

    env = hotline_env(tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotline.cli", "demo", "--speed", "0",
        env=env, stdout=subprocess.PIPE, stderr=(tmp_path / "demo.log").open("wb"),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("hotline demo: open http://127.0.0.1:"), line
        found = re.search(r" log in as (\S+) / (\S+) ", line)
        assert found, line
        user, password = found.groups()
        base = f"http://127.0.0.1:{env['HOTLINE_WEB_PORT']}"
        # unsafe=True: keep cookies of an IP address host (127.0.0.1), as a browser does.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with client.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.2)
            login = {"username": user, "password": password}
            async with client.post(f"{base}/api/v1/login", json=login) as response:
                assert response.status == 200
            offered = 0
            for _ in range(100):
                async with client.get(f"{base}/api/v1/stats") as response:
                    if response.status == 200:
                        stats = await response.json()
                        offered = stats["queues"].get("hotline", {}).get("offered", 0)
                        if offered == 40:
                            break
                await asyncio.sleep(0.2)
            assert offered == 40
            assert stats["queues"]["hotline"]["answered"] == 22
            async with client.ws_connect(f"{base}/api/v1/live") as socket:
                first = await socket.receive_json(timeout=5)
            assert first["type"] == "snapshot" and first["queues"]["hotline"]["offered"] == 40
            async with client.get(f"{base}/") as page:
                assert page.status == 200 and "panel.js" in await page.text()
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0


def test_replay_loads_no_pydantic_unless_settings_need_validating(
    tmp_path: Path, real_session: Path
) -> None:
    """A replay is a whole process a user waits for: without a settings file or a HOTLINE_*
    variable it runs on the defaults; with one, every setting is validated as for ``run``."""
    probe = (
        "import sys, runpy; sys.argv = ['hotline', 'replay', '--json', sys.argv[1]]\n"
        "try:\n    runpy.run_module('hotline.cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('pydantic' in sys.modules, file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HOTLINE_")}
    plain = subprocess.run(
        [sys.executable, "-c", probe, str(real_session)], capture_output=True, text=True, env=env
    )
    assert plain.stderr.strip() == "False"
    configured = subprocess.run(
        [sys.executable, "-c", probe, str(real_session)],
        capture_output=True,
        text=True,
        env={**env, "HOTLINE_WEB_PORT": "8081"},
    )
    assert configured.stderr.strip() == "True"
    assert configured.stdout == plain.stdout
    bad = hotline("replay", "--json", str(real_session), env={**env, "HOTLINE_WEB_PORT": "x"})
    assert bad.returncode == 2
    assert "invalid HOTLINE_WEB_PORT='x'" in bad.stderr
