"""What a web process shows of a hotline that runs several PBXs: their snapshots, merged.

Each PBX's owner (whichever bridge holds its lease) keeps ``stats:<pbx>`` on the bus. Every
bridge process merges them on its own beat (``queue_stats.merge``) and sends its viewers the
deltas of the merged view from its own counter, so a viewer's sequence has no gaps whichever
process serves it and whichever processes own the PBXs. The PBXs' connection states come from
the leases: a PBX whose lease has expired is down on the panel, whatever its last snapshot said.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from infra.bus import Bus
from infra.leases import LeaseView
from queue_stats.merge import merge_snapshots
from queue_stats.service import SNAPSHOT_KEY, STATS_CHANNEL, snapshot_delta

log = logging.getLogger(__name__)

MERGE_EVERY_SECONDS = 0.5


class HotlineView:
    def __init__(
        self,
        bus: Bus,
        local: Bus,
        pbx_names: Sequence[str],
        leases: Callable[[], Awaitable[list[LeaseView]]],
        clock: Callable[[], datetime],
        *,
        every: float = MERGE_EVERY_SECONDS,
    ) -> None:
        """``bus``: where the owners keep their snapshots; ``local``: this process's own
        channel to its viewers."""
        self._bus = bus
        self.local = local
        self._names = tuple(pbx_names)
        self._leases = leases
        self._clock = clock
        self._every = every
        self._merged: dict[str, Any] | None = None
        self._sequence = 0
        self.counters = {"merges": 0, "merge_failures": 0}

    async def merge(self) -> dict[str, Any]:
        snapshots: dict[str, dict[str, Any]] = {}
        for name in self._names:
            snapshot = await self._bus.load_snapshot(f"{SNAPSHOT_KEY}:{name}")
            if snapshot is not None:
                snapshots[name] = snapshot
        owners = {view.name.removeprefix("pbx:"): view for view in await self._leases()}
        states: dict[str, dict[str, Any]] = {}
        for name in self._names:
            lease = owners.get(name)
            own = snapshots.get(name, {}).get("pbx", {"up": False, "problem": "never followed"})
            if lease is None or lease.expires_in < 0:
                states[name] = {
                    "up": False,
                    "since": own.get("since"),
                    "problem": "no bridge process follows it",
                }
            else:
                states[name] = {**own, "owner": lease.holder, "token": lease.token}
        # Only the present owner's snapshot counts (one from an owner that has lost the PBX
        # could linger on the bus until the new owner's next change).
        live = {
            name: snap
            for name, snap in snapshots.items()
            if states[name].get("token") is not None
            and snap.get("owner_token") == states[name]["token"]
        }
        return merge_snapshots(live, states)

    async def snapshot(self) -> dict[str, Any] | None:
        if self._merged is None:
            await self.refresh()
        return self._merged

    async def refresh(self) -> None:
        merged = await self.merge()
        self.counters["merges"] += 1
        at = self._clock().isoformat()
        old = self._merged
        if old is not None:
            delta = snapshot_delta({k: v for k, v in old.items() if k not in ("seq", "at")}, merged)
            if not delta:
                return
            self._sequence += 1
            self._merged = {"seq": self._sequence, "at": at, **merged}
            await self.local.publish(
                STATS_CHANNEL, {"type": "stats.delta", "seq": self._sequence, "at": at, **delta}
            )
        else:
            self._sequence += 1
            self._merged = {"seq": self._sequence, "at": at, **merged}

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.refresh()
            except Exception as error:  # the last merged view stays; the next beat tries again
                self.counters["merge_failures"] += 1
                log.warning("the PBXs' figures could not be merged: %s", error)
            await asyncio.sleep(max(0.0, started + self._every - time.monotonic()))

    def free_agents(self) -> frozenset[str]:
        """Idle agents of every PBX, for routing in any bridge process."""
        merged = self._merged or {}
        return frozenset(
            interface
            for interface, agent in merged.get("agents", {}).items()
            if agent.get("state") == "idle"
        )

    def agents(self) -> dict[str, Any]:
        """The merged agent board (each agent with its ``pbx``), for acting on an agent."""
        merged = self._merged or {}
        agents: dict[str, Any] = merged.get("agents", {})
        return agents

    def nobody_waiting(self) -> bool:
        """No caller waits in any queue of any PBX (when the quiet line offers callbacks);
        not known, so not quiet, before the first merge."""
        if self._merged is None:
            return False
        queues = self._merged.get("queues", {}).values()
        return not any(queue.get("waiting_now") for queue in queues)
