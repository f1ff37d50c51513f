"""Pure AMI framing: bytes in, header mappings out, no socket.

Asterisk sends ``Key: Value`` lines ended by ``\\r\\n`` and a blank line after each message. This
decoder keeps the bytes that have not formed a whole message yet, decodes UTF-8 incrementally (a
Chinese caller name split across two TCP reads survives), and can drop an event by its name before
the rest of the frame is parsed, which matters when four in ten frames are ``VarSet``.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator, Mapping

EOL = "\r\n"
FRAME_END = "\r\n\r\n"
BANNER_PREFIX = "Asterisk Call Manager/"
MAX_PENDING_CHARS = 4 * 1024 * 1024


class AmiProtocolError(ValueError):
    """The peer sent something that is not AMI (or an absurdly long frame)."""


class AmiMessage(Mapping[str, str]):
    """One AMI message. Header names keep Asterisk's spelling; lookups ignore case.

    A header that appears more than once (``Output``, ``ChanVariable``) keeps every value in
    ``repeated``; plain lookup answers the last one, as Asterisk's own parsers do. Immutable.
    Lookups by Asterisk's own spelling are one dict access; other spellings fall back to a
    case-folded index built on first need, so the common path stays cheap.
    """

    __slots__ = ("_folded", "_lowered", "_text", "_values")
    _folded: dict[str, str] | None
    _lowered: str | None
    _text: str
    _values: dict[str, str]

    def __init__(self, text: str, values: dict[str, str]) -> None:
        object.__setattr__(self, "_text", text)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_folded", None)
        object.__setattr__(self, "_lowered", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("AmiMessage is immutable")

    def _absent(self, name: str) -> bool:
        """True when no header of any spelling has this name: a cheap C-level text search."""
        text = self._lowered
        if text is None:
            text = self._text.lower()
            object.__setattr__(self, "_lowered", text)
        lowered = name.lower()
        return not (text.startswith(lowered + ":") or f"\r\n{lowered}:" in text)

    def _fold(self) -> dict[str, str]:
        folded = self._folded
        if folded is None:
            folded = {name.lower(): value for name, value in self._values.items()}
            object.__setattr__(self, "_folded", folded)
        return folded

    def __getitem__(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:
            if self._absent(name):
                raise
            return self._fold()[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self._values.get(name)
        if value is None:
            if self._absent(name):
                return default
            return self._fold().get(name.lower(), default)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self._values or (not self._absent(name) and name.lower() in self._fold())

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AmiMessage) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)

    def __repr__(self) -> str:
        return f"AmiMessage({self._values!r})"

    @property
    def as_sent(self) -> Mapping[str, str]:
        """The headers keyed exactly as Asterisk spells them: the fast path for hot parsers."""
        return self._values

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Every header line in order, repeated ones included."""
        return tuple(_header_lines(self._text))

    def repeated(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in _header_lines(self._text) if key.lower() == wanted]

    @property
    def event(self) -> str | None:
        return self.get("Event")

    @property
    def response(self) -> str | None:
        return self.get("Response")

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")


def _header_lines(text: str) -> Iterator[tuple[str, str]]:
    for line in text.split(EOL):
        name, sep, value = line.partition(": ")
        if not sep:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                # Command output in Asterisk < 14 came as bare lines; keep it, never crash.
                name, value = "Output", line
            name = name.strip()
        yield name, value


def parse_message(text: str) -> AmiMessage:
    """Parse one frame's text (without the blank line) into an ``AmiMessage``."""
    try:
        # The shape of nearly every line Asterisk sends; one C-level pass builds the dict.
        values = dict([line.split(": ", 1) for line in text.split(EOL)])
    except ValueError:
        values = dict(_header_lines(text))
    return AmiMessage(text, values)


def event_name_of(text: str) -> str | None:
    """The ``Event:`` of a frame when it is the first header, found without parsing the rest."""
    if not text.startswith("Event:"):
        return None
    end = text.find(EOL)
    return (text[6:] if end < 0 else text[6:end]).strip()


class AmiFrameDecoder:
    """Incremental decoder: ``feed(bytes)`` returns the whole messages completed by those bytes.

    ``keep_event`` decides from the event name alone whether a frame is worth parsing; responses
    and unnamed frames are always kept because actions wait for them. While ``actions_pending``
    is set (the shell sets it when it awaits an answer), an event frame that carries an
    ``ActionID`` is kept whatever its name: it belongs to a list answer such as ``QueueStatus``.
    """

    def __init__(self, keep_event: Callable[[str], bool] | None = None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._keep_event = keep_event
        self.banner: str | None = None
        self.dropped = 0
        self.actions_pending = False

    def feed(self, chunk: bytes) -> list[AmiMessage]:
        self._pending += self._decoder.decode(chunk)
        if self.banner is None and self._take_banner() is None:
            return []
        messages: list[AmiMessage] = []
        *frames, self._pending = self._pending.split(FRAME_END)
        keep = self._keep_event
        dropped = 0
        for text in frames:
            if keep is not None and text[:7] == "Event: ":
                # The hot path: Asterisk's own spelling, name read without parsing the frame.
                end = text.find(EOL, 7)
                if not keep(text[7:end] if end > 0 else text[7:]) and not (
                    self.actions_pending and "\r\nActionID:" in text
                ):
                    dropped += 1
                    continue
            elif text[:2] == EOL or text[:6] == "Event:":
                text = text.lstrip(EOL)
                if not text:
                    continue
                name = event_name_of(text)
                if (
                    keep is not None
                    and name is not None
                    and not keep(name)
                    and not (self.actions_pending and "\r\nActionID:" in text)
                ):
                    dropped += 1
                    continue
            elif not text:
                continue
            messages.append(parse_message(text))
        self.dropped += dropped
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


def decode_recording(
    data: bytes, keep_event: Callable[[str], bool] | None = None
) -> list[AmiMessage]:
    """A whole recorded transcript at once: the messages ``AmiFrameDecoder.feed`` would give for
    the same bytes (greeting, frames, name filter), found on the bytes before any decoding.

    Why: ``hotline replay`` of a day's recording (139,000 frames) spent most of its time turning
    57 MB into text and splitting it, for the 1 frame in 5 the pipeline keeps. A frame break is
    ASCII, which never occurs inside a UTF-8 sequence, so splitting the bytes gives the same
    frames; only kept frames are decoded. A last frame without its blank line is left out, as
    the live decoder keeps it waiting."""
    end = data.find(b"\r\n")
    if end < 0:
        raise AmiProtocolError("peer sent no AMI greeting")
    greeting = data[:end].decode("utf-8", "replace")
    if not greeting.startswith(BANNER_PREFIX):
        raise AmiProtocolError(f"not an AMI greeting: {greeting[:80]!r}")
    frames = data[end + 2 :].split(FRAME_END.encode())
    if max(map(len, frames)) > MAX_PENDING_CHARS:
        raise AmiProtocolError(f"AMI frame longer than {MAX_PENDING_CHARS} characters")
    del frames[-1]
    # Each frame's first line, and what it means: kept or dropped by name (an "Event: " line),
    # or None for the rare others, which take the live decoder's general rules.
    first_lines = [frame.split(b"\r\n", 1)[0] for frame in frames]
    verdicts: dict[bytes, bool | None] = {}
    for line in set(first_lines):
        if line[:7] == b"Event: ":
            verdicts[line] = keep_event is None or keep_event(line[7:].decode("utf-8", "replace"))
        else:
            verdicts[line] = None
    messages: list[AmiMessage] = []
    for raw, kept in zip(frames, map(verdicts.__getitem__, first_lines), strict=True):
        if kept is False:
            continue
        text = raw.decode("utf-8", "replace")
        if kept is None:
            if text[:2] == EOL or text[:6] == "Event:":
                text = text.lstrip(EOL)
                if not text:
                    continue
                named = event_name_of(text)
                if keep_event is not None and named is not None and not keep_event(named):
                    continue
            elif not text:
                continue
        messages.append(parse_message(text))
    return messages


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
