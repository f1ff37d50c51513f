"""WAV header reading: format, size and duration of a recording without trusting its name.

MixMonitor writes the RIFF header when it opens the file with zero sizes and patches them when it
closes it, so a header whose sizes disagree with the file is a file that was not closed (or was
cut short afterwards). Such a file is an error, never a guessed duration.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_READ_BYTES = 4096
_FORMATS = {1: "pcm", 3: "float", 6: "alaw", 7: "mulaw", 0xFFFE: "extensible"}


class WavError(ValueError):
    """Not a complete WAV file; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class WavInfo:
    codec: str
    sample_rate: int
    channels: int
    bits_per_sample: int
    data_bytes: int

    @property
    def duration_seconds(self) -> float:
        frame_bytes = self.channels * max(self.bits_per_sample // 8, 1)
        return self.data_bytes / frame_bytes / self.sample_rate

    @property
    def format(self) -> str:
        """``wav/pcm/8000/1/16``: container, codec, rate, channels, bits."""
        return f"wav/{self.codec}/{self.sample_rate}/{self.channels}/{self.bits_per_sample}"


def parse_wav_header(head: bytes, file_size: int) -> WavInfo:
    """Read the chunks at the start of a file of ``file_size`` bytes (``head`` is its beginning)."""
    if len(head) < 12 or head[0:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise WavError("not a WAV file (no RIFF/WAVE header)")
    riff_size = struct.unpack_from("<I", head, 4)[0]
    if riff_size + 8 != file_size:
        raise WavError(
            f"RIFF size says {riff_size + 8} bytes, the file has {file_size}: not closed or cut"
        )
    offset = 12
    fmt: tuple[int, int, int, int, int] | None = None
    while offset + 8 <= len(head):
        chunk_id = head[offset : offset + 4]
        chunk_size = struct.unpack_from("<I", head, offset + 4)[0]
        body = offset + 8
        if chunk_id == b"fmt ":
            if chunk_size < 16 or body + 16 > len(head):
                raise WavError("fmt chunk too short")
            codec, channels, rate, _byte_rate, _align, bits = struct.unpack_from(
                "<HHIIHH", head, body
            )
            fmt = (codec, channels, rate, bits, chunk_size)
        elif chunk_id == b"data":
            if fmt is None:
                raise WavError("data chunk before the fmt chunk")
            if body + chunk_size > file_size:
                raise WavError(
                    f"data chunk says {chunk_size} bytes, only {file_size - body} follow: truncated"
                )
            codec, channels, rate, bits, _ = fmt
            if channels < 1 or rate < 1:
                raise WavError(f"impossible format: {channels} channels at {rate} Hz")
            return WavInfo(_FORMATS.get(codec, f"0x{codec:04x}"), rate, channels, bits, chunk_size)
        offset = body + chunk_size + (chunk_size & 1)
    raise WavError("no data chunk in the first 4 KB")


def wav_header(sample_rate: int, data_bytes: int, *, channels: int = 1, bits: int = 16) -> bytes:
    """The 44-byte header MixMonitor writes for PCM; used to make test and benchmark files."""
    block_align = channels * bits // 8
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", 36 + data_bytes),
            b"WAVEfmt ",
            struct.pack(
                "<IHHIIHH",
                16,
                1,
                channels,
                sample_rate,
                sample_rate * block_align,
                block_align,
                bits,
            ),
            b"data",
            struct.pack("<I", data_bytes),
        )
    )
