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
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from infra.leases import LeaseView

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
        may_claim: Callable[[LeaseKeeper], Awaitable[bool]] | None = None,
    ) -> None:
        """``may_claim``: asked before claiming a lease this process does not hold (a process
        that holds its share of the PBXs leaves the others to processes with fewer)."""
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
        self._may_claim = may_claim
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
        if self.token is None and self._may_claim is not None:
            try:
                allowed = await self._may_claim(self)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # unknown: claim, as a process without a spreader would
                log.warning("lease %s: could not weigh the share (%s)", self.name, error)
                allowed = True
            if not allowed:
                return
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

    async def give_up(self, why: str) -> None:
        """Stop at once and release the lease, so another process takes it at its next beat."""
        token = self.token
        if token is None:
            return
        await self._lose(why)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.claims.release(self.name, self.holder, token), self.every)

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


def fair_share(leases: int, processes: int) -> int:
    """How many of ``leases`` one of ``processes`` live processes should hold (rounded up)."""
    return -(-leases // max(1, processes))


class LeaseSpreader:
    """Spreads a set of leases (the PBXs) evenly over the live bridge processes.

    Each process says it is alive with a lease of its own (``process:<holder>``) and counts the
    live ones. At or above its share it claims no free lease (one below its share will), unless
    the lease has stayed free for ``patience`` beats (counts can be stale); above its share it
    gives its newest lease up, one at a time with a pause between. So a process that joins gets
    work within a few beats, and one that leaves has its leases taken by those with the fewest.
    """

    def __init__(
        self,
        claims: LeaseClaims,
        leases: Callable[[], Awaitable[Sequence[LeaseView]]],
        holder: str,
        keepers: Sequence[LeaseKeeper],
        *,
        ttl: float,
        every: float | None = None,
        patience: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.claims = claims
        self._leases = leases
        self.holder = holder
        self.keepers = list(keepers)
        self.ttl = ttl
        self.every = every if every is not None else ttl / 3
        self._patience = patience
        self._clock = clock
        self.processes = 1
        self._presence: int | None = None
        self._refreshed_at = -1e9
        self._free_since: dict[str, float] = {}
        self._calm_until = 0.0
        self.counters: dict[str, int] = {"given_up": 0, "claims_left_to_others": 0}

    @property
    def share(self) -> int:
        return fair_share(len(self.keepers), self.processes)

    def held(self) -> int:
        return sum(1 for keeper in self.keepers if keeper.token is not None)

    async def may_claim(self, keeper: LeaseKeeper) -> bool:
        """Asked by a keeper before it claims a lease it does not hold; the count of live
        processes is read again when older than half a beat, so a takeover waits on no beat."""
        if self._clock() - self._refreshed_at > self.every / 2:
            await self.refresh()
        free_since = self._free_since.get(keeper.name)
        waited = (
            free_since is not None and self._clock() - free_since >= self._patience * self.every
        )
        if self.held() < self.share or waited:
            return True
        self.counters["claims_left_to_others"] += 1
        return False

    async def refresh(self) -> None:
        """Say this process is alive and count the live ones. A process whose lease has run
        out is gone (dead or frozen), whatever its own presence says: its leases are for the
        others to share at once."""
        self._presence = await self.claims.claim(f"process:{self.holder}", self.holder, self.ttl)
        self._refreshed_at = self._clock()
        views = await self._leases()
        ours = {keeper.name for keeper in self.keepers}
        gone = {v.holder for v in views if v.name in ours and v.expires_in < 0}
        live = [
            v
            for v in views
            if v.name.startswith("process:") and v.expires_in >= 0 and v.holder not in gone
        ]
        self.processes = max(1, len(live))
        taken = {v.name for v in views if v.expires_in >= 0}
        now = self._clock()
        for keeper in self.keepers:
            if keeper.token is None and keeper.name not in taken:
                self._free_since.setdefault(keeper.name, now)
            else:
                self._free_since.pop(keeper.name, None)

    async def beat(self) -> None:
        await self.refresh()
        held = [keeper for keeper in self.keepers if keeper.token is not None]
        if len(held) > self.share and self._clock() >= self._calm_until:
            newest = max(held, key=lambda keeper: keeper.gained_at or 0.0)
            self.counters["given_up"] += 1
            self._calm_until = self._clock() + 3 * self.every
            await newest.give_up(
                f"{self.processes} processes share {len(self.keepers)} leases: this one holds "
                f"{len(held)}, its share is {self.share}"
            )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                try:
                    await self.beat()
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # the next beat tries again; leases stay as they are
                    log.warning("lease spreading skipped a beat: %s", error)
                await asyncio.sleep(max(0.0, started + self.every - loop.time()))
        finally:
            if self._presence is not None:  # gone at once: the others count one fewer
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self.claims.release(f"process:{self.holder}", self.holder, self._presence),
                        2.0,
                    )
