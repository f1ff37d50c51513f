"""The journal of a PBX owner when the hotline has Redis: finished calls go on the ``calls``
stream, and the ``journal`` group of every bridge process writes them to the database.

The owner's hold on a call ends once Redis has the entry: if the owner dies the next moment,
any process writes the row. The writer writes only under the entry's lease token (``fence``):
an entry from an owner that has since lost its PBX is dropped, because the next owner journals
that call itself from queue_log (a row from both would let the new owner count it twice).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from infra.leases import FencedOut
from infra.streams import PermanentEntryError
from queue_stats.call_codec import CallEntry, CallEntryError, decode_call, encode_call
from queue_stats.calls import CallRecord
from queue_stats.journal import CallJournal, Journal

log = logging.getLogger(__name__)

CALLS_STREAM = "hotline:calls"
JOURNAL_GROUP = "journal"


class Appender(Protocol):
    async def append(self, fields: dict[str, str]) -> str: ...


class StreamedJournal:
    """What ``QueueService`` needs of a journal: reads from the database, writes to the stream.

    Calls it sent and the database may not have yet count as journalled for queue_log
    recovery (``uniqueids_since``), so a resync never brings one in twice."""

    def __init__(self, reads: Journal, stream: Appender, pbx: str, token: int) -> None:
        self._reads = reads
        self._stream = stream
        self._pbx = pbx
        self._token = token
        self._sequence = itertools.count(1)
        self._sent: dict[str, datetime] = {}

    async def record(self, call: CallRecord) -> None:
        if call.outcome is None:
            raise ValueError(f"call {call.uniqueid} has not ended")
        entry = CallEntry(self._pbx, self._token, next(self._sequence), call)
        await self._stream.append(encode_call(entry))
        self._sent[call.uniqueid] = call.started_at

    async def span(self) -> tuple[datetime, datetime] | None:
        return await self._reads.span()

    async def ratings_since(self, since: datetime) -> list[tuple[str, str, datetime, str]]:
        return await self._reads.ratings_since(since)

    async def uniqueids_since(self, since: datetime) -> set[str]:
        written = await self._reads.uniqueids_since(since)
        for uniqueid in [u for u in self._sent if u in written]:
            del self._sent[uniqueid]  # in the database now: no need to remember it
        return written | {u for u, started in self._sent.items() if started >= since}

    async def calls_since(self, since: datetime) -> list[CallRecord]:
        return await self._reads.calls_since(since)


class JournalWriter:
    """The ``journal`` group's handler: ``journal_for(pbx, token)`` is a journal whose writes
    are fenced by that PBX's lease and token."""

    def __init__(self, journal_for: Callable[[str, int], CallJournal]) -> None:
        self._journal_for = journal_for
        self.counters = {"written": 0, "fenced": 0}

    async def __call__(self, fields: dict[str, str]) -> None:
        try:
            entry = decode_call(fields)
        except CallEntryError as error:
            raise PermanentEntryError(str(error)) from None
        try:
            await self._journal_for(entry.pbx, entry.token).record(entry.call)
        except FencedOut as error:
            self.counters["fenced"] += 1
            log.warning("call %s from a past owner dropped: %s", entry.call.uniqueid, error)
            return
        self.counters["written"] += 1

    async def many(self, batch: list[dict[str, str]]) -> None:
        """A batch of entries: one fenced transaction per PBX and token. An unreadable entry
        raises, and the consumer then handles the batch one entry at a time."""
        groups: dict[tuple[str, int], list[CallRecord]] = {}
        for fields in batch:
            entry = decode_call(fields)
            groups.setdefault((entry.pbx, entry.token), []).append(entry.call)
        for (pbx, token), calls in groups.items():
            try:
                await self._journal_for(pbx, token).record_many(calls)
            except FencedOut as error:
                self.counters["fenced"] += len(calls)
                log.warning("%d calls from a past owner of %s dropped: %s", len(calls), pbx, error)
                continue
            self.counters["written"] += len(calls)
