"""Playback of recordings over HTTP: who may hear what, byte ranges, and the audit log.

``GET /api/v1/recordings/{id}/audio`` (a session cookie or HTTP Basic) streams one recording
through the store port (never a path from the request), honouring a single ``Range`` so a
browser's audio element can seek. Every request that names a recording is written to
``recording_access``, refusals included: who, which, when, from where, which bytes and the
status given.

Anonymous requests (401) are the exception, because anyone can send them by the thousand: each
address gets one row at its first refusal, then at most one row a window (a minute) saying how
many more it had (``byte_range`` is ``"401 x 57"``), so a flood neither grows the log without
bound nor queues database writes in front of everything else.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from aiohttp import web

from infra.storage import Transactions
from recording.db import Recording, log_access, recording_by_id
from recording.store import CHUNK_BYTES, RecordingStore
from web.auth import USER
from web.users import User

log = logging.getLogger(__name__)

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_RECORDING_ID = re.compile(r"[0-9]{1,12}")
REALM = 'Basic realm="hotline recordings", charset="UTF-8"'
# A byte position with more digits than this is past the end of any recording (and int() of
# thousands of digits is refused, or slow): it counts as this, which is as far.
_MAX_POSITION_DIGITS = 18
_FAR_POSITION = 10**_MAX_POSITION_DIGITS
ANONYMOUS_WINDOW_SECONDS = 60.0
# Addresses whose refusals are being folded at once; past this, refusals from new addresses
# share one row under ``OTHER_ADDRESSES`` (memory stays bounded whatever the number of senders).
MAX_FOLDED_ADDRESSES = 1024
OTHER_ADDRESSES = "*"


class RangeNotSatisfiable(ValueError):
    """The Range asks for bytes the recording does not have (answered with 416)."""


def _position(digits: str) -> int:
    significant = digits.lstrip("0")
    if len(significant) > _MAX_POSITION_DIGITS:
        return _FAR_POSITION
    return int(significant or "0")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range ``header`` asks for as (first, last) inclusive; None means the whole file.

    Several ranges, other units or a malformed header are ignored (the whole file is sent, as
    RFC 9110 allows); a well-formed range past the end raises ``RangeNotSatisfiable``. A
    position too long to be real (``bytes=0-99999...``) is past the end like any other: a last
    byte there means "to the end", a first byte there cannot be satisfied.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = _position(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - suffix), size - 1
    first = _position(first_text)
    last = _position(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        raise RangeNotSatisfiable(header)
    return first, min(last, size - 1)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int
    user: User | None = None
    recording: Recording | None = None


@dataclass(slots=True)
class _Refusals:
    """One address's 401s since its last audit row, and the end of its current window."""

    timer: asyncio.TimerHandle | None = None
    count: int = 0
    requested_id: str = ""
    last_at: datetime | None = None


def _read_at(stream: BinaryIO, offset: int, length: int) -> bytes:
    stream.seek(offset)
    return stream.read(length)


class RecordingPlayback:
    """The playback routes; built by the composition root with the store and the database."""

    def __init__(
        self,
        units: Transactions,
        store: RecordingStore,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        anonymous_window: float = ANONYMOUS_WINDOW_SECONDS,
    ) -> None:
        self.units = units
        self.store = store
        self.clock = clock
        self.anonymous_window = anonymous_window
        self.counters: Counter[str] = Counter(
            {"anonymous_refused": 0, "anonymous_folded": 0, "audit_failures": 0}
        )
        self._refusals: dict[str, _Refusals] = {}
        self._writes: set[asyncio.Task[None]] = set()

    def add_routes(self, app: web.Application) -> None:
        # Open to the login middleware: this handler refuses (and audits) anonymous callers.
        app.router.add_get(
            "/api/v1/recordings/{recording_id}/audio", self.audio, name="recording-audio"
        )
        app.on_cleanup.append(self._write_folded_refusals)

    async def _decide(self, request: web.Request) -> Verdict:
        user = request.get(USER)  # from a session or HTTP Basic: see web.auth
        if not isinstance(user, User):
            return Verdict(401)
        requested = request.match_info["recording_id"]
        if not _RECORDING_ID.fullmatch(requested):
            return Verdict(404, user)
        recording = await self.units(lambda c: recording_by_id(c, int(requested)))
        if recording is None:
            return Verdict(404, user)
        if not user.may_hear(recording.agent_interface):
            return Verdict(403, user, recording)
        return Verdict(200, user, recording)

    async def _audit(self, request: web.Request, verdict: Verdict, status: int, span: str) -> None:
        values = {
            "recording_id": verdict.recording.id if verdict.recording else None,
            "requested_id": request.match_info["recording_id"][:64],
            "username": (verdict.user.username if verdict.user else "")[:64],
            "at": self.clock(),
            "remote": (request.remote or "")[:64],
            "byte_range": span[:64],
            "outcome": status,
        }
        await self.units(lambda connection: log_access(connection, values))

    async def _refused_anonymous(self, request: web.Request) -> None:
        """Audit a 401: a row for an address's first in a window, a count for the rest."""
        self.counters["anonymous_refused"] += 1
        remote = (request.remote or "")[:64]
        requested = request.match_info["recording_id"][:64]
        if remote not in self._refusals and len(self._refusals) >= MAX_FOLDED_ADDRESSES:
            remote = OTHER_ADDRESSES
        refusals = self._refusals.get(remote)
        if refusals is not None:
            self.counters["anonymous_folded"] += 1
            refusals.count += 1
            refusals.requested_id = requested
            refusals.last_at = self.clock()
            return
        self._open_window(remote)
        await self._write_refusals(remote, requested, 1, self.clock())

    def _open_window(self, remote: str) -> None:
        timer = asyncio.get_running_loop().call_later(
            self.anonymous_window, self._window_ended, remote
        )
        self._refusals[remote] = _Refusals(timer)

    def _window_ended(self, remote: str) -> None:
        refusals = self._refusals.pop(remote, None)
        if refusals is None or refusals.count == 0 or refusals.last_at is None:
            return  # a quiet window: the address's next 401 is written at once again
        self._open_window(remote)  # a steady flood: one row a window, not one a request
        write = asyncio.get_running_loop().create_task(
            self._write_refusals(remote, refusals.requested_id, refusals.count, refusals.last_at)
        )
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    async def _write_refusals(self, remote: str, requested: str, count: int, at: datetime) -> None:
        """One row for ``count`` 401s from ``remote``; ``requested`` is the last id asked for."""
        values = {
            "recording_id": None,
            "requested_id": requested,
            "username": "",
            "at": at,
            "remote": remote,
            "byte_range": f"401 x {count}",
            "outcome": 401,
        }
        try:
            await self.units(lambda connection: log_access(connection, values))
        except Exception:  # a lost count must not turn into a 500 or an unretrieved task
            self.counters["audit_failures"] += 1
            log.exception("could not audit %d anonymous requests from %s", count, remote)

    async def _write_folded_refusals(self, app: web.Application) -> None:
        """At shutdown: the counts still in open windows, so none is lost."""
        pending = list(self._refusals.items())
        self._refusals.clear()
        for remote, refusals in pending:
            if refusals.timer is not None:
                refusals.timer.cancel()
            if refusals.count and refusals.last_at is not None:
                await self._write_refusals(
                    remote, refusals.requested_id, refusals.count, refusals.last_at
                )
        if self._writes:
            await asyncio.gather(*self._writes)

    async def audio(self, request: web.Request) -> web.StreamResponse:
        verdict = await self._decide(request)
        if verdict.status == 401:
            await self._refused_anonymous(request)
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": REALM})
        if verdict.status != 200 or verdict.recording is None:
            await self._audit(request, verdict, verdict.status, "")
            if verdict.status == 403:
                raise web.HTTPForbidden(text="this recording is not one of your calls")
            raise web.HTTPNotFound(text="no such recording")
        recording = verdict.recording
        size = await asyncio.to_thread(self.store.size, recording.key)
        if size is None:
            log.error("recording %d (%s) is missing from the store", recording.id, recording.key)
            await self._audit(request, verdict, 404, "missing")
            raise web.HTTPNotFound(text="the recording's file is missing; see recordings verify")
        try:
            span = byte_range(request.headers.get("Range"), size)
        except RangeNotSatisfiable:
            await self._audit(request, verdict, 416, request.headers.get("Range", ""))
            raise web.HTTPRequestRangeNotSatisfiable(
                headers={"Content-Range": f"bytes */{size}"}
            ) from None
        first, last = span if span is not None else (0, size - 1)
        status = 206 if span is not None else 200
        await self._audit(request, verdict, status, f"{first}-{last}")
        response = web.StreamResponse(status=status)
        response.content_type = "audio/wav"
        response.content_length = last - first + 1
        response.headers["Accept-Ranges"] = "bytes"
        response.headers["ETag"] = f'"{recording.sha256}"'
        response.headers["Cache-Control"] = "private, no-store"
        if span is not None:
            response.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        await response.prepare(request)
        stream = await asyncio.to_thread(self.store.open, recording.key)
        try:
            offset = first
            while offset <= last:
                chunk = await asyncio.to_thread(
                    _read_at, stream, offset, min(CHUNK_BYTES, last - offset + 1)
                )
                if not chunk:
                    break
                await response.write(chunk)
                offset += len(chunk)
        finally:
            await asyncio.to_thread(stream.close)
        await response.write_eof()
        return response
