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

from sqlalchemy import Connection

from infra.leases import FencedOut, FencedTransactions, current_tokens, fenced_out
from infra.streams import PermanentEntryError
from queue_stats.call_codec import CallEntry, CallEntryError, decode_call, encode_call
from queue_stats.calls import CallRecord
from queue_stats.journal import CallJournal, Journal, journal_rows, write_rows

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
        """A batch of entries, in one transaction when its calls come from several owners. An
        unreadable entry raises, and the consumer then handles the batch one entry at a time."""
        groups: dict[tuple[str, int], list[CallRecord]] = {}
        for fields in batch:
            entry = decode_call(fields)
            groups.setdefault((entry.pbx, entry.token), []).append(entry.call)
        journals = [self._journal_for(pbx, token) for pbx, token in groups]
        fences = _shared_fences(journals)
        if len(groups) > 1 and fences is not None:
            await self._in_one_transaction(groups, fences)
            return
        for ((pbx, _), calls), journal in zip(groups.items(), journals, strict=True):
            try:
                await journal.record_many(calls)
            except FencedOut as error:
                self._dropped(pbx, calls, error)
                continue
            self.counters["written"] += len(calls)

    async def _in_one_transaction(
        self, groups: dict[tuple[str, int], list[CallRecord]], fences: list[FencedTransactions]
    ) -> None:
        """Several owners' calls in one transaction on the units their fences share: every
        lease is checked first (as ``fence`` checks one), then one upsert writes the calls
        whose token still holds; a past owner's are left out.

        Why: a batch holds the calls of every PBX, and a transaction per PBX and token (each
        with its BEGIN, lease check, upsert and COMMIT) made most of the writer's round trips."""
        parts = [
            (pbx, calls, journal_rows(calls), fence)
            for ((pbx, _), calls), fence in zip(groups.items(), fences, strict=True)
        ]
        names = {fence.name for fence in fences}

        def writing(connection: Connection) -> dict[str, int]:
            current = current_tokens(names, connection)
            held = [
                row
                for _, _, rows, fence in parts
                if current.get(fence.name) == fence.token
                for row in rows
            ]
            if held:
                write_rows(connection, held)
            return current

        current = await fences[0].units(writing)
        for pbx, calls, _, fence in parts:
            token = current.get(fence.name)
            if token == fence.token:
                self.counters["written"] += len(calls)
            else:
                self._dropped(pbx, calls, fenced_out(fence.name, fence.token, token))

    def _dropped(self, pbx: str, calls: list[CallRecord], error: FencedOut) -> None:
        self.counters["fenced"] += len(calls)
        log.warning("%d calls from a past owner of %s dropped: %s", len(calls), pbx, error)


def _shared_fences(journals: list[CallJournal]) -> list[FencedTransactions] | None:
    """The journals' fences, if every journal is fenced and all of them on the same units."""
    fences = []
    for journal in journals:
        units = journal.units
        if not isinstance(units, FencedTransactions):
            return None
        fences.append(units)
    return fences if len({id(fence.units) for fence in fences}) == 1 else None
