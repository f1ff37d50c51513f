"""One hotline's figures from several PBXs' snapshots: a queue of the same name on several PBXs
is one logical queue, with a breakdown per PBX.

Rates are never averaged: the additive counts each PBX publishes (``counts``) are summed and
the figures computed again from the sums, the same way one PBX's are (``queue_figures``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from queue_stats.stats import QueueCounters, queue_figures


def _counters(raw: Mapping[str, int] | None) -> QueueCounters:
    return QueueCounters(**raw) if raw else QueueCounters()


def _sum(parts: list[Mapping[str, int]]) -> QueueCounters:
    total = QueueCounters()
    for part in parts:
        total.add(_counters(part))
    return total


def merge_snapshots(
    snapshots: Mapping[str, Mapping[str, Any]], states: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The panel's snapshot for the whole hotline.

    ``snapshots``: each PBX's own (``stats:<pbx>``, with ``counts``), for the PBXs that have
    one. ``states``: every configured PBX's connection state as the panel shows it (a PBX that
    nobody ingests is down there even if its last snapshot said up)."""
    queue_names = sorted({name for snap in snapshots.values() for name in snap.get("counts", {})})
    queues: dict[str, Any] = {}
    recent: dict[str, Any] = {}
    hours: dict[str, Any] = {}
    waiting: dict[str, list[dict[str, Any]]] = {}
    for name in queue_names:
        parts = {pbx: snap for pbx, snap in snapshots.items() if name in snap.get("counts", {})}
        counts = {pbx: snap["counts"][name] for pbx, snap in parts.items()}
        threshold = max(count["service_level_seconds"] for count in counts.values())
        waiting_now = sum(snap["queues"][name]["waiting_now"] for snap in parts.values())
        longest = max(snap["queues"][name]["longest_wait_seconds"] for snap in parts.values())
        queues[name] = {
            **queue_figures(
                _sum([c["today"] for c in counts.values()]), threshold, waiting_now, longest
            ),
            "by_pbx": {pbx: snap["queues"][name] for pbx, snap in sorted(parts.items())},
        }
        recent[name] = queue_figures(
            _sum([c["recent"] for c in counts.values()]), threshold, waiting_now, 0.0
        )
        hour_keys = sorted({hour for c in counts.values() for hour in c["hours"]})
        hours[name] = {}
        for hour in hour_keys:
            summed = _sum([c["hours"][hour] for c in counts.values() if hour in c["hours"]])
            hours[name][hour] = {
                "offered": summed.offered,
                "answered": summed.answered,
                "abandoned": summed.abandoned,
                "answer_rate": queue_figures(summed, threshold, 0, 0.0)["answer_rate"],
            }
        waiting[name] = sorted(
            (
                {**caller, "pbx": pbx}
                for pbx, snap in parts.items()
                for caller in snap.get("waiting", {}).get(name, [])
            ),
            key=lambda caller: -caller["wait_seconds"],
        )
    return {
        "queues": queues,
        "agents": _merged_agents(snapshots),
        "last_15_minutes": recent,
        "hours": hours,
        "waiting": waiting,
        "pbx": _overall_state(states),
        "pbxs": {name: dict(state) for name, state in sorted(states.items())},
    }


def _merged_agents(snapshots: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Every PBX's agents; an interface found on two PBXs (two different phones) is shown as
    ``<pbx>/<interface>`` for each, so neither hides the other."""
    seen: dict[str, int] = {}
    for snap in snapshots.values():
        for interface in snap.get("agents", {}):
            seen[interface] = seen.get(interface, 0) + 1
    agents: dict[str, Any] = {}
    for pbx, snap in sorted(snapshots.items()):
        for interface, agent in snap.get("agents", {}).items():
            key = interface if seen[interface] == 1 else f"{pbx}/{interface}"
            agents[key] = {**agent, "pbx": pbx}
    return dict(sorted(agents.items()))


def _overall_state(states: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Up when every PBX is followed; otherwise the first one down, named, for the banner."""
    for name, state in sorted(states.items()):
        if not state.get("up"):
            problem = state.get("problem") or "down"
            return {"up": False, "since": state.get("since"), "problem": f"{name}: {problem}"}
    since = max((state.get("since") or 0.0 for state in states.values()), default=None)
    return {"up": True, "since": since}
