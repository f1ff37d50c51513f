"""The one shape of a refusal from the panel's API: ``{"error": "..."}`` with the status."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

_KINDS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    413: web.HTTPRequestEntityTooLarge,
    500: web.HTTPInternalServerError,
    503: web.HTTPServiceUnavailable,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str) -> web.HTTPException:
    """An exception to raise: its body is always valid JSON, whatever the message holds."""
    kind, text = _KINDS[status], json.dumps({"error": message})
    if kind is web.HTTPRequestEntityTooLarge:  # wants the limit; the message already says it
        return kind(0, text=text, content_type="application/json")
    return kind(text=text, content_type="application/json")


def json_refusals(handler: Handler) -> Handler:
    """Wrap an API handler so that whatever goes wrong inside still answers ``{"error": ...}``.

    A safety net, not a substitute for checking input: a refusal raised by aiohttp itself (plain
    text) keeps its status but gets the JSON shape, and a bug becomes a logged 500 whose body
    says nothing about the code (no exception text reaches the client).
    """

    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as refusal:
            if refusal.status < 400 or refusal.content_type == "application/json":
                raise
            return web.json_response({"error": refusal.reason.lower()}, status=refusal.status)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return web.json_response({"error": "internal error"}, status=500)

    return answer
