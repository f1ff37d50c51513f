"""What clients send the panel, read within bounds before any of it reaches a handler's logic.

A body is read piece by piece and refused (413) as soon as it outgrows its limit, whether or not
it announced a ``Content-Length``, so a chunked upload cannot fill the memory either. Before
``json.loads`` a cheap scan refuses deep nesting (the parser would recurse until Python gives
up). NUL characters are refused in bodies and queries alike: PostgreSQL cannot store them in
text, so they would turn a harmless edit into a failed transaction. Every refusal is a short
``{"error": ...}`` that never repeats a parser's exception text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from web.errors import json_error

NUL = "\x00"

# What the depth scan stops at: an escape (its character is text, even a quote), a quote, a
# bracket. One pass over the text, whatever it holds.
_SIGNIFICANT = re.compile(r'\\.|["\[\]{}]', re.DOTALL)


async def read_json(request: web.Request, *, max_bytes: int, max_depth: int = 32) -> Any:
    """The request's JSON body, or a 413/400 refusal that says what to send instead."""
    announced = request.content_length
    if announced is not None and announced > max_bytes:
        raise json_error(413, f"request too large (at most {max_bytes} bytes)")
    raw = bytearray()
    # read(n), not readany(): readany() hands over all that is buffered (hundreds of KB of a
    # chunked upload), and a refusal's traceback keeps it until the cyclic GC runs.
    while chunk := await request.content.read(max_bytes + 1 - len(raw)):
        raw += chunk
        if len(raw) > max_bytes:
            raise json_error(413, f"request too large (at most {max_bytes} bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise json_error(400, "send JSON encoded as UTF-8") from None
    if nesting_depth(text) > max_depth:
        raise json_error(400, f"JSON nested deeper than {max_depth} levels")
    try:
        document = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise json_error(400, "send valid JSON") from None
    if _holds_nul(document):
        raise json_error(400, "text must not contain NUL characters")
    return document


def query_text(request: web.Request, name: str) -> str | None:
    """A query parameter's text (None when absent); refused when it holds a NUL character."""
    text = request.query.get(name)
    if text is not None and NUL in text:
        raise json_error(400, f"{name} must not contain NUL characters")
    return text


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON text, brackets inside strings not counted.

    Text that is not JSON gets some number back; the parser refuses it afterwards.
    """
    depth = deepest = 0
    in_string = False
    for match in _SIGNIFICANT.finditer(text):
        mark = match.group()
        if mark == '"':
            in_string = not in_string
        elif in_string or mark.startswith("\\"):
            continue
        elif mark in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    """``NaN`` and ``Infinity`` are Python's extension, not JSON."""
    raise ValueError(f"{name} is not JSON")


def _holds_nul(document: Any) -> bool:
    """Whether any key or string anywhere in the parsed document contains a NUL."""
    waiting = [document]
    while waiting:
        value = waiting.pop()
        if isinstance(value, str):
            if NUL in value:
                return True
        elif isinstance(value, dict):
            waiting.extend(value.keys())
            waiting.extend(value.values())
        elif isinstance(value, list):
            waiting.extend(value)
    return False
