"""Plays one scenario against the sandbox Asterisk while recording the ``hotline`` AMI stream."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.recorder.routing import AGI_HOST, AGI_PORT, make_server
from tests.recorder.scenarios import Citizen, Scenario
from tests.recorder.testbed import Phones, Sandbox, TestbedError, stray_sipp_processes
from tests.recorder.wire import Message, WireRecorder

MAX_TRANSCRIPT_BYTES = 1_500_000


@dataclass
class Recording:
    name: str
    transcript: bytes
    queue_log: bytes
    started: float
    ended: float
    frames: int
    notes: list[str] = field(default_factory=list)
    failed_citizens: list[str] = field(default_factory=list)
    routed: Counter[str] = field(default_factory=Counter)


class Run:
    """What scenario steps act on: the sandbox, the AMI session, the phones."""

    def __init__(self, sandbox: Sandbox, wire: WireRecorder, phones: Phones, seed: int) -> None:
        self.sandbox = sandbox
        self.wire = wire
        self.phones = phones
        self.rng = random.Random(seed ^ 0x5EED)
        self.notes: list[str] = []
        self.t0 = time.monotonic()
        self.tasks: set[asyncio.Task[None]] = set()

    def note(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] {text}"
        self.notes.append(line)
        print("   " + line, flush=True)

    async def cli(self, command: str) -> str:
        return await asyncio.to_thread(self.sandbox.cli, command)

    def spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def _agent_hangs_up(run: Run, channel: str, after: float) -> None:
    await asyncio.sleep(after)
    await asyncio.to_thread(run.sandbox.hangup_channel, channel)


def _check_quiet_machine() -> None:
    strays = stray_sipp_processes()
    if strays:
        raise TestbedError(
            "other SIPp processes are running (another test run?):\n" + "\n".join(strays)
        )


async def record(sandbox: Sandbox, scenario: Scenario, seed: int, keep_logs: bool) -> Recording:
    _check_quiet_machine()
    log_dir = Path(tempfile.mkdtemp(prefix=f"record-{scenario.name}-"))
    phones = Phones(log_dir)
    routed: Counter[str] = Counter()
    agi = make_server(routed)
    # the bridge's own account, with its event filters
    wire = WireRecorder(
        sandbox.ami_host, sandbox.ami_port, sandbox.ami_username, sandbox.ami_secret
    )
    talk_of = {c.caller: c.talk for c in scenario.citizens}
    changed_globals = False
    try:
        # A quiet Asterisk: no calls, static unpaused members, statistics reset.
        await asyncio.to_thread(sandbox.reset_state)
        for name, value in scenario.globals.items():
            changed_globals = True
            await asyncio.to_thread(sandbox.cli, f"dialplan set global {name} {value}")
        for command in scenario.setup:
            await asyncio.to_thread(sandbox.cli, command)
        for agent, answers in scenario.agents.items():
            phones.start_agent(agent, answer=answers)
        try:
            await agi.start()
        except OSError as error:
            raise TestbedError(f"FastAGI port {AGI_HOST}:{AGI_PORT} is taken: {error}") from None
        await asyncio.sleep(0.5)
        queue_log_offset = sandbox.queue_log_size()
        await wire.connect()
        run = Run(sandbox, wire, phones, seed)
        started = time.time()

        def on_frame(_: bytes, message: Message) -> None:
            if message.get("Event") != "AgentConnect":
                return
            talk = talk_of.get(message.get("CallerIDNum", ""))
            if talk and run.rng.random() < scenario.agent_hangs_up:
                run.spawn(_agent_hangs_up(run, message.get("DestChannel", ""), talk))

        wire.on_frame = on_frame
        run.note(f"recording {scenario.name}: {len(scenario.citizens)} citizens")
        timeline: list[tuple[float, int, object]] = [(s.at, 0, s) for s in scenario.steps]
        timeline += [(c.at, 1, c) for c in scenario.citizens]
        calls = []
        for at, _, item in sorted(timeline, key=lambda x: (x[0], x[1])):
            delay = run.t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if hasattr(item, "run"):
                run.note(item.label)  # type: ignore[attr-defined]
                await item.run(run)  # type: ignore[attr-defined]
            else:
                citizen: Citizen = item  # type: ignore[assignment]
                phone = phones.call(
                    citizen.caller, citizen.name, citizen.line_seconds, service=citizen.service
                )
                calls.append((citizen, phone))

        # Wait for every citizen to finish (bounded), then for Asterisk to be quiet.
        deadline = time.monotonic() + max((c.line_seconds for c, _ in calls), default=0) + 60
        while any(p.running() for _, p in calls) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        failed = []
        for citizen, phone in calls:
            if phone.running() or phone.proc.returncode != 0:
                failed.append(f"{citizen.caller}: exit {phone.proc.poll()} {phone.errors()[-300:]}")
                phone.stop()
        for task in list(run.tasks):
            with contextlib.suppress(Exception):
                await task
        await asyncio.to_thread(sandbox.wait_idle)
        await asyncio.sleep(1.0)
        run.note("QueueStatus + QueueSummary")
        for action, prefix in (("QueueStatus", "qs"), ("QueueSummary", "qsum")):
            response, events = await wire.list_action(action, prefix)
            if not events:
                raise TestbedError(f"{action} failed: {response}")
        end = events[-1][0]
        ended = time.time()
        transcript = bytes(wire.raw[:end])
        frames = sum(1 for offset, _ in wire.frames if offset <= end)
        queue_log = sandbox.queue_log_since(queue_log_offset)
        return Recording(
            scenario.name, transcript, queue_log, started, ended, frames, run.notes, failed, routed
        )
    finally:
        wire.on_frame = None
        await wire.close()
        await agi.close()
        phones.stop_all()
        for command in scenario.teardown:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(sandbox.cli, command)
        if changed_globals:
            for name, value in scenario.restore_globals.items():
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(sandbox.cli, f"dialplan set global {name} {value}")
        if keep_logs:
            print(f"   SIPp logs kept in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
