"""The one shape of a refusal from the panel's API: ``{"error": "..."}`` with the status."""

from __future__ import annotations

import json

from aiohttp import web

_KINDS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    503: web.HTTPServiceUnavailable,
}


def json_error(status: int, message: str) -> web.HTTPException:
    """An exception to raise: its body is always valid JSON, whatever the message holds."""
    return _KINDS[status](text=json.dumps({"error": message}), content_type="application/json")
