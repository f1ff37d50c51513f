"""Outbound call events for other ticket systems (help-desk CTI webhooks).

When a call arrives, is answered and hangs up, the bridge POSTs an event to a configured URL so a
help-desk product can pop the caller up and keep a caller log. The events follow the generic CTI
events that help-desk products accept (Zammad's generic CTI API: ``event``, ``from``, ``to``,
``direction``, ``callId``, ``user``, ``answeringNumber`` and ``cause``), sent as JSON, plus our
``ticket`` and an ISO 8601 UTC ``timestamp``.

Call routing must never wait for a help desk: ``WebhookSender.submit`` only appends to a bounded
in-memory queue, and a single background task delivers the events one at a time, in order, with
retries. The body is signed with HMAC-SHA256 so the receiver can tell our events from forgeries;
the timestamp is inside the signed body, so a receiver can also refuse stale replays.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import aiohttp
from yarl import URL

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hotline-Signature"
EVENT_HEADER = "X-Hotline-Event"
DELIVERY_HEADER = "X-Hotline-Delivery"

_OVERFLOW_LOG_INTERVAL = 60.0
"""Seconds between overflow warnings: a dead receiver must not turn into a log flood."""

_jitter = random.SystemRandom()


class CtiEventName(StrEnum):
    NEW_CALL = "newCall"
    ANSWER = "answer"
    HANGUP = "hangup"


@dataclass(frozen=True, slots=True)
class CtiEvent:
    """One call event as a help desk's generic CTI interface understands it."""

    event: CtiEventName
    call_id: str
    """Asterisk uniqueid of the caller's channel: the same for all events of one call."""
    from_number: str
    to_number: str
    at: datetime
    """When it happened; must be timezone-aware."""
    direction: str = "in"
    user: str | None = None
    """Agent name(s) or interface, for answer and hangup."""
    answering_number: str | None = None
    cause: str | None = None
    """Hangup only: one of the CTI cause words, see ``hangup_cause``."""
    ticket: str | None = None

    def payload(self) -> dict[str, object]:
        """The JSON object for this event.

        Optional CTI keys are left out rather than sent as null, because receivers written for
        the form-data flavour of the API treat a present key as a value. ``ticket`` is always
        present (null when there is none) and so is ``cause`` on a hangup.
        """
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError(f"CtiEvent.at must be timezone-aware (call {self.call_id})")
        body: dict[str, object] = {
            "event": str(self.event),
            "from": self.from_number,
            "to": self.to_number,
            "direction": self.direction,
            "callId": self.call_id,
        }
        if self.user is not None:
            body["user"] = self.user
        if self.answering_number is not None:
            body["answeringNumber"] = self.answering_number
        if self.event == CtiEventName.HANGUP:
            body["cause"] = self.cause
        body["ticket"] = self.ticket
        stamp = self.at.astimezone(UTC).isoformat(timespec="milliseconds")
        body["timestamp"] = stamp.replace("+00:00", "Z")
        return body


_Q850_CAUSES: dict[int, str] = {
    1: "notFound",  # unallocated (unassigned) number
    17: "busy",  # user busy
    34: "congestion",  # no circuit/channel available
    38: "congestion",  # network out of order
    41: "congestion",  # temporary failure
    42: "congestion",  # switching equipment congestion
}

_OUTCOME_CAUSES: dict[str, str] = {
    "answered": "normalClearing",
    "abandoned": "cancel",
    "hung_up_before_queue": "cancel",
    "timeout": "noAnswer",
}


def hangup_cause(outcome: str, q850_cause: int | None) -> str:
    """Zammad's hangup cause word for one of our call outcomes and the channel's Q.850 cause.

    * ``answered`` is always ``normalClearing``: a conversation took place, and whoever ended it
      (and with which Q.850 code) does not make it a missed call.
    * For an unanswered call a Q.850 cause that names a failure wins over the outcome, because it
      says *why* nobody answered: 17 (user busy) is ``busy``; 34, 38, 41 and 42 (no circuit,
      network out of order, temporary failure, switching congestion) are ``congestion``; 1
      (unallocated number) is ``notFound``. A caller whose line dropped on a congested trunk did
      not ``cancel``.
    * Otherwise the outcome decides: the caller hung up while waiting (``abandoned``) or before a
      queue (``hung_up_before_queue``) is ``cancel``, Zammad's "caller hung up before the called
      party picked up"; the queue's own time limit (``timeout``) is ``noAnswer``.
    * ``unknown`` (the bridge lost AMI) or any other outcome is ``normalClearing``: the neutral
      word, as we cannot claim who gave up. Zammad still lists a call without an ``answer``
      event as missed.
    """
    if outcome == "answered":
        return "normalClearing"
    if q850_cause is not None and q850_cause in _Q850_CAUSES:
        return _Q850_CAUSES[q850_cause]
    return _OUTCOME_CAUSES.get(str(outcome), "normalClearing")


def signature(body: bytes, secret: str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the exact body bytes, as the receiver recomputes it."""
    return _sign(body, secret.encode("utf-8"))


def _sign(body: bytes, key: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _origin(url: URL) -> str:
    """The URL without path or query: CTI endpoints carry their access token in the path."""
    return str(url.origin())


def _describe(event: object) -> str:
    """``<event> for call <id>`` for the log, even for an object that is not a ``CtiEvent``."""
    name = getattr(event, "event", None)
    call_id = getattr(event, "call_id", None)
    if name is None or call_id is None:
        return f"a {type(event).__name__} (not a CtiEvent)"
    return f"{name} for call {call_id}"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a numeric ``Retry-After``; HTTP dates and garbage are ignored (None)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


class _Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


class _Item:
    """A queued event and its delivery id, fixed at the first attempt so every retry reuses it."""

    __slots__ = ("delivery", "event")

    def __init__(self, event: CtiEvent) -> None:
        self.event = event
        self.delivery: str | None = None


class WebhookSender:
    """Delivers ``CtiEvent``s to one URL from a bounded queue, in order, in the background.

    ``submit`` is the only method call routing touches: synchronous, O(1), never raises. ``run``
    is the long-lived delivery task; ``close`` drains what it can within a time limit and stops
    it. ``queue_limit`` bounds the events waiting; the one being delivered is not dropped for
    overflow, so at most ``queue_limit + 1`` events are held. ``counters`` says what happened to
    every event (``delivered``, ``retries``, ``dropped_overflow``, ``dropped_rejected``,
    ``dropped_exhausted``, ``dropped_invalid``, ``dropped_after_close``, ``left_at_close``,
    ``errors``).
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout: float = 5.0,
        max_attempts: int = 8,
        first_backoff: float = 0.5,
        max_backoff: float = 60.0,
        queue_limit: int = 10_000,
    ) -> None:
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("webhook URL must be an absolute http(s) URL")
        if not secret:
            raise ValueError("webhook secret must not be empty: unsigned events can be forged")
        if timeout <= 0 or first_backoff < 0 or max_backoff < first_backoff:
            raise ValueError("webhook timeout must be > 0 and 0 <= first_backoff <= max_backoff")
        if max_attempts < 1 or queue_limit < 1:
            raise ValueError("webhook max_attempts and queue_limit must be at least 1")
        self._url = url
        self._origin = _origin(parsed)
        self._path = parsed.raw_path_qs if len(parsed.raw_path_qs) > 1 else ""
        # The query and user info in every spelling a library may quote them in (a user name
        # only as URLs write it, followed by ":" or "@", so a host of that name stays readable).
        users = {user for user in (parsed.raw_user, parsed.user) if user}
        secrets = {parsed.raw_query_string, parsed.query_string, parsed.raw_password}
        secrets |= {parsed.password or ""} | {user + end for user in users for end in ":@"}
        self._secrets = sorted((text for text in secrets if text), key=len, reverse=True)
        self._key = secret.encode("utf-8")
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._queue_limit = queue_limit
        self._queue: collections.deque[_Item] = collections.deque()
        self._in_flight: _Item | None = None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._stopped.set()
        self._running = False
        self._closed = False
        self._healthy = True
        self._last_overflow_log = -math.inf
        self.counters: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"<WebhookSender {self._origin} pending={self.pending}>"

    @property
    def pending(self) -> int:
        """Events not yet delivered or dropped, including the one being delivered."""
        return len(self._queue) + (self._in_flight is not None)

    def submit(self, event: CtiEvent) -> None:
        """Queue ``event`` for delivery; when the queue is full the oldest waiting one goes.

        Dropping the oldest keeps the newest state of the calls (a hangup matters more than a
        ringing that ended minutes ago). Never raises and never waits: call routing calls this,
        from the event loop's thread.
        """
        try:
            if self._closed:
                self.counters["dropped_after_close"] += 1
                return
            if len(self._queue) >= self._queue_limit:
                self._queue.popleft()
                self.counters["dropped_overflow"] += 1
                now = time.monotonic()
                if now - self._last_overflow_log >= _OVERFLOW_LOG_INTERVAL:
                    self._last_overflow_log = now
                    log.warning(
                        "webhook %s: queue full (%d), dropping oldest events (%d dropped so far)",
                        self._origin,
                        self._queue_limit,
                        self.counters["dropped_overflow"],
                    )
            self._queue.append(_Item(event))
            self._idle.clear()
            self._wakeup.set()
        except Exception:
            # Routing must go on whatever happens here; the counter and the log show it.
            self.counters["errors"] += 1
            log.exception("webhook %s: cannot queue an event", self._origin)

    async def run(self) -> None:
        """Deliver queued events until ``close`` (or cancellation); one HTTP session per run."""
        if self._running:
            raise RuntimeError("WebhookSender.run is already running")
        if self._closed:
            return
        self._running = True
        self._stopped.clear()
        try:
            async with self._session() as session:
                worker = asyncio.create_task(self._work(session), name="webhook-delivery")
                self._worker = worker
                try:
                    # wait() rather than await: close() cancelling the worker ends run() normally.
                    await asyncio.wait({worker})
                finally:
                    if not worker.done():
                        worker.cancel()
                        await asyncio.wait({worker})
        finally:
            self._worker = None
            self._running = False
            self._stopped.set()

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Deliver what is queued within ``drain_timeout`` seconds, then stop ``run``.

        Events still undelivered are counted as ``left_at_close`` and discarded; events
        submitted afterwards are counted as ``dropped_after_close``.
        """
        self._closed = True
        worker = self._worker
        if worker is not None and not worker.done():
            await self._drain(worker, drain_timeout)
            # run() closes its HTTP session after the worker; wait for it, nothing is left open.
            await self._stopped.wait()
        elif self._queue and drain_timeout > 0:
            # run() has not started yet (or was cancelled): deliver with a session of our own.
            async with self._session() as session:
                worker = asyncio.create_task(self._work(session), name="webhook-drain")
                await self._drain(worker, drain_timeout)
        left = self.pending
        self._queue.clear()
        self._in_flight = None
        self._idle.set()
        if left:
            self.counters["left_at_close"] += left
            log.warning("webhook %s: closed with %d events undelivered", self._origin, left)

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))

    async def _drain(self, worker: asyncio.Task[None], drain_timeout: float) -> None:
        """Let ``worker`` empty the queue for at most ``drain_timeout`` seconds, then stop it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=max(drain_timeout, 0.0))
        worker.cancel()
        await asyncio.wait({worker})

    async def _work(self, session: aiohttp.ClientSession) -> None:
        """Take events one at a time, so a later event never overtakes an earlier one."""
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            item = self._queue.popleft()
            self._in_flight = item
            try:
                await self._deliver(session, item)
            except asyncio.CancelledError:
                # Stopped mid-delivery: back to the front, so a restarted run() resends it first
                # (with the same delivery id) and close() counts it as left.
                self._queue.appendleft(item)
                raise
            except Exception:
                self.counters["errors"] += 1
                log.exception(
                    "webhook %s: unexpected error delivering %s; dropped",
                    self._origin,
                    _describe(item.event),
                )
            finally:
                self._in_flight = None

    async def _deliver(self, session: aiohttp.ClientSession, item: _Item) -> None:
        """Send one event until it is accepted, rejected or out of attempts."""
        event = item.event
        try:
            body = json.dumps(event.payload(), ensure_ascii=False, separators=(",", ":"))
        except Exception as error:
            # A malformed event is a bug upstream; it must not stop the events behind it.
            self.counters["dropped_invalid"] += 1
            log.warning("webhook: cannot encode %s; dropped: %s", _describe(event), error)
            return
        raw = body.encode("utf-8")
        if item.delivery is None:
            item.delivery = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: _sign(raw, self._key),
            EVENT_HEADER: str(event.event),
            DELIVERY_HEADER: item.delivery,
        }
        attempt = 0
        while True:
            attempt += 1
            outcome, reason, wait_hint = await self._attempt(session, raw, headers)
            if outcome is _Outcome.DELIVERED:
                self.counters["delivered"] += 1
                if not self._healthy:
                    self._healthy = True
                    log.info("webhook %s: receiver accepts events again", self._origin)
                return
            if outcome is _Outcome.REJECTED:
                self.counters["dropped_rejected"] += 1
                log.warning(
                    "webhook %s rejected %s (%s); dropped", self._origin, _describe(event), reason
                )
                return
            if self._healthy:
                self._healthy = False
                log.warning("webhook %s: delivery failing (%s); retrying", self._origin, reason)
            if attempt >= self._max_attempts:
                self.counters["dropped_exhausted"] += 1
                log.warning(
                    "webhook %s: gave up on %s after %d attempts (%s); dropped",
                    self._origin,
                    _describe(event),
                    attempt,
                    reason,
                )
                return
            self.counters["retries"] += 1
            delay = self._backoff(attempt, wait_hint)
            log.debug(
                "webhook %s: attempt %d for call %s failed (%s); next in %.2fs",
                self._origin,
                attempt,
                event.call_id,
                reason,
                delay,
            )
            await asyncio.sleep(delay)

    async def _attempt(
        self, session: aiohttp.ClientSession, raw: bytes, headers: dict[str, str]
    ) -> tuple[_Outcome, str, float | None]:
        """One POST: the outcome, a loggable reason and the receiver's Retry-After if any.

        Redirects are not followed (a 3xx is a rejection): aiohttp would turn the POST into a GET
        and the signed event would be lost without anyone noticing.
        """
        try:
            async with session.post(
                self._url, data=raw, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                reason = f"HTTP {status}"
                if 200 <= status < 300:
                    return _Outcome.DELIVERED, reason, None
                # 408 is the receiver timing out on us: as transient as our own timeout.
                if status >= 500 or status in (408, 429):
                    return _Outcome.RETRY, reason, _retry_after(response.headers.get("Retry-After"))
                return _Outcome.REJECTED, reason, None
        except TimeoutError:
            return _Outcome.RETRY, f"no answer within {self._timeout:g}s", None
        except aiohttp.ClientError as error:
            return _Outcome.RETRY, self._scrub(f"{type(error).__name__}: {error}"), None

    def _scrub(self, message: str) -> str:
        """Keep the URL's path, query and user info (where a CTI endpoint's token is) out of a
        message bound for the log; only the origin ever shows."""
        message = message.replace(self._url, self._origin)
        if self._path:
            message = message.replace(self._path, "/…")
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential back-off with jitter, or the receiver's own Retry-After; both capped."""
        if retry_after is not None:
            return min(retry_after, self._max_backoff)
        ceiling = min(self._max_backoff, self._first_backoff * 2 ** (attempt - 1))
        # Half fixed, half random: receivers coming back are not hit by every bridge at once.
        return ceiling / 2 + _jitter.uniform(0, ceiling / 2)
