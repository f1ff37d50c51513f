"""The spool-to-store walk: every step interrupted once, then the next pass finishes the job."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

import recording.ingest as ingest_module
from infra.storage import Transactions, create_engine, transactions_for
from recording.db import recordings_of
from recording.ingest import QUARANTINE, RecordingIngest, list_spool
from recording.naming import RecordingName
from recording.store import DirectoryStore
from recording.wav import wav_header

DAY = date(2026, 12, 2)


@dataclass
class Bed:
    spool: Path
    store: DirectoryStore
    units: Transactions

    def ingest(self) -> RecordingIngest:
        return RecordingIngest(self.spool, self.store, self.units)

    def spool_file(self, uniqueid: str, ticket: str | None, body: bytes) -> Path:
        path = self.spool / RecordingName(DAY, uniqueid, ticket).key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return path

    async def rows(self, uniqueid: str | None = None) -> list:
        return await self.units(lambda connection: recordings_of(connection, uniqueid=uniqueid))


def speech(seconds: float) -> bytes:
    data = bytes(range(256)) * int(seconds * 16000 / 256)
    return wav_header(8000, len(data)) + data


@pytest.fixture
async def bed(tmp_path: Path, database: str) -> AsyncIterator[Bed]:
    engine = create_engine(database)
    units = transactions_for(engine)
    yield Bed(tmp_path / "spool", DirectoryStore(tmp_path / "store"), units)
    await units.close()
    await engine.dispose()


async def test_finished_files_are_stored_hashed_and_removed_from_the_spool(bed: Bed) -> None:
    body = speech(4)
    bed.spool_file("1796215475.1", "12345-20261202-000001", body)
    bed.spool_file("1796215475.2", None, speech(2))
    outcomes = await bed.ingest().ingest_pending()
    assert outcomes == {"stored": 2}
    [first] = await bed.rows("1796215475.1")
    assert first.key == "2026/12/02/1796215475.1_12345-20261202-000001.wav"
    assert first.ticket == "12345-20261202-000001"
    assert first.sha256 == hashlib.sha256(body).hexdigest()
    assert (first.size_bytes, first.duration_seconds) == (len(body), pytest.approx(4, abs=0.02))
    assert first.format == "wav/pcm/8000/1/16"
    assert bed.store.stat(first.key).sha256 == first.sha256
    assert list_spool(bed.spool).finished == []


async def test_files_still_being_written_and_foreign_files_are_left_alone(bed: Bed) -> None:
    name = RecordingName(DAY, "1796215475.3", None)
    writing = bed.spool / name.in_progress_key
    writing.parent.mkdir(parents=True)
    writing.write_bytes(wav_header(8000, 0))
    foreign = writing.with_name("notes.wav")
    foreign.write_bytes(b"x")
    outcomes = await bed.ingest().ingest_pending()
    assert outcomes == {}
    assert writing.exists() and foreign.exists()
    listing = list_spool(bed.spool)
    assert (listing.in_progress, listing.foreign) == (1, [foreign])


async def test_a_header_only_file_of_an_unbridged_call_is_dropped(bed: Bed) -> None:
    path = bed.spool_file("1796215475.4", None, wav_header(8000, 0))
    assert await bed.ingest().ingest_pending() == {"no-audio": 1}
    assert not path.exists() and await bed.rows() == []


@pytest.mark.parametrize(
    "body, reason",
    [
        (speech(2)[:-1000], "cut"),  # the header promises more than the file holds
        (b"ID3\x04 an mp3 someone dropped here", "not a WAV"),
        (wav_header(8000, 0) + b"\x00" * 32000, "not closed"),  # Asterisk never patched it
    ],
)
async def test_a_damaged_file_is_quarantined_with_its_reason_never_deleted(
    bed: Bed, body: bytes, reason: str
) -> None:
    bed.spool_file("1796215475.5", None, body)
    good = bed.spool_file("1796215475.6", None, speech(1))
    outcomes = await bed.ingest().ingest_pending()
    assert outcomes == {"quarantined": 1, "stored": 1}
    kept = bed.spool / QUARANTINE / "2026/12/02/1796215475.5_none.wav"
    assert kept.read_bytes() == body
    assert reason in kept.with_name(kept.name + ".reason").read_text()
    assert not good.exists()
    assert [r.uniqueid for r in await bed.rows()] == ["1796215475.6"]
    assert await bed.ingest().ingest_pending() == {}  # quarantine is not scanned again


class Crash(Exception):
    """The process died here."""


async def test_a_crash_after_the_copy_before_the_row_is_finished_by_the_next_pass(
    bed: Bed,
) -> None:
    body = speech(3)
    path = bed.spool_file("1796215475.7", "T-7", body)
    units_run = 0

    async def dies_on_insert(work):  # type: ignore[no-untyped-def]
        nonlocal units_run
        units_run += 1
        if units_run == 2:  # the first unit looks the key up, the second inserts the row
            raise Crash
        return await bed.units(work)

    with pytest.raises(Crash):
        await RecordingIngest(bed.spool, bed.store, dies_on_insert).ingest_pending()
    key = "2026/12/02/1796215475.7_T-7.wav"
    assert path.exists() and bed.store.size(key) == len(body) and await bed.rows() == []

    assert await bed.ingest().ingest_pending() == {"stored": 1}
    assert [r.sha256 for r in await bed.rows()] == [hashlib.sha256(body).hexdigest()]
    assert not path.exists()


async def test_a_crash_after_the_row_before_the_unlink_is_not_ingested_twice(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = bed.spool_file("1796215475.8", None, speech(2))

    def dies(_path: Path) -> None:
        raise Crash

    monkeypatch.setattr(ingest_module, "_unlink", dies)
    with pytest.raises(Crash):
        await bed.ingest().ingest_pending()
    monkeypatch.undo()
    assert path.exists() and len(await bed.rows()) == 1

    assert await bed.ingest().ingest_pending() == {"already-stored": 1}
    assert not path.exists() and len(await bed.rows()) == 1


async def test_a_copy_cut_short_by_a_crash_is_redone_whole(bed: Bed) -> None:
    body = speech(2)
    bed.spool_file("1796215475.9", None, body)
    partial = bed.store.root / ".incoming" / "1796215475.9_none.wav.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(body[:1000])  # what a crash in the middle of a put leaves
    assert await bed.ingest().ingest_pending() == {"stored": 1}
    [row] = await bed.rows()
    assert bed.store.stat(row.key).sha256 == hashlib.sha256(body).hexdigest()
    assert not partial.exists()


FS_UUID = "dd7e65a2-f61e-4284-b3fd-a2e3fd13b77d"


async def test_a_freeswitch_recording_is_renamed_at_record_stop_then_ingested(bed: Bed) -> None:
    """FreeSWITCH writes ``<uuid>_<ticket>.recording.wav`` (the queue's record-template) and
    renames nothing; its RECORD_STOP path is what the bridge renames for the ingest."""
    writing = bed.spool / f"2026/12/02/{FS_UUID}_12345-20261202-000007.recording.wav"
    writing.parent.mkdir(parents=True)
    writing.write_bytes(speech(3))
    ingest = bed.ingest()
    assert await ingest.ingest_pending() == {}  # still being written: left alone
    assert await ingest.finished(str(writing)) == "renamed"
    assert await ingest.ingest_pending() == {"stored": 1}
    [row] = await bed.rows(FS_UUID)
    assert row.ticket == "12345-20261202-000007"
    assert await ingest.finished(str(writing)) == "missing"  # a second RECORD_STOP: nothing


async def test_a_record_stop_path_outside_the_spool_or_our_names_is_left_alone(
    bed: Bed, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere" / f"{FS_UUID}_none.recording.wav"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(speech(1))
    theirs = bed.spool / "2026/12/02/20261207-100914_hotline_139_x.wav"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(speech(1))
    ingest = bed.ingest()
    escape = bed.spool / "2026/12/02/../../../../elsewhere" / elsewhere.name
    for path in (elsewhere, theirs, escape, bed.spool / "2026/12/02/caller's name.recording.wav"):
        assert await ingest.finished(str(path)) == "not-ours"
    assert elsewhere.exists() and theirs.exists()


async def test_freeswitch_recordings_stopped_while_the_bridge_was_away_are_finished_at_resync(
    bed: Bed,
) -> None:
    """Their RECORD_STOP was missed; at the next login the calls that are no longer up say
    which files are closed. A live call's file, and Asterisk's (MixMonitor renames its own),
    are left alone."""
    day = bed.spool / "2026/12/02"
    day.mkdir(parents=True)
    live_uuid = "11111111-2222-3333-4444-555555555555"
    stopped = day / f"{FS_UUID}_12345-20261202-000008.recording.wav"
    still_up = day / f"{live_uuid}_none.recording.wav"
    asterisk = day / "1796215475.9_none.recording.wav"
    for path in (stopped, still_up, asterisk):
        path.write_bytes(speech(1))
    ingest = bed.ingest()
    assert await ingest.finish_stopped({live_uuid}) == 1
    assert await ingest.ingest_pending() == {"stored": 1}
    assert still_up.exists() and asterisk.exists() and not stopped.exists()


async def test_two_named_pbxs_keep_their_own_recordings_of_the_same_uniqueid(
    bed: Bed, tmp_path: Path
) -> None:
    """Two Asterisks hand out the same uniqueids: with no ticket, the names in their spools are
    equal, and in one store the second would overwrite the first."""
    west_body, east_body = speech(2), speech(3)
    bed.spool_file("1796215475.7", None, west_body)
    east = Bed(tmp_path / "east-spool", bed.store, bed.units)
    east.spool_file("1796215475.7", None, east_body)
    for spool, name in ((bed.spool, "west"), (east.spool, "east")):
        ingest = RecordingIngest(
            spool, bed.store, bed.units, call_id=lambda own, n=name: f"{n}/{own}", pbx=name
        )
        assert await ingest.ingest_pending() == {"stored": 1}
    rows = {row.uniqueid: row for row in await bed.rows()}
    assert set(rows) == {"west/1796215475.7", "east/1796215475.7"}
    assert rows["east/1796215475.7"].key == "east/2026/12/02/1796215475.7_none.wav"
    for row, body in (
        (rows["west/1796215475.7"], west_body),
        (rows["east/1796215475.7"], east_body),
    ):
        assert bed.store.stat(row.key).sha256 == hashlib.sha256(body).hexdigest()
    assert sorted(bed.store.keys()) == sorted(row.key for row in rows.values())
