"""The replay shell: a recorded AMI wire transcript fed to the same sink as the live connection.

Transcripts are read as bytes and pushed through the very decoder the live socket uses. Recorded
sessions often lack ``Timestamp`` headers, so the replay clock follows the channel creation time
Asterisk encodes in each new ``Uniqueid`` (epoch seconds), never going backwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ami.codec import AmiFrameDecoder, AmiMessage, decode_recording

READ_CHUNK = 64 * 1024


def read_transcript(
    path: Path, keep_event: Callable[[str], bool] | None = None
) -> Iterator[AmiMessage]:
    """Every message of a transcript, decoded exactly as the live socket decodes them."""
    yield from decode_recording(path.read_bytes(), keep_event)


def read_transcript_by_chunks(
    path: Path, keep_event: Callable[[str], bool] | None = None
) -> Iterator[AmiMessage]:
    """The same through the live decoder, a socket read at a time (what ``read_transcript``
    must equal)."""
    decoder = AmiFrameDecoder(keep_event)
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            yield from decoder.feed(chunk)


class ReplayClock:
    """Session time of the message being replayed, from ``Timestamp`` or a new ``Uniqueid``."""

    def __init__(self) -> None:
        self.now: datetime | None = None

    def current(self) -> datetime:
        return self.now if self.now is not None else datetime.now(UTC)

    def seed(self, messages: Iterable[AmiMessage]) -> None:
        """Start at the transcript's first timed frame, so no frame is timed by the wall clock."""
        if self.now is None:
            self.now = next((t for t in map(_time_in, messages) if t is not None), None)

    def advance(self, message: AmiMessage) -> datetime:
        seen = _time_in(message)
        if seen is not None and (self.now is None or seen > self.now):
            self.now = seen
        return self.current()


def _time_in(message: AmiMessage) -> datetime | None:
    headers = message.as_sent
    raw = headers.get("Timestamp")
    if raw is None and headers.get("Event") == "Newchannel":
        raw = headers.get("Uniqueid", "").split(".", 1)[0]
    try:
        return datetime.fromtimestamp(float(raw), tz=UTC) if raw else None
    except (ValueError, OverflowError):
        return None


async def replay(
    path: Path,
    sink: Callable[[AmiMessage], None],
    clock: ReplayClock,
    *,
    keep_event: Callable[[str], bool] | None = None,
    speed: float = 0.0,
    messages: Sequence[AmiMessage] | None = None,
) -> int:
    """Feed ``path`` to ``sink``; ``speed`` 1.0 is real time, 0 is as fast as possible.

    Returns how many messages were fed. The file is read in a thread so a large transcript never
    stalls the event loop; ``messages`` are its frames when the caller has read them already.
    """
    if messages is None:
        messages = await asyncio.to_thread(lambda: list(read_transcript(path, keep_event)))
    clock.seed(messages)
    previous: datetime | None = None
    for count, message in enumerate(messages, start=1):
        at = clock.advance(message)
        if speed > 0 and previous is not None and at > previous:
            await asyncio.sleep((at - previous).total_seconds() / speed)
        previous = at
        sink(message)
        if count % 200 == 0:
            await asyncio.sleep(0)
    return len(messages)
