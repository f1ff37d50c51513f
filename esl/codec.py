"""Pure FreeSWITCH Event Socket framing: bytes in, frames and events out, no socket.

What the recorded FreeSWITCH 1.11 sessions taught (see ``tests/fixtures/esl/``):

- A frame is a block of ``Name: value`` lines ended by a blank line, then ``Content-Length``
  bytes of body when that header is there. The order of the outer headers is not fixed
  (events put ``Content-Length`` first, ``api/response`` puts it second) and ``command/reply``
  and ``auth/request`` have none at all.
- Framing is done on bytes, never on text: a UTF-8 caller name split across two TCP reads is
  only decoded once its frame is whole.
- In an ``event plain`` body, header values are URL-encoded (``%E5%B8%82`` for 市) and names
  are not; a body of the event's own (a background job's result) follows its headers after an
  inner ``Content-Length`` and a blank line, raw.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

MAX_HEADER_BYTES = 256 * 1024  # an outbound connect reply is ~170 headers, about 10 KB
MAX_BODY_BYTES = 64 * 1024 * 1024  # a whole-table api reply on a large centre


class EslProtocolError(ValueError):
    """The peer sent something that is not the Event Socket (or an absurdly large frame)."""


@dataclass(frozen=True, slots=True)
class EslFrame:
    """One frame as sent: its outer headers (as they came) and its raw body."""

    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


def _header_lines(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", errors="replace").splitlines():
        name, colon, value = line.partition(":")
        if not colon:
            raise EslProtocolError(f"not a header line: {line[:80]!r}")
        headers[name.strip()] = value.strip()
    return headers


class EslFrameDecoder:
    """Feed it bytes as they arrive; it yields each frame once the whole frame is there."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._head: dict[str, str] | None = None
        self._wanted = 0
        self._searched = 0  # bytes of a header block already searched for its end

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def feed(self, chunk: bytes) -> Iterator[EslFrame]:
        self._pending += chunk
        while True:
            if self._head is None:
                start = 0
                while self._pending[start : start + 1] == b"\n":  # stray blank lines
                    start += 1
                end = self._pending.find(b"\n\n", max(start, self._searched - 1))
                if end < 0:
                    if len(self._pending) - start > MAX_HEADER_BYTES:
                        raise EslProtocolError("a header block longer than 256 KB")
                    del self._pending[:start]
                    self._searched = len(self._pending)
                    return
                self._searched = 0
                head = _header_lines(bytes(self._pending[start:end]))
                del self._pending[: end + 2]
                length = head.get("Content-Length", "0")
                if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                    raise EslProtocolError(f"unusable Content-Length {length[:20]!r}")
                self._head, self._wanted = head, int(length)
            if len(self._pending) < self._wanted:
                return
            body = bytes(self._pending[: self._wanted])
            del self._pending[: self._wanted]
            head, self._head, self._wanted = self._head, None, 0
            yield EslFrame(head, body)


@dataclass(frozen=True, slots=True)
class EslEvent:
    """One ``text/event-plain`` event: URL-decoded headers and the event's own raw body."""

    headers: Mapping[str, str]
    body: bytes = field(default=b"", repr=False)

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    @property
    def subclass(self) -> str:
        return self.headers.get("Event-Subclass", "")

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    @property
    def timestamp_us(self) -> int | None:
        """``Event-Date-Timestamp``: microseconds since the epoch, from a clock that ticks
        about every 20 ms, and stamped when the event was created, not when it was sent."""
        value = self.headers.get("Event-Date-Timestamp", "")
        return int(value) if value.isdigit() else None

    @property
    def sequence(self) -> int | None:
        """``Event-Sequence``: not monotonic on the wire and with gaps; an id, not an order."""
        value = self.headers.get("Event-Sequence", "")
        return int(value) if value.isdigit() else None


def parse_event(body: bytes) -> EslEvent:
    """The event in a ``text/event-plain`` frame's body."""
    end = body.find(b"\n\n")
    block, rest = (body, b"") if end < 0 else (body[:end], body[end + 2 :])
    headers: dict[str, str] = {}
    for raw in block.split(b"\n"):
        if not raw:
            continue
        name, colon, value = raw.partition(b":")
        if not colon:
            raise EslProtocolError(f"not an event header: {raw[:80]!r}")
        # Percent-decoding to bytes first, then UTF-8: one character may span several escapes.
        headers[name.decode("ascii", errors="replace").strip()] = unquote(
            value.strip().decode("utf-8", errors="replace"), encoding="utf-8", errors="replace"
        )
    inner = headers.get("Content-Length")
    if inner is not None:
        if not inner.isdigit() or int(inner) > len(rest):
            raise EslProtocolError(f"an event body shorter than its Content-Length {inner!r}")
        return EslEvent(headers, rest[: int(inner)])
    return EslEvent(headers)


def events_in(frames: Iterator[EslFrame] | list[EslFrame]) -> Iterator[EslEvent]:
    """The events among ``frames`` (replies, notices and other formats are left out)."""
    for frame in frames:
        if frame.content_type == "text/event-plain":
            yield parse_event(frame.body)
