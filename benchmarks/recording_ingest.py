"""Recording ingest throughput: ``RecordingIngest`` next to plain ``cp`` + ``sha256sum``.

Why: every finished call leaves a WAV file in Asterisk's spool, and the bridge must move it into
the store (header check, copy with SHA-256 and fsync, a database row, unlink) faster than a busy
day produces them. The useful yardstick is what the stock tools do with the same bytes.

How:

1. Setup, not timed: ``--files`` (10,000) WAV files as MixMonitor writes them
   (8 kHz, 16-bit, mono PCM: 16,000 bytes per second of talk) under
   ``spool/YYYY/MM/DD/<uniqueid>_<ticket>.wav``, about 1,000 calls a day. Talk times are
   log-normal with a fixed seed: median ``--median-seconds`` (90), sigma 0.75 (mean about
   1.3 x the median), clipped to 10 s .. 30 min. Samples are slices of one random buffer. The
   database gets the real migrations. If the disk cannot hold 2.5 x the data plus 5 GB, the
   file count is scaled down, and the output says so.
2. Ingest, timed: one ``RecordingIngest.ingest_pending()`` pass with ``DirectoryStore`` and
   ``transactions_for(engine)`` on SQLite, WAL checkpoints running beside it as the service runs
   them. A thin wrapper times ``store.put`` and the database units, to show where the time goes.
3. Reference, timed: the stored files again, in batches of up to 1 GB / 1,000 files, each batch
   ``cp -t ref/ FILES...``, then ``sync FILES...`` (an fsync per file, as the ingest does), then
   ``sha256sum FILES...`` on the copies, then (not timed) the copies are deleted, which keeps
   the disk peak low. "cp + sha256sum" sums the cp and sha256sum commands only, so writing the
   copies back to disk (the sync's work) is not in it; "cp + sync + sha256sum" adds the syncs.
4. Checks: every file stored once, N rows, N objects, an empty spool, the reference's hashes
   equal to the rows', and 50 sampled files hashed with ``hashlib`` from what was generated and
   from what the store holds. Any failure exits 1.

Both timed phases start cold: before each, ``os.sync()`` and ``POSIX_FADV_DONTNEED`` on the
files about to be read, so neither reads from a page cache the other one warmed. MB are 10**6
bytes, GB 10**9. Everything is deleted at the end unless ``--keep``.

The count matters on a VM like the one this was written on (2 cores, a disk that sustains about
200 MB/s over many GB, 23 GB of RAM): the 10,000 files (19 GB, written three times) take about
7.5 minutes end to end, and smaller sets run faster per MB (the page cache holds more of them),
so the issue's figures are runs with the default 10,000.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import contextlib
import hashlib
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import BinaryIO, TypeVar

ROOT = Path(__file__).resolve().parent.parent

# Benchmark the code in this checkout, not whatever copy of the packages is installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import Connection, select  # noqa: E402

from hotline.schema import upgrade_database_sync  # noqa: E402
from infra.storage import Transactions, create_engine, transactions_for  # noqa: E402
from recording.db import RecordingRow  # noqa: E402
from recording.ingest import RecordingIngest  # noqa: E402
from recording.naming import RecordingName  # noqa: E402
from recording.store import DirectoryStore, RecordingStore, StoredObject  # noqa: E402
from recording.wav import wav_header  # noqa: E402

T = TypeVar("T")

SAMPLE_RATE = 8000
BYTES_PER_SECOND = SAMPLE_RATE * 2  # 16-bit mono
SIGMA = 0.75
MIN_SECONDS = 10.0
MAX_SECONDS = 30 * 60.0
CALLS_PER_DAY = 1000
FIRST_DAY = date(2026, 12, 1)
NO_TICKET_SHARE = 0.05
SAMPLE_BUFFER_BYTES = 32 << 20  # longer than the longest call (28.8 MB)
DISK_FACTOR = 2.5
DISK_SPARE_BYTES = 5 * 10**9
BATCH_BYTES = 10**9
BATCH_FILES = 1000
HASH_SAMPLE = 50
DEFAULT_FILES = 10_000
MB = 1e6
GB = 1e9


class Progress:
    """Progress lines on stderr with the time since the start."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(
            f"[{time.perf_counter() - self._start:6.1f} s] {message}", file=sys.stderr, flush=True
        )


# --------------------------------------------------------------------------- the files


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One recording to generate: its key, its talk time and where its samples come from."""

    key: str
    data_bytes: int
    buffer_offset: int

    @property
    def size_bytes(self) -> int:
        return len(wav_header(SAMPLE_RATE, self.data_bytes)) + self.data_bytes


def talk_seconds(rng: random.Random, median_seconds: float) -> float:
    """A hotline call's talk time: log-normal around ``median_seconds``, clipped."""
    drawn = rng.lognormvariate(math.log(median_seconds), SIGMA)
    return min(max(drawn, MIN_SECONDS), MAX_SECONDS)


def plan_files(count: int, median_seconds: float, seed: int) -> list[PlannedFile]:
    """``count`` recordings over consecutive days, names as the dialplan makes them."""
    rng = random.Random(seed)
    planned: list[PlannedFile] = []
    for index in range(count):
        day = FIRST_DAY + timedelta(days=index // CALLS_PER_DAY)
        call_of_day = index % CALLS_PER_DAY
        day_start = calendar.timegm(day.timetuple()) + 8 * 3600
        uniqueid = f"{day_start + call_of_day * 40}.{index + 1}"
        ticket = (
            None if rng.random() < NO_TICKET_SHARE else f"12345-{day:%Y%m%d}-{call_of_day + 1:06d}"
        )
        data_bytes = round(talk_seconds(rng, median_seconds) * SAMPLE_RATE) * 2
        offset = rng.randrange(0, SAMPLE_BUFFER_BYTES - data_bytes + 1, 2)
        planned.append(PlannedFile(RecordingName(day, uniqueid, ticket).key, data_bytes, offset))
    return planned


def file_content(planned: PlannedFile, samples: memoryview) -> Iterator[bytes | memoryview]:
    yield wav_header(SAMPLE_RATE, planned.data_bytes)
    yield samples[planned.buffer_offset : planned.buffer_offset + planned.data_bytes]


def write_spool(spool: Path, files: Sequence[PlannedFile], samples: memoryview) -> None:
    """The spool as MixMonitor leaves it once each post-recording rename is done."""
    for planned in files:
        path = spool / planned.key
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as stream:
            for part in file_content(planned, samples):
                stream.write(part)


def expected_sha256(planned: PlannedFile, samples: memoryview) -> str:
    digest = hashlib.sha256()
    for part in file_content(planned, samples):
        digest.update(part)
    return digest.hexdigest()


def drop_from_page_cache(paths: Sequence[Path]) -> None:
    """Write everything out, then ask the kernel to forget these files' cached pages."""
    os.sync()
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def scaled_count(requested: int, mean_bytes: float, free_bytes: int) -> int:
    """How many files fit with the margin (``DISK_FACTOR`` x the data plus a spare)."""
    fitting = (free_bytes - DISK_SPARE_BYTES) / (DISK_FACTOR * mean_bytes)
    return max(0, min(requested, int(fitting)))


# --------------------------------------------------------------------------- the ingest


@dataclass
class StageTimes:
    """Seconds spent in ``store.put`` and in database units during the timed pass."""

    put_seconds: float = 0.0
    puts: int = 0
    unit_seconds: float = 0.0
    units: int = 0


class TimedStore:
    """A store with the time of each ``put`` added up; the rest is passed through."""

    def __init__(self, store: RecordingStore, times: StageTimes) -> None:
        self._store = store
        self._times = times

    def put(self, source: Path, key: str) -> StoredObject:
        started = time.perf_counter()
        try:
            return self._store.put(source, key)
        finally:
            self._times.put_seconds += time.perf_counter() - started
            self._times.puts += 1

    def stat(self, key: str) -> StoredObject | None:
        return self._store.stat(key)

    def open(self, key: str) -> BinaryIO:
        return self._store.open(key)

    def size(self, key: str) -> int | None:
        return self._store.size(key)

    def delete(self, key: str) -> bool:
        return self._store.delete(key)

    def keys(self) -> Iterator[str]:
        return self._store.keys()


class TimedUnits:
    """The ``Transactions`` port with the wall time of each unit (thread hop included) added."""

    def __init__(self, units: Transactions, times: StageTimes) -> None:
        self._units = units
        self._times = times

    async def __call__(self, work: Callable[[Connection], T]) -> T:
        started = time.perf_counter()
        try:
            return await self._units(work)
        finally:
            self._times.unit_seconds += time.perf_counter() - started
            self._times.units += 1

    async def run_checkpoints(self, every: float = 5.0) -> None:
        await self._units.run_checkpoints(every)

    async def close(self) -> None:
        await self._units.close()


@dataclass
class IngestResult:
    seconds: float
    outcomes: Counter[str]
    times: StageTimes
    rows: dict[str, tuple[str, int]]  # key -> (sha256, size_bytes)


def _all_rows(connection: Connection) -> dict[str, tuple[str, int]]:
    table = RecordingRow.__table__
    query = select(table.c.key, table.c.sha256, table.c.size_bytes)
    return {key: (sha256, size) for key, sha256, size in connection.execute(query)}


async def run_ingest(spool: Path, store_root: Path, database_url: str) -> IngestResult:
    """One timed ``ingest_pending`` pass, then (not timed) every row read back."""
    engine = create_engine(database_url)
    units = transactions_for(engine)
    times = StageTimes()
    timed_units = TimedUnits(units, times)
    ingest = RecordingIngest(spool, TimedStore(DirectoryStore(store_root), times), timed_units)
    checkpoints = asyncio.create_task(units.run_checkpoints(), name="wal-checkpoints")
    try:
        started = time.perf_counter()
        outcomes = await ingest.ingest_pending()
        seconds = time.perf_counter() - started
        checkpoints.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checkpoints
        rows = await units(_all_rows)
    finally:
        checkpoints.cancel()
        await units.close()
        await engine.dispose()
    return IngestResult(seconds, outcomes, times, rows)


# --------------------------------------------------------------------------- the reference


@dataclass
class ReferenceResult:
    cp_seconds: float = 0.0
    sync_seconds: float = 0.0
    sha256sum_seconds: float = 0.0
    batches: int = 0
    hashes: dict[str, str] = field(default_factory=dict)  # copy's file name -> sha256

    @property
    def plain_seconds(self) -> float:
        return self.cp_seconds + self.sha256sum_seconds

    @property
    def synced_seconds(self) -> float:
        return self.plain_seconds + self.sync_seconds


def batches(paths: Sequence[Path], sizes: Sequence[int]) -> Iterator[list[Path]]:
    """Consecutive runs of at most ``BATCH_FILES`` files and (past the first) ``BATCH_BYTES``."""
    batch: list[Path] = []
    batch_bytes = 0
    for path, size in zip(paths, sizes, strict=True):
        if batch and (len(batch) >= BATCH_FILES or batch_bytes + size > BATCH_BYTES):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(path)
        batch_bytes += size
    if batch:
        yield batch


def timed_command(argv: Sequence[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, done.stdout


def run_reference(
    sources: Sequence[Path], sizes: Sequence[int], ref_dir: Path, progress: Progress
) -> ReferenceResult:
    """cp, sync and sha256sum, one batch at a time, each command timed on its own."""
    result = ReferenceResult()
    ref_dir.mkdir(parents=True, exist_ok=True)
    for batch in batches(sources, sizes):
        copies = [str(ref_dir / source.name) for source in batch]
        seconds, _ = timed_command(["cp", "-t", str(ref_dir), "--", *map(str, batch)])
        result.cp_seconds += seconds
        seconds, _ = timed_command(["sync", "--", *copies])
        result.sync_seconds += seconds
        seconds, listing = timed_command(["sha256sum", "--", *copies])
        result.sha256sum_seconds += seconds
        for line in listing.splitlines():
            digest, _, name = line.partition("  ")
            result.hashes[Path(name).name] = digest
        for copy in copies:
            os.unlink(copy)
        result.batches += 1
        if result.batches % 5 == 0:
            progress(f"reference: {result.batches} batches, {len(result.hashes):,} files")
    return result


# --------------------------------------------------------------------------- checks


def check_results(
    planned: Sequence[PlannedFile],
    samples: memoryview,
    ingest: IngestResult,
    reference: ReferenceResult,
    spool: Path,
    store_root: Path,
    seed: int,
) -> list[str]:
    """What went wrong, if anything: an empty list means every check passed."""
    count = len(planned)
    failures: list[str] = []
    if ingest.outcomes != Counter({"stored": count}):
        failures.append(f"outcomes {dict(ingest.outcomes)}, expected {{'stored': {count}}}")
    if set(ingest.rows) != {p.key for p in planned}:
        failures.append(f"{len(ingest.rows):,} rows whose keys are not the {count:,} generated")
    wrong_size = [p.key for p in planned if ingest.rows.get(p.key, ("", -1))[1] != p.size_bytes]
    if wrong_size:
        failures.append(f"{len(wrong_size):,} rows with a wrong size_bytes, e.g. {wrong_size[0]}")
    store = DirectoryStore(store_root)
    stored_keys = list(store.keys())
    if len(stored_keys) != count:
        failures.append(f"{len(stored_keys):,} objects in the store, expected {count:,}")
    leftovers = [path for path in spool.rglob("*") if path.is_file()]
    if leftovers:
        failures.append(f"{len(leftovers):,} files left in the spool, e.g. {leftovers[0]}")
    parts = list((store_root / ".incoming").glob("*"))
    if parts:
        failures.append(f"{len(parts):,} partial files left in the store's .incoming")
    by_name = {Path(key).name: sha256 for key, (sha256, _) in ingest.rows.items()}
    disagreeing = sorted(name for name, sha in by_name.items() if reference.hashes.get(name) != sha)
    if disagreeing:
        failures.append(
            f"{len(disagreeing):,} sha256sum results differ from the rows, e.g. {disagreeing[0]}"
        )
    for planned_file in random.Random(seed + 1).sample(list(planned), min(HASH_SAMPLE, count)):
        generated = expected_sha256(planned_file, samples)
        with store.open(planned_file.key) as stream:
            stored = hashlib.file_digest(stream, "sha256").hexdigest()
        row = ingest.rows.get(planned_file.key, ("missing",))[0]
        if not generated == stored == row:
            failures.append(
                f"{planned_file.key}: generated {generated[:12]}, stored {stored[:12]}, "
                f"row {row[:12]}"
            )
    return failures


# --------------------------------------------------------------------------- main


def rate(amount: float, seconds: float) -> float:
    return amount / seconds if seconds > 0 else math.inf


def print_report(
    planned: Sequence[PlannedFile],
    median_seconds: float,
    ingest: IngestResult,
    reference: ReferenceResult,
) -> None:
    count = len(planned)
    total = sum(p.size_bytes for p in planned)
    talk = sorted(p.data_bytes / BYTES_PER_SECOND for p in planned)
    total_mb = total / MB
    print(
        f"files: {count:,} WAV (8 kHz 16-bit mono), {total_mb:,.0f} MB = {total / GB:.2f} GB, "
        f"mean {total / count / MB:.2f} MB; talk time median {talk[count // 2]:.0f} s, "
        f"mean {sum(talk) / count:.0f} s, max {talk[-1]:.0f} s "
        f"(log-normal, median {median_seconds:g} s, sigma {SIGMA:g}, "
        f"clipped to {MIN_SECONDS:g}..{MAX_SECONDS:g} s)"
    )
    print(
        "cache: cold for both (os.sync + POSIX_FADV_DONTNEED on the files before each timed phase)"
    )
    print(
        f"ingest: {ingest.seconds:.1f} s, {rate(count, ingest.seconds):,.0f} files/s, "
        f"{rate(total_mb, ingest.seconds):,.0f} MB/s "
        "(one ingest_pending pass: header check, copy + SHA-256 + fsync, row, unlink)"
    )
    times = ingest.times
    other = ingest.seconds - times.put_seconds - times.unit_seconds
    print(
        f"  of which store.put {times.put_seconds:.1f} s ({times.puts:,} puts, "
        f"{rate(total_mb, times.put_seconds):,.0f} MB/s), database units "
        f"{times.unit_seconds:.1f} s ({times.units:,} units, "
        f"{rate(times.unit_seconds * 1000, times.units):.2f} ms each), "
        f"the rest {other:.1f} s (listing, headers, unlinks, thread hops)"
    )
    print(
        f"reference: the stored files in {reference.batches} batch(es) of <= {BATCH_FILES:,} "
        f"files / {BATCH_BYTES / GB:g} GB, each `cp -t ref/ FILES`, `sync FILES`, "
        "`sha256sum FILES` on the copies, then the copies deleted (not timed)"
    )
    print(
        f"  cp {reference.cp_seconds:.1f} s, sync {reference.sync_seconds:.1f} s, "
        f"sha256sum {reference.sha256sum_seconds:.1f} s "
        f"({rate(total_mb, reference.sha256sum_seconds):,.0f} MB/s)"
    )
    for label, seconds in (
        ("cp + sha256sum", reference.plain_seconds),
        ("cp + sync + sha256sum", reference.synced_seconds),
    ):
        print(
            f"reference {label}: {seconds:.1f} s, {rate(count, seconds):,.0f} files/s, "
            f"{rate(total_mb, seconds):,.0f} MB/s; ingest / reference throughput "
            f"{rate(seconds, ingest.seconds):.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--files", type=int, help=f"recordings ({DEFAULT_FILES:,}, as the issue asks)"
    )
    parser.add_argument(
        "--median-seconds", type=float, default=90.0, help="median talk time in seconds (90)"
    )
    parser.add_argument("--seed", type=int, default=12345, help="random seed (12345)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=ROOT / ".cache",
        help="where the temporary directory goes (the project's .cache/)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.files is None:
        args.files = DEFAULT_FILES
    if args.files < 1 or not MIN_SECONDS <= args.median_seconds <= MAX_SECONDS:
        parser.error(f"--files must be positive, --median-seconds {MIN_SECONDS:g}..{MAX_SECONDS:g}")

    progress = Progress()
    planned = plan_files(args.files, args.median_seconds, args.seed)
    mean_bytes = sum(p.size_bytes for p in planned) / len(planned)
    args.dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.dir).free
    count = scaled_count(args.files, mean_bytes, free)
    print(
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} cores; {free / GB:,.0f} GB free under {args.dir}"
    )
    if count < args.files:
        print(
            f"SCALED DOWN: {args.files:,} files of {mean_bytes / MB:.2f} MB on average need "
            f"{DISK_FACTOR:g} x {args.files * mean_bytes / GB:.1f} GB + "
            f"{DISK_SPARE_BYTES / GB:g} GB free; only {free / GB:.1f} GB are, so {count:,} files"
        )
        if count < 1:
            return 1
        planned = planned[:count]

    workdir = Path(tempfile.mkdtemp(prefix="recording-ingest-", dir=args.dir))
    spool, store_root = workdir / "spool", workdir / "store"
    database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    try:
        samples = memoryview(random.Random(args.seed).randbytes(SAMPLE_BUFFER_BYTES))
        total = sum(p.size_bytes for p in planned)
        progress(f"writing {len(planned):,} files, {total / GB:.2f} GB, into {spool}")
        write_spool(spool, planned, samples)
        upgrade_database_sync(database_url)
        spool_paths = [spool / p.key for p in planned]
        drop_from_page_cache(spool_paths)
        progress("ingest")
        ingest = asyncio.run(run_ingest(spool, store_root, database_url))
        progress(f"ingest done in {ingest.seconds:.1f} s; reference")
        store_paths = [store_root / p.key for p in planned]
        drop_from_page_cache(store_paths)
        sizes = [p.size_bytes for p in planned]
        reference = run_reference(store_paths, sizes, workdir / "ref", progress)
        progress("checks")
        failures = check_results(planned, samples, ingest, reference, spool, store_root, args.seed)
        print_report(planned, args.median_seconds, ingest, reference)
        if failures:
            print(f"checks FAILED ({len(failures)}):")
            for failure in failures:
                print(f"  {failure}")
            return 1
        print(
            f"checks passed: {len(planned):,} stored, {len(ingest.rows):,} rows, as many objects, "
            f"spool empty, every sha256sum equal to its row, {min(HASH_SAMPLE, len(planned))} "
            "files re-hashed with hashlib (generated bytes, stored file, row agree)"
        )
        return 0
    finally:
        if args.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
