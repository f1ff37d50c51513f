"""``hotline run`` on FreeSWITCH: the whole service, its Event Socket connected to FreeSWITCH's
side of a recorded session on loopback. The panel's figures equal FreeSWITCH's CDR, /healthz
reports the link, a call through the outbound socket is routed with a new ticket, and the
panel's pause and queue buttons become mod_callcenter commands."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import aiohttp

from tests.esl_outbound import RecordedCall
from tests.esl_server import PASSWORD, RecordedFreeswitch
from tests.health import MONITOR_AUTHORIZATION, MONITOR_ENV
from tests.unit.test_esl_client import AGENT_FIGURES, QUEUE_FIGURES, expected
from tests.unit.test_esl_outbound import variables_of
from tests.unit.test_routing_process import free_port


async def _hotline_run(
    tmp_path: Path, settings: dict[str, str]
) -> tuple[asyncio.subprocess.Process, IO[bytes], int, int]:
    """``hotline run`` on a SQLite file of the test with ``settings``: the process, its log,
    its web port and the port of its outbound socket (FreeSWITCH's router)."""
    web_port, router_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")},
        "HOTLINE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}",
        "HOTLINE_AGI_PORT": str(free_port()),
        "HOTLINE_WEB_PORT": str(web_port),
        "HOTLINE_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "HOTLINE_RECORDINGS_SPOOL": str(tmp_path / "spool"),
        "HOTLINE_ESL_ROUTER_PORT": str(router_port),
        **MONITOR_ENV,
        **settings,
    }
    log = (tmp_path / "run.log").open("wb")
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotline.cli", "run",
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return run, log, web_port, router_port


async def test_hotline_run_on_freeswitch(tmp_path: Path) -> None:
    async with RecordedFreeswitch("basic-queue") as freeswitch:
        run, log, web_port, router_port = await _hotline_run(
            tmp_path,
            {
                "HOTLINE_ESL_HOST": "127.0.0.1",
                "HOTLINE_ESL_PORT": str(freeswitch.port),
                "HOTLINE_ESL_PASSWORD": PASSWORD,
            },
        )
        base = f"http://127.0.0.1:{web_port}"
        monitor = {"Authorization": MONITOR_AUTHORIZATION}
        try:
            async with aiohttp.ClientSession(headers=monitor) as web:
                stats = await _settled_stats(web, base, freeswitch, run, tmp_path)
                queues = {n: {k: q[k] for k in QUEUE_FIGURES} for n, q in stats["queues"].items()}
                agents = {n: {k: a[k] for k in AGENT_FIGURES} for n, a in stats["agents"].items()}
                assert (queues, agents) == expected("basic-queue")

                async with web.get(f"{base}/healthz") as answer:
                    health = await answer.json()
                assert answer.status == 200 and health["esl"]["up"] is True
                assert "ami" not in health

                # A call through FreeSWITCH's socket application: routed by the routing
                # process like a FastAGI call, a ticket opened for the new caller.
                call = RecordedCall(connection=1)
                await call.run(router_port)
                routed = variables_of(call.commands)
                assert routed["HOTLINE_QUEUE"] == "hotline", routed
                assert routed["HOTLINE_TICKET"].startswith("12345-"), routed

                pause = {"agent": "agent1", "paused": True, "reason": "lunch"}
                async with web.post(f"{base}/api/v1/agent/pause", json=pause) as answer:
                    assert answer.status == 200, await answer.text()
                queue = {"agent": "agent1", "queue": "enterprise", "member": True}
                async with web.post(f"{base}/api/v1/agent/queues", json=queue) as answer:
                    assert answer.status == 200, await answer.text()
                bad = {"agent": "agent1 x", "paused": True}
                async with web.post(f"{base}/api/v1/agent/pause", json=bad) as answer:
                    assert answer.status == 400  # a space would split FreeSWITCH's command
        finally:
            run.terminate()
            await asyncio.wait_for(run.wait(), 30)
            log.close()
    sent = freeswitch.commands[-1]
    assert "api callcenter_config agent set status agent1 'On Break'" in sent
    assert "api callcenter_config tier add enterprise agent1 1 1" in sent
    assert run.returncode == 0, (tmp_path / "run.log").read_text()


async def _settled_stats(
    web: aiohttp.ClientSession,
    base: str,
    freeswitch: RecordedFreeswitch,
    run: asyncio.subprocess.Process,
    tmp_path: Path,
) -> dict:
    """The panel's statistics once every recorded event was sent and they stopped changing."""
    deadline = time.monotonic() + 60
    last = None
    while time.monotonic() < deadline:
        assert run.returncode is None, (tmp_path / "run.log").read_text()
        try:
            async with web.get(f"{base}/api/v1/stats") as answer:
                if answer.status == 200:
                    stats = await answer.json()
                    # Settled: all sent, figures in, and no change over half a second (on a
                    # loaded machine the first snapshot may come after the last event).
                    if freeswitch.all_sent and stats.get("queues") and stats == last:
                        return stats
                    last = stats
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    raise AssertionError("the statistics did not settle: " + (tmp_path / "run.log").read_text())


async def test_a_freeswitch_listed_among_several_pbxs_is_followed_under_its_lease(
    tmp_path: Path,
) -> None:
    """The same recorded FreeSWITCH as one of the hotline's PBXs (``[[pbxs]]``, kind
    freeswitch): the process that holds its lease follows it, its calls carry its name, the
    merged figures equal FreeSWITCH's CDR, and its outbound socket routes calls."""
    async with RecordedFreeswitch("basic-queue") as freeswitch:
        database = tmp_path / "hotline.db"
        pbxs = [
            {
                "name": "fs1",
                "kind": "freeswitch",
                "esl_port": freeswitch.port,
                "esl_password": PASSWORD,
            }
        ]
        run, log, web_port, router_port = await _hotline_run(
            tmp_path, {"HOTLINE_PBXS": json.dumps(pbxs)}
        )
        base = f"http://127.0.0.1:{web_port}"
        try:
            async with aiohttp.ClientSession(
                headers={"Authorization": MONITOR_AUTHORIZATION}
            ) as web:
                stats = await _settled_stats(web, base, freeswitch, run, tmp_path)
                queues = {n: {k: q[k] for k in QUEUE_FIGURES} for n, q in stats["queues"].items()}
                agents = {n: {k: a[k] for k in AGENT_FIGURES} for n, a in stats["agents"].items()}
                assert (queues, agents) == expected("basic-queue")
                assert set(stats["queues"]["hotline"]["by_pbx"]) == {"fs1"}
                assert stats["pbxs"]["fs1"]["up"] is True and stats["pbxs"]["fs1"]["token"] == 1
                async with web.get(f"{base}/healthz") as answer:
                    health = await answer.json()
                assert health["pbxs"]["fs1"]["owner"] is True
                assert health["action_links"] == {"fs1": {"up": True}}
                call = RecordedCall(connection=1)
                await call.run(router_port)
                assert variables_of(call.commands)["HOTLINE_QUEUE"] == "hotline"

                # The panel's queue button goes out on the process's action link; FreeSWITCH
                # reports no tier change, so the owner's feed is told over the bus.
                queue = {"agent": "fs1/agent9", "queue": "enterprise", "member": True}
                async with web.post(f"{base}/api/v1/agent/queues", json=queue) as answer:
                    assert answer.status == 200, await answer.text()
                for _ in range(40):  # the merged board is refreshed twice a second
                    async with web.get(f"{base}/api/v1/stats") as answer:
                        board = (await answer.json())["agents"]
                    if "agent9" in board:
                        break
                    await asyncio.sleep(0.1)
                assert board.get("agent9", {}).get("pbx") == "fs1", board
        finally:
            run.terminate()
            await asyncio.wait_for(run.wait(), 30)
            log.close()
    with sqlite3.connect(database) as db:
        ids = [row[0] for row in db.execute("SELECT uniqueid FROM calls")]
        holder = db.execute("SELECT holder FROM leases WHERE name = 'pbx:fs1'").fetchone()
    assert ids and all(uniqueid.startswith("fs1/") for uniqueid in ids), ids
    assert holder is not None
    [action_link] = [c for c in freeswitch.commands if "event plain HEARTBEAT" in c]
    assert "api callcenter_config tier add enterprise agent9 1 1" in action_link
    assert run.returncode == 0, (tmp_path / "run.log").read_text()
