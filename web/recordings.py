"""Playback of recordings over HTTP: who may hear what, byte ranges, and the audit log.

``GET /api/v1/recordings/{id}/audio`` (a session cookie or HTTP Basic) streams one recording
through the store port (never a path from the request), honouring a single ``Range`` so a
browser's audio element can seek. Every request that names a recording is written to
``recording_access``, refusals included: who, which, when, from where, which bytes and the
status given.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from aiohttp import web

from hotline.storage import Transactions
from recording.db import Recording, log_access, recording_by_id
from recording.store import CHUNK_BYTES, RecordingStore
from web.auth import USER
from web.users import User

log = logging.getLogger(__name__)

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_RECORDING_ID = re.compile(r"[0-9]{1,12}")
REALM = 'Basic realm="hotline recordings", charset="UTF-8"'


class RangeNotSatisfiable(ValueError):
    """The Range asks for bytes the recording does not have (answered with 416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range ``header`` asks for as (first, last) inclusive; None means the whole file.

    Several ranges, other units or a malformed header are ignored (the whole file is sent, as
    RFC 9110 allows); a well-formed range past the end raises ``RangeNotSatisfiable``.
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
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
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
    ) -> None:
        self.units = units
        self.store = store
        self.clock = clock

    def add_routes(self, app: web.Application) -> None:
        # Open to the login middleware: this handler refuses (and audits) anonymous callers.
        app.router.add_get(
            "/api/v1/recordings/{recording_id}/audio", self.audio, name="recording-audio"
        )

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

    async def audio(self, request: web.Request) -> web.StreamResponse:
        verdict = await self._decide(request)
        if verdict.status != 200 or verdict.recording is None:
            await self._audit(request, verdict, verdict.status, "")
            if verdict.status == 401:
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": REALM})
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
