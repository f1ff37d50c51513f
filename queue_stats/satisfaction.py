"""Satisfaction figures: the citizens' ratings counted per queue and per agent, pure.

Fed with finished calls (a rating is final when the call ends) and counted at the call's end:
today since local midnight, the last 15 minutes by whole minutes, and today by local hour.
Definitions (the README repeats them):

- *rated*: answered calls whose citizen pressed a key of the scale;
- *not rated*: answered calls without one (hung up, a wrong key twice, silence);
- *satisfaction rate* = good answers / rated (default scale: (满意 + 基本满意) / rated);
- *participation rate* = rated / (rated + not rated).

A code the scale does not know (the scale changed under a running PBX) counts as not rated
and as an anomaly. Memory holds counters per queue and agent, never per call.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from queue_stats.calls import CallRecord
from survey.scale import NOT_RATED, RatingScale

RECENT_MINUTES = 15
ALL = "*"  # the key of the whole centre's figures


@dataclass(slots=True)
class RatingCounts:
    answers: Counter[str] = field(default_factory=Counter)
    not_rated: int = 0

    def add(self, other: RatingCounts) -> None:
        self.answers.update(other.answers)
        self.not_rated += other.not_rated


@dataclass(frozen=True, slots=True)
class Rating:
    """What one finished call adds: where, who, when and which answer."""

    queue: str
    agent: str
    at: datetime
    code: str


def rating_of(call: CallRecord) -> Rating | None:
    if call.rating is None:
        return None
    at = call.ended_at or call.rated_at or call.started_at
    return Rating(call.queue or "", call.agent_interface or "", at, call.rating)


def rating_figures(counts: RatingCounts, scale: RatingScale) -> dict[str, Any]:
    """One window's figures; the shape of ``satisfaction`` in ``/api/v1/stats``."""
    rated = sum(counts.answers[code] for code in scale.codes)
    good = sum(counts.answers[a.code] for a in scale.answers if a.good)
    review = sum(counts.answers[a.code] for a in scale.answers if a.needs_review)
    return {
        "rated": rated,
        "not_rated": counts.not_rated,
        "answers": {code: counts.answers[code] for code in scale.codes},
        "to_review": review,
        "satisfaction_rate": _ratio(good, rated),
        "participation_rate": _ratio(rated, rated + counts.not_rated),
    }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def _counts(table: dict[Any, RatingCounts], key: Any) -> RatingCounts:
    """The counts kept under ``key``, new ones if none yet (not built on every call, as
    ``setdefault`` would)."""
    counts = table.get(key)
    if counts is None:
        counts = table[key] = RatingCounts()
    return counts


class SatisfactionStats:
    def __init__(self, zone: ZoneInfo, scale: RatingScale) -> None:
        self._zone = zone
        self.scale = scale
        self._known = frozenset(scale.codes)
        self._day: datetime | None = None
        self._next_day: datetime | None = None
        # (queue or ALL, agent or ALL) -> today's counts
        self._today: dict[tuple[str, str], RatingCounts] = {}
        self._hours: dict[tuple[str, datetime], RatingCounts] = {}
        self._minutes: deque[tuple[datetime, dict[str, RatingCounts]]] = deque(
            maxlen=RECENT_MINUTES
        )
        self.anomalies: Counter[str] = Counter()

    def count_call(self, call: CallRecord) -> bool:
        rating = rating_of(call)
        return rating is not None and self.count(rating)

    def seed(self, ratings: Iterable[Rating], now: datetime) -> None:
        """Today's ratings from the journal, at a start: the day's figures survive restarts."""
        self._roll_day(now)
        for rating in sorted(ratings, key=lambda r: r.at):
            self.count(rating)

    def count(self, rating: Rating) -> bool:
        self._roll_day(rating.at)
        if self._day is not None and rating.at < self._day:
            self.anomalies["rating-from-a-past-day"] += 1
            return False
        code = rating.code
        if code != NOT_RATED and code not in self._known:
            self.anomalies["rating-not-in-scale"] += 1
            code = NOT_RATED
        local = rating.at.astimezone(self._zone)
        hour = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        minute = rating.at.replace(second=0, microsecond=0)
        if not self._minutes or self._minutes[-1][0] < minute:
            self._minutes.append((minute, {}))
        recent = next((by for start, by in reversed(self._minutes) if start <= minute), None)
        targets = [
            _counts(self._today, (rating.queue, ALL)),
            _counts(self._today, (ALL, rating.agent)),
            _counts(self._today, (ALL, ALL)),
            _counts(self._hours, (rating.queue, hour)),
            _counts(self._hours, (ALL, hour)),
        ]
        if recent is not None:
            targets.append(_counts(recent, rating.queue))
            targets.append(_counts(recent, ALL))
        for counts in targets:
            if code == NOT_RATED:
                counts.not_rated += 1
            else:
                counts.answers[code] += 1
        return True

    def snapshot(self, now: datetime) -> dict[str, Any]:
        """Today per queue, per agent and in all; the last 15 minutes; today by local hour."""
        self._roll_day(now)

        def figures(counts: RatingCounts) -> dict[str, Any]:
            return rating_figures(counts, self.scale)

        since = now.replace(second=0, microsecond=0) - timedelta(minutes=RECENT_MINUTES - 1)
        recent: dict[str, RatingCounts] = {}
        for start, by_queue in self._minutes:
            if start >= since:
                for queue, counts in by_queue.items():
                    recent.setdefault(queue, RatingCounts()).add(counts)
        hours: dict[str, dict[str, Any]] = {}
        for (queue, hour), counts in sorted(self._hours.items(), key=lambda item: item[0][1]):
            name = "all" if queue == ALL else queue
            hours.setdefault(name, {})[f"{hour.astimezone(self._zone):%H}"] = figures(counts)
        return {
            "scale": [
                {"key": a.key, "code": a.code, "zh": a.label_zh, "en": a.label_en, "kind": a.kind}
                for a in self.scale.answers
            ],
            "today": figures(self._today.get((ALL, ALL), RatingCounts())),
            "queues": {
                queue: figures(counts)
                for (queue, agent), counts in sorted(self._today.items())
                if agent == ALL and queue not in (ALL, "")
            },
            "agents": {
                agent: figures(counts)
                for (queue, agent), counts in sorted(self._today.items())
                if queue == ALL and agent not in (ALL, "")
            },
            "last_15_minutes": figures(recent.get(ALL, RatingCounts())),
            "last_15_minutes_queues": {
                queue: figures(counts)
                for queue, counts in sorted(recent.items())
                if queue not in (ALL, "")
            },
            "hours": hours,
        }

    def _roll_day(self, at: datetime) -> None:
        if self._next_day is not None and at < self._next_day:
            return
        local = at.astimezone(self._zone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        following = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        self._next_day = following.astimezone(UTC)
        if self._day is None or midnight.astimezone(UTC) > self._day:
            if self._day is not None:
                self._today.clear()
                self._hours.clear()
            self._day = midnight.astimezone(UTC)
