"""AMI ingest throughput: hotline-bridge's pipeline next to cacofonisk, same frames, same process.

Both sides get the same bytes: the recorded transcript
``tests/fixtures/hotline-3-agents-40-calls.ami`` repeated ``--repeat`` times behind one AMI
greeting, cut into ``--chunk``-byte pieces as TCP reads would deliver them. Cutting the bytes into
chunks happens before the clock starts; everything after it is timed on both sides: UTF-8
decoding, splitting into frames, parsing, and state updates.

* ours: ``ami.codec.AmiFrameDecoder`` (drops unwanted events by name before parsing) →
  ``ami.replay.ReplayClock`` → ``ami.feed.AmiTranslator`` → ``EventPipeline.on_event`` (the call
  tracker and the queue statistics), exactly the pipeline of ``hotline replay``.
* cacofonisk (PyPI ``cacofonisk``, a benchmark-only dependency): what its AMI runner does from the
  wire, minus the socket: decode each chunk and split it on the blank line the way panoramisk's
  protocol does, parse every frame with panoramisk's ``Message.from_line``, keep the events its
  ``EventHandler`` registers for (the filter of its own file runner: one set lookup, cheaper than
  panoramisk's per-pattern regex dispatch), and hand them to ``EventHandler.on_event`` with a
  reporter that only counts its callbacks.

"Frames" are counted identically for both: the AMI frames in the input bytes (split on the blank
line, greeting excluded), including the ones our decoder drops by name. MB are 10**6 bytes.

Run ``python benchmarks/ami_ingest.py --help`` for the options; ``--profile ours`` prints where our
pipeline spends its time instead of timing it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import importlib.metadata
import logging
import os
import platform
import pstats
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "hotline-3-agents-40-calls.ami"
CALLS_PER_TRANSCRIPT = 40
INBOUND_CONTEXTS = frozenset({"from-citizens"})
BENCH_ZONE = "Asia/Shanghai"  # the service's default ``timezone`` setting
TARGET_RATIO = 4.0
FRAME_END = b"\r\n\r\n"
GREETING_PREFIX = b"Asterisk Call Manager/"

# Benchmark the code in this checkout, not whatever copy of the packages is installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ami.codec import AmiFrameDecoder  # noqa: E402
from ami.feed import PIPELINE_EVENTS, AmiTranslator, keep_event  # noqa: E402
from ami.replay import ReplayClock  # noqa: E402
from queue_stats.calls import CallTracker  # noqa: E402
from queue_stats.pipeline import EventPipeline  # noqa: E402
from queue_stats.stats import QueueStats  # noqa: E402


class Runner(Protocol):
    def run(self, chunks: Iterable[bytes]) -> None: ...

    def sanity(self, repeat: int, frames: int) -> list[str]: ...


# --------------------------------------------------------------------------- input


@dataclass(frozen=True)
class Workload:
    data: bytes
    chunks: list[bytes]
    frames: int
    repeat: int
    chunk_size: int


def build_workload(path: Path, repeat: int, chunk_size: int) -> Workload:
    """One greeting, then the transcript's messages ``repeat`` times, cut into TCP-sized chunks."""
    raw = path.read_bytes()
    greeting, sep, body = raw.partition(b"\r\n")
    if not sep or not greeting.startswith(GREETING_PREFIX):
        raise SystemExit(f"{path.name}: not an AMI wire transcript (no greeting line)")
    body = body.rstrip(b"\r\n") + FRAME_END
    data = greeting + b"\r\n" + body * repeat
    chunks = [data[start : start + chunk_size] for start in range(0, len(data), chunk_size)]
    return Workload(data, chunks, count_frames(data), repeat, chunk_size)


def count_frames(data: bytes) -> int:
    """AMI frames in a wire capture: pieces between blank lines, greeting line excluded."""
    _, _, messages = data.partition(b"\r\n")
    return sum(1 for piece in messages.split(FRAME_END) if piece.strip(b"\r\n"))


# --------------------------------------------------------------------------- our side


def _stats_summary(stats: QueueStats, now: datetime) -> str:
    """Totals of the queue figures, to show the state machine really counted."""
    queues = stats.snapshot(now)["queues"]
    totals: Counter[str] = Counter()
    for figures in queues.values():
        for key in ("offered", "answered", "abandoned", "short_abandoned", "timed_out"):
            totals[key] += figures[key]
    return (
        f"{len(queues)} queue(s): offered {totals['offered']:,}, answered {totals['answered']:,}, "
        f"abandoned {totals['abandoned']:,} (short {totals['short_abandoned']:,}), "
        f"timed out {totals['timed_out']:,}; {len(stats.agents)} agents; "
        f"anomalies {dict(stats.anomalies) or 'none'}"
    )


def _calls_line(outcomes: Counter[str], repeat: int) -> str:
    finished = sum(outcomes.values())
    expected = CALLS_PER_TRANSCRIPT * repeat
    verdict = "ok" if finished == expected else "MISMATCH"
    detail = ", ".join(f"{name} {count:,}" for name, count in sorted(outcomes.items()))
    return (
        f"calls finished {finished:,} (expected {CALLS_PER_TRANSCRIPT} x {repeat} = "
        f"{expected:,}: {verdict}); {detail}"
    )


class OurPipeline:
    """Decoder (name filter) → replay clock → ``EventPipeline`` (tracker and statistics).

    The clock is advanced with each message before it is handed over, as ``ami.replay`` does.
    """

    def __init__(self) -> None:
        self.decoder = AmiFrameDecoder(keep_event)
        self.clock = ReplayClock()
        self.pipeline = EventPipeline(
            CallTracker(INBOUND_CONTEXTS), QueueStats(ZoneInfo(BENCH_ZONE)), self.clock.current
        )
        self.translator = AmiTranslator()
        self.kept = 0
        self.outcomes: Counter[str] = Counter()

    def run(self, chunks: Iterable[bytes]) -> None:
        feed = self.decoder.feed
        advance = self.clock.advance
        translate = self.translator.translate
        sink = self.pipeline.on_event
        outcomes = self.outcomes
        kept = 0
        for chunk in chunks:
            messages = feed(chunk)
            kept += len(messages)
            for message in messages:
                fact = translate(message, advance(message))
                if fact is None:
                    continue
                for call in sink(fact).finished_calls:
                    outcomes[str(call.outcome)] += 1
        self.kept += kept

    def sanity(self, repeat: int, frames: int) -> list[str]:
        dropped = self.decoder.dropped
        verdict = "ok" if self.kept + dropped == frames else "MISMATCH"
        tracker = self.pipeline.tracker
        return [
            _calls_line(self.outcomes, repeat),
            f"decoder kept {self.kept:,} and dropped {dropped:,} by name "
            f"(sum {self.kept + dropped:,} = frames: {verdict}); "
            f"pipeline counters {dict(self.pipeline.counters)}, "
            f"translator counters {dict(self.translator.counters)}",
            f"tracker anomalies {dict(tracker.anomalies) or 'none'}; "
            f"live calls left {tracker.live_calls}",
            f"QueueStats: {_stats_summary(self.pipeline.stats, self.clock.current())}",
        ]


OUR_STAGES = [
    f"AmiFrameDecoder(keep_event=ami.feed.keep_event, {len(PIPELINE_EVENTS)} names)",
    "ReplayClock.advance",
    "AmiTranslator.translate",
    f"EventPipeline.on_event [CallTracker, QueueStats({BENCH_ZONE})]",
]


# --------------------------------------------------------------------------- cacofonisk


def load_cacofonisk() -> tuple[Any, Any, Any, str]:
    try:
        from cacofonisk.handlers import EventHandler
        from cacofonisk.reporters import BaseReporter
        from panoramisk.message import Message
    except ImportError as error:
        print(
            f"cacofonisk is not installed ({error}); it is a benchmark-only dependency:\n"
            "    pip install 'cacofonisk==0.7.10'   (or the project's `bench` extra)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    return EventHandler, BaseReporter, Message, importlib.metadata.version("cacofonisk")


def make_counting_reporter(base: type) -> type:
    """A cacofonisk reporter that does nothing but count which callbacks it received."""

    def counter(name: str) -> Callable[..., None]:
        def callback(self: Any, *args: object, **kwargs: object) -> None:
            self.callbacks[name] += 1

        callback.__name__ = f"on_{name}"
        return callback

    names = (
        "b_dial",
        "up",
        "hangup",
        "queue_caller_abandon",
        "attended_transfer",
        "blonde_transfer",
        "blind_transfer",
        "user_event",
    )
    namespace: dict[str, object] = {f"on_{name}": counter(name) for name in names}

    def init(self: Any) -> None:
        self.callbacks = Counter()

    namespace["__init__"] = init
    return type("CountingReporter", (base,), namespace)


class CacofoniskRunner:
    """Chunks → panoramisk-style split → ``Message.from_line`` → ``EventHandler.on_event``."""

    def __init__(self, handler_cls: Any, reporter_cls: Any, message_cls: Any) -> None:
        quiet = _quiet_logger()
        self.reporter = reporter_cls()
        self.handler = handler_cls(reporter=self.reporter, logger=quiet)
        filtering = handler_cls.FILTER_EVENTS
        self.wanted = frozenset(self.handler.event_handlers()) if filtering else None
        self.from_line = message_cls.from_line
        self.parsed = 0
        self.handled = 0
        self.errors: Counter[str] = Counter()

    def run(self, chunks: Iterable[bytes]) -> None:
        from_line = self.from_line
        on_event = self.handler.on_event
        wanted = self.wanted
        errors = self.errors
        parsed = handled = 0
        pending = ""
        for chunk in chunks:
            pieces = (pending + chunk.decode("utf-8", "ignore")).split("\r\n\r\n")
            pending = pieces.pop()
            for piece in pieces:
                message = from_line(piece.strip())
                if message is None:
                    continue
                parsed += 1
                if wanted is not None and message.get("Event") not in wanted:
                    continue
                handled += 1
                try:
                    on_event(message)
                except Exception as error:
                    errors[type(error).__name__] += 1
        self.parsed += parsed
        self.handled += handled

    def run_frames(self, frames: Iterable[str]) -> None:
        """The same as ``run`` on frames already split (the split is then not timed)."""
        from_line = self.from_line
        on_event = self.handler.on_event
        wanted = self.wanted
        errors = self.errors
        parsed = handled = 0
        for piece in frames:
            message = from_line(piece)
            if message is None:
                continue
            parsed += 1
            if wanted is not None and message.get("Event") not in wanted:
                continue
            handled += 1
            try:
                on_event(message)
            except Exception as error:
                errors[type(error).__name__] += 1
        self.parsed += parsed
        self.handled += handled

    def sanity(self, repeat: int, frames: int) -> list[str]:
        callbacks = ", ".join(
            f"{name} {count:,}" for name, count in sorted(self.reporter.callbacks.items())
        )
        return [
            f"frames parsed {self.parsed:,} (of {frames:,}), handed to EventHandler "
            f"{self.handled:,}; handler exceptions {dict(self.errors) or 'none'}",
            f"reporter callbacks: {callbacks or 'NONE (cacofonisk did nothing?)'}; "
            f"channels left {len(self.handler._channels)}",
        ]


class CacofoniskWireRunner:
    """cacofonisk's own ``AmiRunner`` path without the socket: panoramisk's ``AMIProtocol``
    ``data_received`` (split, ``Message.from_line``, response matching) → ``Manager.dispatch``
    (one compiled pattern per registered event name, tried in turn) → ``EventHandler.on_event``.
    """

    def __init__(
        self, handler_cls: Any, reporter_cls: Any, loop: asyncio.AbstractEventLoop
    ) -> None:
        from panoramisk import Manager
        from panoramisk.ami_protocol import AMIProtocol

        quiet = _quiet_logger()
        self.loop = loop
        self.reporter = reporter_cls()
        self.handler = handler_cls(reporter=self.reporter, logger=quiet)
        manager = Manager(loop=loop, encoding="utf8", log=quiet)
        handle = self.handler.on_event
        handled = self.handled = Counter[str]()

        def on_event(_manager: object, event: Any) -> None:  # what AmiRunner.on_event does
            handled["events"] += 1
            handle(event)

        names = self.handler.event_handlers() if handler_cls.FILTER_EVENTS else ("*",)
        for name in names:
            manager.register_event(name, on_event)
        self.protocol = AMIProtocol()
        self.protocol.connection_made(None)
        self.protocol.factory = manager
        self.protocol.encoding = "utf8"

    def run(self, chunks: Iterable[bytes]) -> None:
        received = self.protocol.data_received
        for chunk in chunks:
            received(chunk)

    def settle(self) -> None:
        """Let the coroutines panoramisk scheduled (one per ``FullyBooted``) finish, untimed."""
        pending = asyncio.all_tasks(self.loop)
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    def sanity(self, repeat: int, frames: int) -> list[str]:
        callbacks = ", ".join(
            f"{name} {count:,}" for name, count in sorted(self.reporter.callbacks.items())
        )
        channels = len(self.handler._channels)
        return [
            f"via panoramisk dispatch: handed to EventHandler {self.handled['events']:,}; "
            f"reporter callbacks: {callbacks or 'NONE'}; channels left {channels}"
        ]


def _quiet_logger() -> logging.Logger:
    quiet = logging.getLogger("ami_ingest.cacofonisk")
    quiet.setLevel(logging.CRITICAL + 1)
    quiet.propagate = False
    return quiet


def presplit_frames(data: bytes) -> list[str]:
    """Frame strings as panoramisk's protocol would cut them, for the no-split variant."""
    pieces = data.decode("utf-8", "ignore").split("\r\n\r\n")
    return [piece.strip() for piece in pieces if piece.strip()]


# --------------------------------------------------------------------------- measuring


def pin_to_one_cpu(wanted: int | None) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (os.sched_setaffinity unavailable)"
    allowed = sorted(os.sched_getaffinity(0))
    cpu = wanted if wanted is not None else allowed[-1]
    if cpu not in allowed:
        raise SystemExit(f"--cpu {cpu}: not among the CPUs this process may use {allowed}")
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu} (of {len(allowed)} allowed)"


def timed(action: Callable[[], None]) -> float:
    gc.collect()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def profile(name: str, runner: Runner, workload: Workload, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    runner.run(workload.chunks)
    profiler.disable()
    print(f"\ncProfile of one pass, {name} side (sorted by own time; the profiler inflates calls):")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.strip_dirs().sort_stats(pstats.SortKey.TIME).print_stats(top)


def rate_line(label: str, seconds: float, workload: Workload) -> str:
    frames_per_second = workload.frames / seconds
    megabytes_per_second = len(workload.data) / seconds / 1e6
    return (
        f"  {label:<34} {frames_per_second:>12,.0f} frames/s  {megabytes_per_second:>7.1f} MB/s"
        f"  (best {seconds * 1000:,.1f} ms)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="transcript repetitions (20)")
    parser.add_argument("--chunk", type=int, default=4096, help="bytes per feed() call (4096)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, best kept (5)")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (last allowed)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    parser.add_argument(
        "--no-presplit", action="store_true", help="skip the extra cacofonisk-without-split run"
    )
    parser.add_argument(
        "--no-wire",
        action="store_true",
        help="skip the extra cacofonisk-through-panoramisk-dispatch run",
    )
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 when ours/cacofonisk < {TARGET_RATIO:g}"
    )
    parser.add_argument(
        "--profile",
        choices=("ours", "cacofonisk"),
        help="print a cProfile of one pass of that side instead of timing",
    )
    parser.add_argument("--top", type=int, default=25, help="rows of --profile output (25)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.chunk < 1 or args.rounds < 1:
        parser.error("--repeat, --chunk and --rounds must be positive")

    handler_cls, base_reporter, message_cls, cacofonisk_version = load_cacofonisk()
    reporter_cls = make_counting_reporter(base_reporter)
    make_ours, stages = OurPipeline, OUR_STAGES

    def make_theirs() -> CacofoniskRunner:
        return CacofoniskRunner(handler_cls, reporter_cls, message_cls)

    pinning = "not pinned (--no-pin)" if args.no_pin else pin_to_one_cpu(args.cpu)
    workload = build_workload(FIXTURE, args.repeat, args.chunk)

    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {pinning}"
    )
    print(
        f"input: {FIXTURE.relative_to(ROOT)} x {workload.repeat} = {workload.frames:,} frames, "
        f"{len(workload.data) / 1e6:.1f} MB, fed in {workload.chunk_size:,}-byte chunks "
        f"({len(workload.chunks):,} chunks)"
    )
    print("ours: " + " -> ".join(stages))
    print(
        f"cacofonisk {cacofonisk_version}: chunk decode + split on blank line (as panoramisk's "
        "protocol) -> panoramisk Message.from_line on every frame -> file-runner filter "
        "(EventHandler.event_handlers) -> EventHandler.on_event, counting no-op reporter"
    )

    if args.profile:
        runner = make_ours() if args.profile == "ours" else make_theirs()
        profile(args.profile, runner, workload, args.top)
        return 0

    frames_text = None if args.no_presplit else presplit_frames(workload.data)
    wire_loop = None if args.no_wire else asyncio.new_event_loop()
    best: dict[str, float] = {}
    last: dict[str, Runner] = {}

    def measure(label: str, runner: Runner, action: Callable[[], None], warm: bool) -> None:
        seconds = timed(action)
        if not warm:
            best[label] = min(best.get(label, float("inf")), seconds)
        last[label] = runner

    for round_number in range(args.rounds + 1):  # round 0 warms up and is not counted
        warm = round_number == 0
        ours = make_ours()
        measure("ours", ours, lambda r=ours: r.run(workload.chunks), warm)
        theirs = make_theirs()
        measure("cacofonisk", theirs, lambda r=theirs: r.run(workload.chunks), warm)
        if wire_loop is not None:
            wire = CacofoniskWireRunner(handler_cls, reporter_cls, wire_loop)
            measure("cacofonisk-wire", wire, lambda r=wire: r.run(workload.chunks), warm)
            wire.settle()
        if frames_text is not None:
            presplit = make_theirs()
            measure(
                "cacofonisk-presplit",
                presplit,
                lambda r=presplit, f=frames_text: r.run_frames(f),
                warm,
            )

    ratio = best["cacofonisk"] / best["ours"]
    print(f"best of {args.rounds} rounds after 1 warm-up (time.perf_counter):")
    print(rate_line("ours", best["ours"], workload))
    print(rate_line("cacofonisk", best["cacofonisk"], workload))
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"  ratio ours / cacofonisk: {ratio:.2f}  (target >= {TARGET_RATIO:g}: {verdict})")
    if frames_text is not None:
        print(
            rate_line("cacofonisk, split not timed", best["cacofonisk-presplit"], workload)
            + f"  ratio {best['cacofonisk-presplit'] / best['ours']:.2f} (informative only)"
        )
    if wire_loop is not None:
        print(
            rate_line("cacofonisk via panoramisk dispatch", best["cacofonisk-wire"], workload)
            + f"  ratio {best['cacofonisk-wire'] / best['ours']:.2f} (informative only)"
        )
        wire_loop.close()
    print("sanity (last round):")
    for line in last["ours"].sanity(workload.repeat, workload.frames):
        print(f"  ours: {line}")
    for line in last["cacofonisk"].sanity(workload.repeat, workload.frames):
        print(f"  cacofonisk: {line}")
    if "cacofonisk-wire" in last:
        for line in last["cacofonisk-wire"].sanity(workload.repeat, workload.frames):
            print(f"  cacofonisk: {line}")
    return 1 if args.check and ratio < TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
