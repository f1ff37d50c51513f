"""Pure AMI framing: bytes in, header mappings out, no socket.

Asterisk sends ``Key: Value`` lines ended by ``\\r\\n`` and a blank line after each message. This
decoder keeps the bytes that have not formed a whole message yet, decodes UTF-8 incrementally (a
Chinese caller name split across two TCP reads survives), and can drop an event by its name before
the rest of the frame is parsed, which matters when four in ten frames are ``VarSet``.
"""

from __future__ import annotations

import codecs
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmap import mmap  # a transcript mapped into memory reads as bytes do

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
    case-folded index built on first need (until then unset), so the common path stays cheap.
    """

    __slots__ = ("_folded", "_lowered", "_text", "as_sent")
    _folded: dict[str, str]
    _lowered: str
    _text: str
    as_sent: Mapping[str, str]
    """The headers keyed exactly as Asterisk spells them: the fast path for hot parsers (a
    plain attribute, not a property: it is read twice for every message replayed)."""

    def __init__(self, text: str, values: dict[str, str]) -> None:
        # The slots' own setters: a replay builds tens of thousands of messages.
        _set_text(self, text)
        _set_headers(self, values)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("AmiMessage is immutable")

    def _absent(self, name: str) -> bool:
        """True when no header of any spelling has this name: a cheap C-level text search."""
        text: str | None = getattr(self, "_lowered", None)
        if text is None:
            text = self._text.lower()
            object.__setattr__(self, "_lowered", text)
        lowered = name.lower()
        return not (text.startswith(lowered + ":") or f"\r\n{lowered}:" in text)

    def _fold(self) -> dict[str, str]:
        folded: dict[str, str] | None = getattr(self, "_folded", None)
        if folded is None:
            folded = {name.lower(): value for name, value in self.as_sent.items()}
            object.__setattr__(self, "_folded", folded)
        return folded

    def __getitem__(self, name: str) -> str:
        try:
            return self.as_sent[name]
        except KeyError:
            if self._absent(name):
                raise
            return self._fold()[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self.as_sent.get(name)
        if value is None:
            if self._absent(name):
                return default
            return self._fold().get(name.lower(), default)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self.as_sent or (not self._absent(name) and name.lower() in self._fold())

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_sent)

    def __len__(self) -> int:
        return len(self.as_sent)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AmiMessage) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)

    def __repr__(self) -> str:
        return f"AmiMessage({self.as_sent!r})"

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


_set_text = AmiMessage._text.__set__  # type: ignore[attr-defined]
_set_headers = AmiMessage.as_sent.__set__  # type: ignore[attr-defined]


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


_HEADER_SEPARATORS = itertools.repeat(": ")
_ONE_SPLIT = itertools.repeat(1)


def parse_message(text: str) -> AmiMessage:
    """Parse one frame's text (without the blank line) into an ``AmiMessage``."""
    try:
        # The shape of nearly every line Asterisk sends: split, and the dict built, in C.
        values = dict(map(str.split, text.split(EOL), _HEADER_SEPARATORS, _ONE_SPLIT))
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
    data: bytes | mmap, keep_event: Callable[[str], bool] | None = None
) -> list[AmiMessage]:
    """A whole recorded transcript at once: the messages ``AmiFrameDecoder.feed`` would give for
    the same bytes (greeting, frames, name filter). See ``read_recording``."""
    return list(read_recording(data, keep_event))


def read_recording(
    data: bytes | mmap, keep_event: Callable[[str], bool] | None = None
) -> Iterator[AmiMessage]:
    """The messages of a whole recorded transcript, one at a time, found on the bytes before
    any decoding; the same as ``AmiFrameDecoder.feed`` would give.

    Why: ``hotline replay`` of a day's recording (139,000 frames) spent most of its time turning
    57 MB into text and splitting it, for the 1 frame in 5 the pipeline keeps. A frame break is
    ASCII, which never occurs inside a UTF-8 sequence, so splitting the bytes gives the same
    frames; only kept frames are decoded, and with a name filter one regular-expression pass
    finds them without Python touching the others (``_kept_frames``). One at a time, so a
    replay never holds every parsed message. A last frame without its blank line is left out,
    as the live decoder keeps it waiting. A bad greeting raises at once, an overlong frame
    before the first message."""
    end = data.find(b"\r\n")
    if end < 0:
        raise AmiProtocolError("peer sent no AMI greeting")
    greeting = data[:end].decode("utf-8", "replace")
    if not greeting.startswith(BANNER_PREFIX):
        raise AmiProtocolError(f"not an AMI greeting: {greeting[:80]!r}")
    start = end + 2
    if keep_event is not None and data[start : start + 2] != b"\r\n" and _frames_fit(data, start):
        return _kept_frames(data, start, _EventVerdicts(keep_event))
    return _split_frames(data, start, keep_event)


_FRAME_END_BYTES = FRAME_END.encode()
# The first line of an event frame after a frame break: its name runs to the line's end.
_EVENT_LINE = re.compile(rb"\r\n\r\nEvent: ((?:[^\r]|\r(?!\n))*)\r\n")
LEARNING_WINDOW = 256 * 1024


def _split_frames(
    data: bytes | mmap, start: int, keep_event: Callable[[str], bool] | None
) -> Iterator[AmiMessage]:
    """The messages from ``start`` (a frame's start) by a plain split at every frame break."""
    frames = data[start:].split(_FRAME_END_BYTES)
    if max(map(len, frames)) > MAX_PENDING_CHARS:
        raise AmiProtocolError(f"AMI frame longer than {MAX_PENDING_CHARS} characters")
    del frames[-1]
    for raw in frames:
        message = _message_of(raw, keep_event)
        if message is not None:
            yield message


def _message_of(raw: bytes, keep_event: Callable[[str], bool] | None) -> AmiMessage | None:
    """One whole frame as the live decoder takes it: dropped by its event name, or parsed."""
    if raw[:7] == b"Event: ":
        if keep_event is not None:
            end = raw.find(b"\r\n")
            if not keep_event((raw[7:end] if end >= 0 else raw[7:]).decode("utf-8", "replace")):
                return None
        return parse_message(raw.decode("utf-8", "replace"))
    text = raw.decode("utf-8", "replace")
    if text[:2] == EOL or text[:6] == "Event:":
        text = text.lstrip(EOL)
        if not text:
            return None
        named = event_name_of(text)
        if keep_event is not None and named is not None and not keep_event(named):
            return None
    elif not text:
        return None
    return parse_message(text)


class _EventVerdicts:
    """``keep_event``'s answer for each event name met so far, as a pattern that finds the
    frames worth parsing: a kept event, an event not met yet, or a frame that is no event."""

    def __init__(self, keep_event: Callable[[str], bool]) -> None:
        self.keep_event = keep_event
        self._kept: set[bytes] = set()
        self._dropped: set[bytes] = set()
        self.pattern = self._compile()

    def learn(self, data: bytes | mmap, position: int, name: bytes) -> None:
        """Ask about ``name`` and every other event in the window from ``position``: new names
        come in bursts at the start of a session, and each costs a new pattern."""
        names = {name, *_EVENT_LINE.findall(data, position, position + LEARNING_WINDOW)}
        for new in names - self._kept - self._dropped:
            kept = self.keep_event(new.decode("utf-8", "replace"))
            (self._kept if kept else self._dropped).add(new)
        self.pattern = self._compile()

    def _compile(self) -> re.Pattern[bytes]:
        # The most frequent names in real sessions are dropped ones (VarSet, Newexten): they
        # are ruled out first, by one look-ahead.
        dropped = b"|".join(map(re.escape, sorted(self._dropped)))
        kept = b"|".join(map(re.escape, sorted(self._kept)))
        event = rb"(?P<new>(?:[^\r]|\r(?!\n))*)(?=\r\n)"
        if self._kept:
            event = rb"(?P<kept>" + kept + rb")(?=\r\n)|" + event
        if self._dropped:
            event = rb"(?!(?:" + dropped + rb")\r\n)(?:" + event + rb")"
        return re.compile(rb"\r\n\r\n(?:Event: (?:" + event + rb")|(?!Event: ))")


def _kept_frames(data: bytes | mmap, start: int, verdicts: _EventVerdicts) -> Iterator[AmiMessage]:
    """The messages of the frames from ``start`` that the name filter keeps.

    While no blank lines follow a frame break (none do in what Asterisk sends) every break is
    a ``\\r\\n\\r\\n`` that a search finds, so a pattern can step over the dropped frames
    (four in five) without Python seeing them; the kept ones are read by their event's header
    shape (``_HeaderShapes``). From a run of blank lines on, breaks may overlap: the plain
    split takes over at that frame."""
    find = data.find
    first_end = find(_FRAME_END_BYTES, start)
    if first_end < 0:
        return
    shapes = _HeaderShapes()
    first = _message_of(data[start:first_end], verdicts.keep_event)
    if first is not None:
        yield first
    position = first_end
    while position >= 0:
        searched_from, position = position, -1
        for found in verdicts.pattern.finditer(data, searched_from):
            frame_start = found.start() + 4
            kind = found.lastgroup
            if kind == "kept":  # nearly every frame the pattern finds
                frame_end = find(_FRAME_END_BYTES, frame_start)
                if frame_end < 0:
                    break  # the last frame, cut off
                text = data[frame_start:frame_end].decode("utf-8", "replace")
                yield shapes.parse(found["kept"], text)
                continue
            if kind == "new":
                verdicts.learn(data, found.start(), found["new"])
                position = found.start()  # search again with the new pattern, from this frame
                break
            frame_end = find(_FRAME_END_BYTES, frame_start)
            if frame_end < 0:
                break  # the last frame, cut off
            if data[frame_start : frame_start + 2] == b"\r\n":
                yield from _split_frames(data, frame_start, verdicts.keep_event)
                return
            message = _message_of(data[frame_start:frame_end], verdicts.keep_event)
            if message is not None:
                yield message


MAX_SHAPES_PER_EVENT = 4
SHAPE_AFTER_FRAMES = 256


class _HeaderShapes:
    """The header names met so far in the frames of each event, in order, each list as a
    pattern that reads a frame of that shape in one match.

    Why: parsing line by line costs two strings and a list per header, a quarter of a long
    replay. Frames of one event nearly always carry the same headers in the same order, so one
    ``fullmatch`` of ``Event: (.*)\\r\\nPrivilege: (.*)...`` finds every value at once
    and the dict is built on header names already held. It matches only when each line is
    that name, ``": "`` and a value without a line feed: exactly what the line split gives.
    Any other frame is parsed line by line. A pattern costs about what it saves on a few
    hundred frames, so an event teaches its shape only once ``SHAPE_AFTER_FRAMES`` of its
    frames have been parsed line by line (a short transcript compiles none), up to
    ``MAX_SHAPES_PER_EVENT`` shapes.
    """

    def __init__(self) -> None:
        self._by_event: dict[bytes, list[tuple[re.Pattern[str], tuple[str, ...]]]] = {}
        self._parsed: Counter[bytes] = Counter()

    def parse(self, event: bytes, text: str) -> AmiMessage:
        shapes = self._by_event.get(event, ())
        for pattern, names in shapes:
            values = pattern.fullmatch(text)
            if values is not None:
                return AmiMessage(text, dict(zip(names, values.groups(), strict=True)))
        message = parse_message(text)
        self._parsed[event] += 1
        if self._parsed[event] > SHAPE_AFTER_FRAMES and len(shapes) < MAX_SHAPES_PER_EVENT:
            lines = text.split(EOL)
            if all(": " in line for line in lines):
                names = tuple(line.split(": ", 1)[0] for line in lines)
                pattern = re.compile(EOL.join(re.escape(name) + ": (.*)" for name in names))
                self._by_event.setdefault(event, []).append((pattern, names))
        return message


def _frames_fit(data: bytes | mmap, start: int) -> bool:
    """Whether every frame from ``start`` is at most ``MAX_PENDING_CHARS`` bytes long, found in
    a few jumps of that length; False also when a jump would land in a run of blank lines,
    where frame breaks may overlap (the plain split then decides)."""
    position = start
    while len(data) - position > MAX_PENDING_CHARS:
        last_break = data.rfind(_FRAME_END_BYTES, position, position + MAX_PENDING_CHARS + 4)
        if last_break < 0 or data[last_break - 2 : last_break] == b"\r\n":
            return False
        position = last_break + 4
    return True


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
