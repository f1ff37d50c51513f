"""The state every PBX link reports, whatever its protocol (AMI, the Event Socket).

Up or down, since when, how often it came back and why it is down; ``on_login`` runs at each
login (the resync), ``on_down`` when a session that was up ends. Reconnects back off
exponentially from 0.5 s up to a ceiling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class PbxLink:
    def __init__(self, label: str, *, max_backoff: float) -> None:
        self._label = label  # "AMI session with 127.0.0.1:5038", for the log
        self._max_backoff = max_backoff
        self._backoff = 0.0
        self._up = asyncio.Event()
        self.running = False
        self.connected = False
        self.state_since = time.time()
        self.last_problem = "not started"
        self.reconnects = 0
        self.on_login: Callable[[], None] | None = None
        self.on_down: Callable[[str], None] | None = None

    def next_backoff(self) -> float:
        self._backoff = min(self._max_backoff, max(0.5, self._backoff * 2))
        return self._backoff

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def note_up(self) -> None:
        if not self.connected:
            log.info("%s is up", self._label)
            self.state_since = time.time()
        self.connected = True
        self._backoff = 0.0
        self._up.set()
        if self.on_login is not None:
            try:
                self.on_login()
            except Exception:
                log.exception("%s: on_login hook failed", self._label)

    def note_down(self, problem: str) -> None:
        was_up = self.connected
        if was_up:
            self.reconnects += 1
            self.state_since = time.time()
        self.connected = False
        self.last_problem = problem
        self._up.clear()
        if was_up and self.on_down is not None:
            try:
                self.on_down(problem)
            except Exception:
                log.exception("%s: on_down hook failed", self._label)
