"""aiohttp application factory. The composition root builds the parts and passes them in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from web import auth, openapi
from web.agent_actions import AgentActions
from web.api import PanelApi
from web.callbacks_api import CallbackApi
from web.live import LiveHub
from web.metrics import Metrics
from web.recordings import RecordingPlayback
from web.sessions import LoginThrottle, SessionCodec
from web.users import Authenticator, User

HealthProbe = Callable[[], Awaitable[dict[str, Any]]]

HEALTH_PROBE = web.AppKey("health_probe", HealthProbe)
VITAL_PARTS = ("ami", "esl", "database", "bus", "agi")
STATIC_DIR = Path(__file__).with_name("static")


async def healthz(request: web.Request) -> web.Response:
    """Whether the PBX link (AMI or the Event Socket), the database, the bus and FastAGI are up
    (503 when one is not).

    Anyone may ask (load balancers and monitors have no login), so without one the answer is
    only ``ok`` and each vital part's ``up``: paths, error texts and counters tell an outsider
    how the hotline is built and how busy it is. A logged-in user gets the whole report.
    """
    report = await request.app[HEALTH_PROBE]()
    vital = [part for part in VITAL_PARTS if part in report]
    healthy = all(report[part]["up"] for part in vital)
    status = 200 if healthy else 503
    if isinstance(request.get(auth.USER), User):
        return web.json_response({"ok": healthy, **report}, status=status)
    shown = {part: {"up": bool(report[part]["up"])} for part in vital}
    return web.json_response({"ok": healthy, **shown}, status=status)


@dataclass
class WebParts:
    """Everything the web side serves; the optional parts add their routes when present."""

    health: HealthProbe
    sessions: SessionCodec
    authenticator: Authenticator
    secure_cookies: bool = False
    playback: RecordingPlayback | None = None
    api: PanelApi | None = None
    live: LiveHub | None = None
    metrics: Metrics | None = None
    agent_actions: AgentActions | None = None
    callbacks: CallbackApi | None = None


def _page(name: str) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    async def page(request: web.Request) -> web.FileResponse:
        response = web.FileResponse(STATIC_DIR / name)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
            "media-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"  # always asked for: a logout sticks
        return response

    return page


def create_app(parts: WebParts) -> web.Application:
    app = web.Application(middlewares=[auth.identity_middleware], client_max_size=1 << 20)
    app[HEALTH_PROBE] = parts.health
    app[auth.SESSIONS] = parts.sessions
    app[auth.AUTHENTICATOR] = parts.authenticator
    app[auth.THROTTLE] = LoginThrottle()
    app[auth.SECURE_COOKIES] = parts.secure_cookies
    app.router.add_get("/healthz", healthz, name="healthz")
    auth.add_routes(app)
    openapi.add_routes(app)
    for part in (
        parts.playback,
        parts.api,
        parts.live,
        parts.metrics,
        parts.agent_actions,
        parts.callbacks,
    ):
        if part is not None:
            part.add_routes(app)
    if STATIC_DIR.is_dir():
        app.router.add_get("/", _page("panel.html"), name="panel")
        app.router.add_get("/agent", _page("agent.html"), name="agent-page")
        app.router.add_get("/tickets", _page("tickets.html"), name="tickets-page")
        app.router.add_get("/login", _page("login.html"), name="login-page")
        app.router.add_static("/static", STATIC_DIR, name="static")
    return app
