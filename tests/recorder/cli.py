"""``scripts/record-transcript``: record AMI transcripts + queue_log from the real test bed."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from tests.queue_log import QueueLogStats, service_levels, summarize
from tests.recorder.engine import MAX_TRANSCRIPT_BYTES, Recording, record
from tests.recorder.scenarios import SCENARIOS
from tests.recorder.testbed import QUEUES, REPO_ROOT, Sandbox, TestbedError
from tests.recorder.wire import FRAME_END, parse_frame

FIXTURES = REPO_ROOT / "tests" / "fixtures"
QUEUES_CONF = REPO_ROOT / "asterisk-conf" / "queues.conf"


def final_counters(
    transcript: bytes,
) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str], str]]:
    """QueueParams per queue and CallsTaken per (queue, member name) from the transcript's end."""
    params: dict[str, dict[str, str]] = {}
    taken: dict[tuple[str, str], str] = {}
    body = transcript[transcript.find(b"\r\n") + 2 :]
    for frame in body.split(FRAME_END):
        message = parse_frame(frame)
        if message.get("Event") == "QueueParams":
            params[message["Queue"]] = message
        elif message.get("Event") == "QueueMember":
            taken[(message["Queue"], message["Name"])] = message.get("CallsTaken", "")
    return params, taken


def print_summary(recording: Recording, stats: QueueLogStats, out: Path) -> None:
    params, taken = final_counters(recording.transcript)
    start = datetime.fromtimestamp(recording.started, UTC).strftime("%H:%M:%S")
    print(f"\n== {recording.name}: {out.name}")
    print(
        f"   {len(recording.transcript):,} bytes, {recording.frames} frames, "
        f"{recording.ended - recording.started:.0f} s (from {start} UTC), "
        f"queue_log {len(recording.queue_log.splitlines())} lines; "
        f"FastAGI routed {dict(recording.routed)}"
    )
    if recording.failed_citizens:
        print(f"   citizens whose SIPp failed: {recording.failed_citizens}")
    header = (
        f"   {'queue':<11}{'ENTER':>6}{'CONN':>6}{'CCALL':>6}{'CAGNT':>6}{'ABAND':>6}"
        f"{'TIMEO':>6}{'EMPTY':>6}{'RNA':>5}{'inSL':>6}{'hold':>6}{'talk':>6}"
        f" | Asterisk: Completed Abandoned SLPerf SLPerf2"
    )
    print(header)
    for queue in QUEUES:
        q = stats.queue(queue)
        p = params.get(queue, {})
        agree = (
            p.get("Completed") == str(q.answered)
            and p.get("Abandoned") == str(q.asterisk_abandoned)
            and abs(float(p.get("ServicelevelPerf", "-1")) - q.service_level_percent()) < 0.05
        )
        print(
            f"   {queue:<11}{q.offered:>6}{q.answered:>6}{q.completed_by_caller:>6}"
            f"{q.completed_by_agent:>6}{q.abandoned:>6}{q.timed_out:>6}{q.exited_empty:>6}"
            f"{q.ring_no_answer:>5}{q.answered_within_sl:>6}{q.hold_seconds_answered:>6}"
            f"{q.talk_seconds:>6} | {p.get('Completed', '?'):>9} {p.get('Abandoned', '?'):>9}"
            f" {p.get('ServicelevelPerf', '?'):>6} {p.get('ServicelevelPerf2', '?'):>7}"
            f"  {'agrees' if agree else 'DIFFERS'}"
            f" (queue_log: SL {q.service_level_percent():.1f} SL2 {q.service_level2_percent():.1f})"
        )
    print(f"   {'agent':<14}{'queue':<11}{'CONN':>5}{'RNA':>5}{'talk':>6} | CallsTaken")
    for (queue, agent), a in sorted(
        stats.queue_agents.items(), key=lambda kv: (kv[0][1], kv[0][0])
    ):
        if agent == "NONE":
            continue
        print(
            f"   {agent:<14}{queue:<11}{a.answered:>5}{a.ring_no_answer:>5}{a.talk_seconds:>6}"
            f" | {taken.get((queue, agent), '-')}"
        )
    for change in stats.pauses:
        kind = ("PAUSE" if change.paused else "UNPAUSE") + ("ALL" if change.all_queues else "")
        print(f"   {kind:<11} {change.agent:<12} {change.queue:<11} reason={change.reason!r}")
    for member in stats.members:
        kind = "ADDMEMBER" if member.added else "REMOVEMEMBER"
        print(f"   {kind:<12} {member.agent:<12} {member.queue}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="record-transcript",
        description=(
            "Play scripted calls against the Asterisk 22 sandbox and save the hotline AMI "
            "account's wire transcript (tests/fixtures/NAME.ami) and the queue_log lines of "
            "the same run (tests/fixtures/NAME.queue_log)."
        ),
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO",
        help=f"which to record (default: all): {', '.join(SCENARIOS)}",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=FIXTURES, help="output directory")
    parser.add_argument("--seed", type=int, default=12345, help="random seed (default 12345)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--keep-running", action="store_true", help="leave the sandbox Asterisk running"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep SIPp's logs")
    args = parser.parse_args(argv)

    if args.list:
        for name, build in SCENARIOS.items():
            scenario = build(args.seed)
            print(f"{name}: ~{scenario.duration:.0f} s, {len(scenario.citizens)} citizens")
            print("    " + " ".join(scenario.description.split()))
        return 0
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")

    levels = service_levels(QUEUES_CONF)
    try:
        sandbox, was_running = Sandbox.start()
    except TestbedError as error:
        print(f"record-transcript: {error}", file=sys.stderr)
        return 1
    try:
        for name in names:
            scenario = SCENARIOS[name](args.seed)
            print(f"-- {name}: ~{scenario.duration:.0f} s", flush=True)
            recording = asyncio.run(record(sandbox, scenario, args.seed, args.keep_logs))
            if len(recording.transcript) > MAX_TRANSCRIPT_BYTES:
                print(f"   warning: transcript is {len(recording.transcript):,} bytes")
            args.out.mkdir(parents=True, exist_ok=True)
            ami_path = args.out / f"{name}.ami"
            ami_path.write_bytes(recording.transcript)
            (args.out / f"{name}.queue_log").write_bytes(recording.queue_log)
            stats = summarize(recording.queue_log.decode("utf-8").splitlines(), levels)
            print_summary(recording, stats, ami_path)
    except TestbedError as error:
        print(f"record-transcript: {error}", file=sys.stderr)
        return 1
    finally:
        if not was_running and not args.keep_running:
            Sandbox.stop()
    return 0
