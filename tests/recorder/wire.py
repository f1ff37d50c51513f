"""A raw AMI session that keeps every byte Asterisk sends, exactly as received.

The transcript is the socket's byte stream: the banner line, then frames of ``Key: Value``
lines ending in ``\\r\\n`` and separated by an empty line.  Frames are also decoded (UTF-8,
for matching only) so the recorder can wait for responses and events; the bytes that get
saved are never re-encoded.  ``tests/integration/conftest.py`` builds its ``AmiSession``
on the same class.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

FRAME_END = b"\r\n\r\n"
Message = dict[str, str]


class AmiWireError(RuntimeError):
    pass


def parse_frame(frame: bytes) -> Message:
    """``Key: Value`` lines to a dict (a repeated key keeps its first value)."""
    message: Message = {}
    for line in frame.decode("utf-8", errors="replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep and key not in message:
            message[key.strip()] = value.strip()
    return message


class WireRecorder:
    """Logs in, records the byte stream and lets the caller wait for frames.

    ``frames`` holds (end offset in ``raw``, parsed frame) for every frame; ``on_frame``,
    when set, is called with each frame's bytes (without the empty line) and its parse.
    """

    def __init__(self, host: str, port: int, username: str, secret: str) -> None:
        self.host, self.port, self.username, self.secret = host, port, username, secret
        self.raw = bytearray()
        self.frames: list[tuple[int, Message]] = []
        self.on_frame: Callable[[bytes, Message], None] | None = None
        self._scan = 0
        self._banner_end = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._closed: BaseException | None = None
        self._ids: dict[str, int] = {}

    @property
    def banner(self) -> str:
        return self.raw[: self._banner_end].decode("utf-8", errors="replace").strip()

    async def connect(self, timeout: float = 10.0) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout
        )
        self._task = asyncio.create_task(self._read_loop())
        await self.wait(lambda: self._banner_end > 0, timeout, "the AMI banner")
        if not self.raw.startswith(b"Asterisk Call Manager/"):
            await self.close()
            raise AmiWireError(f"unexpected AMI banner {bytes(self.raw[:60])!r}")
        response = await self.action(
            "Login", "login", timeout=timeout,
            Username=self.username, Secret=self.secret, Events="on",
        )  # fmt: skip
        if response.get("Response") != "Success":
            await self.close()
            raise AmiWireError(f"AMI login as {self.username!r} failed: {response}")

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while chunk := await self._reader.read(65536):
                self.raw += chunk
                self._split()
                self._changed.set()
            self._closed = AmiWireError("AMI connection closed by Asterisk")
        except (ConnectionError, OSError) as error:
            self._closed = error
        finally:
            self._changed.set()

    def _split(self) -> None:
        if self._banner_end == 0:
            end = self.raw.find(b"\r\n")
            if end < 0:
                return
            self._banner_end = self._scan = end + 2
        while (end := self.raw.find(FRAME_END, self._scan)) >= 0:
            frame = bytes(self.raw[self._scan : end])
            self._scan = end + len(FRAME_END)
            message = parse_frame(frame)
            self.frames.append((self._scan, message))
            if self.on_frame is not None:
                self.on_frame(frame, message)

    async def wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            if self._closed is not None:
                raise AmiWireError(f"AMI closed while waiting for {what}: {self._closed!r}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within {timeout}s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def find(self, since: int = 0, **match: str) -> tuple[int, Message] | None:
        """First frame (index >= since) whose headers equal ``match``; (end offset, frame)."""
        for offset, message in self.frames[since:]:
            if all(message.get(k) == v for k, v in match.items()):
                return offset, message
        return None

    def next_action_id(self, prefix: str) -> str:
        self._ids[prefix] = self._ids.get(prefix, 0) + 1
        return f"{prefix}-{self._ids[prefix]}"

    async def send(self, name: str, prefix: str, **headers: Any) -> str:
        """Send an action (a list or tuple value repeats its header); returns its ActionID."""
        if self._writer is None:
            raise AmiWireError("not connected")
        action_id = self.next_action_id(prefix)
        lines = [f"Action: {name}", f"ActionID: {action_id}"]
        for key, value in headers.items():
            values = value if isinstance(value, list | tuple) else [value]
            lines.extend(f"{key}: {item}" for item in values)
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        await self._writer.drain()
        return action_id

    def _response(self, since: int, action_id: str) -> Message | None:
        # Some events carry a "Response" header too (OriginateResponse): skip events.
        for _, message in self.frames[since:]:
            if message.get("ActionID") == action_id and "Event" not in message:
                return message
        return None

    async def action(
        self, name: str, prefix: str, timeout: float = 10.0, **headers: Any
    ) -> Message:
        """Send an action and return its response frame."""
        since = len(self.frames)
        action_id = await self.send(name, prefix, **headers)
        await self.wait(
            lambda: self._response(since, action_id) is not None, timeout, f"the {name} response"
        )
        response = self._response(since, action_id)
        assert response is not None
        return response

    async def list_action(
        self, name: str, prefix: str, timeout: float = 10.0, **headers: Any
    ) -> tuple[Message, list[tuple[int, Message]]]:
        """Send a list action (QueueStatus, QueueSummary ...): its response and its events
        as (end offset, event), the last being the ``EventList: Complete`` one (no events
        when the response is not a success)."""
        since = len(self.frames)
        action_id = await self.send(name, prefix, **headers)
        match = {"ActionID": action_id, "EventList": "Complete"}
        await self.wait(
            lambda: self._response(since, action_id) is not None, timeout, f"the {name} response"
        )
        response = self._response(since, action_id)
        assert response is not None
        if response.get("Response") != "Success":
            return response, []
        await self.wait(
            lambda: self.find(since, **match) is not None, timeout, f"the end of {name}"
        )
        events = []
        for offset, message in self.frames[since:]:
            if message.get("ActionID") == action_id and "Event" in message:
                events.append((offset, message))
                if message.get("EventList") == "Complete":
                    break
        return response, events

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
