"""The event loop the long-running commands run on.

uvloop when it is installed (its sockets, streams and timers are written in C: a FastAGI route
spends most of its time in them), asyncio's own loop otherwise or when ``HOTLINE_EVENT_LOOP``
says ``asyncio``. Both run the same code; nothing here changes behaviour, only speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from infra.config import ConfigError

T = TypeVar("T")
EventLoopChoice = Literal["auto", "uvloop", "asyncio"]


def loop_name(choice: EventLoopChoice) -> str:
    """The loop ``run`` will use for ``choice``: ``uvloop`` or ``asyncio``."""
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("HOTLINE_EVENT_LOOP is uvloop, but uvloop is not installed") from None
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``choice`` names."""
    try:
        name = loop_name(choice)
    except ConfigError:
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    if name == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
