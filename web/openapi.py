"""``GET /api/v1/openapi.json``: the API described for people and tools (OpenAPI 3.1).

The document is written out here rather than generated, and a test holds it to the routes the
app really has, method by method, so neither can drift from the other.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

_ERROR = {"$ref": "#/components/schemas/Error"}
_JSON_ERROR = {"application/json": {"schema": _ERROR}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _refused(*codes: int) -> dict[str, Any]:
    texts = {
        400: "bad input; the message says what to fix",
        401: "login required",
        403: "not allowed for this user, or CSRF token missing",
        404: "no such object",
        409: "Asterisk refused the action",
        413: "request too large",
        416: "range not satisfiable",
        429: "too many failed logins",
        503: "not available yet",
    }
    return {str(code): {"description": texts[code], "content": _JSON_ERROR} for code in codes}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _object(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_TICKET_NUMBER = {
    "name": "number",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9A-Za-z]{1,16}-[0-9]{8}-[0-9]{6}$"},
}
_LIMIT = _query(
    "limit", "at most this many (1-500)", {"type": "integer", "minimum": 1, "maximum": 500}
)
_SINCE = _query("since", "on or after this local day", {"type": "string", "format": "date"})
_CALLER = _query("caller", "caller number, any usual spelling", {"type": "string"})

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "hotline-bridge panel API", "version": "1"},
    "components": {
        "securitySchemes": {
            "session": {"type": "apiKey", "in": "cookie", "name": "hotline_session"},
            "basic": {"type": "http", "scheme": "basic"},
        },
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            },
            "User": {
                "type": "object",
                "properties": {
                    "username": {"type": "string"},
                    "role": {"enum": ["admin", "supervisor", "agent"]},
                    "agent": {"type": ["string", "null"]},
                    "phones": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["username", "role", "agent", "phones"],
            },
            "Session": {
                "type": "object",
                "properties": {
                    "user": {"$ref": "#/components/schemas/User"},
                    "csrf": {"type": ["string", "null"]},
                },
                "required": ["user", "csrf"],
            },
            "Ticket": {
                "type": "object",
                "properties": {
                    "number": {"type": "string"},
                    "status": {"type": "string"},
                    "caller_number": {"type": ["string", "null"]},
                    "caller_name": {"type": ["string", "null"]},
                    "owner_agent": {"type": ["string", "null"]},
                    "on_time": {"type": ["boolean", "null"]},
                    "clocks": {"type": "array", "items": {"type": "object"}},
                    "rating": {
                        "description": "the citizen's latest rating of a call about it",
                        "type": ["object", "null"],
                        "properties": {
                            "code": {"type": "string"},
                            "agent": {"type": ["string", "null"]},
                            "call": {"type": ["string", "null"]},
                            "at": {"type": "string"},
                            "to_review": {"type": "boolean"},
                        },
                    },
                },
                "required": ["number", "status", "clocks"],
            },
            "Call": {
                "type": "object",
                "properties": {
                    "uniqueid": {"type": "string"},
                    "started_at": {"type": "string"},
                    "outcome": {"type": "string"},
                    "agent": {"type": ["string", "null"]},
                    "ticket": {"type": ["string", "null"]},
                    "rating": {
                        "description": "scale code, not_rated, or null (unanswered)",
                        "type": ["string", "null"],
                    },
                },
                "required": ["uniqueid", "started_at", "outcome"],
            },
            "TicketEdit": {
                "type": "object",
                "properties": {
                    "status": {"type": "string"},
                    "category": {"type": "string", "maxLength": 128},
                    "description": {"type": "string"},
                    "department": {"type": "string", "maxLength": 128},
                    "satisfaction": {"type": "integer", "minimum": 1, "maximum": 5},
                },
                "additionalProperties": False,
                "minProperties": 1,
            },
        },
    },
    "security": [{"session": []}, {"basic": []}],
    "paths": {
        "/healthz": {
            "get": {
                "summary": "whether AMI, the database, the bus and FastAGI are up (the full "
                "report with their counters after a login)",
                "security": [],
                "responses": {
                    "200": _json({"type": "object"}, "all vital parts up"),
                    "503": _json({"type": "object"}, "a vital part is down"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text (a bearer token when HOTLINE_METRICS_TOKEN is set)",
                "security": [],
                "responses": {
                    "200": {"description": "metrics", "content": {"text/plain": {}}},
                    "401": {"description": "token required"},
                },
            }
        },
        "/api/v1/login": {
            "post": {
                "summary": "log in; sets the session cookie",
                "security": [],
                "requestBody": _body(
                    _object(
                        {"username": {"type": "string"}, "password": {"type": "string"}},
                        "username",
                        "password",
                    )
                ),
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Session"}),
                    **_refused(400, 401, 413, 429),
                },
            }
        },
        "/api/v1/logout": {
            "post": {
                "summary": "log out (revokes the session)",
                "responses": {"200": _json({"type": "object"}), **_refused(401, 403)},
            }
        },
        "/api/v1/session": {
            "get": {
                "summary": "who is logged in, and the CSRF token for changes",
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Session"}),
                    **_refused(401),
                },
            }
        },
        "/api/v1/session/phone": {
            "post": {
                "summary": "work at another of one's phones (the session is issued again)",
                "requestBody": _body(_object({"agent": {"type": "string"}}, "agent")),
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Session"}),
                    **_refused(400, 401, 403),
                },
            }
        },
        "/api/v1/stats": {
            "get": {
                "summary": "live statistics: the shape of `hotline replay --json`, plus seq and "
                "at (agents: without other agents' callers)",
                "responses": {"200": _json({"type": "object"}), **_refused(401, 503)},
            }
        },
        "/api/v1/tickets": {
            "get": {
                "summary": "tickets, newest first (agents: their phones' and unsigned ones)",
                "parameters": [
                    _query("status", "only this status", {"type": "string"}),
                    _query("open", "only open tickets", {"enum": ["true", "false"]}),
                    _query("overdue", "only late open tickets", {"enum": ["true", "false"]}),
                    _query(
                        "review",
                        "only tickets whose rating awaits a supervisor's review",
                        {"enum": ["1", "true", "false"]},
                    ),
                    _CALLER,
                    _SINCE,
                    _LIMIT,
                ],
                "responses": {
                    "200": _json(
                        {"type": "array", "items": {"$ref": "#/components/schemas/Ticket"}}
                    ),
                    **_refused(400, 401),
                },
            }
        },
        "/api/v1/tickets/{number}": {
            "get": {
                "summary": "one ticket with its SLA clocks, calls and recordings "
                "(agents: their phones' tickets and unsigned ones)",
                "parameters": [_TICKET_NUMBER],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Ticket"}),
                    **_refused(401, 404),
                },
            },
            "patch": {
                "summary": "change a ticket's status and fields together, or nothing "
                "(agents: their own tickets; at most 64 KiB of JSON)",
                "parameters": [_TICKET_NUMBER],
                "requestBody": _body({"$ref": "#/components/schemas/TicketEdit"}),
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Ticket"}),
                    **_refused(400, 401, 403, 404, 413),
                },
            },
        },
        "/api/v1/tickets/{number}/reviewed": {
            "post": {
                "summary": "a supervisor followed up the ticket's rating: off the review list",
                "parameters": [_TICKET_NUMBER],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Ticket"}),
                    **_refused(401, 403, 404, 409),
                },
            }
        },
        "/api/v1/callbacks": {
            "get": {
                "summary": "the callback list (one task per missed caller), oldest first, with "
                "today's callback figures and the retry policy",
                "parameters": [
                    _query("all", "closed tasks too", {"enum": ["true", "false"]}),
                ],
                "responses": {"200": _json({"type": "object"}), **_refused(401)},
            }
        },
        "/api/v1/callbacks/{task_id}/dial": {
            "post": {
                "summary": "call back: the PBX rings the agent's phone (one's own; supervisors "
                "may name one), then the citizen's",
                "parameters": [
                    {
                        "name": "task_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1},
                    }
                ],
                "requestBody": _body(_object({"agent": {"type": "string"}})),
                "responses": {
                    "200": _json({"type": "object"}),
                    **_refused(400, 401, 403, 404, 409, 503),
                },
            }
        },
        "/api/v1/tickets/{number}/visit": {
            "post": {
                "summary": "the return visit of a resolved ticket: the PBX rings the agent's "
                "phone, then the citizen's, who rates the whole case when the agent hangs up",
                "parameters": [_TICKET_NUMBER],
                "requestBody": _body(_object({"agent": {"type": "string"}})),
                "responses": {
                    "200": _json({"type": "object"}),
                    **_refused(400, 401, 403, 404, 409, 503),
                },
            }
        },
        "/api/v1/calls": {
            "get": {
                "summary": "calls of the journal, newest first (agents: their own)",
                "parameters": [
                    _query("agent", "only this agent's (supervisors)", {"type": "string"}),
                    _CALLER,
                    _SINCE,
                    _LIMIT,
                ],
                "responses": {
                    "200": _json({"type": "array", "items": {"$ref": "#/components/schemas/Call"}}),
                    **_refused(400, 401),
                },
            }
        },
        "/api/v1/live": {
            "get": {
                "summary": "WebSocket: a snapshot, then stats.delta and call.finished messages",
                "responses": {
                    "101": {"description": "switching to WebSocket"},
                    **_refused(401, 403),
                },
            }
        },
        "/api/v1/recordings/{recording_id}/audio": {
            "get": {
                "summary": "a recording's audio (audio/wav), one byte range honoured",
                "parameters": [
                    {
                        "name": "recording_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1},
                    },
                    {
                        "name": "Range",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {"description": "the whole file", "content": {"audio/wav": {}}},
                    "206": {"description": "the range asked for", "content": {"audio/wav": {}}},
                    **_refused(401, 403, 404, 416),
                },
            }
        },
        "/api/v1/agent/pause": {
            "post": {
                "summary": "pause or unpause an agent in all queues (AMI QueuePause)",
                "requestBody": _body(
                    _object(
                        {
                            "paused": {"type": "boolean"},
                            "reason": {"type": "string", "maxLength": 64},
                            "agent": {"type": "string", "description": "supervisors"},
                        },
                        "paused",
                    )
                ),
                "responses": {
                    "200": _json({"type": "object"}),
                    **_refused(400, 401, 403, 409, 503),
                },
            }
        },
        "/api/v1/agent/queues": {
            "post": {
                "summary": "log an agent in to or out of a queue (AMI QueueAdd / QueueRemove)",
                "requestBody": _body(
                    _object(
                        {
                            "queue": {"type": "string"},
                            "member": {"type": "boolean"},
                            "agent": {"type": "string", "description": "supervisors"},
                        },
                        "queue",
                        "member",
                    )
                ),
                "responses": {
                    "200": _json({"type": "object"}),
                    **_refused(400, 401, 403, 409, 503),
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "this document",
                "responses": {"200": _json({"type": "object"}), **_refused(401)},
            }
        },
    },
}


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", openapi, name="openapi")
