"""Leases with fencing tokens: on SQLite and on the real PostgreSQL, and the keeper's timing."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from infra.leadership import SAFETY_MARGIN, LeaseKeeper, LeaseSpreader, fair_share
from infra.leases import FencedOut, FencedTransactions, LeaseStore, LeaseView
from infra.storage import create_engine, transactions_for


async def _store(url: str) -> tuple[LeaseStore, object, object]:
    engine = create_engine(url)
    units = transactions_for(engine)
    reads = transactions_for(engine, read_only=True)
    return LeaseStore(units, reads), units, engine


async def _close(units: object, engine: object) -> None:
    await units.close()  # type: ignore[attr-defined]
    await engine.dispose()  # type: ignore[attr-defined]


async def test_one_holder_at_a_time_and_the_token_rises_at_each_takeover(database: str) -> None:
    store, units, engine = await _store(database)
    try:
        first = await store.claim("pbx:west", "bridge-1", ttl=0.6)
        assert first == 1
        assert await store.claim("pbx:west", "bridge-2", ttl=0.6) is None  # held, not expired
        assert await store.claim("pbx:west", "bridge-1", ttl=0.6) == 1  # a renewal keeps it
        await asyncio.sleep(0.8)  # bridge-1 froze past its lease
        assert await store.claim("pbx:west", "bridge-2", ttl=5) == 2
        assert await store.claim("pbx:west", "bridge-1", ttl=5) is None  # woken: refused
        views = {view.name: view for view in await store.leases("pbx:")}
        assert views["pbx:west"].holder == "bridge-2"
        assert views["pbx:west"].token == 2
        assert 4 < views["pbx:west"].expires_in <= 5
        # Another lease is independent.
        assert await store.claim("pbx:east", "bridge-1", ttl=5) == 1
    finally:
        await _close(units, engine)


async def test_a_released_lease_passes_on_at_once(database: str) -> None:
    store, units, engine = await _store(database)
    try:
        token = await store.claim("singletons", "bridge-1", ttl=30)
        assert token == 1
        assert not await store.release("singletons", "bridge-2", token)  # not theirs
        assert await store.release("singletons", "bridge-1", token)
        assert await store.claim("singletons", "bridge-2", ttl=30) == 2
    finally:
        await _close(units, engine)


async def test_the_fence_refuses_the_old_holders_writes(database: str) -> None:
    store, units, engine = await _store(database)
    try:
        old = await store.claim("pbx:west", "bridge-1", ttl=0.5)
        assert old == 1
        fenced_old = FencedTransactions(units, "pbx:west", old)  # type: ignore[arg-type]

        def write(value: str):  # type: ignore[no-untyped-def]
            def unit(connection):  # type: ignore[no-untyped-def]
                connection.execute(
                    text(
                        "INSERT INTO leases (name, holder, token, expires_at, taken_at) "
                        "VALUES (:name, 'x', 0, 0, 0)"
                    ),
                    {"name": value},
                )

            return unit

        await fenced_old(write("written-by-owner"))
        await asyncio.sleep(0.7)
        new = await store.claim("pbx:west", "bridge-2", ttl=5)
        assert new == 2
        with pytest.raises(FencedOut, match="token 2"):
            await fenced_old(write("written-late"))
        await FencedTransactions(units, "pbx:west", new)(write("written-by-new-owner"))  # type: ignore[arg-type]
        names = {view.name for view in await store.leases("written")}
        assert names == {"written-by-owner", "written-by-new-owner"}
    finally:
        await _close(units, engine)


class FakeClaims:
    """A lease table in memory with a settable clock, to drive the keeper beat by beat."""

    def __init__(self) -> None:
        self.now = 0.0
        self.rows: dict[str, tuple[str, int, float]] = {}
        self.fail = False

    async def claim(self, name: str, holder: str, ttl: float) -> int | None:
        if self.fail:
            raise ConnectionError("database unreachable")
        row = self.rows.get(name)
        if row is None:
            self.rows[name] = (holder, 1, self.now + ttl)
            return 1
        owner, token, expires = row
        if owner == holder and expires >= self.now:
            self.rows[name] = (holder, token, self.now + ttl)
            return token
        if expires < self.now:
            self.rows[name] = (holder, token + 1, self.now + ttl)
            return token + 1
        return None

    async def release(self, name: str, holder: str, token: int) -> bool:
        row = self.rows.get(name)
        if row is None or row[:2] != (holder, token):
            return False
        self.rows[name] = (holder, token, self.now - 1)
        return True


def _keeper(claims: FakeClaims, holder: str, events: list[str]) -> LeaseKeeper:
    async def gained(token: int) -> None:
        events.append(f"{holder} gained {token}")

    async def lost(why: str) -> None:
        events.append(f"{holder} lost: {why}")

    return LeaseKeeper(
        claims, "pbx:west", holder, ttl=6, on_gained=gained, on_lost=lost, clock=lambda: claims.now
    )


async def test_the_keeper_hands_the_lease_on_when_its_holder_freezes() -> None:
    claims, events = FakeClaims(), []
    first, second = _keeper(claims, "one", events), _keeper(claims, "two", events)
    await first.beat()
    await second.beat()
    assert events == ["one gained 1"]
    for _ in range(4):  # renewed every 2 s: it stays
        claims.now += 2
        await first.beat()
        await second.beat()
    assert first.held and not second.held
    # "one" freezes at t=8; its last renewal was sent at t=8.
    renewed_at = claims.now
    claims.now = renewed_at + 6 - SAFETY_MARGIN
    assert not first.held  # its own deadline passed before the database's
    claims.now = renewed_at + 6.1
    await second.beat()
    assert events[-1] == "two gained 2"
    took_over_after = claims.now - renewed_at
    assert took_over_after < 10
    # "one" wakes: it gives the PBX up before anything else, then finds it taken.
    await first.beat()
    assert events[-1] == "one lost: the lease ran out before it could be renewed"
    assert not first.held and second.held


async def test_a_holder_that_cannot_reach_the_database_stops_before_its_lease_ends() -> None:
    claims, events = FakeClaims(), []
    keeper = _keeper(claims, "one", events)
    await keeper.beat()
    claims.fail = True
    claims.now += 2
    await keeper.beat()
    assert keeper.token == 1  # one failed renewal is not a loss yet
    claims.now += 4
    await keeper.beat()
    assert events == ["one gained 1", "one lost: the lease ran out before it could be renewed"]
    assert keeper.counters == {"gained": 1, "lost": 1, "claim_failures": 2}
    claims.fail = False
    claims.now += 2  # expired in the table too: a new term, a new token
    await keeper.beat()
    assert events[-1] == "one gained 2"


def test_a_lease_too_short_to_renew_is_refused() -> None:
    async def nothing(_: object) -> None:
        return None

    with pytest.raises(ValueError, match="no time to renew"):
        LeaseKeeper(FakeClaims(), "x", "me", ttl=0.8, on_gained=nothing, on_lost=nothing)


def _views(claims: FakeClaims) -> list[LeaseView]:
    return [
        LeaseView(name, holder, token, expires - claims.now)
        for name, (holder, token, expires) in sorted(claims.rows.items())
    ]


class SharingProcess:
    """One bridge process's keepers of the PBX leases and its spreader, on the fake table."""

    def __init__(self, claims: FakeClaims, holder: str, pbxs: list[str]) -> None:
        self.claims = claims

        async def views() -> list[LeaseView]:
            return _views(claims)

        self.spreader = LeaseSpreader(
            claims, views, holder, [], ttl=6, every=2, clock=lambda: claims.now
        )

        async def nothing(_: object) -> None:
            return None

        self.keepers = [
            LeaseKeeper(
                claims, f"pbx:{name}", holder, ttl=6, every=2, on_gained=nothing,
                on_lost=nothing, clock=lambda: claims.now, may_claim=self.spreader.may_claim,
            )
            for name in pbxs
        ]  # fmt: skip
        self.spreader.keepers = self.keepers

    async def beat(self) -> None:
        await self.spreader.beat()
        for keeper in self.keepers:
            await keeper.beat()

    def holds(self) -> set[str]:
        return {k.name.removeprefix("pbx:") for k in self.keepers if k.token is not None}


async def test_the_pbxs_spread_over_the_processes_and_come_back_when_one_goes() -> None:
    claims = FakeClaims()
    pbxs = ["west", "east", "north"]
    first = SharingProcess(claims, "one", pbxs)
    await first.beat()
    assert first.holds() == set(pbxs)  # alone, it takes them all
    second = SharingProcess(claims, "two", pbxs)
    for _ in range(6):  # a few beats: the first gives up what is over its share
        claims.now += 2
        await first.beat()
        await second.beat()
    assert (len(first.holds()), len(second.holds())) == (2, 1)
    assert first.holds() | second.holds() == set(pbxs)
    assert first.spreader.counters["given_up"] == 1
    # The first one freezes: after its leases run out, the second takes all three.
    for _ in range(5):
        claims.now += 2
        await second.beat()
    assert second.holds() == set(pbxs)
    assert second.spreader.processes == 1


def test_a_fair_share_is_rounded_up() -> None:
    assert [fair_share(3, n) for n in (0, 1, 2, 3, 4)] == [3, 3, 2, 1, 1]
