"""What the machine under a benchmark adds to its figures: CPU the hypervisor took, and the disk's
own fsync latency. Shared by the benchmarks; Linux readings, ``None`` elsewhere."""

from __future__ import annotations

import os
import time
from pathlib import Path


def machine_cpu_seconds() -> dict[str, float] | None:
    """CPU seconds since boot over all cores (Linux ``/proc/stat``), or None elsewhere.

    ``busy``: processes and the kernel; ``interrupts`` (in ``busy``): interrupt and softirq
    work such as loopback TCP; ``steal``: time the hypervisor ran another guest instead.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "busy": (user + nice + system + irq + softirq) / tick,
        "interrupts": (irq + softirq) / tick,
        "steal": steal / tick,
    }


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user and system) one process has used so far, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux), e.g. ``hotline run``'s routing process."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(v) for v in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return children


def fsync_seconds(directory: Path, samples: int = 300, gap: float = 0.005) -> list[float]:
    """Append 4 KB and fsync, ``samples`` times with ``gap`` seconds between: what one durable
    commit costs on this disk at best, before the database does anything. Sorted."""
    path = directory / "fsync-probe"
    latencies: list[float] = []
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"\0" * 4096
        for _ in range(samples):
            os.write(descriptor, block)
            started = time.perf_counter()
            os.fsync(descriptor)
            latencies.append(time.perf_counter() - started)
            time.sleep(gap)
    finally:
        os.close(descriptor)
        path.unlink(missing_ok=True)
    return sorted(latencies)
