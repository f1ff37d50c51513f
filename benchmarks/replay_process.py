"""``hotline replay`` as a user runs it, next to cacofonisk run the same way: whole processes.

Input: the recorded real session ``tests/fixtures/hotline-3-agents-40-calls.ami`` (40 calls)
repeated ``--repeat`` times (44: about 139,000 AMI frames, 57 MB) into one wire transcript, each
repetition with uniqueids of its own, written to a temporary file before any clock starts.

* ours: ``python -m hotline.cli replay --json FILE``: interpreter start, imports, reading and
  decoding the file, the pipeline, the JSON report.
* cacofonisk: ``python benchmarks/replay_process.py --cacofonisk FILE``: interpreter start,
  importing cacofonisk and panoramisk, reading the file, then what its runner does from the wire
  (``benchmarks/ami_ingest.py``'s ``CacofoniskRunner``: chunks of 4,096 bytes decoded and split
  on the blank line, every frame parsed by panoramisk's ``Message.from_line``, the events its
  ``EventHandler`` registers for handed to it with a reporter that only counts).

Each side runs ``--rounds`` times (5), alternating, best wall time kept; CPU is the child's user
+ system time from ``getrusage``. Printed: frames, both wall and CPU times, the ratio of the wall
times (cacofonisk / ours) and whether it meets the target (>= 4).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "hotline-3-agents-40-calls.ami"
TARGET_RATIO = 4.0
UNIQUEID = re.compile(rb"\b(\d{10})\.(\d+)\b")
CHUNK = 4096


def build_transcript(repeat: int, path: Path) -> int:
    """The fixture's greeting and login answer, then its events ``repeat`` times with fresh
    uniqueids. Returns the number of frames."""
    raw = FIXTURE.read_bytes()
    head, separator, rest = raw.partition(b"\r\n\r\n")
    events = b"".join(
        frame + b"\r\n\r\n" for frame in rest.split(b"\r\n\r\n") if frame.startswith(b"Event: ")
    )
    parts = [head + separator]
    for round_number in range(repeat):
        base = round_number * 100_000
        parts.append(
            UNIQUEID.sub(
                lambda m, b=base: m.group(1) + b"." + str(b + int(m.group(2))).encode(), events
            )
        )
    data = b"".join(parts)
    path.write_bytes(data)
    return data.count(b"\r\n\r\n")


def timed(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, standard output) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def cacofonisk_once(path: Path) -> None:
    """The cacofonisk side, in its own process (``--cacofonisk FILE``)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ami_ingest import CacofoniskRunner, load_cacofonisk, make_counting_reporter

    handler_cls, base_reporter, message_cls, _ = load_cacofonisk()
    runner = CacofoniskRunner(handler_cls, make_counting_reporter(base_reporter), message_cls)
    data = path.read_bytes()
    _, _, body = data.partition(b"\r\n")
    runner.run(body[start : start + CHUNK] for start in range(0, len(body), CHUNK))
    print(json.dumps({"parsed": runner.parsed, "handled": runner.handled,
                      "callbacks": sum(runner.reporter.callbacks.values())}))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=44, help="session repetitions (44)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each side, best kept (5)")
    parser.add_argument("--cacofonisk", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cacofonisk is not None:
        cacofonisk_once(args.cacofonisk)
        return 0
    with tempfile.TemporaryDirectory() as workdir:
        transcript = Path(workdir) / "session.ami"
        frames = build_transcript(args.repeat, transcript)
        ours_command = [sys.executable, "-m", "hotline.cli", "replay", "--json", str(transcript)]
        theirs_command = [sys.executable, str(Path(__file__)), "--cacofonisk", str(transcript)]
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(timed(ours_command))
            theirs.append(timed(theirs_command))
    best_ours, best_theirs = min(ours), min(theirs)
    report = json.loads(best_ours[2])
    calls = sum(queue["offered"] for queue in report["queues"].values())
    sanity = json.loads(best_theirs[2])
    ratio = best_theirs[0] / best_ours[0]
    transcript_size = len(FIXTURE.read_bytes()) * args.repeat / 1e6
    print(
        f"transcript: {FIXTURE.name} x {args.repeat} = {frames:,} frames, about "
        f"{transcript_size:.0f} MB; best of {args.rounds} runs of each whole process"
    )
    print(
        f"ours: hotline replay --json   wall {best_ours[0]:.2f} s, CPU {best_ours[1]:.2f} s, "
        f"{frames / best_ours[0]:,.0f} frames/s; {calls:,} calls offered"
    )
    print(
        f"cacofonisk (own process)      wall {best_theirs[0]:.2f} s, CPU {best_theirs[1]:.2f} s, "
        f"{frames / best_theirs[0]:,.0f} frames/s; {sanity['parsed']:,} frames parsed, "
        f"{sanity['callbacks']:,} reporter callbacks"
    )
    met = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"ratio (cacofonisk wall / ours): {ratio:.2f}x; target >= {TARGET_RATIO:g}x: {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
