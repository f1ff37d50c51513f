"""Recording file names: one scheme, chosen here and mirrored by the dialplan.

A name is ``YYYY/MM/DD/<uniqueid>_<ticket>.wav`` under the spool and under the store; in the
store of a hotline whose PBXs are named, ``<pbx>/YYYY/MM/DD/...``: two Asterisks hand out the
same uniqueids, and a call with no ticket would otherwise overwrite the other PBX's file. Only
the PBX's call id (Asterisk's uniqueid, FreeSWITCH's channel uuid) and the bridge's ticket number
go into it, both reduced to safe characters, so no caller-controlled text ever reaches a path or
a post-recording command. While the PBX writes, the file is ``<stem>.recording.wav``; the rename
to ``<stem>.wav`` is the sign that it is closed: MixMonitor's post-recording command does it on
Asterisk, the bridge does it on FreeSWITCH when ``RECORD_STOP`` comes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import PurePosixPath

from pbx.naming import NAME_PATTERN

IN_PROGRESS_SUFFIX = ".recording.wav"
FINISHED_SUFFIX = ".wav"
NO_TICKET = "none"

# Asterisk's uniqueid (1764666000.42, maybe after a system name), or FreeSWITCH's channel uuid.
FREESWITCH_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ASTERISK_UNIQUEID = re.compile(r"[A-Za-z0-9_-]{0,40}[0-9]{1,20}\.[0-9]{1,10}")
_UNIQUEID = re.compile(f"{ASTERISK_UNIQUEID.pattern}|{FREESWITCH_UUID.pattern}")
_TICKET = re.compile(r"[0-9A-Za-z-]{1,40}")
_DAY_PARTS = (re.compile(r"[0-9]{4}"), re.compile(r"[0-9]{2}"), re.compile(r"[0-9]{2}"))


class RecordingNameError(ValueError):
    """A path that is not one of our recording names (it is left alone, never guessed at)."""


@dataclass(frozen=True, slots=True)
class RecordingName:
    day: date
    uniqueid: str
    ticket: str | None
    pbx: str = ""  # the PBX's name, in the store of a hotline whose PBXs are named

    def __post_init__(self) -> None:
        if self.pbx and not NAME_PATTERN.fullmatch(self.pbx):
            raise RecordingNameError(f"not a PBX name: {self.pbx[:40]!r}")
        if not _UNIQUEID.fullmatch(self.uniqueid):
            raise RecordingNameError(f"not a call's uniqueid or uuid: {self.uniqueid[:80]!r}")
        if self.ticket is not None and (
            self.ticket == NO_TICKET or not _TICKET.fullmatch(self.ticket)
        ):
            raise RecordingNameError(f"not a ticket number: {self.ticket[:80]!r}")

    @property
    def folder(self) -> str:
        day = f"{self.day:%Y/%m/%d}"
        return f"{self.pbx}/{day}" if self.pbx else day

    @property
    def stem(self) -> str:
        return f"{self.uniqueid}_{self.ticket or NO_TICKET}"

    @property
    def key(self) -> str:
        """The finished file's path relative to the spool, and its key in the store."""
        return f"{self.folder}/{self.stem}{FINISHED_SUFFIX}"

    @property
    def in_progress_key(self) -> str:
        return f"{self.folder}/{self.stem}{IN_PROGRESS_SUFFIX}"


def parse_key(key: str) -> RecordingName:
    """``2026/12/02/1764666000.42_12345-20261202-000001.wav`` (or the same after ``<pbx>/``)
    → its parts; anything else raises."""
    parts = PurePosixPath(key).parts
    pbx = ""
    if len(parts) == 5 and NAME_PATTERN.fullmatch(parts[0]) and parts[0] not in (".", ".."):
        pbx, parts = parts[0], parts[1:]
    if len(parts) != 4 or any(
        not rule.fullmatch(p) for rule, p in zip(_DAY_PARTS, parts[:3], strict=True)
    ):
        raise RecordingNameError(f"not a recording path (YYYY/MM/DD/file): {key[:120]!r}")
    filename = parts[3]
    if not filename.endswith(FINISHED_SUFFIX) or filename.endswith(IN_PROGRESS_SUFFIX):
        raise RecordingNameError(f"not a finished recording: {key[:120]!r}")
    uniqueid, underscore, ticket = filename.removesuffix(FINISHED_SUFFIX).rpartition("_")
    if not underscore:
        raise RecordingNameError(f"no ticket part in {filename[:120]!r}")
    try:
        day = date(int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        raise RecordingNameError(f"not a calendar day: {key[:120]!r}") from None
    return RecordingName(day, uniqueid, None if ticket == NO_TICKET else ticket, pbx)


def safe_key(key: str) -> str:
    """A store key checked to stay inside the store: relative, no ``..``, our shape."""
    return parse_key(key).key
