"""What Asterisk makes of the commands the ``route`` script writes: the variables they set.

The server sends one ``EXEC MSet "A=1,B=2"`` when every value is plain, else one
``SET VARIABLE`` per variable; tests read both the way ``res_agi.c`` and MSet do.
"""

from __future__ import annotations

from collections.abc import Sequence

VARIABLES = (
    "HOTLINE_QUEUE",
    "HOTLINE_PRIORITY",
    "HOTLINE_AGENT",
    "HOTLINE_TICKET",
    "HOTLINE_REASON",
)


def asterisk_args(line: str) -> list[str]:
    """Split a command as Asterisk's ``res_agi.c`` ``parse_args`` does (quotes, backslashes)."""
    words: list[list[str]] = []
    quoted = escaped = False
    whitespace = True
    for char in line:
        if char == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                words.append([])
                whitespace = False
            continue
        if char in " \t" and not quoted and not escaped:
            whitespace = True
            continue
        if char == "\\" and not escaped:
            escaped = True
            continue
        if whitespace:
            words.append([])
            whitespace = False
        words[-1].append(char)
        escaped = False
    return ["".join(word) for word in words]


def command_line(raw: bytes | str) -> str:
    """One command as text; raw bytes must be exactly one clean line."""
    if isinstance(raw, str):
        return raw.removesuffix("\n")
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1, raw
    assert b"\r" not in raw and b"\0" not in raw, raw
    return raw.decode("utf-8").removesuffix("\n")


def variables_set(commands: Sequence[bytes | str]) -> dict[str, str]:
    """The five variables as Asterisk would hold them after ``commands`` (the dialplan clears
    them all before it asks, so one MSet leaves out the empty ones)."""
    values = dict.fromkeys(VARIABLES, "")
    arguments = [asterisk_args(command_line(raw)) for raw in commands]
    if len(arguments) == 1 and arguments[0][:2] == ["EXEC", "MSet"]:
        assert len(arguments[0]) == 3, commands
        for pair in arguments[0][2].split(","):
            name, equals, value = pair.partition("=")
            assert equals and name in VARIABLES and value, commands
            values[name] = value
        return values
    assert [args[:3] for args in arguments] == [["SET", "VARIABLE", n] for n in VARIABLES], commands
    for args in arguments:
        assert len(args) == 4, commands
        values[args[2]] = args[3]
    return values
