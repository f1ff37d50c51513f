"""The calls stream on a real Redis: consumer groups, XACK, claims of a dead consumer's entries,
trimming only what every group acknowledged, and the fenced journal writer behind it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.leases import FencedTransactions, LeaseStore
from infra.storage import Transactions, create_engine, session_factory, transactions_for
from infra.streams import PermanentEntryError, RedisStream, StreamConsumer
from queue_stats.call_codec import CallEntry, decode_call, encode_call
from queue_stats.calls import CallOutcome, CallRecord
from queue_stats.journal import CallJournal
from queue_stats.streamed_journal import JOURNAL_GROUP, JournalWriter, StreamedJournal
from tests.conftest import need_service

pytestmark = pytest.mark.redis
REDIS = "redis://127.0.0.1:6379/0"
T0 = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)


def call(uniqueid: str, caller: str = "13800138000") -> CallRecord:
    return CallRecord(
        uniqueid=uniqueid,
        linkedid=uniqueid,
        channel="PJSIP/citizens-00000001",
        caller_number=caller,
        caller_name="张三",
        dialled_number="12345",
        started_at=T0,
        queue="hotline",
        entered_queue_at=T0 + timedelta(seconds=1),
        agent_interface="PJSIP/agent1",
        agent_name="Agent One",
        answered_at=T0 + timedelta(seconds=7),
        ended_at=T0 + timedelta(seconds=67),
        hold_seconds=6,
        talk_seconds=60,
        outcome=CallOutcome.ANSWERED,
        rating="satisfied",
    )


JournalDb = tuple[Transactions, async_sessionmaker[AsyncSession], LeaseStore]


@pytest.fixture
async def journal_db(database: str) -> AsyncIterator[JournalDb]:
    """The migrated database's units, sessions and leases (SQLite, then PostgreSQL)."""
    engine = create_engine(database)
    units = transactions_for(engine)
    reads = transactions_for(engine, read_only=True)
    try:
        yield units, session_factory(engine), LeaseStore(units, reads)
    finally:
        await units.close()
        await reads.close()
        await engine.dispose()


@pytest.fixture
async def stream() -> AsyncIterator[RedisStream]:
    need_service("Redis", "127.0.0.1", 6379)
    stream = RedisStream(REDIS, f"hotline:test:{uuid.uuid4().hex[:10]}")
    try:
        yield stream
    finally:
        await stream._redis.delete(stream.name, stream.name + ":dead")
        await stream.close()


def test_a_call_survives_the_codec_whole() -> None:
    entry = CallEntry("west", 3, 17, call("west/1764900000.1"))
    assert decode_call(encode_call(entry)) == entry
    assert (
        decode_call(
            encode_call(replace(entry, call=replace(entry.call, outcome=None)))
        ).call.outcome
        is None
    )


async def test_each_entry_is_handled_once_per_group_and_trimmed_once_all_groups_are_done(
    stream: RedisStream,
) -> None:
    handled: dict[str, list[str]] = {"journal": [], "webhook": []}

    def handler(group: str):  # type: ignore[no-untyped-def]
        async def handle(fields: dict[str, str]) -> None:
            handled[group].append(fields["n"])

        return handle

    journal = StreamConsumer(stream, "journal", "p1", handler("journal"), block_ms=10)
    webhook = StreamConsumer(stream, "webhook", "p1", handler("webhook"), block_ms=10)
    await journal.stream.ensure_group("journal")
    await webhook.stream.ensure_group("webhook")
    for n in range(5):
        await stream.append({"n": str(n)})
    assert await journal.step() == 5
    assert await journal.step() == 0  # nothing new, nothing pending
    assert handled["journal"] == ["0", "1", "2", "3", "4"]
    # The webhook group has read nothing yet: nothing may go.
    assert await stream.trim_acknowledged() == 0
    assert await stream.length() == 5
    webhook._batch = 3
    assert await webhook.step() == 3
    assert await stream.trim_acknowledged() == 3
    assert await stream.length() == 2
    assert await webhook.step() == 2
    assert await stream.trim_acknowledged() == 2
    assert await stream.length() == 0
    assert handled["webhook"] == handled["journal"]


async def test_a_dead_consumers_entries_are_claimed_by_another(stream: RedisStream) -> None:
    seen: list[str] = []

    async def handle(fields: dict[str, str]) -> None:
        seen.append(fields["n"])

    await stream.ensure_group(JOURNAL_GROUP)
    await stream.append({"n": "1"})
    await stream.append({"n": "2"})
    # p1 is handed both and dies (kill -9) before acknowledging either.
    assert len(await stream.read_new(JOURNAL_GROUP, "p1", 10, 10)) == 2
    survivor = StreamConsumer(
        stream, JOURNAL_GROUP, "p2", handle, claim_idle_seconds=0.3, block_ms=10
    )
    assert await survivor.step() == 0  # not idle long enough: p1 may still be working
    await asyncio.sleep(0.4)
    assert await survivor.step() == 2
    assert seen == ["1", "2"]
    assert survivor.counters["claimed"] == 2
    # Trimmed once acknowledged.
    assert await stream.trim_acknowledged() == 2


async def test_a_failed_entry_stays_pending_and_an_unreadable_one_is_set_aside(
    stream: RedisStream,
) -> None:
    tries: list[str] = []

    async def handle(fields: dict[str, str]) -> None:
        tries.append(fields["n"])
        if fields["n"] == "bad":
            raise PermanentEntryError("not a call entry")
        if fields["n"] == "db-down" and tries.count("db-down") == 1:
            raise ConnectionError("database unreachable")

    consumer = StreamConsumer(stream, JOURNAL_GROUP, "p1", handle, block_ms=10, retry_seconds=0)
    await stream.ensure_group(JOURNAL_GROUP)
    for n in ("db-down", "bad", "ok"):
        await stream.append({"n": n})
    assert await consumer.step() == 2  # "bad" set aside, "ok" done, "db-down" left pending
    assert await stream.trim_acknowledged() == 0  # the pending one holds the stream
    assert await consumer.step() == 1  # its own pending entry first: now it goes in
    assert tries == ["db-down", "bad", "ok", "db-down"]
    assert consumer.counters == {
        "handled": 3,
        "claimed": 0,
        "failed": 1,
        "set_aside": 1,
        "batches": 0,
    }
    dead = await stream._redis.xrange(stream.name + ":dead")
    assert [fields["n"] for _, fields in dead] == ["bad"]
    assert dead[0][1]["dead_because"] == "not a call entry"
    assert await stream.trim_acknowledged() == 3


async def test_a_past_owners_calls_are_dropped_and_the_new_owners_written_once(
    stream: RedisStream, journal_db: JournalDb
) -> None:
    units, sessions, leases = journal_db
    await stream.ensure_group(JOURNAL_GROUP)
    old = await leases.claim("pbx:west", "bridge-1", ttl=0.4)
    assert old == 1
    owner = StreamedJournal(CallJournal(sessions, pbx="west"), stream, "west", old)
    await owner.record(call("west/1.1", "13800000001"))
    await owner.record(call("west/1.2", "13800000002"))
    # Sent but not written yet: it counts as journalled for queue_log recovery.
    assert await owner.uniqueids_since(T0) == {"west/1.1", "west/1.2"}
    writer = JournalWriter(
        lambda pbx, token: CallJournal(
            sessions, FencedTransactions(units, f"pbx:{pbx}", token), pbx=pbx
        )
    )
    consumer = StreamConsumer(stream, JOURNAL_GROUP, "bridge-2", writer, batch=1, block_ms=10)
    assert await consumer.step() == 1  # 1.1, written while bridge-1 still owns west
    # bridge-1 freezes; bridge-2 takes west over and journals 1.2 from queue_log itself.
    await asyncio.sleep(0.5)
    new = await leases.claim("pbx:west", "bridge-2", ttl=5)
    assert new == 2
    mine = StreamedJournal(CallJournal(sessions, pbx="west"), stream, "west", new)
    await mine.record(replace(call("west/1.2", "13800000002"), source="queue_log"))
    assert await consumer.step() == 1  # the old 1.2: dropped by the fence
    assert await consumer.step() == 1  # the new 1.2: written
    assert writer.counters == {"written": 2, "fenced": 1}
    rows = await CallJournal(sessions, pbx="west").calls_since(T0)
    assert sorted((row.uniqueid, row.source) for row in rows) == [
        ("west/1.1", "ami"),
        ("west/1.2", "queue_log"),
    ]
    assert rows[0].rating == "satisfied" and rows[0].caller_name == "张三"


async def test_a_batch_is_written_in_one_go_per_owner_and_an_unreadable_entry_alone(
    stream: RedisStream, journal_db: JournalDb
) -> None:
    units, sessions, leases = journal_db
    await stream.ensure_group(JOURNAL_GROUP)
    assert await leases.claim("pbx:west", "bridge-1", ttl=0.3) == 1
    old = StreamedJournal(CallJournal(sessions, pbx="west"), stream, "west", 1)
    await old.record(call("west/2.1", "13800000021"))
    await asyncio.sleep(0.4)
    assert await leases.claim("pbx:west", "bridge-2", ttl=5) == 2
    assert await leases.claim("pbx:east", "bridge-2", ttl=5) == 1
    new = StreamedJournal(CallJournal(sessions, pbx="west"), stream, "west", 2)
    east = StreamedJournal(CallJournal(sessions, pbx="east"), stream, "east", 1)
    for n in range(2, 6):
        await new.record(call(f"west/2.{n}", f"1380000002{n}"))
        await east.record(call(f"east/2.{n}", f"1390000002{n}"))
    writer = JournalWriter(
        lambda pbx, token: CallJournal(
            sessions, FencedTransactions(units, f"pbx:{pbx}", token), pbx=pbx
        )
    )
    consumer = StreamConsumer(
        stream, JOURNAL_GROUP, "bridge-2", writer, handle_many=writer.many, block_ms=10
    )
    assert await consumer.step() == 9
    assert consumer.counters["batches"] == 1
    assert writer.counters == {"written": 8, "fenced": 1}
    west_rows = await CallJournal(sessions, pbx="west").calls_since(T0)
    east_rows = await CallJournal(sessions, pbx="east").calls_since(T0)
    assert [row.uniqueid for row in west_rows] == [f"west/2.{n}" for n in range(2, 6)]
    assert len(east_rows) == 4
    # A batch with an unreadable entry: the others go in one by one, that one aside.
    await new.record(call("west/2.6", "13800000026"))
    await stream.append({"format": "1", "pbx": "west", "token": "2", "sequence": "9"})
    await new.record(call("west/2.7", "13800000027"))
    assert await consumer.step() == 3
    assert consumer.counters["batches"] == 1 and consumer.counters["set_aside"] == 1
    assert len(await CallJournal(sessions, pbx="west").calls_since(T0)) == 6


async def test_a_step_asks_redis_only_what_can_be_there(stream: RedisStream) -> None:
    """Its own pending entries at the start and after a failure, others' idle ones once per
    interval: a step in the flow of new entries is one read and one acknowledgement."""
    asked: list[str] = []
    for name in ("read_own_pending", "claim_idle", "read_new", "ack"):
        real = getattr(stream, name)

        async def noted(*args, _name=name, _real=real):  # type: ignore[no-untyped-def]
            asked.append(_name)
            return await _real(*args)

        setattr(stream, name, noted)
    tries: list[str] = []

    async def handle(fields: dict[str, str]) -> None:
        tries.append(fields["n"])
        if fields["n"] == "db-down" and tries.count("db-down") == 1:
            raise ConnectionError("database unreachable")

    consumer = StreamConsumer(
        stream, JOURNAL_GROUP, "p1", handle, claim_idle_seconds=1.0, block_ms=10, retry_seconds=0
    )
    await stream.ensure_group(JOURNAL_GROUP)
    await stream.append({"n": "1"})
    assert await consumer.step() == 1
    assert asked == ["read_own_pending", "claim_idle", "read_new", "ack"]
    asked.clear()
    for n in ("2", "db-down"):
        await stream.append({"n": n})
        await consumer.step()
    assert asked == ["read_new", "ack", "read_new", "ack"]
    asked.clear()
    assert await consumer.step() == 1  # the failed one, again
    assert await consumer.step() == 0  # none of its own left: no more looking
    assert asked == ["read_own_pending", "ack", "read_own_pending", "read_new", "ack"]
    asked.clear()
    await asyncio.sleep(1.05)
    assert await consumer.step() == 0
    assert asked == ["claim_idle", "read_new", "ack"]
    assert tries == ["1", "2", "db-down", "db-down"]


class CountedUnits:
    """The bridge's units, counted: how many transactions the writer made."""

    def __init__(self, units: Transactions) -> None:
        self._units = units
        self.counters = units.counters
        self.transactions = 0

    async def __call__(self, work, start_by=None):  # type: ignore[no-untyped-def]
        self.transactions += 1
        return await self._units(work, start_by)

    async def run_checkpoints(self, every: float = 5.0) -> None:
        await self._units.run_checkpoints(every)

    async def close(self) -> None:
        await self._units.close()


async def test_a_batch_of_several_owners_calls_is_one_transaction(
    stream: RedisStream, journal_db: JournalDb
) -> None:
    units, sessions, leases = journal_db
    await stream.ensure_group(JOURNAL_GROUP)
    assert await leases.claim("pbx:west", "bridge-1", ttl=0.3) == 1
    await StreamedJournal(CallJournal(sessions, pbx="west"), stream, "west", 1).record(
        call("west/3.1", "13800000031")
    )
    await asyncio.sleep(0.4)
    assert await leases.claim("pbx:west", "bridge-2", ttl=5) == 2
    assert await leases.claim("pbx:east", "bridge-2", ttl=5) == 1
    assert await leases.claim("pbx:north", "bridge-3", ttl=5) == 1
    owners = {
        "west": StreamedJournal(CallJournal(sessions, pbx="west"), stream, "west", 2),
        "east": StreamedJournal(CallJournal(sessions, pbx="east"), stream, "east", 1),
        "north": StreamedJournal(CallJournal(sessions, pbx="north"), stream, "north", 1),
    }
    for n in range(2, 5):
        for pbx, owner in owners.items():
            await owner.record(call(f"{pbx}/3.{n}", f"1370000003{n}"))
    counted = CountedUnits(units)
    writer = JournalWriter(
        lambda pbx, token: CallJournal(
            sessions, FencedTransactions(counted, f"pbx:{pbx}", token), pbx=pbx
        )
    )
    consumer = StreamConsumer(
        stream, JOURNAL_GROUP, "bridge-2", writer, handle_many=writer.many, block_ms=10
    )
    assert await consumer.step() == 10
    assert counted.transactions == 1
    assert writer.counters == {"written": 9, "fenced": 1}
    for pbx in owners:
        rows = await CallJournal(sessions, pbx=pbx).calls_since(T0)
        assert sorted(row.uniqueid for row in rows) == [f"{pbx}/3.{n}" for n in range(2, 5)]
