"""Who is asking: session cookies, HTTP Basic for scripts, CSRF tokens and login rate limits.

A session lives in the cookie itself, encrypted and signed with Fernet (AES-CBC and HMAC-SHA256)
under ``HOTLINE_SESSION_SECRET``, so the server keeps no session table and a restart keeps people
logged in. The cookie is ``HttpOnly`` and ``SameSite=Strict``; state-changing requests made with
it must also send the session's CSRF token in ``X-CSRF-Token``. Logging out revokes the session's
id in this process until the cookie would have expired anyway.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken

from web.users import Role, User

COOKIE_NAME = "hotline_session"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user: User
    csrf: str
    issued_at: float


class SessionCodec:
    """Turns a session into a cookie value and back; a forged, stale or revoked one is None."""

    def __init__(
        self,
        secret: str | None,
        *,
        max_age_seconds: float = 12 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fernet = Fernet(secret.encode() if secret else Fernet.generate_key())
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._revoked: dict[str, float] = {}

    @staticmethod
    def new_secret() -> str:
        return Fernet.generate_key().decode()

    def issue(self, user: User) -> tuple[Session, str]:
        session = Session(secrets.token_urlsafe(12), user, secrets.token_urlsafe(24), self._clock())
        body = {
            "sid": session.id,
            "u": user.username,
            "r": user.role.value,
            "a": user.agent_interface,
            "p": list(user.phones),
            "csrf": session.csrf,
            "iat": session.issued_at,
        }
        token = self._fernet.encrypt_at_time(json.dumps(body).encode(), int(session.issued_at))
        return session, token.decode()

    def read(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            raw = self._fernet.decrypt_at_time(
                cookie.encode(), int(self.max_age_seconds), int(self._clock())
            )
            body = json.loads(raw)
            user = User(body["u"], Role(body["r"]), body["a"], tuple(body.get("p", ())))
            session = Session(body["sid"], user, body["csrf"], body["iat"])
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        return None if session.id in self._revoked else session

    def revoke(self, session: Session) -> None:
        now = self._clock()
        self._revoked = {
            sid: at for sid, at in self._revoked.items() if now - at < self.max_age_seconds
        }
        self._revoked[session.id] = session.issued_at


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


class LoginThrottle:
    """At most ``attempts`` failed logins per ``window_seconds``, per address and per user name.

    A blocked request is refused before its password is even checked, so guessing stays slow and
    a flood of attempts costs no scrypt work.
    """

    def __init__(
        self,
        attempts: int = 5,
        window_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.attempts = attempts
        self.window_seconds = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and self._clock() - failures[0] > self.window_seconds:
            failures.popleft()
        return failures

    def retry_after(self, remote: str, username: str) -> float:
        """Seconds until another attempt is allowed; 0 when it is allowed now."""
        waits = [0.0]
        for key in (f"ip:{remote}", f"user:{username}"):
            failures = self._recent(key)
            if len(failures) >= self.attempts:
                waits.append(failures[0] + self.window_seconds - self._clock())
        return max(waits)

    def failed(self, remote: str, username: str) -> None:
        if len(self._failures) > 10_000:  # a spray of names: forget the oldest picture
            self._failures.clear()
        for key in (f"ip:{remote}", f"user:{username}"):
            self._recent(key).append(self._clock())

    def succeeded(self, username: str) -> None:
        self._failures.pop(f"user:{username}", None)
