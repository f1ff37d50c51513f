"""The ESL replay shell: a recorded Event Socket transcript fed to the same pipeline as AMI's.

A transcript is every byte FreeSWITCH sent on an inbound connection (``.esl``, or gzipped
``.esl.gz``), read through the very decoder a live connection uses.

The decoder and the translator are imported where they are used: ``hotline replay`` asks
``is_esl_transcript`` of every transcript, AMI ones too, and should not load them for those.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from esl.codec import EslEvent
    from queue_stats.calls import CallRecord
    from queue_stats.pipeline import EventPipeline

READ_CHUNK = 64 * 1024
TRANSCRIPT_START = b"Content-Type: auth/request"


def _open(path: Path) -> IO[bytes] | gzip.GzipFile:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def is_esl_transcript(path: Path) -> bool:
    """Whether ``path`` holds an Event Socket transcript (it opens with the auth request)."""
    with _open(path) as handle:
        return handle.read(len(TRANSCRIPT_START)) == TRANSCRIPT_START


def read_transcript(path: Path) -> Iterator[EslEvent]:
    """Every event of a transcript, decoded exactly as the live socket decodes them."""
    from esl.codec import EslFrameDecoder, events_in

    decoder = EslFrameDecoder()
    with _open(path) as handle:
        while chunk := handle.read(READ_CHUNK):
            yield from events_in(decoder.feed(chunk))


class EslClock:
    """The session time of the event being replayed; it never goes backwards (FreeSWITCH stamps
    events when it creates them, so the wire order is not quite the time order)."""

    def __init__(self) -> None:
        from esl.callcenter import event_time

        self.now: datetime | None = None
        self._event_time = event_time

    def current(self) -> datetime:
        return self.now if self.now is not None else datetime.now(UTC)

    def advance(self, event: EslEvent) -> datetime:
        if event.timestamp_us is not None:
            seen = self._event_time(event)
            if self.now is None or seen > self.now:
                self.now = seen
        return self.current()


def replay_esl_file(path: Path, pipeline: EventPipeline, clock: EslClock) -> list[CallRecord]:
    """Feed a recorded ESL transcript through ``pipeline`` at full speed; returns finished calls."""
    from esl.callcenter import CallcenterTranslator

    translator = CallcenterTranslator()
    finished: list[CallRecord] = []
    for event in read_transcript(path):
        clock.advance(event)
        for fact in translator.translate(event):
            finished += pipeline.apply(fact)[0]
    return finished
