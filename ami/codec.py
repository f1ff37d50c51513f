"""Pure AMI framing: bytes in, header mappings out, no socket.

Asterisk sends ``Key: Value`` lines ended by ``\\r\\n`` and a blank line after each message. This
decoder keeps the bytes that have not formed a whole message yet, decodes UTF-8 incrementally (a
Chinese caller name split across two TCP reads survives), and can drop an event by its name before
the rest of the frame is parsed, which matters when four in ten frames are ``VarSet``.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

EOL = "\r\n"
FRAME_END = "\r\n\r\n"
BANNER_PREFIX = "Asterisk Call Manager/"
MAX_PENDING_CHARS = 4 * 1024 * 1024


class AmiProtocolError(ValueError):
    """The peer sent something that is not AMI (or an absurdly long frame)."""


@dataclass(frozen=True, slots=True)
class AmiMessage(Mapping[str, str]):
    """One AMI message. Header names keep Asterisk's spelling; lookups ignore case.

    A header that appears more than once (``Output``, ``ChanVariable``) keeps every value in
    ``repeated``; plain lookup answers the last one, as Asterisk's own parsers do.
    """

    headers: tuple[tuple[str, str], ...]
    _index: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {name.lower(): value for name, value in self.headers})

    def __getitem__(self, name: str) -> str:
        return self._index[name.lower()]

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for name, _ in self.headers:
            if name.lower() not in seen:
                seen.add(name.lower())
                yield name

    def __len__(self) -> int:
        return len(self._index)

    def repeated(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    @property
    def event(self) -> str | None:
        return self._index.get("event")

    @property
    def response(self) -> str | None:
        return self._index.get("response")

    @property
    def action_id(self) -> str | None:
        return self._index.get("actionid")


def parse_message(text: str) -> AmiMessage:
    """Parse one frame's text (without the blank line) into an ``AmiMessage``."""
    headers: list[tuple[str, str]] = []
    for line in text.split(EOL):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            # Command output in Asterisk < 14 came as bare lines; keep it, never crash on it.
            headers.append(("Output", line))
            continue
        headers.append((name.strip(), value.removeprefix(" ")))
    return AmiMessage(tuple(headers))


def event_name_of(text: str) -> str | None:
    """The ``Event:`` of a frame when it is the first header, found without parsing the rest."""
    if not text.startswith("Event:"):
        return None
    end = text.find(EOL)
    return (text[6:] if end < 0 else text[6:end]).strip()


class AmiFrameDecoder:
    """Incremental decoder: ``feed(bytes)`` returns the whole messages completed by those bytes.

    ``keep_event`` decides from the event name alone whether a frame is worth parsing; responses
    and unnamed frames are always kept because actions wait for them.
    """

    def __init__(self, keep_event: Callable[[str], bool] | None = None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._keep_event = keep_event
        self.banner: str | None = None
        self.dropped = 0

    def feed(self, chunk: bytes) -> list[AmiMessage]:
        self._pending += self._decoder.decode(chunk)
        if self.banner is None and self._take_banner() is None:
            return []
        messages: list[AmiMessage] = []
        while True:
            end = self._pending.find(FRAME_END)
            if end < 0:
                break
            text = self._pending[:end]
            self._pending = self._pending[end + len(FRAME_END) :]
            text = text.lstrip(EOL)
            if not text:
                continue
            name = event_name_of(text)
            if name is not None and self._keep_event is not None and not self._keep_event(name):
                self.dropped += 1
                continue
            messages.append(parse_message(text))
        if len(self._pending) > MAX_PENDING_CHARS:
            raise AmiProtocolError(f"AMI frame longer than {MAX_PENDING_CHARS} characters")
        return messages

    def _take_banner(self) -> str | None:
        """Consume the greeting line Asterisk sends before any message."""
        end = self._pending.find(EOL)
        if end < 0:
            if len(self._pending) > 256:
                raise AmiProtocolError("peer sent no AMI greeting")
            return None
        line = self._pending[:end]
        if not line.startswith(BANNER_PREFIX):
            raise AmiProtocolError(f"not an AMI greeting: {line[:80]!r}")
        self.banner = line
        self._pending = self._pending[end + len(EOL) :]
        return line


def encode_action(name: str, headers: Mapping[str, str | int | list[str]], action_id: str) -> bytes:
    """Encode an action; a CR or LF in any value is refused (it would inject AMI headers)."""
    lines = [f"Action: {name}", f"ActionID: {action_id}"]
    for key, value in headers.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            text = str(item)
            if "\r" in text or "\n" in text or "\r" in key or "\n" in key:
                raise AmiProtocolError(f"line break in AMI header {key!r}")
            lines.append(f"{key}: {text}")
    return (EOL.join(lines) + FRAME_END).encode("utf-8")
