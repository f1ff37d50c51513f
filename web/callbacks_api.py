"""The callback list over HTTP: what the agent's desk and the supervisor's ticket view show,
and the "Call back" button.

``GET /api/v1/callbacks`` lists the open tasks, oldest missed first (``?all=true``: closed ones
too), with today's callback figures. ``POST /api/v1/callbacks/{id}/dial`` starts an attempt
from the caller's own phone (a supervisor or admin may name an agent's with ``"agent"``): the
PBX rings that phone, then the citizen. 409: the task is not waiting for a call (already
dialling, reached, given up) or the PBX refused; 503: no PBX to dial through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from callbacks.service import CallbackService
from callbacks.store import CallbackError, CallbackStore, CallbackTask
from pbx.control import PbxRefused, PbxUnavailable
from tickets.model import TicketError
from tickets.views import local_time
from web.agent_actions import acting_interface
from web.api import TICKET_NUMBER
from web.auth import current_user
from web.bodies import read_json
from web.errors import json_error, json_refusals

_TASK_ID = re.compile(r"[1-9][0-9]{0,17}")
MAX_BODY = 1024


def callback_json(task: CallbackTask, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "id": task.id,
        "kind": task.kind,
        "ticket": task.ticket,
        "caller_number": task.caller_number,
        "caller_name": task.caller_name,
        "status": task.status.value,
        "missed_calls": task.missed_calls,
        "requested_at": local_time(task.requested_at, zone),
        "last_missed_at": local_time(task.last_missed_at, zone),
        "attempts": task.attempts,
        "next_attempt_at": local_time(task.next_attempt_at, zone) or None,
        "agent": task.agent,
        "last_outcome": task.last_outcome,
        "reached_at": local_time(task.reached_at, zone) or None,
        "stopped_because": task.stopped_because,
    }


class CallbackApi:
    def __init__(
        self,
        service: CallbackService,
        store: CallbackStore,
        zone: ZoneInfo,
        clock: Callable[[], datetime],
    ) -> None:
        self.service = service
        self.store = store
        self.zone = zone
        self.clock = clock

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/callbacks", json_refusals(self.list), name="callbacks")
        app.router.add_post(
            "/api/v1/callbacks/{task_id}/dial", json_refusals(self.dial), name="callback-dial"
        )
        app.router.add_post(
            "/api/v1/tickets/{number}/visit", json_refusals(self.visit), name="ticket-visit"
        )

    async def list(self, request: web.Request) -> web.Response:
        current_user(request)
        open_only = request.query.get("all") != "true"
        tasks = await self.store.tasks(open_only=open_only, limit=500)
        midnight = datetime.combine(self.clock().astimezone(self.zone).date(), time(), self.zone)
        return web.json_response(
            {
                "callbacks": [callback_json(task, self.zone) for task in tasks],
                "today": await self.service.figures(midnight),
                "policy": {
                    "attempts": self.service.policy.attempts,
                    "spacing_minutes": self.service.policy.spacing.total_seconds() / 60,
                },
            },
            dumps=_dumps,
        )

    async def dial(self, request: web.Request) -> web.Response:
        raw_id = request.match_info["task_id"]
        if not _TASK_ID.fullmatch(raw_id):
            raise json_error(404, "no such callback")
        agent = await self._agent(request)
        return await self._started(self.service.dial(int(raw_id), agent))

    async def visit(self, request: web.Request) -> web.Response:
        """The return visit of a resolved ticket, from the caller's phone."""
        number = request.match_info["number"]
        if not TICKET_NUMBER.fullmatch(number):
            raise json_error(404, "no such ticket")
        agent = await self._agent(request)
        try:
            return await self._started(self.service.visit(number, agent))
        except TicketError:
            raise json_error(404, "no such ticket") from None

    @staticmethod
    async def _agent(request: web.Request) -> str:
        """Whose phone rings first: one's own, or one a supervisor names."""
        user = current_user(request)
        body: Any = {}
        if request.can_read_body:
            body = await read_json(request, max_bytes=MAX_BODY, max_depth=2)
        if not isinstance(body, dict):
            raise json_error(400, "send a JSON object")
        return acting_interface(user, body.get("agent"), "agents call back from their own phone")

    async def _started(self, attempt: Awaitable[CallbackTask]) -> web.Response:
        try:
            task = await attempt
        except CallbackError as error:
            status = 404 if "no callback" in str(error) else 409
            raise json_error(status, str(error)) from None
        except PbxRefused as error:
            raise json_error(409, str(error)) from None
        except PbxUnavailable as error:
            raise json_error(503, str(error)) from None
        return web.json_response(callback_json(task, self.zone), dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
