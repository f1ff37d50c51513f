"""aiohttp application factory. The composition root passes in what the routes need."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from web.recordings import RecordingPlayback

HealthProbe = Callable[[], Awaitable[dict[str, Any]]]

HEALTH_PROBE = web.AppKey("health_probe", HealthProbe)
VITAL_PARTS = ("ami", "database", "bus", "agi")


async def healthz(request: web.Request) -> web.Response:
    """No login: says whether AMI, the database and the bus are up (503 when one is not)."""
    report = await request.app[HEALTH_PROBE]()
    healthy = all(report[part]["up"] for part in VITAL_PARTS if part in report)
    return web.json_response({"ok": healthy, **report}, status=200 if healthy else 503)


def create_app(
    health_probe: HealthProbe, playback: RecordingPlayback | None = None
) -> web.Application:
    app = web.Application()
    app[HEALTH_PROBE] = health_probe
    app.router.add_get("/healthz", healthz)
    if playback is not None:
        playback.add_routes(app)
    return app
