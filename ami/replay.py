"""The replay shell: a recorded AMI wire transcript fed to the same sink as the live connection.

Transcripts are read as bytes and pushed through the very decoder the live socket uses. Recorded
sessions often lack ``Timestamp`` headers, so the replay clock follows the channel creation time
Asterisk encodes in each new ``Uniqueid`` (epoch seconds), never going backwards.
"""

from __future__ import annotations

import itertools
import mmap
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ami.codec import AmiFrameDecoder, AmiMessage, read_recording

READ_CHUNK = 64 * 1024


def read_transcript(
    path: Path, keep_event: Callable[[str], bool] | None = None, *, mapped: bool = False
) -> Iterator[AmiMessage]:
    """Every message of a transcript, decoded exactly as the live socket decodes them.

    ``mapped``: map the file into memory instead of copying it in, for a replay that is a whole
    process (``hotline replay``): a day's transcript is tens of megabytes. Not for a service
    that must outlive the file: one cut short while mapped kills the process (SIGBUS).
    """
    if not mapped:
        yield from read_recording(path.read_bytes(), keep_event)
        return
    with path.open("rb") as handle:
        try:
            data: bytes | mmap.mmap = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # an empty file, or one that cannot be mapped
            data = handle.read()
    # Left to be unmapped when the last message is read: closing it while the decoder's
    # search still holds the buffer would fail.
    yield from read_recording(data, keep_event)


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

    def seeded(self, messages: Iterable[AmiMessage]) -> Iterator[AmiMessage]:
        """``messages`` again, the clock seeded now as ``seed`` does: only the messages up to
        the first timed one are read ahead, so a long transcript is never held whole."""
        remaining = iter(messages)
        held = []
        if self.now is None:
            for message in remaining:
                held.append(message)
                self.now = _time_in(message)
                if self.now is not None:
                    break
        return itertools.chain(held, remaining)

    def advance(self, message: AmiMessage) -> datetime:
        seen = _time_in(message)
        if seen is not None and (self.now is None or seen > self.now):
            self.now = seen
        return self.now if self.now is not None else datetime.now(UTC)


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
    import asyncio  # here, not with the module: ``hotline replay`` runs no event loop

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
