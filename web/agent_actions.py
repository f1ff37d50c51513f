"""What an agent does to their own queue membership from the panel, sent to the PBX.

``POST /api/v1/agent/pause`` (``{"paused": true, "reason": "lunch"}``) pauses or unpauses (AMI
``QueuePause``; FreeSWITCH's agent status ``On Break``/``Available``); ``POST /api/v1/agent/queues``
(``{"queue": "hotline", "member": true}``) logs in to a queue or out of it (``QueueAdd`` or
``QueueRemove``; a tier added or deleted). An agent acts on their own interface; a supervisor or
admin may name one with ``"agent"``. The PBX's answer decides: its refusal is a 409 with its
message; no PBX (a replay) or a PBX that is down is a 503. The panel sees the result as the
PBX's own events come back.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from pbx.control import AgentControl, PbxRefused, PbxUnavailable
from web.auth import current_user
from web.bodies import read_json
from web.errors import json_error
from web.users import AGENT_INTERFACE, HEARS_EVERY_CALL, User

_QUEUE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_REASON = 64
MAX_BODY = 4096


def acting_interface(user: User, named: object, own_only: str) -> str:
    """The phone an action is for: the user's own, or (supervisors and admins) the one
    ``named``; ``own_only`` is what an agent naming another phone is told."""
    if named is None or named == user.agent_interface:
        if user.agent_interface is None:
            raise json_error(400, "name the agent: this user has no softphone interface")
        return user.agent_interface
    if user.role not in HEARS_EVERY_CALL:
        raise json_error(403, own_only)
    if not isinstance(named, str) or not AGENT_INTERFACE.fullmatch(named):
        raise json_error(
            400,
            "agent is an interface like PJSIP/agent1 (west/PJSIP/agent1 with several PBXs), "
            "or an agent's name",
        )
    return named


class AgentActions:
    def __init__(self, control: AgentControl | None) -> None:
        self.control = control

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/agent/pause", self.pause, name="agent-pause")
        app.router.add_post("/api/v1/agent/queues", self.membership, name="agent-queues")

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        # Bounded and depth-checked: request.json() let 1,500 nested brackets crash into a 500.
        body = await read_json(request, max_bytes=MAX_BODY, max_depth=4)
        if not isinstance(body, dict):
            raise json_error(400, "send a JSON object")
        return body

    @staticmethod
    def _interface(user: User, body: dict[str, Any]) -> str:
        return acting_interface(user, body.get("agent"), "agents act only on their own phone")

    def _control(self) -> AgentControl:
        if self.control is None:
            raise json_error(503, "no PBX is connected (this is a replay)")
        return self.control

    @staticmethod
    async def _send(action: Awaitable[None]) -> None:
        try:
            await action
        except PbxRefused as error:  # the PBX said no (e.g. not a member of that queue)
            raise json_error(409, str(error)) from None
        except PbxUnavailable as error:
            raise json_error(503, str(error)) from None

    async def pause(self, request: web.Request) -> web.Response:
        user = current_user(request)
        body = await self._body(request)
        interface = self._interface(user, body)
        paused = body.get("paused")
        reason = body.get("reason", "")
        if not isinstance(paused, bool):
            raise json_error(400, "paused is true or false")
        if not isinstance(reason, str) or len(reason) > MAX_REASON or not reason.isprintable():
            raise json_error(400, f"reason is plain text of at most {MAX_REASON} characters")
        await self._send(self._control().pause(interface, paused, reason))
        return web.json_response({"agent": interface, "paused": paused, "reason": reason})

    async def membership(self, request: web.Request) -> web.Response:
        user = current_user(request)
        body = await self._body(request)
        interface = self._interface(user, body)
        queue, member = body.get("queue"), body.get("member")
        if not isinstance(queue, str) or not _QUEUE.fullmatch(queue):
            raise json_error(400, "queue is a queue name")
        if not isinstance(member, bool):
            raise json_error(400, "member is true (log in to the queue) or false (log out)")
        control = self._control()
        change = control.join if member else control.leave
        await self._send(change(queue, interface))
        return web.json_response({"agent": interface, "queue": queue, "member": member})
