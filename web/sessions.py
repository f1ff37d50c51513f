"""Who is asking: session cookies, HTTP Basic for scripts, CSRF tokens and login rate limits.

A browser session is a row of ``web_sessions`` (see ``web.users``) and a cookie. The cookie holds
the session's id, encrypted and signed with Fernet (AES-CBC and HMAC-SHA256) under
``HOTLINE_SESSION_SECRET``; the row, keyed by a hash of that id, holds who it is, the CSRF token
and when it expires. Every request reads its row by primary key, so a logout, a new password or a
removed user ends the session at once, in every web process and across restarts. The cookie is
``HttpOnly`` and ``SameSite=Strict``; state-changing requests made with it must also send the
session's CSRF token in ``X-CSRF-Token``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Connection, delete, insert, select

from infra.storage import Transactions, utc
from web.users import Role, User, WebSessionRow

K = TypeVar("K", bound=Hashable)

# Checks of open live sockets asked for within this window share one query; they all ask on the
# same beat (web.live), so 2,000 viewers cost one query per beat, not 400 a second.
ALIVE_BATCH_SECONDS = 0.02
ALIVE_QUERY_CHUNK = 500

COOKIE_NAME = "hotline_session"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user: User
    csrf: str
    issued_at: float


def _id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _add_session(connection: Connection, values: dict[str, Any], now: datetime) -> None:
    """Store a new session; sessions past their end are purged on the way."""
    table = WebSessionRow.__table__
    connection.execute(delete(table).where(table.c.expires_at <= now))
    connection.execute(insert(table).values(**values))


def _session_row(connection: Connection, id_hash: str) -> Any:
    table = WebSessionRow.__table__
    return connection.execute(select(table).where(table.c.id_hash == id_hash)).first()


def _sessions_ending(connection: Connection, id_hashes: list[str]) -> dict[str, datetime]:
    """When each of these sessions ends, for those that still have a row."""
    table = WebSessionRow.__table__
    ends: dict[str, datetime] = {}
    for first in range(0, len(id_hashes), ALIVE_QUERY_CHUNK):
        chunk = id_hashes[first : first + ALIVE_QUERY_CHUNK]
        query = select(table.c.id_hash, table.c.expires_at).where(table.c.id_hash.in_(chunk))
        ends.update({row.id_hash: row.expires_at for row in connection.execute(query)})
    return ends


def _end_session(connection: Connection, id_hash: str) -> None:
    table = WebSessionRow.__table__
    connection.execute(delete(table).where(table.c.id_hash == id_hash))


class SessionCodec:
    """Issues, reads and ends browser sessions: the cookie value, and the row that must back it.

    A forged, stale or ended session reads as None. ``seal`` and ``unseal`` are the pure cookie
    codec; the other methods do one unit of work on the database each. Look-ups go through
    ``reads`` when given: read-only units, which on SQLite never hold the write lock that routing
    (another process) needs.
    """

    def __init__(
        self,
        secret: str | None,
        units: Transactions,
        *,
        reads: Transactions | None = None,
        max_age_seconds: float = 12 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fernet = Fernet(secret.encode() if secret else Fernet.generate_key())
        self.units = units
        self.reads = reads or units
        self._alive_batch: tuple[set[str], asyncio.Future[dict[str, datetime]]] | None = None
        self._alive_queries: set[asyncio.Task[dict[str, datetime]]] = set()
        self.counters: Counter[str] = Counter()
        self.max_age_seconds = max_age_seconds
        self._clock = clock

    @staticmethod
    def new_secret() -> str:
        return Fernet.generate_key().decode()

    def seal(self, session: Session) -> str:
        body = {"sid": session.id, "u": session.user.username, "iat": session.issued_at}
        token = self._fernet.encrypt_at_time(json.dumps(body).encode(), int(session.issued_at))
        return token.decode()

    def unseal(self, cookie: str | None) -> tuple[str, str] | None:
        """The session id and user name a cookie carries, if this server sealed it lately."""
        if not cookie:
            return None
        try:
            raw = self._fernet.decrypt_at_time(
                cookie.encode(), int(self.max_age_seconds), int(self._clock())
            )
            body = json.loads(raw)
            session_id, username = body["sid"], body["u"]
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        if not isinstance(session_id, str) or not isinstance(username, str):
            return None
        return session_id, username

    async def issue(self, user: User) -> tuple[Session, str]:
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(24), self._clock())
        await self.units(
            lambda connection: _add_session(
                connection, self._row_values(session), _moment(session.issued_at)
            )
        )
        return session, self.seal(session)

    async def reissue(self, old: Session, user: User) -> tuple[Session, str]:
        """End ``old`` and start a session for ``user`` in its place, in one transaction."""
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(24), self._clock())
        values, old_hash = self._row_values(session), _id_hash(old.id)

        def swap(connection: Connection) -> None:
            _end_session(connection, old_hash)
            _add_session(connection, values, _moment(session.issued_at))

        await self.units(swap)
        return session, self.seal(session)

    def _row_values(self, session: Session) -> dict[str, Any]:
        user = session.user
        return {
            "id_hash": _id_hash(session.id),
            "username": user.username,
            "role": user.role.value,
            "agent_interface": user.agent_interface,
            "phones": ",".join(user.phones),
            "csrf": session.csrf,
            "issued_at": _moment(session.issued_at),
            "expires_at": _moment(session.issued_at + self.max_age_seconds),
        }

    async def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie, as its row says now; None unless the row is there and live."""
        carried = self.unseal(cookie)
        if carried is None:
            return None
        session_id, username = carried
        id_hash = _id_hash(session_id)
        row = await self.reads(lambda connection: _session_row(connection, id_hash))
        if row is None or row.username != username:
            return None
        if utc(row.expires_at).timestamp() <= self._clock():
            return None
        try:
            phones = tuple(p for p in row.phones.split(",") if p)
            user = User(row.username, Role(row.role), row.agent_interface, phones)
        except ValueError:  # a role this version does not know: nobody
            return None
        return Session(session_id, user, row.csrf, utc(row.issued_at).timestamp())

    async def alive(self, session: Session) -> bool:
        """Whether the session still stands (not logged out, its user unchanged, not expired).

        Checks asked for together are answered by one query (see ``ALIVE_BATCH_SECONDS``)."""
        if self._alive_batch is None:
            loop = asyncio.get_running_loop()
            self._alive_batch = (set(), loop.create_future())
            loop.call_later(ALIVE_BATCH_SECONDS, self._ask_alive)
        asked, answer = self._alive_batch
        id_hash = _id_hash(session.id)
        asked.add(id_hash)
        ends = await asyncio.shield(answer)
        end = ends.get(id_hash)
        return end is not None and utc(end).timestamp() > self._clock()

    def _ask_alive(self) -> None:
        if self._alive_batch is None:
            return
        asked, answer = self._alive_batch
        self._alive_batch = None
        self.counters["alive_queries"] += 1
        self.counters["alive_checks"] += len(asked)
        ids = sorted(asked)
        query = asyncio.ensure_future(self.reads(lambda c: _sessions_ending(c, ids)))
        self._alive_queries.add(query)

        def settle(done: asyncio.Task[dict[str, datetime]]) -> None:
            self._alive_queries.discard(done)
            if answer.done():
                return
            if done.cancelled():
                answer.cancel()
            elif (error := done.exception()) is not None:
                answer.set_exception(error)
            else:
                answer.set_result(done.result())

        query.add_done_callback(settle)

    async def revoke(self, session: Session) -> None:
        id_hash = _id_hash(session.id)
        await self.units(lambda connection: _end_session(connection, id_hash))


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


def csrf_matches(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.csrf.encode(), sent.encode())


@dataclass(frozen=True, slots=True)
class Blocked:
    """A login attempt refused before its password is looked at."""

    retry_after: float


class _Tally:
    """Recent failures of one key (the newest ``keep`` of them) and its attempts under way."""

    __slots__ = ("failures", "in_flight", "trusted_until")

    def __init__(self) -> None:
        self.failures: list[float] = []
        self.in_flight = 0
        self.trusted_until = 0.0  # an address and name pair that logged in lately

    def recent(self, now: float, window: float) -> list[float]:
        while self.failures and now - self.failures[0] > window:
            del self.failures[0]
        return self.failures

    def add(self, now: float, keep: int) -> None:
        self.failures.append(now)
        del self.failures[:-keep]


class Attempt:
    """A reserved login attempt: it counts against the limits until it is settled, once."""

    __slots__ = ("_address", "_guess", "_pair", "_pair_key", "_throttle", "delay", "settled")

    def __init__(
        self,
        throttle: LoginThrottle,
        guess: tuple[str, str, bytes],
        pair_key: tuple[str, str],
        pair: _Tally,
        address: _Tally,
        delay: float,
    ) -> None:
        self._throttle = throttle
        self._guess = guess
        self._pair_key = pair_key
        self._pair = pair
        self._address = address
        self.delay = delay  # seconds to wait before checking: a name many have tried is slowed
        self.settled = False

    def _settle(self) -> bool:
        if self.settled:
            return False
        self.settled = True
        self._pair.in_flight -= 1
        self._address.in_flight -= 1
        self._throttle._in_flight.pop(self._guess, None)
        return True

    def failed(self) -> bool:
        """The password was wrong (or never shown right); True for the first of shared callers."""
        if not self._settle():
            return False
        self._throttle._record_failure(self._pair_key, self._pair, self._address, self._pair_key[1])
        return True

    def succeeded(self) -> None:
        if self._settle():
            self._throttle._trust_pair(self._pair_key, self._pair)


class LoginThrottle:
    """Limits password guessing without letting a stranger lock a real user out.

    Per address and user name: at most ``per_pair`` failures per ``window_seconds``; a success
    clears them. Per address: at most ``per_address`` failures (any names), except for a pair
    that logged in within the window (a script or a colleague behind the same NAT address is
    not spraying names; the pair's own limit still holds). Attempts under way count as failures
    until they end, so a burst of simultaneous guesses is held to the limit too; the same
    password for the same name from the same address, sent many times at once, is one attempt.
    A blocked request is refused before its password is checked and leaves nothing behind.

    Per user name alone there is no lockout, as anyone could trigger it from anywhere: after
    ``name_free`` recent failures each attempt for that name waits, starting at
    ``name_first_delay`` and doubling up to ``name_delay_cap`` seconds.

    Memory is bounded: each table keeps at most ``max_entries`` keys and forgets the least
    recently failed one first (evicting a block takes that many allowed, password-checked
    attempts from ``max_entries / per_address`` addresses).
    """

    def __init__(
        self,
        *,
        per_pair: int = 5,
        per_address: int = 50,
        window_seconds: float = 300.0,
        name_free: int = 5,
        name_first_delay: float = 0.1,
        name_delay_cap: float = 2.0,
        max_entries: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(per_pair, per_address, max_entries) < 1:
            raise ValueError("login limits and the table size must be at least 1")
        self.per_pair = per_pair
        self.per_address = per_address
        self.window_seconds = window_seconds
        self.name_free = name_free
        self.name_first_delay = name_first_delay
        self.name_delay_cap = name_delay_cap
        self.max_entries = max_entries
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._pairs: OrderedDict[tuple[str, str], _Tally] = OrderedDict()
        self._addresses: OrderedDict[str, _Tally] = OrderedDict()
        self._names: OrderedDict[str, _Tally] = OrderedDict()
        self._in_flight: dict[tuple[str, str, bytes], Attempt] = {}

    def __len__(self) -> int:
        """How many keys the throttle holds (bounded by three times ``max_entries``)."""
        return len(self._pairs) + len(self._addresses) + len(self._names)

    def reserve(self, remote: str, username: str, password: str) -> Attempt | Blocked:
        """Reserve an attempt, or say how long until one is allowed. Synchronous on purpose:
        the check and the reservation happen with no await between them."""
        username = username[:64]
        guess = (remote, username, hmac.digest(self._key, password.encode(), "sha256"))
        shared = self._in_flight.get(guess)
        if shared is not None:
            return shared
        now = self._clock()
        pair_key = (remote, username)
        known = self._pairs.get(pair_key)
        wait = self._wait(known, self.per_pair, now)
        if known is None or known.trusted_until <= now:
            wait = max(wait, self._wait(self._addresses.get(remote), self.per_address, now))
        if wait > 0:
            return Blocked(wait)
        pair = self._touch(self._pairs, pair_key)
        address = self._touch(self._addresses, remote)
        pair.in_flight += 1
        address.in_flight += 1
        attempt = Attempt(self, guess, pair_key, pair, address, self._name_delay(username, now))
        self._in_flight[guess] = attempt
        return attempt

    def _wait(self, tally: _Tally | None, limit: int, now: float) -> float:
        if tally is None:
            return 0.0
        failures = tally.recent(now, self.window_seconds)
        if len(failures) + tally.in_flight < limit:
            return 0.0
        if len(failures) >= limit:  # until the limit-th newest failure leaves the window
            return max(failures[-limit] + self.window_seconds - now, 0.001)
        return 1.0  # attempts under way fill the limit: they end within a second or so

    def _name_delay(self, username: str, now: float) -> float:
        tally = self._names.get(username)
        if tally is None:
            return 0.0
        beyond = len(tally.recent(now, self.window_seconds)) - self.name_free
        if beyond < 0:
            return 0.0
        return min(self.name_delay_cap, self.name_first_delay * 2.0 ** min(beyond, 30))

    def _name_keep(self) -> int:
        doublings, delay = 0, self.name_first_delay
        while delay < self.name_delay_cap and doublings < 30:
            delay *= 2
            doublings += 1
        return self.name_free + doublings + 1

    def _touch(self, table: OrderedDict[K, _Tally], key: K, tally: _Tally | None = None) -> _Tally:
        """The key's tally, made the most recent (``tally``, or a new one, if it has none)."""
        found = table.get(key)
        if found is None:
            found = table[key] = tally if tally is not None else _Tally()
        table.move_to_end(key)
        while len(table) > self.max_entries:
            table.popitem(last=False)
        return found

    def _record_failure(
        self, pair_key: tuple[str, str], pair: _Tally, address: _Tally, username: str
    ) -> None:
        now = self._clock()
        self._touch(self._pairs, pair_key, pair).add(now, self.per_pair)
        self._touch(self._addresses, pair_key[0], address).add(now, self.per_address)
        self._touch(self._names, username).add(now, self._name_keep())

    def _trust_pair(self, pair_key: tuple[str, str], pair: _Tally) -> None:
        pair = self._touch(self._pairs, pair_key, pair)
        pair.failures.clear()
        pair.trusted_until = self._clock() + self.window_seconds
