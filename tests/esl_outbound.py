"""FreeSWITCH's side of a recorded outbound-socket connection, played against a router.

It connects as FreeSWITCH's ``socket`` application does and answers each command with what
FreeSWITCH sent in the recording (``tests/fixtures/esl/outbound-socket.raw/connN.fs2app.raw``):
the channel's data for ``connect``, ``+OK`` for ``resume`` and ``sendmsg``, ``+OK bye`` and the
disconnect notice for ``exit``. ``stall_after`` stops answering after that many commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from esl.codec import EslFrame, EslFrameDecoder

RAW = Path(__file__).parent / "fixtures" / "esl" / "outbound-socket.raw"


def _head(frame: EslFrame) -> bytes:
    """A reply frame as FreeSWITCH wrote it (its headers in order; these carry no body)."""
    return b"\n".join(f"{k}: {v}".encode() for k, v in frame.headers.items()) + b"\n\n"


def _notice(frame: EslFrame) -> bytes:
    return _head(frame)[:-1] + b"\n" + frame.body


@dataclass
class RecordedCall:
    connection: int = 1
    stall_after: int | None = None
    current_application: str | None = None  # as if the dialplan had moved on meanwhile
    commands: list[str] = field(default_factory=list)
    command_times: list[float] = field(default_factory=list)
    closed_by_router_after: float | None = None

    def __post_init__(self) -> None:
        data = (RAW / f"conn{self.connection}.fs2app.raw").read_bytes()
        frames = list(EslFrameDecoder().feed(data))
        replies = [f for f in frames if f.content_type == "command/reply"]
        connect = replies[0]
        if self.current_application is not None:
            headers = {**connect.headers, "variable_current_application": self.current_application}
            connect = EslFrame(headers, connect.body)
        self._connect = _head(connect)
        self._ok = b"Content-Type: command/reply\nReply-Text: +OK\n\n"
        bye = next((f for f in replies if f.headers.get("Reply-Text") == "+OK bye"), None)
        self._bye = _head(bye) if bye else b"Content-Type: command/reply\nReply-Text: +OK bye\n\n"
        notice = next((f for f in frames if f.content_type == "text/disconnect-notice"), None)
        self._notice = _notice(notice) if notice else b""

    async def run(self, port: int, within: float = 10.0) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        try:
            async with asyncio.timeout(within):
                while True:
                    try:
                        raw = await reader.readuntil(b"\n\n")
                    except asyncio.IncompleteReadError:
                        self.closed_by_router_after = time.monotonic() - started
                        return
                    command = raw.decode()
                    self.commands.append(command)
                    self.command_times.append(time.monotonic() - started)
                    if self.stall_after is not None and len(self.commands) > self.stall_after:
                        continue
                    verb = command.split("\n", 1)[0].strip()
                    if verb == "connect":
                        writer.write(self._connect)
                    elif verb == "exit":
                        writer.write(self._bye + self._notice)
                    else:
                        writer.write(self._ok)
                    await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
