"""``GET /metrics``: Prometheus text from the health report and the live statistics.

Per queue: calls offered, answered, abandoned, answer rate, service level, callers waiting and
the longest wait; agents by state; whether the PBX link is up; and every counter the parts of the
bridge keep (AMI reconnects, AGI fallbacks, routing, tickets, recordings, ...) as
``hotline_<part>_<counter>``. Open unless ``HOTLINE_METRICS_TOKEN`` is set; then it wants
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

_NAME = re.compile(r"[^a-zA-Z0-9_]")
QUEUE_FIGURES = {
    "offered": ("hotline_queue_calls_offered", "calls offered today"),
    "answered": ("hotline_queue_calls_answered", "calls answered today"),
    "abandoned": ("hotline_queue_calls_abandoned", "calls abandoned today"),
    "short_abandoned": ("hotline_queue_calls_short_abandoned", "abandoned after a short wait"),
    "timed_out": ("hotline_queue_calls_timed_out", "calls that waited too long today"),
    "answer_rate": ("hotline_queue_answer_rate", "answered / (offered - short abandoned)"),
    "service_level": ("hotline_queue_service_level", "share answered within the service level"),
    "waiting_now": ("hotline_queue_waiting_callers", "callers waiting now"),
    "longest_wait_seconds": ("hotline_queue_longest_wait_seconds", "longest wait now"),
    "asa_seconds": ("hotline_queue_asa_seconds", "average speed of answer today"),
    "aht_seconds": ("hotline_queue_aht_seconds", "average handling time today"),
}


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _metric_name(*parts: str) -> str:
    return _NAME.sub("_", "_".join(parts)).lower()


def prometheus_text(health: Mapping[str, Any], stats: Mapping[str, Any] | None) -> str:
    lines: list[str] = []

    def family(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    links = [health[name] for name in ("ami", "esl") if name in health]
    up = float(bool(links) and all(bool(link.get("up")) for link in links))
    family("hotline_pbx_up", "1 when the PBX connection (AMI or Event Socket) is up", [("", up)])
    for section in ("database", "bus"):
        if section in health:
            up = float(bool(health[section].get("up")))
            family(f"hotline_{section}_up", f"1 when the {section} answers", [("", up)])
    queues = (stats or {}).get("queues", {})
    for key, (name, help_text) in QUEUE_FIGURES.items():
        samples = [
            (f'{{queue="{_label(queue)}"}}', float(figures[key]))
            for queue, figures in sorted(queues.items())
            if isinstance(figures.get(key), int | float)
        ]
        if samples:
            family(name, help_text, samples)
    agents = (stats or {}).get("agents", {})
    if agents:
        states = Counter(str(agent.get("state")) for agent in agents.values())
        family(
            "hotline_agents",
            "agents by state",
            [(f'{{state="{_label(state)}"}}', float(n)) for state, n in sorted(states.items())],
        )
    for section, values in sorted(health.items()):
        if not isinstance(values, Mapping):
            continue
        for key, value in sorted(values.items()):
            if isinstance(value, bool) or not isinstance(value, int | float) or key == "port":
                continue
            family(_metric_name("hotline", section, key), f"{section} {key}", [("", value)])
    return "\n".join(lines) + "\n"


class Metrics:
    def __init__(
        self,
        health: Callable[[], Awaitable[dict[str, Any]]],
        stats: Callable[[], Awaitable[dict[str, Any] | None]],
        token: str = "",
    ) -> None:
        self.health = health
        self.stats = stats
        self.token = token

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self.metrics, name="metrics")

    async def metrics(self, request: web.Request) -> web.Response:
        if self.token:
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {self.token}".encode()):
                raise web.HTTPUnauthorized(text="metrics need the bearer token")
        text = prometheus_text(await self.health(), await self.stats())
        return web.Response(text=text, content_type="text/plain", charset="utf-8")
