"""What an agent may see: their own callers and tickets, nobody else's; and what a flood of
anonymous playback requests may write to the audit log.

The process replays the recorded session only up to the first answered call, so it ends with
an agent on a call: the statistics board has a caller to hide.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from infra.storage import create_engine, session_factory, transactions_for
from tests.conftest import REAL_SESSION
from tests.security.conftest import (
    AGENT,
    AGENT2,
    SUPERVISOR,
    Hotline,
    fresh_caller,
    log_in,
    new_ticket,
    running_hotline,
    web_client,
)
from tickets.store import TicketStore

pytestmark = pytest.mark.security

AGENT_PHONE = AGENT.phones[0]
OTHER_PHONE = AGENT2.phones[0]
ANONYMOUS_ADDRESSES = ["127.0.9.1", "127.0.9.2", "127.0.9.3"]
ANONYMOUS_EACH = 100


def up_to_the_first_answer(transcript: Path) -> bytes:
    """The recorded AMI session (wire bytes, CRLF) cut just after its first ``AgentConnect``."""
    blocks = transcript.read_bytes().split(b"\r\n\r\n")
    first = next(n for n, block in enumerate(blocks) if block.startswith(b"Event: AgentConnect"))
    return b"\r\n\r\n".join(blocks[: first + 1]) + b"\r\n\r\n"


@pytest.fixture(scope="module")
def hotline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hotline]:
    home = tmp_path_factory.mktemp("hotline")
    transcript = home / "mid-call.ami"
    transcript.write_bytes(up_to_the_first_answer(REAL_SESSION))
    with running_hotline(home, "--replay", str(transcript)) as running:
        running.wait_until_replayed()
        yield running


async def stats_of(client: aiohttp.ClientSession, hotline: Hotline) -> dict[str, Any]:
    async with client.get(hotline.url("/api/v1/stats")) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_agents_see_no_other_callers_on_the_board(hotline: Hotline) -> None:
    """agent1 is on a call; agent2 looks at the board, over the API and the live socket."""
    async with web_client("127.0.9.10") as boss, web_client("127.0.9.11") as agent:
        await log_in(boss, hotline, SUPERVISOR)
        await log_in(agent, hotline, AGENT2)
        supervisors = await stats_of(boss, hotline)
        agents = await stats_of(agent, hotline)
        async with agent.ws_connect(hotline.url("/api/v1/live")) as socket:
            snapshot = await socket.receive_json(timeout=5)
    shown = {name: entry["caller"] for name, entry in supervisors["agents"].items()}
    to_agent = {name: entry["caller"] for name, entry in agents["agents"].items()}
    on_socket = {name: entry["caller"] for name, entry in snapshot["agents"].items()}
    print(f"\ncallers on the board: supervisor {shown}, agent2 {to_agent}, its socket {on_socket}")
    assert any(shown.values()), "nobody on a call: the attack has nothing to find"
    assert set(to_agent) == set(shown) and not any(to_agent.values())
    assert not any(on_socket.values())


async def sign(hotline: Hotline, number: str, agent: str) -> None:
    """Sign a ticket as an answered call would, through the ticket store on the same file."""
    engine = create_engine(f"sqlite+aiosqlite:///{hotline.database}")
    units = transactions_for(engine)
    try:
        store = TicketStore(session_factory(engine), ZoneInfo("Asia/Shanghai"), units=units)
        assert await store.sign(number, agent, datetime.now(UTC))
    finally:
        await units.close()
        await engine.dispose()


async def test_agents_list_only_their_own_and_unsigned_tickets(hotline: Hotline) -> None:
    unsigned = await new_ticket(hotline, fresh_caller())
    own = await new_ticket(hotline, fresh_caller())
    others_caller = fresh_caller()
    others = await new_ticket(hotline, others_caller)
    await sign(hotline, own, AGENT_PHONE)
    await sign(hotline, others, OTHER_PHONE)
    async with web_client("127.0.9.12") as boss, web_client("127.0.9.13") as agent:
        await log_in(boss, hotline, SUPERVISOR)
        csrf = await log_in(agent, hotline, AGENT)
        async with boss.get(hotline.url("/api/v1/tickets"), params={"limit": "500"}) as response:
            everyone = {t["number"]: t["owner_agent"] for t in await response.json()}
        async with agent.get(hotline.url("/api/v1/tickets"), params={"limit": "500"}) as response:
            listed = {t["number"]: t["owner_agent"] for t in await response.json()}
        async with agent.get(
            hotline.url("/api/v1/tickets"), params={"caller": others_caller}
        ) as response:
            by_caller = await response.json()
        url = hotline.url(f"/api/v1/tickets/{others}")
        async with agent.get(url) as response:
            read_other = response.status
        async with agent.patch(
            url, json={"category": "taken over"}, headers={"X-CSRF-Token": csrf}
        ) as response:
            patch_other = response.status
    owners = {owner for owner in everyone.values()}
    print(
        f"\nsupervisor sees {len(everyone)} tickets (owners {sorted(map(str, owners))}); the "
        f"agent {len(listed)}; another agent's ticket: GET {read_other}, PATCH {patch_other}, "
        f"by its caller {len(by_caller)} found"
    )
    assert others in everyone and everyone[others] == OTHER_PHONE
    assert set(listed.values()) <= {None, AGENT_PHONE}
    assert {unsigned, own} <= set(listed) and others not in listed
    assert set(listed) == {n for n, owner in everyone.items() if owner in (None, AGENT_PHONE)}
    assert by_caller == []
    assert read_other == 404 and patch_other == 404


async def test_anonymous_playback_floods_leave_few_audit_rows(hotline: Hotline) -> None:
    """300 anonymous requests for a recording from 3 addresses: each a 401, and at most one
    audit row per address (the rest are counted into it later), not 300."""
    rows_before = hotline.query("SELECT count(*) FROM recording_access")[0][0]
    statuses: list[int] = []
    for address in ANONYMOUS_ADDRESSES:
        async with web_client(address) as client:
            for _ in range(ANONYMOUS_EACH):
                async with client.get(hotline.url("/api/v1/recordings/1/audio")) as response:
                    statuses.append(response.status)
    rows_after = hotline.query("SELECT count(*) FROM recording_access")[0][0]
    folded = hotline.health()["playback"]
    print(
        f"\n{len(statuses)} anonymous playback requests: statuses {set(statuses)}; audit rows "
        f"{rows_before} -> {rows_after}; playback counters {folded}"
    )
    assert statuses == [401] * len(statuses)
    assert rows_after - rows_before <= len(ANONYMOUS_ADDRESSES)
    assert folded["anonymous_folded"] >= len(statuses) - len(ANONYMOUS_ADDRESSES)
