"""Pure FastAGI codec: the request header block in, command lines out, replies parsed.

Asterisk opens the socket and sends ``agi_name: value`` lines ended by an empty line; then we
send one command per line and read one reply per command (``200 result=1``). Nothing here does
I/O, so the whole dialogue is testable without a socket.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

MAX_HEADER_LINES = 128
MAX_LINE_BYTES = 8192  # a 4 KB caller ID (or name) still fits one header line
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_REPLY = re.compile(r"^(?P<code>\d{3})(?P<sep>[ -])(?P<rest>.*)$")
_RESULT = re.compile(r"^result=(?P<result>-?\d+|\S*)(?: \((?P<data>.*)\))?(?: (?P<extra>.*))?$")


class AgiProtocolError(ValueError):
    """The peer is not speaking AGI (garbage, an over-long block, a missing script)."""


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """One FastAGI request: which script the dialplan asked for, about which channel."""

    script: str
    channel: str
    uniqueid: str
    caller_number: str
    caller_name: str
    dialled_number: str
    context: str
    extension: str
    arguments: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def _caller_field(value: str) -> str:
    return "" if value in ("", "unknown", "<unknown>") else value


def _script_of(headers: Mapping[str, str]) -> str:
    """``agi_network_script`` when sent, else the path of ``agi_request``; no leading slash."""
    script = headers.get("agi_network_script", "")
    if not script:
        script = urlsplit(headers.get("agi_request", "")).path
    script = script.strip("/").split("?", 1)[0]
    if not script:
        raise AgiProtocolError("AGI request names no script")
    return script


def parse_request(lines: Iterable[str]) -> AgiRequest:
    """Build the request from its header lines (without the terminating empty line)."""
    headers: dict[str, str] = {}
    for count, line in enumerate(lines, start=1):
        if count > MAX_HEADER_LINES:
            raise AgiProtocolError("AGI request header block is too long")
        name, sep, value = line.partition(":")
        if not sep or not name.startswith("agi_"):
            raise AgiProtocolError(f"not an AGI header line: {line[:60]!r}")
        headers[name.strip()] = value.strip()
    if "agi_channel" not in headers:
        raise AgiProtocolError("AGI request without agi_channel")
    arguments = []
    index = 1
    while f"agi_arg_{index}" in headers:
        arguments.append(headers[f"agi_arg_{index}"])
        index += 1
    return AgiRequest(
        script=_script_of(headers),
        channel=headers["agi_channel"],
        uniqueid=headers.get("agi_uniqueid", ""),
        caller_number=_caller_field(headers.get("agi_callerid", "")),
        caller_name=_caller_field(headers.get("agi_calleridname", "")),
        dialled_number=_caller_field(headers.get("agi_dnid", "")),
        context=headers.get("agi_context", ""),
        extension=headers.get("agi_extension", ""),
        arguments=tuple(arguments),
        headers=MappingProxyType(headers),
    )


def set_variable_command(name: str, value: str) -> str:
    """``SET VARIABLE NAME "value"`` with the value quoted; line breaks are refused."""
    if not _VARIABLE_NAME.match(name):
        raise ValueError(f"not a channel variable name: {name!r}")
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"line break in the value of {name}")
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'SET VARIABLE {name} "{quoted}"\n'


# What MSet's argument parser reads back exactly as written: no separator (comma, equals, pipe),
# no quote, backslash, blank or expression (``$``, brackets). Anything else is sent with
# ``SET VARIABLE``, which quotes it.
_MSET_VALUE = re.compile(r"[A-Za-z0-9_.:@/+-]*")
# res_agi.c reads a command into a buffer of 2,048 bytes (AGI_BUF_LEN); stay well inside it.
MAX_MSET_BYTES = 1024


def mset_command(variables: Mapping[str, str]) -> str | None:
    """``EXEC MSet "A=1,B=2"``: every variable in one command, one round trip instead of one per
    variable (each costs two loopback sends and two wake-ups). Empty values are left out: the
    dialplan clears every variable before it asks. ``None`` when a value is not plain enough
    for MSet's argument parser; the caller then sends ``set_variable_command`` lines.
    """
    pairs = []
    for name, value in variables.items():
        if not _VARIABLE_NAME.match(name):
            raise ValueError(f"not a channel variable name: {name!r}")
        if not _MSET_VALUE.fullmatch(value):
            return None
        if value:
            pairs.append(f"{name}={value}")
    command = f'EXEC MSet "{",".join(pairs)}"\n'
    if not pairs or len(command.encode()) > MAX_MSET_BYTES:
        return None
    return command


@dataclass(frozen=True, slots=True)
class AgiReply:
    code: int
    result: str
    data: str
    text: str

    @property
    def ok(self) -> bool:
        return self.code == 200 and self.result != "-1"


def parse_reply(line: str) -> AgiReply:
    """Parse one reply line such as ``200 result=1`` or ``510 Invalid or unknown command``."""
    match = _REPLY.match(line.rstrip("\r\n"))
    if match is None:
        raise AgiProtocolError(f"not an AGI reply: {line[:60]!r}")
    code = int(match["code"])
    rest = match["rest"]
    if code == 200:
        result = _RESULT.match(rest)
        if result is None:
            raise AgiProtocolError(f"AGI 200 reply without result: {line[:60]!r}")
        return AgiReply(code, result["result"], result["data"] or "", rest)
    return AgiReply(code, "", "", rest)


def is_continued(line: str) -> bool:
    """A ``520-`` line starts a usage text that ends with a ``520 `` line."""
    return len(line) > 3 and line[:3].isdigit() and line[3] == "-"
