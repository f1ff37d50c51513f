"""People who may use the web side, their roles, and how their passwords are checked.

Roles decide what a person may hear: ``admin`` and ``supervisor`` every recording, ``agent`` only
the calls they took themselves (their softphone's interface, e.g. ``PJSIP/agent1``). Passwords are
kept as scrypt hashes; checking one costs tens of milliseconds, so it runs in a worker thread. A
successful check is remembered for a minute (an audio element sends many Range requests) together
with the stored hash it matched: each request still reads the user's row, and a changed password or
a removed user is refused at once, without scrypt.

Browser sessions are rows of ``web_sessions`` (``web.sessions`` reads and writes them). They live
here, beside the users, because changing or removing a user ends that user's sessions in the same
transaction, whichever process does it (the panel, or ``hotline users`` from a shell).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, DateTime, Integer, String, delete, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from infra.storage import Base, Transactions


class Role(StrEnum):
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    AGENT = "agent"


HEARS_EVERY_CALL = frozenset({Role.ADMIN, Role.SUPERVISOR})

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# An Asterisk softphone (PJSIP/agent1), or a FreeSWITCH mod_callcenter agent (agent1, 1001@default);
# in a hotline of several PBXs either may carry its PBX's name first (west/PJSIP/agent1).
AGENT_INTERFACE = re.compile(
    r"(?:[A-Za-z0-9_.-]{1,16}/)?(?:PJSIP/[A-Za-z0-9_]{1,40}|[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63})"
)
MIN_PASSWORD_LENGTH = 8
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class UserError(ValueError):
    """Bad input for a user (name, role, agent interface, password); the message says which."""


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    agent_interfaces: Mapped[str] = mapped_column(String(400), default="")  # "PJSIP/a,PJSIP/b"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebSessionRow(Base):
    """One logged-in browser. The key is a hash of the session id: the table alone (a backup, a
    read-only look at the database) does not give anyone a cookie's id."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    agent_interface: Mapped[str | None] = mapped_column(String(64), nullable=True)
    phones: Mapped[str] = mapped_column(String(400), default="")  # "PJSIP/a,PJSIP/b"
    csrf: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


@dataclass(frozen=True, slots=True)
class User:
    """Who is asking; ``agent_interface`` is the phone they work at now, one of ``phones``
    (an agent may have several desks and picks one in the panel)."""

    username: str
    role: Role
    agent_interface: str | None
    phones: tuple[str, ...] = ()

    def at_phone(self, interface: str) -> User:
        if interface not in self.phones:
            raise UserError(f"{interface[:70]!r} is not one of {self.username}'s phones")
        return User(self.username, self.role, interface, self.phones)

    def may_hear(self, call_agent_interface: str | None) -> bool:
        if self.role in HEARS_EVERY_CALL:
            return True
        return call_agent_interface is not None and call_agent_interface == self.agent_interface


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    encoded = [base64.b64encode(part).decode() for part in (salt, digest)]
    return "scrypt${n}${r}${p}$".format(**_SCRYPT) + "$".join(encoded)


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def check_new_user(username: str, role: str, phones: Sequence[str], password: str) -> None:
    if not _USERNAME.fullmatch(username):
        raise UserError(f"user names are lower case letters, digits, . _ -: {username[:70]!r}")
    if role not in {r.value for r in Role}:
        raise UserError(f"role must be one of {', '.join(r.value for r in Role)}: {role!r}")
    if role == Role.AGENT and not phones:
        raise UserError(
            "an agent needs --agent: their softphone's interface (PJSIP/agent1) on Asterisk,"
            " or their agent name on FreeSWITCH"
        )
    for phone in phones:
        if not AGENT_INTERFACE.fullmatch(phone):
            raise UserError(f"not an agent interface (PJSIP/<id>) or agent name: {phone[:70]!r}")
    if len(phones) > 8:
        raise UserError("at most 8 phones per user")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"passwords have at least {MIN_PASSWORD_LENGTH} characters")


def _user_id(connection: Connection, username: object) -> int | None:
    table = UserRow.__table__
    return connection.execute(select(table.c.id).where(table.c.username == username)).scalar()


def end_sessions(connection: Connection, username: object) -> int:
    """Log the user out of every browser; how many sessions ended."""
    table = WebSessionRow.__table__
    return connection.execute(delete(table).where(table.c.username == username)).rowcount


def save_user(connection: Connection, values: dict[str, object]) -> bool:
    """Add the user, or replace role, interface and password of an existing one; True if new.

    Their sessions end in the same transaction: a session carries the role and phones it was
    issued with, and whoever set a new password wants the old one's holders out now.
    """
    table = UserRow.__table__
    found = _user_id(connection, values["username"])
    end_sessions(connection, values["username"])
    if found is None:
        connection.execute(insert(table).values(**values))
        return True
    changed = {k: v for k, v in values.items() if k not in ("username", "created_at")}
    connection.execute(update(table).where(table.c.id == found).values(**changed))
    return False


def remove_user(connection: Connection, username: str) -> bool:
    """Remove the user and end their sessions; True if there was such a user."""
    table = UserRow.__table__
    end_sessions(connection, username)
    return connection.execute(delete(table).where(table.c.username == username)).rowcount > 0


def list_users(connection: Connection) -> list[User]:
    table = UserRow.__table__
    rows = connection.execute(select(table).order_by(table.c.username))
    return [_user(row) for row in rows]


def _user(row: Any) -> User:
    phones = tuple(p for p in row.agent_interfaces.split(",") if p)
    return User(row.username, Role(row.role), phones[0] if phones else None, phones)


def _credentials(connection: Connection, username: str) -> tuple[User, str] | None:
    table = UserRow.__table__
    row = connection.execute(select(table).where(table.c.username == username)).first()
    if row is None:
        return None
    return _user(row), row.password_hash


@dataclass(frozen=True, slots=True)
class _Remembered:
    at: float
    password_hash: str  # the stored hash the password matched: a new one means check again


class Authenticator:
    """Checks a user name and password against the users table, off the event loop.

    A good password is remembered for ``remember_seconds`` (at most ``remember_max`` of them,
    the least recently used forgotten first), keyed by a keyed digest of it, never the password.
    A remembered one still costs a read of the user's row: it is accepted only while the row
    holds the same hash, so a new password, a new role or a removal takes effect at once.
    """

    def __init__(
        self,
        units: Transactions,
        *,
        remember_seconds: float = 60.0,
        remember_max: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.units = units
        self.remember_seconds = remember_seconds
        self.remember_max = remember_max
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._recent: OrderedDict[tuple[str, bytes], _Remembered] = OrderedDict()
        self._checking: dict[tuple[str, bytes], asyncio.Future[tuple[User, str] | None]] = {}

    async def check(self, username: str, password: str) -> User | None:
        token = (username, hmac.digest(self._key, password.encode(), "sha256"))
        remembered = self._recent.get(token)
        if remembered is not None and self.clock() - remembered.at < self.remember_seconds:
            found = await self.units(lambda connection: _credentials(connection, username))
            if found is not None and hmac.compare_digest(found[1], remembered.password_hash):
                self._recent.move_to_end(token)
                return found[0]  # as the row says now: a new role or phone shows at once
        self._recent.pop(token, None)
        pending = self._checking.get(token)
        if pending is None:  # the same first login many times at once costs one scrypt
            pending = self._checking[token] = asyncio.ensure_future(self._check(username, password))
            pending.add_done_callback(lambda _: self._checking.pop(token, None))
        checked = await asyncio.shield(pending)
        if checked is None:
            return None
        user, stored = checked
        self._recent[token] = _Remembered(self.clock(), stored)
        self._recent.move_to_end(token)
        while len(self._recent) > self.remember_max:
            self._recent.popitem(last=False)
        return user

    async def _check(self, username: str, password: str) -> tuple[User, str] | None:
        found = await self.units(lambda connection: _credentials(connection, username))
        if found is None:
            await asyncio.to_thread(password_matches, password, _dummy_hash())  # same cost
            return None
        user, stored = found
        if not await asyncio.to_thread(password_matches, password, stored):
            return None
        return user, stored


@functools.cache
def _dummy_hash() -> str:
    """An unknown name costs as much as a wrong password, so names cannot be probed by timing."""
    return hash_password(secrets.token_urlsafe(16))


async def user_values(
    username: str, role: Role, phones: Sequence[str], password: str
) -> dict[str, object]:
    """A users row for a checked new user; the password is hashed in a worker thread."""
    check_new_user(username, role.value, phones, password)
    return {
        "username": username,
        "password_hash": await asyncio.to_thread(hash_password, password),
        "role": role.value,
        "agent_interfaces": ",".join(dict.fromkeys(phones)),
        "created_at": datetime.now(UTC),
    }


def _add_if_missing(connection: Connection, values: dict[str, object]) -> bool:
    if _user_id(connection, values["username"]) is not None:
        return False
    connection.execute(insert(UserRow.__table__).values(**values))
    return True


async def ensure_first_admin(units: Transactions, username: str, password: str) -> bool:
    """``HOTLINE_ADMIN_USER``/``_PASSWORD``: create that admin unless the name exists (an
    existing user keeps the password set with ``hotline users``); True if created."""
    return await add_user_if_missing(units, username, Role.ADMIN, password)


async def add_user_if_missing(
    units: Transactions,
    username: str,
    role: Role,
    password: str,
    phones: Sequence[str] = (),
) -> bool:
    """Create the user unless the name exists; an existing one keeps its role, password and
    phones (``hotline demo`` on a database somebody already uses). True if created."""
    values = await user_values(username, role, phones, password)
    return await units(lambda connection: _add_if_missing(connection, values))


async def set_password(
    units: Transactions,
    username: str,
    role: Role,
    password: str,
    phones: Sequence[str] = (),
) -> None:
    """Add the user with ``role``, or give an existing one this role and password."""
    values = await user_values(username, role, phones, password)
    await units(lambda connection: save_user(connection, values))
