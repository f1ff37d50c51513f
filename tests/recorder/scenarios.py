"""The scripted call mixes the recorder plays against the real Asterisk.

A scenario is a timeline: which agents' softphones run (answering or never answering), when
each citizen calls (caller number, display name, how long they stay on the line), and AMI or
CLI steps at fixed times (pause, add/remove a member, stop a softphone ...).

A citizen stays on the line ``patience + talk`` seconds after Asterisk answers (Asterisk
answers before routing, so SIPp's timer covers both the wait and the conversation) and then
hangs up itself: unanswered by then it is an ABANDON, connected it is a COMPLETECALLER.
For a share of the connected calls the *agent* ends the call ``talk`` seconds after the
connect (the recorder hangs up the agent's channel with the CLI, as if the agent put the
phone down): COMPLETEAGENT.  Everything is drawn from a seeded random generator.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.recorder.engine import Run

StepAction = Callable[["Run"], Awaitable[None]]


@dataclass(frozen=True)
class Citizen:
    at: float  # seconds after the start of the scenario
    caller: str
    name: str
    patience: float  # seconds the citizen is willing to wait ...
    talk: float  # ... plus seconds of conversation = time on the line
    service: str = "12345"  # the number dialled

    @property
    def line_seconds(self) -> float:
        return self.patience + self.talk


@dataclass(frozen=True)
class Step:
    at: float
    label: str
    run: StepAction


@dataclass
class Scenario:
    name: str
    description: str
    agents: dict[str, bool]  # agent -> answers?
    citizens: list[Citizen]
    steps: list[Step] = field(default_factory=list)
    agent_hangs_up: float = 0.5  # share of connected calls the agent ends after ``talk``
    globals: dict[str, str] = field(default_factory=dict)  # dialplan globals for the run
    restore_globals: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)  # CLI commands before the run ...
    teardown: list[str] = field(default_factory=list)  # ... and after it, even a failed one

    @property
    def duration(self) -> float:
        ends = [c.at + c.line_seconds for c in self.citizens] + [s.at for s in self.steps]
        return max(ends, default=0.0)


# --------------------------------------------------------------------------- helpers


def hotline_number(i: int) -> str:
    return f"1380013{i:04d}"


def enterprise_number(i: int) -> str:
    return f"1390000{i:04d}"


def emergency_number(i: int) -> str:
    return f"1200000{i:04d}"


NUMBERS = {
    "hotline": hotline_number,
    "enterprise": enterprise_number,
    "emergency": emergency_number,
}


def ami(label: str, action: str, prefix: str, **headers: str) -> StepAction:
    async def run(r: Run) -> None:
        response = await r.wire.action(action, prefix, **headers)
        r.note(f"{label}: {response.get('Response')} {response.get('Message', '')}".strip())

    return run


def cli(command: str) -> StepAction:
    async def run(r: Run) -> None:
        await r.cli(command)

    return run


def stop_agent(agent: str) -> StepAction:
    async def run(r: Run) -> None:
        r.phones.stop_agent(agent)

    return run


def hang_up_caller(number: str) -> StepAction:
    """An operator hangs up the citizen ``number`` while it waits in a queue with the CLI's
    ``channel request hangup``: Asterisk reports a SoftHangupRequest before the abandon (AMI's
    Hangup action would not)."""

    async def run(r: Run) -> None:
        joined = r.wire.find(Event="QueueCallerJoin", CallerIDNum=number)
        if joined is None:
            r.note(f"{number} is not waiting in a queue: nothing to hang up")
            return
        channel = joined[1].get("Channel", "")
        await asyncio.to_thread(r.sandbox.hangup_channel, channel)
        r.note(f"hung up {channel} ({number})")

    return run


def start_agent(agent: str, answer: bool = True) -> StepAction:
    async def run(r: Run) -> None:
        r.phones.start_agent(agent, answer=answer)

    return run


# --------------------------------------------------------------------------- scenarios


def multi_queue_pause(seed: int) -> Scenario:
    """26 citizens over ~80 s to all three queues; agent1 paused for lunch in every queue,
    agent2 paused in emergency only, agent4 added to hotline and removed, agent3 never
    answers."""
    rng = random.Random(seed)
    names = {3: "张三", 11: "李四", 17: "王五"}
    mix = ["hotline"] * 6 + ["enterprise"] * 2 + ["emergency"] * 2
    counters = dict.fromkeys(NUMBERS, 0)
    citizens = []
    for i in range(26):
        queue = rng.choice(mix)
        counters[queue] += 1
        number = NUMBERS[queue](counters[queue] + 100 * (list(NUMBERS).index(queue) + 1))
        citizens.append(
            Citizen(
                at=round(i * 3 + rng.uniform(0, 2), 2),
                caller=number,
                name=names.get(i, f"Citizen {number[-4:]}"),
                patience=round(rng.uniform(2, 20), 1),
                talk=round(rng.uniform(3, 8), 1),
            )
        )
    steps = [
        Step(8, "agent1 goes to lunch (all queues)", ami(
            "QueuePause agent1", "QueuePause", "pause",
            Interface="PJSIP/agent1", Paused="true", Reason="lunch")),
        Step(15, "agent4 joins hotline", ami(
            "QueueAdd agent4", "QueueAdd", "add",
            Queue="hotline", Interface="PJSIP/agent4", MemberName="Agent Four", Penalty="0")),
        Step(25, "agent2 paused in emergency", ami(
            "QueuePause agent2 emergency", "QueuePause", "pause",
            Interface="PJSIP/agent2", Queue="emergency", Paused="true", Reason="meeting")),
        Step(42, "agent1 back from lunch", ami(
            "QueueUnpause agent1", "QueuePause", "pause",
            Interface="PJSIP/agent1", Paused="false")),
        Step(52, "agent2 back in emergency", ami(
            "QueueUnpause agent2 emergency", "QueuePause", "pause",
            Interface="PJSIP/agent2", Queue="emergency", Paused="false")),
        Step(66, "agent4 leaves hotline", ami(
            "QueueRemove agent4", "QueueRemove", "remove",
            Queue="hotline", Interface="PJSIP/agent4")),
    ]  # fmt: skip
    return Scenario(
        name="multi-queue-pause",
        description=multi_queue_pause.__doc__ or "",
        agents={"agent1": True, "agent2": True, "agent3": False, "agent4": True},
        citizens=citizens,
        steps=steps,
    )


def timeouts(seed: int) -> Scenario:
    """HOTLINE_MAX_WAIT = 6 s: agent2 paused ("training") for the first 30 s, agent1 on long
    calls, agent3 never answers; most early callers time out of the queue, a few abandon,
    later ones are answered."""
    rng = random.Random(seed)
    plan = [
        # at, queue, patience, talk   (patience > 6 s = the queue times out first)
        (0.0, "hotline", 22, 0),  # connects to agent1 and keeps it busy
        (1.0, "enterprise", 20, 0),  # agent1 busy in every queue: rings agent3, times out
        (2.5, "hotline", 14, 0),
        (4.0, "hotline", 3, 0),  # abandons
        (5.0, "emergency", 16, 0),
        (7.0, "hotline", 12, 0),
        (9.0, "hotline", 2.5, 0),  # abandons
        (11.0, "enterprise", 18, 0),
        (14.0, "hotline", 15, 0),
        (17.0, "emergency", 4, 0),  # abandons
        (20.0, "hotline", 13, 0),
        (31.0, "hotline", 9, 4),  # agent2 is back: answered or timed out on agent3
        (33.0, "emergency", 9, 4),
        (35.0, "hotline", 10, 5),
        (38.0, "enterprise", 9, 4),
        (41.0, "hotline", 4, 3),
        (44.0, "hotline", 12, 4),
        (47.0, "emergency", 10, 3),
    ]
    counters = dict.fromkeys(NUMBERS, 0)
    citizens = []
    for at, queue, patience, talk in plan:
        counters[queue] += 1
        number = NUMBERS[queue](counters[queue] + 200 + 100 * list(NUMBERS).index(queue) * 3)
        name = "赵六" if len(citizens) == 5 else f"Citizen {number[-4:]}"
        jitter = round(rng.uniform(0, 0.5), 2)
        citizens.append(Citizen(at + jitter, number, name, patience, talk))
    steps = [
        Step(0.0, "agent2 in training (all queues)", ami(
            "QueuePause agent2", "QueuePause", "pause",
            Interface="PJSIP/agent2", Paused="true", Reason="training")),
        Step(30.0, "agent2 back", ami(
            "QueueUnpause agent2", "QueuePause", "pause",
            Interface="PJSIP/agent2", Paused="false")),
    ]  # fmt: skip
    return Scenario(
        name="timeouts",
        description=timeouts.__doc__ or "",
        agents={"agent1": True, "agent2": True, "agent3": False},
        citizens=citizens,
        steps=steps,
        agent_hangs_up=0.0,  # the first caller keeps agent1 busy for its whole line time
        globals={"HOTLINE_MAX_WAIT": "6"},
        restore_globals={"HOTLINE_MAX_WAIT": "600"},
    )


def unreachable_agent(seed: int) -> Scenario:
    """agent2's softphone process dies mid-run (static contact, no qualify: Asterisk still
    thinks it is reachable) and comes back later; agent1 answers, agent3 never answers."""
    rng = random.Random(seed)
    citizens = []
    for i in range(14):
        queue = "hotline" if i % 3 else "enterprise"
        number = NUMBERS[queue](500 + i)
        citizens.append(
            Citizen(
                at=round(i * 4 + rng.uniform(0, 1.5), 2),
                caller=number,
                name=f"Citizen {number[-4:]}",
                patience=round(rng.uniform(8, 20), 1),
                talk=round(rng.uniform(3, 6), 1),
            )
        )
    steps = [
        Step(12, "agent2's softphone dies", stop_agent("agent2")),
        Step(40, "agent2's softphone is back", start_agent("agent2")),
    ]
    return Scenario(
        name="unreachable-agent",
        description=unreachable_agent.__doc__ or "",
        agents={"agent1": True, "agent2": True, "agent3": False},
        citizens=citizens,
        steps=steps,
    )


# A site's own dialplan: answer, queue with a time limit, and after Queue() returns an
# announcement (Wait stands in for it) and Hangup(). No FastAGI, no HotlineQueueResult user event.
# Added at run time with the CLI and removed afterwards; the shipped extensions.conf is untouched.
STOCK_CONTEXT = "stock-dialplan"
STOCK_QUEUES = {"12399": "hotline", "12398": "enterprise"}
STOCK_MAX_WAIT = 6
STOCK_AFTER_QUEUE = 3


def _stock_dialplan() -> tuple[list[str], list[str]]:
    setup = []
    for number, queue in STOCK_QUEUES.items():
        steps = [
            "Answer()",
            f"Queue({queue},,,,{STOCK_MAX_WAIT})",
            f"Wait({STOCK_AFTER_QUEUE})",
            "Hangup()",
        ]
        setup += [
            f"dialplan add extension {number},{priority},{app} into {STOCK_CONTEXT}"
            for priority, app in enumerate(steps, start=1)
        ]
        setup.append(
            f"dialplan add extension {number},1,Goto({STOCK_CONTEXT},{number},1) into from-citizens"
        )
    teardown = [f"dialplan remove extension {number}@from-citizens" for number in STOCK_QUEUES]
    teardown.append(f"dialplan remove context {STOCK_CONTEXT}")
    return setup, teardown


def stock_dialplan(seed: int) -> Scenario:
    """A site's own dialplan (Answer, Queue with a 6 s limit, a 3 s announcement, Hangup; no
    HotlineQueueResult user event) on hotline and enterprise: agent2 paused for the first 30 s,
    agent1 on a long call, agent3 never answers. Early callers time out (some hang up during
    the announcement, some are hung up by the dialplan), some abandon, an operator hangs one
    up while it waits; later ones are answered."""
    rng = random.Random(seed)
    plan = [
        # at, queue, patience, talk   (patience > 6 s = the queue times out first)
        (0.0, "hotline", 24, 0),  # connects to agent1 and keeps it busy
        (1.0, "hotline", 14, 0),  # times out, hung up by the dialplan after the announcement
        (2.5, "enterprise", 3, 0),  # abandons
        (4.0, "hotline", 7.5, 0),  # times out, hangs up during the announcement
        (5.0, "enterprise", 16, 0),
        (7.0, "hotline", 2.5, 0),  # abandons
        (9.0, "hotline", 20, 0),  # hung up by an operator while waiting (step below)
        (11.0, "enterprise", 8, 0),
        (14.0, "hotline", 4, 0),  # abandons
        (17.0, "enterprise", 13, 0),
        (20.0, "hotline", 2, 0),  # abandons (short)
        (31.0, "hotline", 9, 4),  # agent2 is back: answered or timed out on agent3
        (33.0, "enterprise", 9, 4),
        (35.0, "hotline", 10, 5),
        (38.0, "enterprise", 4, 3),
        (41.0, "hotline", 12, 4),
        (44.0, "enterprise", 10, 3),
    ]
    services = {queue: number for number, queue in STOCK_QUEUES.items()}
    counters = dict.fromkeys(NUMBERS, 0)
    citizens = []
    for at, queue, patience, talk in plan:
        counters[queue] += 1
        number = NUMBERS[queue](counters[queue] + 700 + 100 * list(NUMBERS).index(queue))
        jitter = round(rng.uniform(0, 0.5), 2)
        name = f"Citizen {number[-4:]}"
        citizens.append(Citizen(at + jitter, number, name, patience, talk, services[queue]))
    operator_hangs_up = citizens[6]
    setup, teardown = _stock_dialplan()
    steps = [
        Step(0.0, "agent2 in training (all queues)", ami(
            "QueuePause agent2", "QueuePause", "pause",
            Interface="PJSIP/agent2", Paused="true", Reason="training")),
        Step(operator_hangs_up.at + 3.0, f"an operator hangs up {operator_hangs_up.caller}",
             hang_up_caller(operator_hangs_up.caller)),
        Step(30.0, "agent2 back", ami(
            "QueueUnpause agent2", "QueuePause", "pause",
            Interface="PJSIP/agent2", Paused="false")),
    ]  # fmt: skip
    return Scenario(
        name="stock-dialplan",
        description=stock_dialplan.__doc__ or "",
        agents={"agent1": True, "agent2": True, "agent3": False},
        citizens=citizens,
        steps=steps,
        agent_hangs_up=0.0,  # the first caller keeps agent1 busy for its whole line time
        setup=setup,
        teardown=teardown,
    )


SCENARIOS: dict[str, Callable[[int], Scenario]] = {
    "multi-queue-pause": multi_queue_pause,
    "timeouts": timeouts,
    "unreachable-agent": unreachable_agent,
    "stock-dialplan": stock_dialplan,
}
