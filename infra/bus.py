"""The event bus port and its two adapters: Redis pub/sub, or in-process when no Redis is set.

Messages are JSON objects on named channels. Besides publishing, the bus keeps the latest full
snapshot per key so a subscriber that arrives late (a panel opened mid-shift) sees the present.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any, Protocol

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "hotline:"


class Bus(Protocol):
    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]: ...

    async def store_snapshot(self, key: str, snapshot: dict[str, Any]) -> None: ...

    async def load_snapshot(self, key: str) -> dict[str, Any] | None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class InProcessBus:
    """A bus inside one process: each subscriber gets its own bounded queue.

    A subscriber that falls 1,000 messages behind loses the oldest ones (and a counter says so)
    rather than holding the publisher up.
    """

    def __init__(self, max_backlog: int = 1000) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._snapshots: dict[str, dict[str, Any]] = {}
        self._max_backlog = max_backlog
        self.dropped = 0

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        for queue in self._subscribers.get(channel, ()):
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(message)

    async def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._max_backlog)
        self._subscribers[channel].add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers[channel].discard(queue)

    async def store_snapshot(self, key: str, snapshot: dict[str, Any]) -> None:
        self._snapshots[key] = snapshot

    async def load_snapshot(self, key: str) -> dict[str, Any] | None:
        return self._snapshots.get(key)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._subscribers.clear()


class RedisBus:
    """Redis pub/sub for messages, plain keys for snapshots; one client shared by the process."""

    def __init__(self, url: str) -> None:
        from redis import asyncio as redis_asyncio

        self._redis = redis_asyncio.from_url(url, decode_responses=True)

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self._redis.publish(CHANNEL_PREFIX + channel, json.dumps(message, default=str))

    async def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(CHANNEL_PREFIX + channel)
        try:
            async for raw in pubsub.listen():
                try:
                    yield json.loads(raw["data"])
                except (TypeError, ValueError):
                    log.warning("dropped a bus message that is not JSON on %s", channel)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe()
            await pubsub.aclose()

    async def store_snapshot(self, key: str, snapshot: dict[str, Any]) -> None:
        await self._redis.set(f"{CHANNEL_PREFIX}snapshot:{key}", json.dumps(snapshot, default=str))

    async def load_snapshot(self, key: str) -> dict[str, Any] | None:
        raw = await self._redis.get(f"{CHANNEL_PREFIX}snapshot:{key}")
        return None if raw is None else json.loads(raw)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:  # a health probe reports, it does not raise
            return False

    async def close(self) -> None:
        await self._redis.aclose()


def create_bus(redis_url: str) -> Bus:
    """Redis when a URL is configured, otherwise the in-process bus."""
    return RedisBus(redis_url) if redis_url else InProcessBus()


class SplitBus:
    """``bus`` for everything except ``local_channels``, which come from ``local``: a web
    process's own feed (merged figures) beside the shared bus."""

    def __init__(self, bus: Bus, local: Bus, local_channels: frozenset[str]) -> None:
        self._bus = bus
        self._local = local
        self._local_channels = local_channels

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        target = self._local if channel in self._local_channels else self._bus
        await target.publish(channel, message)

    def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        source = self._local if channel in self._local_channels else self._bus
        return source.subscribe(channel)

    async def store_snapshot(self, key: str, snapshot: dict[str, Any]) -> None:
        await self._bus.store_snapshot(key, snapshot)

    async def load_snapshot(self, key: str) -> dict[str, Any] | None:
        return await self._bus.load_snapshot(key)

    async def ping(self) -> bool:
        return await self._bus.ping()

    async def close(self) -> None:
        await self._local.close()
