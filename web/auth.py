"""Login, logout and the middleware that says who each request is, before any handler runs.

A request is someone when it carries a valid session cookie, or HTTP Basic credentials (scripts,
``curl``). Routes are closed unless their name is in ``PUBLIC_ROUTES``: an API route answers 401,
a page sends the browser to the login page. Requests that change state with a cookie must carry
the session's CSRF token; Basic requests cannot be forged by another site, so they need none.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from web.errors import json_error
from web.sessions import (
    COOKIE_NAME,
    CSRF_HEADER,
    LoginThrottle,
    Session,
    SessionCodec,
    basic_credentials,
    csrf_matches,
)
from web.users import Authenticator, User

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
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_LOGIN_BODY = 4096

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def current_user(request: web.Request) -> User:
    """The caller of a closed route (the middleware has already refused anyone else)."""
    user = request.get(USER)
    if not isinstance(user, User):
        raise json_error(401, "login required")
    return user


def _refuse(request: web.Request, status: int, error: str) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        return web.json_response({"error": error}, status=status)
    if status == 401:
        raise web.HTTPFound("/login")
    return web.Response(status=status, text=error)


@web.middleware
async def identity_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    session: Session | None = request.app[SESSIONS].read(request.cookies.get(COOKIE_NAME))
    user = session.user if session is not None else None
    if user is None:
        credentials = basic_credentials(request.headers.get("Authorization"))
        if credentials is not None:
            user = await request.app[AUTHENTICATOR].check(*credentials)
    request[SESSION] = session
    request[USER] = user
    route = request.match_info.route.name
    if route in PUBLIC_ROUTES or request.match_info.http_exception is not None:
        return await handler(request)
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
    """``POST /api/v1/login`` with ``{"username", "password"}``: a session cookie, or 401/429."""
    if request.content_length is not None and request.content_length > MAX_LOGIN_BODY:
        return web.json_response({"error": "request too large"}, status=413)
    try:
        body = await request.json()
        username, password = body["username"], body["password"]
        if not isinstance(username, str) or not isinstance(password, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return web.json_response(
            {"error": 'send JSON {"username": "...", "password": "..."}'}, status=400
        )
    remote = request.remote or "?"
    throttle = request.app[THROTTLE]
    wait = throttle.retry_after(remote, username)
    if wait > 0:
        return web.json_response(
            {"error": "too many failed logins; try again later"},
            status=429,
            headers={"Retry-After": str(int(wait) + 1)},
        )
    user = await request.app[AUTHENTICATOR].check(username, password)
    if user is None:
        throttle.failed(remote, username)
        log.warning("failed login for %r from %s", username[:64], remote)
        return web.json_response({"error": "wrong user name or password"}, status=401)
    throttle.succeeded(username)
    session, cookie = request.app[SESSIONS].issue(user)
    response = web.json_response(session_json(session))
    _set_session_cookie(request, response, cookie)
    log.info("%s logged in from %s", user.username, remote)
    return response


async def logout(request: web.Request) -> web.Response:
    session = request[SESSION]
    if isinstance(session, Session):
        request.app[SESSIONS].revoke(session)
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
    phones. The session is issued again for it (the old cookie is revoked)."""
    session = request[SESSION]
    if not isinstance(session, Session):
        return web.json_response({"error": "a phone is picked in a browser session"}, status=400)
    try:
        body = await request.json()
        user = session.user.at_phone(str(body["agent"]))
    except (ValueError, KeyError, TypeError) as error:
        return web.json_response({"error": str(error).strip("'\"")}, status=400)
    codec = request.app[SESSIONS]
    codec.revoke(session)
    new_session, cookie = codec.issue(user)
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
