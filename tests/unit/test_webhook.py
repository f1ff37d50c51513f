"""Outbound CTI webhooks, delivered to a real aiohttp receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tickets.webhook import CtiEvent, CtiEventName, WebhookSender, hangup_cause, signature

SECRET = "hotline-webhook-secret-9f3a1c"
TOKEN_PATH = "/api/v1/cti/tok-5d2e8b7a41"
BEIJING = timezone(timedelta(hours=8))
AT = datetime(2024, 5, 6, 8, 30, 15, 250_000, tzinfo=BEIJING)

Action = int | tuple[int, dict[str, str]] | str
"""What the receiver does with one request: a status, a status with headers, or "hang"."""


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    status: int | None = None

    @property
    def json(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.body))

    @property
    def delivery(self) -> str:
        return self.headers["X-Hotline-Delivery"]


class Receiver:
    """A help desk stand-in: records every request and answers from a script, then 200."""

    def __init__(self) -> None:
        self.script: list[Action] = []
        self.requests: list[Received] = []
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        received = Received(dict(request.headers), await request.read(), time.monotonic())
        self.requests.append(received)
        action = self.script.pop(0) if self.script else 200
        if action == "hang":
            await self.release.wait()
            return web.Response(status=200)
        status, headers = action if isinstance(action, tuple) else (cast(int, action), {})
        received.status = status
        return web.json_response({}, status=status, headers=headers)

    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.status is not None and 200 <= r.status < 300]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post(TOKEN_PATH, rec.handle)
    server = TestServer(app, host="127.0.0.1", access_log=None, shutdown_timeout=0.5)
    await server.start_server()
    rec.url = str(server.make_url(TOKEN_PATH))
    yield rec
    rec.release.set()
    await server.close()


SenderFactory = Callable[..., WebhookSender]


@pytest.fixture
async def make_sender(receiver: Receiver) -> AsyncIterator[SenderFactory]:
    """Senders with tiny back-offs, running unless start=False; all closed at the end."""
    made: list[WebhookSender] = []

    def make(url: str | None = None, *, start: bool = True, **options: Any) -> WebhookSender:
        settings: dict[str, Any] = {
            "timeout": 2.0,
            "max_attempts": 5,
            "first_backoff": 0.01,
            "max_backoff": 0.05,
        }
        settings.update(options)
        sender = WebhookSender(url or receiver.url, SECRET, **settings)
        if start:
            asyncio.get_running_loop().create_task(sender.run())
        made.append(sender)
        return sender

    yield make
    for sender in made:
        await sender.close(drain_timeout=0)


def start(sender: WebhookSender) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(sender.run())


async def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s")
        await asyncio.sleep(0.005)


def call_event(
    call_id: str = "1715000000.42",
    name: CtiEventName = CtiEventName.NEW_CALL,
    **fields: Any,
) -> CtiEvent:
    return CtiEvent(name, call_id, "13800138000", "12345", AT, **fields)


def expected_signature(body: bytes) -> str:
    """Computed here the way a receiver would, independently of tickets.webhook."""
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


# --- payload and signature -------------------------------------------------------------------


def test_new_call_payload() -> None:
    event = call_event(ticket="T-20240506-0007")
    assert event.payload() == {
        "event": "newCall",
        "from": "13800138000",
        "to": "12345",
        "direction": "in",
        "callId": "1715000000.42",
        "ticket": "T-20240506-0007",
        "timestamp": "2024-05-06T00:30:15.250Z",
    }


def test_answer_payload() -> None:
    event = call_event(name=CtiEventName.ANSWER, user="Li Wei", answering_number="1001")
    assert event.payload() == {
        "event": "answer",
        "from": "13800138000",
        "to": "12345",
        "direction": "in",
        "callId": "1715000000.42",
        "user": "Li Wei",
        "answeringNumber": "1001",
        "ticket": None,
        "timestamp": "2024-05-06T00:30:15.250Z",
    }


def test_hangup_payload() -> None:
    event = call_event(
        name=CtiEventName.HANGUP,
        user="Li Wei",
        answering_number="1001",
        cause=hangup_cause("answered", 16),
        ticket="T-20240506-0007",
    )
    assert event.payload() == {
        "event": "hangup",
        "from": "13800138000",
        "to": "12345",
        "direction": "in",
        "callId": "1715000000.42",
        "user": "Li Wei",
        "answeringNumber": "1001",
        "cause": "normalClearing",
        "ticket": "T-20240506-0007",
        "timestamp": "2024-05-06T00:30:15.250Z",
    }


def test_unanswered_hangup_carries_cause_but_no_agent() -> None:
    payload = call_event(name=CtiEventName.HANGUP, cause="cancel").payload()
    assert payload["cause"] == "cancel"
    assert "user" not in payload
    assert "answeringNumber" not in payload


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CtiEvent(CtiEventName.NEW_CALL, "1.1", "1", "2", datetime(2024, 5, 6, 8, 30)).payload()


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"event":"newCall"}'
    assert signature(body, SECRET) == expected_signature(body)
    assert signature(body + b" ", SECRET) != expected_signature(body)
    assert signature(body, SECRET + "x") != expected_signature(body)


@pytest.mark.parametrize(
    ("outcome", "q850", "cause"),
    [
        ("answered", 16, "normalClearing"),
        ("answered", None, "normalClearing"),
        ("answered", 17, "normalClearing"),
        ("abandoned", 16, "cancel"),
        ("abandoned", None, "cancel"),
        ("hung_up_before_queue", 16, "cancel"),
        ("hung_up_before_queue", 127, "cancel"),
        ("timeout", 16, "noAnswer"),
        ("timeout", None, "noAnswer"),
        ("abandoned", 17, "busy"),
        ("timeout", 17, "busy"),
        ("unknown", 17, "busy"),
        ("hung_up_before_queue", 34, "congestion"),
        ("abandoned", 38, "congestion"),
        ("unknown", 41, "congestion"),
        ("timeout", 42, "congestion"),
        ("hung_up_before_queue", 1, "notFound"),
        ("unknown", 1, "notFound"),
        ("unknown", 16, "normalClearing"),
        ("unknown", None, "normalClearing"),
        ("something_new", None, "normalClearing"),
    ],
)
def test_hangup_cause_mapping(outcome: str, q850: int | None, cause: str) -> None:
    assert hangup_cause(outcome, q850) == cause


# --- delivery against a real receiver ----------------------------------------------------------


async def test_each_event_is_posted_signed(receiver: Receiver, make_sender: SenderFactory) -> None:
    sender = make_sender()
    events = [
        call_event(ticket="T-1"),
        call_event(name=CtiEventName.ANSWER, user="Li Wei", answering_number="1001"),
        call_event(name=CtiEventName.HANGUP, user="Li Wei", cause="normalClearing"),
    ]
    for event in events:
        sender.submit(event)
    await wait_until(lambda: sender.counters["delivered"] == 3)

    assert len(receiver.requests) == 3
    for event, request in zip(events, receiver.requests, strict=True):
        assert request.headers["Content-Type"] == "application/json"
        assert hmac.compare_digest(
            request.headers["X-Hotline-Signature"], expected_signature(request.body)
        )
        assert request.headers["X-Hotline-Event"] == str(event.event)
        assert uuid.UUID(request.delivery).version == 4
        assert request.json == event.payload()
    assert len({r.delivery for r in receiver.requests}) == 3
    assert sender.pending == 0


async def test_server_errors_are_retried_with_the_same_delivery_id(
    receiver: Receiver, make_sender: SenderFactory
) -> None:
    receiver.script = [500, 500, 200]
    sender = make_sender()
    sender.submit(call_event())
    await wait_until(lambda: sender.counters["delivered"] == 1)
    await asyncio.sleep(0.1)  # nothing more may arrive after the 200

    assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert len({r.delivery for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    assert sender.counters["delivered"] == 1
    assert sender.counters["retries"] == 2


@pytest.mark.parametrize("status", [400, 404, 422, 302])
async def test_client_errors_are_dropped_not_retried(
    receiver: Receiver,
    make_sender: SenderFactory,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    receiver.script = [status]
    sender = make_sender()
    sender.submit(call_event("1.1"))
    sender.submit(call_event("1.2"))
    await wait_until(lambda: sender.counters["delivered"] == 1)

    assert [(r.json["callId"], r.status) for r in receiver.requests] == [
        ("1.1", status),
        ("1.2", 200),
    ]
    assert sender.counters["dropped_rejected"] == 1
    assert sender.counters["retries"] == 0
    assert any(
        r.levelno == logging.WARNING
        and "rejected" in r.getMessage()
        and f"HTTP {status}" in r.getMessage()
        for r in caplog.records
    )


async def test_retry_after_is_honoured(receiver: Receiver, make_sender: SenderFactory) -> None:
    receiver.script = [(429, {"Retry-After": "1"})]
    sender = make_sender(first_backoff=0.01, max_backoff=5.0)
    sender.submit(call_event())
    await wait_until(lambda: sender.counters["delivered"] == 1)

    first, second = receiver.requests
    assert first.status == 429
    assert second.status == 200
    assert first.delivery == second.delivery
    assert 0.95 <= second.at - first.at < 1.8


async def test_retry_after_is_capped_by_max_backoff(
    receiver: Receiver, make_sender: SenderFactory
) -> None:
    receiver.script = [(429, {"Retry-After": "3600"}), (503, {"Retry-After": "3600"})]
    sender = make_sender(first_backoff=0.01, max_backoff=0.2)
    sender.submit(call_event())
    await wait_until(lambda: sender.counters["delivered"] == 1)

    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert len(gaps) == 2
    assert all(0.18 <= gap < 0.8 for gap in gaps)


async def test_hanging_receiver_neither_blocks_submit_nor_the_retry(
    receiver: Receiver, make_sender: SenderFactory
) -> None:
    receiver.script = ["hang"]
    sender = make_sender(timeout=0.3)
    sender.submit(call_event("0"))
    await wait_until(lambda: len(receiver.requests) == 1)

    events = [call_event(str(i)) for i in range(1, 1001)]
    began = time.perf_counter()
    for event in events:
        sender.submit(event)
    elapsed = time.perf_counter() - began
    assert elapsed < 0.025, f"1,000 submits took {elapsed * 1000:.1f} ms"
    assert sender.pending == 1001

    # The hung request times out and the same event is sent again (the script then says 200).
    await wait_until(lambda: len(receiver.requests) >= 2)
    first, second = receiver.requests[:2]
    assert second.delivery == first.delivery
    assert second.json["callId"] == "0"
    assert second.at - first.at >= 0.3
    assert sender.counters["retries"] >= 1

    await sender.close(drain_timeout=0.05)
    assert sender.counters["delivered"] + sender.counters["left_at_close"] == 1001
    assert sender.counters["left_at_close"] > 0
    assert sender.pending == 0


async def test_unreachable_receiver_retries_and_close_gives_up_in_time(
    make_sender: SenderFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = make_sender(
        f"http://127.0.0.1:{port}{TOKEN_PATH}", max_attempts=1000, max_backoff=0.02
    )
    for i in range(3):
        sender.submit(call_event(str(i)))
    await wait_until(lambda: sender.counters["retries"] >= 3)

    began = time.monotonic()
    await sender.close(drain_timeout=0.2)
    took = time.monotonic() - began
    assert 0.2 <= took < 1.0
    assert sender.counters["left_at_close"] == 3
    assert sender.counters["delivered"] == 0
    assert sender.pending == 0
    assert any("closed with 3 events undelivered" in r.getMessage() for r in caplog.records)

    sender.submit(call_event("late"))  # after close: counted, never raises
    assert sender.counters["dropped_after_close"] == 1


async def test_close_delivers_what_is_queued(
    receiver: Receiver, make_sender: SenderFactory
) -> None:
    sender = make_sender()
    for i in range(5):
        sender.submit(call_event(str(i)))
    await sender.close(drain_timeout=3.0)
    assert sender.counters["delivered"] == 5
    assert sender.counters["left_at_close"] == 0
    assert [r.json["callId"] for r in receiver.requests] == ["0", "1", "2", "3", "4"]


async def test_cancelled_run_resends_with_the_same_delivery_id(
    receiver: Receiver, make_sender: SenderFactory
) -> None:
    receiver.script = [503]
    sender = make_sender(start=False, first_backoff=5.0, max_backoff=5.0)
    sender.submit(call_event("kept"))
    task = start(sender)
    await wait_until(lambda: len(receiver.requests) == 1)
    task.cancel()  # during the 2.5-5 s back-off
    await asyncio.wait({task})
    assert sender.pending == 1

    start(sender)
    await wait_until(lambda: sender.counters["delivered"] == 1, timeout=1.0)
    first, second = receiver.requests
    assert (first.status, second.status) == (503, 200)
    assert second.delivery == first.delivery


async def test_attempts_run_out(
    receiver: Receiver, make_sender: SenderFactory, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script = [503, 503, 503]
    sender = make_sender(max_attempts=3)
    sender.submit(call_event("doomed"))
    sender.submit(call_event("next"))
    await wait_until(lambda: sender.counters["delivered"] == 1)

    assert [(r.json["callId"], r.status) for r in receiver.requests] == [
        ("doomed", 503),
        ("doomed", 503),
        ("doomed", 503),
        ("next", 200),
    ]
    assert sender.counters["dropped_exhausted"] == 1
    assert sender.counters["retries"] == 2
    assert any("gave up" in r.getMessage() for r in caplog.records)


async def test_full_queue_drops_the_oldest(receiver: Receiver, make_sender: SenderFactory) -> None:
    sender = make_sender(start=False, queue_limit=3)
    for i in range(5):
        sender.submit(call_event(f"c{i}"))
    assert sender.counters["dropped_overflow"] == 2
    assert sender.pending == 3

    start(sender)
    await wait_until(lambda: sender.counters["delivered"] == 3)
    assert [r.json["callId"] for r in receiver.requests] == ["c2", "c3", "c4"]


async def test_events_arrive_in_submit_order_despite_retries(
    receiver: Receiver, make_sender: SenderFactory
) -> None:
    receiver.script = [200, 500, 200, 503, 429, 200, 500]
    sender = make_sender()
    names = [CtiEventName.NEW_CALL, CtiEventName.ANSWER, CtiEventName.HANGUP]
    submitted = [(f"17150000{call}.1", name) for call in range(10) for name in names]
    for call_id, name in submitted:
        sender.submit(
            call_event(call_id, name, cause="normalClearing" if name == "hangup" else None)
        )
    await wait_until(lambda: sender.counters["delivered"] == len(submitted))

    seen = [(r.json["callId"], CtiEventName(r.json["event"])) for r in receiver.requests]
    accepted = [(r.json["callId"], CtiEventName(r.json["event"])) for r in receiver.accepted()]
    assert accepted == submitted
    # Not even a retry is overtaken: positions in the submit order never go back.
    positions = [submitted.index(key) for key in seen]
    assert positions == sorted(positions)
    assert len(seen) == len(submitted) + 4


async def test_a_broken_event_does_not_stop_delivery(
    receiver: Receiver, make_sender: SenderFactory
) -> None:
    sender = make_sender()
    naive = CtiEvent(CtiEventName.NEW_CALL, "naive", "1", "2", datetime(2024, 5, 6, 8, 30))
    sender.submit(naive)
    sender.submit(cast(CtiEvent, object()))
    sender.submit(call_event("good"))
    await wait_until(lambda: sender.counters["delivered"] == 1)

    assert sender.counters["dropped_invalid"] == 2
    assert [r.json["callId"] for r in receiver.requests] == ["good"]


async def test_secret_and_endpoint_token_never_logged(
    receiver: Receiver, make_sender: SenderFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.script = [500, (429, {"Retry-After": "0"}), 400]  # exhausted, rejected, then 200
    sender = make_sender(max_attempts=2, queue_limit=3, start=False)
    for i in range(5):
        sender.submit(call_event(str(i)))  # two dropped for overflow
    start(sender)
    await wait_until(lambda: sender.pending == 0)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = make_sender(f"http://127.0.0.1:{port}{TOKEN_PATH}?key={SECRET}", max_attempts=1000)
    dead.submit(call_event("x"))
    await wait_until(lambda: dead.counters["retries"] >= 2)
    await dead.close(drain_timeout=0.05)

    ours = [r for r in caplog.records if r.name == "tickets.webhook"]
    levels = {r.levelno for r in ours}
    assert {logging.DEBUG, logging.WARNING} <= levels  # the failures really were logged
    assert sender.counters["dropped_overflow"] == 2
    assert sender.counters["dropped_rejected"] == 1
    assert sender.counters["dropped_exhausted"] == 1
    assert sender.counters["delivered"] == 1

    assert SECRET not in caplog.text
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert all("tok-5d2e8b7a41" not in r.getMessage() for r in ours)
    for each in (sender, dead):
        assert SECRET not in repr(each)
        assert SECRET not in str(each)
        assert "tok-5d2e8b7a41" not in repr(each)
