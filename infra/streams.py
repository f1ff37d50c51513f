"""A durable log on a Redis stream: appended by one side, consumed by groups on the other.

Why a stream and not pub/sub: pub/sub hands a message to whoever listens at that instant and
forgets it, so a bridge that restarts loses what was said meanwhile. A stream keeps every entry
until it is trimmed, a consumer group remembers what each of its consumers was handed, and an
entry is only done when acknowledged (XACK). A consumer that dies holding entries leaves them
pending; another consumer of the group claims them once they have been idle for
``claim_idle_seconds`` (XAUTOCLAIM). Delivery is therefore at least once: handlers must be
idempotent. The stream is trimmed only below the oldest entry some group still needs
(``trim_acknowledged``), never by length alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Entry = tuple[str, dict[str, str]]


class PermanentEntryError(ValueError):
    """An entry no retry can handle (unreadable): set aside in the dead-letter stream."""


def _entries(answer: Any) -> list[Entry]:
    """XREADGROUP's answer (``[[stream, [(id, fields), ...]], ...]``) as entries; an entry
    whose fields are gone (trimmed while pending) is left out."""
    return [(str(i), dict(f)) for _, entries in answer or [] for i, f in entries if f]


def _id_key(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


class RedisStream:
    """One stream (``name``) on Redis; ``name + ':dead'`` keeps what could not be handled."""

    def __init__(self, url: str, name: str) -> None:
        from redis import asyncio as redis_asyncio

        self._redis = redis_asyncio.from_url(url, decode_responses=True)
        self.name = name

    async def append(self, fields: dict[str, str]) -> str:
        values: Any = fields
        return str(await self._redis.xadd(self.name, values))

    async def ensure_group(self, group: str) -> None:
        """The group, reading from the stream's beginning if it is new."""
        from redis.exceptions import ResponseError

        try:
            await self._redis.xgroup_create(self.name, group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def read_new(self, group: str, consumer: str, count: int, block_ms: int) -> list[Entry]:
        answer: Any = await self._redis.xreadgroup(
            group, consumer, {self.name: ">"}, count=count, block=block_ms
        )
        return _entries(answer)

    async def read_own_pending(self, group: str, consumer: str, count: int) -> list[Entry]:
        """Entries handed to this consumer earlier and not acknowledged (a failed try)."""
        answer: Any = await self._redis.xreadgroup(group, consumer, {self.name: "0"}, count=count)
        return _entries(answer)

    async def claim_idle(
        self, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[Entry]:
        """Entries another consumer was handed and has not acknowledged for ``min_idle_ms``."""
        answer = await self._redis.xautoclaim(
            self.name, group, consumer, min_idle_ms, start_id="0-0", count=count
        )
        claimed = answer[1] if answer else []
        return [(str(i), dict(f)) for i, f in claimed if f]

    async def ack(self, group: str, *ids: str) -> None:
        if ids:
            await self._redis.xack(self.name, group, *ids)

    async def set_aside(self, entry: Entry, why: str) -> None:
        fields: Any = {**entry[1], "dead_id": entry[0], "dead_because": why[:500]}
        await self._redis.xadd(self.name + ":dead", fields)

    async def trim_acknowledged(self) -> int:
        """Drop the entries every group is done with: below the oldest one pending in a group,
        or past the last one delivered to a group with none pending. Returns how many went."""
        groups = await self._redis.xinfo_groups(self.name)
        if not groups:
            return 0
        keep_from: list[str] = []
        for group in groups:
            if int(group["pending"]):
                summary = await self._redis.xpending(self.name, group["name"])
                keep_from.append(str(summary["min"]))
            else:
                last = str(group["last-delivered-id"])
                millis, sequence = _id_key(last)
                keep_from.append(f"{millis}-{sequence + 1}")
        oldest_needed = min(keep_from, key=_id_key)
        return int(await self._redis.xtrim(self.name, minid=oldest_needed, approximate=False))

    async def length(self) -> int:
        return int(await self._redis.xlen(self.name))

    async def close(self) -> None:
        await self._redis.aclose()


class StreamConsumer:
    """One consumer of a group: handles each entry, then acknowledges it.

    A handler that raises leaves its entry pending; it is tried again after ``retry_seconds``
    (before anything new), so entries of a database outage wait in Redis, not in memory. One
    that raises ``PermanentEntryError`` sends the entry to the dead-letter stream instead.

    A step asks Redis only what can be there: its own pending entries at the start and after
    entries were left unacknowledged, others' idle ones once a second at most (or every
    ``claim_idle_seconds`` if that is shorter; they wait that long anyway). Asking all three
    every step cost three reads per batch where one does.
    """

    def __init__(
        self,
        stream: RedisStream,
        group: str,
        consumer: str,
        handle: Callable[[dict[str, str]], Awaitable[None]],
        *,
        claim_idle_seconds: float = 5.0,
        batch: int = 100,
        block_ms: int = 1000,
        retry_seconds: float = 1.0,
        handle_many: Callable[[list[dict[str, str]]], Awaitable[None]] | None = None,
    ) -> None:
        """``handle_many``: handles a whole batch at once (one database transaction instead
        of one per entry); when it raises, the batch is handled entry by entry instead, so
        only the entries that fail on their own stay pending."""
        self.stream = stream
        self._handle_many = handle_many
        self.group = group
        self.consumer = consumer
        self._handle = handle
        self._claim_idle_ms = int(claim_idle_seconds * 1000)
        self._claim_every = min(claim_idle_seconds, 1.0)
        self._next_claim = 0.0  # time.monotonic() of the next look for others' idle entries
        self._own_pending = True  # this consumer may hold entries it has not acknowledged
        self._batch = batch
        self._block_ms = block_ms
        self._retry_seconds = retry_seconds
        self.counters: dict[str, int] = {
            "handled": 0,
            "claimed": 0,
            "failed": 0,
            "set_aside": 0,
            "batches": 0,
        }

    async def step(self) -> int:
        """Handle what is due: own failed entries, then idle ones of others, then new ones.
        Returns how many entries were acknowledged."""
        entries: list[Entry] = []
        if self._own_pending:
            entries = await self.stream.read_own_pending(self.group, self.consumer, self._batch)
        own = bool(entries)  # when these go, look again: there may be more than a batch
        if not entries and time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self._claim_every
            entries = await self.stream.claim_idle(
                self.group, self.consumer, self._claim_idle_ms, self._batch
            )
            self.counters["claimed"] += len(entries)
        if not entries:
            entries = await self.stream.read_new(
                self.group, self.consumer, self._batch, self._block_ms
            )
        # Until every entry read is acknowledged (a step that raises leaves this set).
        self._own_pending = own or bool(entries)
        if self._handle_many is not None and len(entries) > 1:
            try:
                await self._handle_many([fields for _, fields in entries])
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.info("stream %s: a batch failed (%s); one by one", self.stream.name, error)
            else:
                await self.stream.ack(self.group, *(entry_id for entry_id, _ in entries))
                self._own_pending = own
                self.counters["handled"] += len(entries)
                self.counters["batches"] += 1
                return len(entries)
        done: list[str] = []
        failed = False
        for entry in entries:
            try:
                await self._handle(entry[1])
            except PermanentEntryError as error:
                await self.stream.set_aside(entry, str(error))
                self.counters["set_aside"] += 1
                log.error("stream %s: entry %s set aside: %s", self.stream.name, entry[0], error)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.counters["failed"] += 1
                failed = True
                log.warning("stream %s: entry %s failed (%s)", self.stream.name, entry[0], error)
                continue
            done.append(entry[0])
        await self.stream.ack(self.group, *done)
        self._own_pending = own or failed
        self.counters["handled"] += len(done)
        if failed:
            await asyncio.sleep(self._retry_seconds)
        return len(done)

    async def run(self) -> None:
        while True:
            try:
                await self.stream.ensure_group(self.group)
                while True:
                    await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Redis away: try again shortly, nothing is lost there
                log.warning("stream %s: consumer paused (%s)", self.stream.name, error)
                await asyncio.sleep(self._retry_seconds)


def stream_health(stream: RedisStream, consumer: StreamConsumer) -> dict[str, Any]:
    return {"stream": stream.name, "group": consumer.group, **consumer.counters}
