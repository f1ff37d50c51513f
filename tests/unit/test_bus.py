"""Both bus adapters: in-process, and a real Redis server."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from infra.bus import Bus, InProcessBus, RedisBus, create_bus
from tests.conftest import need_service


async def round_trip(bus: Bus, channel: str) -> None:
    received: list[dict] = []
    subscribed = asyncio.Event()

    async def listen() -> None:
        stream = bus.subscribe(channel)
        first = asyncio.ensure_future(anext(stream))
        subscribed.set()
        received.append(await first)
        received.append(await anext(stream))
        await stream.aclose()

    listener = asyncio.create_task(listen())
    await subscribed.wait()
    await asyncio.sleep(0.1)  # Redis needs the SUBSCRIBE to land before the PUBLISH
    await bus.publish(channel, {"type": "call.finished", "caller": "张三"})
    await bus.publish(channel, {"type": "call.finished", "n": 2})
    await asyncio.wait_for(listener, 3)
    assert received == [
        {"type": "call.finished", "caller": "张三"},
        {"type": "call.finished", "n": 2},
    ]
    await bus.store_snapshot(channel, {"waiting": 3})
    assert await bus.load_snapshot(channel) == {"waiting": 3}
    assert await bus.ping()


async def test_in_process_bus() -> None:
    bus = InProcessBus()
    await round_trip(bus, "calls")
    await bus.close()


async def test_a_slow_in_process_subscriber_loses_old_messages_not_the_publisher() -> None:
    bus = InProcessBus(max_backlog=2)
    stream = bus.subscribe("calls")
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    for n in range(5):
        await bus.publish("calls", {"n": n})
    assert [(await first)["n"], (await anext(stream))["n"]] == [3, 4]
    assert bus.dropped == 3
    await stream.aclose()


def test_create_bus_picks_the_adapter() -> None:
    assert isinstance(create_bus(""), InProcessBus)
    assert isinstance(create_bus("redis://127.0.0.1:6379/0"), RedisBus)


@pytest.mark.redis
async def test_redis_bus_on_a_real_server() -> None:
    need_service("Redis", "127.0.0.1", 6379)
    bus = RedisBus("redis://127.0.0.1:6379/0")
    try:
        await round_trip(bus, f"test-{uuid.uuid4().hex}")
    finally:
        await bus.close()
