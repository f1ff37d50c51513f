"""Login, logout and the middleware that says who each request is, before any handler runs.

A request is someone when it carries a live session cookie, or HTTP Basic credentials (scripts,
``curl``). Routes are closed unless their name is in ``PUBLIC_ROUTES``: an API route answers 401,
a page sends the browser to the login page.

Every password check, the login form's and HTTP Basic's alike, goes through one ``LoginThrottle``
(see ``web.sessions``). Every state-changing request must come from the panel's own origin (or
from no browser at all: no ``Origin``, no cross-site ``Sec-Fetch-Site``), so another site can
neither log a browser in as someone else nor make a Basic-authenticated browser change anything;
cookie requests must also carry the session's CSRF token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from yarl import URL

from web.bodies import read_json
from web.errors import json_error
from web.sessions import (
    COOKIE_NAME,
    CSRF_HEADER,
    Blocked,
    LoginThrottle,
    Session,
    SessionCodec,
    basic_credentials,
    csrf_matches,
)
from web.users import Authenticator, User, UserError

log = logging.getLogger(__name__)

SESSIONS = web.AppKey("sessions", SessionCodec)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
THROTTLE = web.AppKey("login_throttle", LoginThrottle)
SECURE_COOKIES = web.AppKey("secure_cookies", bool)
USER = web.RequestKey("user", object)  # a User, or None for an anonymous request
SESSION = web.RequestKey("session", object)  # the Session of a cookie, or None

# Routes anyone may call; the playback route checks (and audits) its callers itself.
PUBLIC_ROUTES = frozenset(
    {"healthz", "metrics", "login", "login-page", "static", "recording-audio"}
)
# Public routes that never ask who is calling: no session read, no password check for them.
# /healthz asks (a logged-in caller gets the whole report) but answers anyone.
ANONYMOUS_ROUTES = PUBLIC_ROUTES - {"recording-audio", "healthz"}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_LOGIN_BODY = 4096

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def current_user(request: web.Request) -> User:
    """The caller of a closed route (the middleware has already refused anyone else)."""
    user = request.get(USER)
    if not isinstance(user, User):
        raise json_error(401, "login required")
    return user


def same_origin(request: web.Request) -> bool:
    """Whether a request comes from the panel's own pages, or from no browser at all.

    ``Origin`` must name this server (scheme, host, port; https also counts when the panel is
    served with secure cookies, i.e. behind a TLS proxy). Without it, a browser's
    ``Sec-Fetch-Site: cross-site`` is refused; with neither header it is a script, allowed.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return request.headers.get("Sec-Fetch-Site", "").lower() != "cross-site"
    try:
        sent = URL(origin)
        schemes = {request.scheme, "https"} if request.app[SECURE_COOKIES] else {request.scheme}
        own = [URL(f"{scheme}://{request.host}") for scheme in schemes]
    except ValueError:
        return False
    if not sent.is_absolute() or sent.host is None or sent.path not in ("", "/"):
        return False
    return any(
        (sent.scheme, sent.host.lower(), sent.port)
        == (mine.scheme, (mine.host or "").lower(), mine.port)
        for mine in own
    )


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _refuse(
    request: web.Request, status: int, error: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The refusal of a request; a refused WebSocket upgrade also closes its connection."""
    if request.path.startswith("/api/"):
        response = web.json_response({"error": error}, status=status, headers=headers)
    elif status == 401:
        raise web.HTTPFound("/login")
    else:
        response = web.Response(status=status, text=error, headers=headers)
    if _is_upgrade(request):
        response.force_close()
    return response


def _too_many(request: web.Request, blocked: Blocked) -> web.Response:
    retry = {"Retry-After": str(int(blocked.retry_after) + 1)}
    return _refuse(request, 429, "too many failed logins; try again later", retry)


async def authenticate(
    request: web.Request, username: str, password: str, how: str
) -> User | Blocked | None:
    """Check a password through the login throttle: the user, None, or ``Blocked`` (then the
    password was not checked at all). A failure is logged, whatever ``how`` it came."""
    remote = request.remote or "?"
    attempt = request.app[THROTTLE].reserve(remote, username, password)
    if isinstance(attempt, Blocked):
        return attempt
    user: User | None = None
    try:
        if attempt.delay > 0:  # a name many have guessed at: slowed down, never locked out
            await asyncio.sleep(attempt.delay)
        user = await request.app[AUTHENTICATOR].check(username, password)
    finally:  # an attempt given up half way counts as failed: it did not show the password
        if user is not None:
            attempt.succeeded()
        elif attempt.failed():
            log.warning("failed %s for %r from %s", how, username[:64], remote)
    return user


async def still_signed_in(request: web.Request) -> User | None:
    """The caller of a long request as they are now: None once their session has ended (logout,
    new password, role or phones, removal) or their Basic password no longer works."""
    session = request.get(SESSION)
    if isinstance(session, Session):
        return session.user if await request.app[SESSIONS].alive(session) else None
    credentials = basic_credentials(request.headers.get("Authorization"))
    if credentials is None:
        return None
    return await request.app[AUTHENTICATOR].check(*credentials)


@web.middleware
async def identity_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[SESSION] = None
    request[USER] = None
    if request.method not in SAFE_METHODS and not same_origin(request):
        return _refuse(request, 403, "cross-site request refused")
    route = request.match_info.route.name
    if route in ANONYMOUS_ROUTES or request.match_info.http_exception is not None:
        return await handler(request)
    session = await request.app[SESSIONS].read(request.cookies.get(COOKIE_NAME))
    user = session.user if session is not None else None
    blocked: Blocked | None = None
    if user is None:
        credentials = basic_credentials(request.headers.get("Authorization"))
        if credentials is not None:
            outcome = await authenticate(request, *credentials, how="HTTP Basic login")
            if isinstance(outcome, Blocked):
                blocked = outcome
            else:
                user = outcome
    request[SESSION] = session
    request[USER] = user
    if route in PUBLIC_ROUTES:
        return await handler(request)
    if blocked is not None:
        return _too_many(request, blocked)
    if user is None:
        return _refuse(request, 401, "login required")
    if (
        session is not None
        and request.method not in SAFE_METHODS
        and not csrf_matches(session, request.headers.get(CSRF_HEADER))
    ):
        return _refuse(request, 403, "missing or wrong CSRF token")
    return await handler(request)


async def login(request: web.Request) -> web.Response:
    """``POST /api/v1/login`` with ``{"username", "password"}`` as ``application/json`` (a form
    another site can post is refused): a session cookie, or 401/429."""
    if request.content_type != "application/json":
        return web.json_response({"error": "send the login as application/json"}, status=415)
    body = await read_json(request, max_bytes=MAX_LOGIN_BODY, max_depth=4)
    username = body.get("username") if isinstance(body, dict) else None
    password = body.get("password") if isinstance(body, dict) else None
    if not isinstance(username, str) or not isinstance(password, str):
        return web.json_response(
            {"error": 'send JSON {"username": "...", "password": "..."}'}, status=400
        )
    remote = request.remote or "?"
    outcome = await authenticate(request, username, password, how="login")
    if isinstance(outcome, Blocked):
        return _too_many(request, outcome)
    if outcome is None:
        return web.json_response({"error": "wrong user name or password"}, status=401)
    session, cookie = await request.app[SESSIONS].issue(outcome)
    answer = web.json_response(session_json(session))
    _set_session_cookie(request, answer, cookie)
    log.info("%s logged in from %s", outcome.username, remote)
    return answer


async def logout(request: web.Request) -> web.Response:
    """Ends the session for good: its row is deleted, so the cookie is refused even if kept."""
    session = request[SESSION]
    if isinstance(session, Session):
        await request.app[SESSIONS].revoke(session)
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE_NAME, path="/")
    return response


async def whoami(request: web.Request) -> web.Response:
    """``GET /api/v1/session``: who is logged in, and the CSRF token the pages send back."""
    session = request[SESSION]
    if not isinstance(session, Session):
        user = current_user(request)
        return web.json_response({"user": user_json(user), "csrf": None})
    return web.json_response(session_json(session))


def user_json(user: User) -> dict[str, object]:
    return {
        "username": user.username,
        "role": user.role.value,
        "agent": user.agent_interface,
        "phones": list(user.phones),
    }


async def pick_phone(request: web.Request) -> web.Response:
    """``POST /api/v1/session/phone`` ``{"agent": "PJSIP/agent2"}``: work at another of one's
    phones. The session is issued again for it (the old one ends)."""
    session = request[SESSION]
    if not isinstance(session, Session):
        return web.json_response({"error": "a phone is picked in a browser session"}, status=400)
    body = await read_json(request, max_bytes=MAX_LOGIN_BODY, max_depth=4)
    agent = body.get("agent") if isinstance(body, dict) else None
    if not isinstance(agent, str):
        return web.json_response({"error": 'send JSON {"agent": "PJSIP/..."}'}, status=400)
    try:
        user = session.user.at_phone(agent)
    except UserError as error:  # our own words: which phone is not theirs
        return web.json_response({"error": str(error)}, status=400)
    new_session, cookie = await request.app[SESSIONS].reissue(session, user)
    response = web.json_response(session_json(new_session))
    _set_session_cookie(request, response, cookie)
    log.info("%s works at %s", user.username, user.agent_interface)
    return response


def _set_session_cookie(request: web.Request, response: web.Response, cookie: str) -> None:
    response.set_cookie(
        COOKIE_NAME,
        cookie,
        max_age=int(request.app[SESSIONS].max_age_seconds),
        httponly=True,
        samesite="Strict",
        secure=request.app[SECURE_COOKIES],
        path="/",
    )


def session_json(session: Session) -> dict[str, object]:
    return {"user": user_json(session.user), "csrf": session.csrf}


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/login", login, name="login")
    app.router.add_post("/api/v1/logout", logout, name="logout")
    app.router.add_get("/api/v1/session", whoami, name="session")
    app.router.add_post("/api/v1/session/phone", pick_phone, name="session-phone")
