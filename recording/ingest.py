"""Moving finished recordings from Asterisk's spool into the store, once each, whatever crashes.

A file is finished when MixMonitor's post-recording command has renamed it from
``<stem>.recording.wav`` to ``<stem>.wav``. Each finished file goes through the same steps:

1. its key already has a row → an earlier run got as far as step 4; only step 5 is left;
2. its WAV header must agree with its size → otherwise it moves to ``quarantine/`` in the spool,
   with a ``.reason`` file beside it, and is never deleted; a valid header with no audio at all
   (a call never bridged to an agent: MixMonitor creates the file anyway) is dropped;
3. it is copied into the store (hashed on the way; an interrupted copy is redone whole);
4. its row is inserted (the unique key stops a second ingest);
5. the spool copy is deleted.

A crash between any two steps leaves the spool file in place, so the next scan redoes or skips
each step: nothing is lost and nothing is ingested twice. Every file operation runs in a worker
thread; database work goes through the ``Transactions`` port.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from infra.storage import Transactions
from recording.db import add_recording, recorded_keys
from recording.naming import (
    FINISHED_SUFFIX,
    FREESWITCH_UUID,
    IN_PROGRESS_SUFFIX,
    RecordingName,
    RecordingNameError,
    parse_key,
)
from recording.store import RecordingStore, StoredObject
from recording.wav import HEADER_READ_BYTES, WavError, WavInfo, parse_wav_header

log = logging.getLogger(__name__)

QUARANTINE = "quarantine"
_DAY_FOLDERS = "[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]"


@dataclass(frozen=True, slots=True)
class SpoolFile:
    key: str
    path: Path
    name: RecordingName


@dataclass(frozen=True, slots=True)
class SpoolListing:
    finished: list[SpoolFile]
    in_progress: int
    foreign: list[Path]


def list_spool(spool: Path) -> SpoolListing:
    """What the spool holds now: finished recordings, how many are still being written, and files
    that are not ours (left alone and reported, never guessed at). Blocking."""
    finished: list[SpoolFile] = []
    foreign: list[Path] = []
    in_progress = 0
    for path in sorted(spool.glob(f"{_DAY_FOLDERS}/*")):
        if path.name.endswith(IN_PROGRESS_SUFFIX):
            in_progress += 1
            continue
        key = path.relative_to(spool).as_posix()
        try:
            finished.append(SpoolFile(key, path, parse_key(key)))
        except RecordingNameError:
            foreign.append(path)
    return SpoolListing(finished, in_progress, foreign)


def read_header(path: Path) -> WavInfo:
    with path.open("rb") as stream:
        head = stream.read(HEADER_READ_BYTES)
        size = os.fstat(stream.fileno()).st_size
    return parse_wav_header(head, size)


def quarantine(spool: Path, file: SpoolFile, reason: str) -> Path:
    """Set a bad file aside inside the spool (same file system: a rename), with why."""
    target = spool / QUARANTINE / file.key
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(file.path, target)
    target.with_name(target.name + ".reason").write_text(reason + "\n", encoding="utf-8")
    return target


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def recording_values(
    file: SpoolFile, info: WavInfo, stored: StoredObject, at: datetime
) -> dict[str, object]:
    return {
        "key": stored.key,
        "uniqueid": file.name.uniqueid,
        "ticket": file.name.ticket,
        "recorded_on": file.name.day,
        "sha256": stored.sha256,
        "size_bytes": stored.size_bytes,
        "duration_seconds": round(info.duration_seconds, 3),
        "format": info.format,
        "ingested_at": at,
        "integrity": "ok",
    }


def utc_now() -> datetime:
    return datetime.now(UTC)


class RecordingIngest:
    """Scans the spool and ingests what it finds; ``run`` does so until cancelled."""

    def __init__(
        self,
        spool: Path,
        store: RecordingStore,
        units: Transactions,
        *,
        clock: Callable[[], datetime] = utc_now,
        call_id: Callable[[str], str] | None = None,
        pbx: str = "",
    ) -> None:
        """``pbx``: the PBX's name, when named: its recordings go in the store under it (and
        ``call_id`` gives the call ids as the journal carries them)."""
        self.spool = spool
        self.store = store
        self.units = units
        self.clock = clock
        # The PBX's id in a file name as the journal carries it (``pbx.naming``), if named.
        self.call_id = call_id
        self.pbx = pbx
        self.counters: Counter[str] = Counter()
        self._reported: set[Path] = set()

    async def ingest_pending(self) -> Counter[str]:
        """One pass over the spool; returns what happened to each file in this pass."""
        if not await asyncio.to_thread(self.spool.is_dir):
            return Counter()
        listing = await asyncio.to_thread(list_spool, self.spool)
        for path in listing.foreign:
            if path not in self._reported:
                self._reported.add(path)
                log.warning("not a recording name, left alone in the spool: %s", path)
        if not listing.finished:
            return Counter()
        keys = [self.stored_key(file) for file in listing.finished]
        recorded = await self.units(lambda connection: recorded_keys(connection, keys))
        outcomes: Counter[str] = Counter()
        for file in listing.finished:
            outcome = await self.ingest(file, recorded=self.stored_key(file) in recorded)
            outcomes[outcome] += 1
            self.counters[outcome] += 1
        return outcomes

    def stored_key(self, file: SpoolFile) -> str:
        """The file's key in the store and in its row (under the PBX's name, if named)."""
        return replace(file.name, pbx=self.pbx).key if self.pbx else file.key

    async def ingest(self, file: SpoolFile, *, recorded: bool) -> str:
        """Steps 1 to 5 for one file (``recorded``: step 1's answer, looked up for the whole
        pass at once): ``stored``, ``already-stored``, ``no-audio`` or ``quarantined``."""
        if recorded:
            await asyncio.to_thread(_unlink, file.path)
            return "already-stored"
        try:
            info = await asyncio.to_thread(read_header, file.path)
        except WavError as error:
            where = await asyncio.to_thread(quarantine, self.spool, file, str(error))
            log.error("recording %s quarantined as %s: %s", file.key, where, error)
            return "quarantined"
        if info.data_bytes == 0:
            # MixMonitor creates the file when it starts, bridged or not; "b" only keeps the
            # audio out until an agent is bridged. No agent ever was: the call has no recording.
            await asyncio.to_thread(_unlink, file.path)
            log.info("recording %s has no audio (never bridged to an agent); dropped", file.key)
            return "no-audio"
        stored = await asyncio.to_thread(self.store.put, file.path, self.stored_key(file))
        values = recording_values(file, info, stored, self.clock())
        if self.call_id is not None:
            values["uniqueid"] = self.call_id(file.name.uniqueid)
        try:
            await self.units(lambda connection: add_recording(connection, values))
        except IntegrityError:  # another process inserted the same key meanwhile
            log.info("recording %s was ingested by another process", file.key)
        await asyncio.to_thread(_unlink, file.path)
        log.info(
            "recording %s stored: %d bytes, %.1f s, sha256 %s",
            file.key,
            stored.size_bytes,
            info.duration_seconds,
            stored.sha256[:12],
        )
        return "stored"

    async def finished(self, path: str) -> str:
        """A PBX that does not rename its own files (FreeSWITCH, at ``RECORD_STOP``) says this one
        is closed: ``<stem>.recording.wav`` in our spool becomes ``<stem>.wav`` for the next pass.
        Anything else (another folder, another name, a file already gone) is left alone."""
        outcome = await asyncio.to_thread(_finish, self.spool, Path(path))
        self.counters[f"finished_{outcome}"] += 1
        if outcome == "not-ours":
            log.warning("a recording outside the spool or not of our naming, left alone: %s", path)
        return outcome

    async def finish_stopped(self, live_calls: set[str]) -> int:
        """After a resync with FreeSWITCH: its recordings still named as being written whose
        call is no longer up stopped while the bridge was away (their RECORD_STOP never came).
        Asterisk's files are left to MixMonitor, which renames its own. Returns how many."""
        stopped = await asyncio.to_thread(_stopped_freeswitch_files, self.spool, live_calls)
        renamed = 0
        for path in stopped:
            if await self.finished(str(path)) == "renamed":
                renamed += 1
        if renamed:
            log.info("%d recordings stopped while the bridge was away are ingested now", renamed)
        return renamed

    async def run(self, every: float = 1.0) -> None:
        """Scan every ``every`` seconds until cancelled; a failed pass is retried at the next."""
        while True:
            try:
                await self.ingest_pending()
                self.counters["passes"] += 1
            except Exception:  # a full disk or a lost database: keep the files, try again
                self.counters["errors"] += 1
                log.exception("recording ingest pass failed; the spool files stay for the next")
            await asyncio.sleep(every)


def _stopped_freeswitch_files(spool: Path, live_calls: set[str]) -> list[Path]:
    stopped = []
    for path in sorted(spool.glob(f"{_DAY_FOLDERS}/*{IN_PROGRESS_SUFFIX}")):
        call_id = path.name.removesuffix(IN_PROGRESS_SUFFIX).rpartition("_")[0]
        if FREESWITCH_UUID.fullmatch(call_id) and call_id not in live_calls:
            stopped.append(path)
    return stopped


def _finish(spool: Path, path: Path) -> str:
    """``renamed``, ``missing`` (not there: already renamed, or never written) or ``not-ours``."""
    try:
        key = path.resolve().relative_to(spool.resolve()).as_posix()
    except (ValueError, OSError):
        return "not-ours"
    if not key.endswith(IN_PROGRESS_SUFFIX):
        return "not-ours"
    finished_key = key.removesuffix(IN_PROGRESS_SUFFIX) + FINISHED_SUFFIX
    try:
        parse_key(finished_key)
    except RecordingNameError:
        return "not-ours"
    try:
        os.replace(spool / key, spool / finished_key)
    except FileNotFoundError:
        return "missing"
    return "renamed"


def iter_quarantine(spool: Path) -> Iterator[Path]:
    yield from sorted((spool / QUARANTINE).glob(f"{_DAY_FOLDERS}/*.wav"))
