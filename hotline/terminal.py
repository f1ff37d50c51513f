"""Text for an operator's terminal, where some of it came from callers.

A caller chooses their caller ID name, and PBX and file names pass through the bridge as they
are. Printed raw, an ``ESC [`` in one of them is a terminal command: it can recolour, hide or
rewrite what the operator reads (or, on some terminals, answer back as if typed). So every
control character, C0, DEL and C1, is shown as a visible escape such as ``\\x1b``.
"""

from __future__ import annotations

import json
from typing import Any

_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
_SHOWN = {code: f"\\x{code:02x}" for code in _CONTROLS}
# In JSON text a control character can only be inside a string, where \u escapes are valid.
_JSON_ESCAPED = {code: f"\\u{code:04x}" for code in _CONTROLS}


def printable(value: object) -> str:
    """``value`` as text, every control character replaced by a visible ``\\xNN``."""
    return str(value).translate(_SHOWN)


def json_text(value: Any) -> str:
    """One JSON document for ``--json``, readable (no ``\\u`` for Chinese text) yet without
    raw DEL or C1 characters, which ``json.dumps`` leaves as they are (C0 it escapes)."""
    return json.dumps(value, ensure_ascii=False).translate(_JSON_ESCAPED)
