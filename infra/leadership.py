"""Keeping a lease: claim it, renew it, and say at once when it is gained or lost.

One ``LeaseKeeper`` per lease a process wants (a PBX to ingest, the singletons). It claims every
``every`` seconds. While held, the process counts the lease as its own only until the moment
the database could call it expired: the local deadline is taken from when the claim was *sent*
(the database's expiry is later than that), less a margin. So a process that was frozen for
longer than the lease lets it go before doing anything else when it wakes, even before its
next claim is answered; its writes of that moment are refused by the fence anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)

SAFETY_MARGIN = 0.5  # seconds the holder gives up before the database would expire its lease


def process_holder_id() -> str:
    """Who holds a lease: host, process and a random part (a restarted process is another)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


class LeaseClaims(Protocol):
    async def claim(self, name: str, holder: str, ttl: float) -> int | None: ...

    async def release(self, name: str, holder: str, token: int) -> bool: ...


class LeaseKeeper:
    """Holds one lease for as long as it can; ``on_gained(token)`` and ``on_lost()`` are awaited
    in order (a new token after a loss always comes after that loss's ``on_lost``)."""

    def __init__(
        self,
        claims: LeaseClaims,
        name: str,
        holder: str,
        *,
        ttl: float,
        on_gained: Callable[[int], Awaitable[None]],
        on_lost: Callable[[str], Awaitable[None]],
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= SAFETY_MARGIN * 2:
            raise ValueError(f"a lease of {ttl} s leaves no time to renew it")
        self.claims = claims
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.every = every if every is not None else ttl / 3
        self._on_gained = on_gained
        self._on_lost = on_lost
        self._clock = clock
        self.token: int | None = None
        self._held_until = 0.0
        self.gained_at: float | None = None
        self.counters: dict[str, int] = {"gained": 0, "lost": 0, "claim_failures": 0}

    @property
    def held(self) -> bool:
        return self.token is not None and self._clock() < self._held_until

    async def beat(self) -> None:
        """One claim (or renewal), and what follows from its answer."""
        sent = self._clock()
        if self.token is not None and sent >= self._held_until:
            await self._lose("the lease ran out before it could be renewed")
        try:
            token = await asyncio.wait_for(
                self.claims.claim(self.name, self.holder, self.ttl), timeout=self.every
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the database may be back at the next beat
            self.counters["claim_failures"] += 1
            log.warning("lease %s: claim failed (%s)", self.name, error or type(error).__name__)
            if self.token is not None and self._clock() >= self._held_until:
                await self._lose("the lease could not be renewed in time")
            return
        if token is None:
            if self.token is not None:
                await self._lose("another process holds it")
            return
        if self.token is not None and token != self.token:
            await self._lose("it expired and was taken again")
        self._held_until = sent + self.ttl - SAFETY_MARGIN
        if self.token is None:
            self.token = token
            self.gained_at = time.time()
            self.counters["gained"] += 1
            log.info("lease %s gained (token %d)", self.name, token)
            await self._on_gained(token)

    async def _lose(self, why: str) -> None:
        if self.token is None:
            return
        log.warning("lease %s lost (token %d): %s", self.name, self.token, why)
        self.token = None
        self.gained_at = None
        self.counters["lost"] += 1
        await self._on_lost(why)

    async def run(self) -> None:
        """Claim on every beat until cancelled; then give the lease up if still held."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                await self.beat()
                await asyncio.sleep(max(0.0, started + self.every - loop.time()))
        finally:
            await self._let_go()

    async def _let_go(self) -> None:
        token = self.token
        if token is None:
            return
        with contextlib.suppress(Exception):
            await self._lose("this process stops")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.claims.release(self.name, self.holder, token), 2.0)
