"""A finished call as a stream entry and back: flat string fields, one JSON value per field.

The entry carries who wrote it (the PBX, the writer's lease token and its own sequence number):
a consumer writes the call only while that token is still the PBX's (``infra.leases.fence``),
and the journal's key (the call id) makes a redelivered entry harmless.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from queue_stats.calls import CallOutcome, CallRecord

_TIMES = frozenset({"started_at", "entered_queue_at", "left_queue_at", "answered_at", "ended_at",
                    "rated_at"})  # fmt: skip
_FIELDS = tuple(field.name for field in fields(CallRecord))
FORMAT = "1"


class CallEntryError(ValueError):
    """An entry that is not a call this version can read: left in the stream, never guessed."""


@dataclass(frozen=True, slots=True)
class CallEntry:
    pbx: str
    token: int
    sequence: int
    call: CallRecord


def _value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _TIMES:
        return value.isoformat()
    if name == "outcome":
        return str(value)
    return value


def encode_call(entry: CallEntry) -> dict[str, str]:
    call = entry.call
    body = {name: _value(name, getattr(call, name)) for name in _FIELDS}
    return {
        "format": FORMAT,
        "pbx": entry.pbx,
        "token": str(entry.token),
        "sequence": str(entry.sequence),
        "call": json.dumps(body, ensure_ascii=False, separators=(",", ":")),
    }


def decode_call(raw: dict[str, str]) -> CallEntry:
    if raw.get("format") != FORMAT:
        raise CallEntryError(f"unknown call entry format {raw.get('format')!r}")
    try:
        body = json.loads(raw["call"])
        values: dict[str, Any] = {}
        for name in _FIELDS:
            value = body.get(name)
            if value is not None and name in _TIMES:
                value = datetime.fromisoformat(value)
            elif value is not None and name == "outcome":
                value = CallOutcome(value)
            if name in body:
                values[name] = value
        return CallEntry(raw["pbx"], int(raw["token"]), int(raw["sequence"]), CallRecord(**values))
    except (KeyError, TypeError, ValueError) as error:
        raise CallEntryError(f"not a call entry: {error}") from None
