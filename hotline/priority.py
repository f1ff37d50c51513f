"""CPU priority: ``hotline run`` yields the CPU to its routing process when both want it.

Why: on a loaded machine the bridge (web port, panel fan-out, AMI ingest) and the routing
process share the cores. With equal priority a route woken while the bridge is pushing a frame
to 2,000 viewers waits for the bridge's time slice. ``hotline run`` therefore lowers its own
priority (adds ``HOTLINE_BRIDGE_NICE``) once the routing process is started, so the scheduler
prefers the routing process and the PBX itself; the panel and the statistics take what is left.

Linux keeps a niceness per thread, and a new process or thread starts with its creator's. The
routing process must keep the priority ``hotline run`` started with, also when it is restarted
after a crash, so children are started from ``ChildLauncher``'s thread, which is left as it was.
Raising a niceness needs no privilege; lowering it again would, so nothing here ever does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class LaunchedChild:
    """A child started by ``ChildLauncher``: what ``RoutingProcess`` needs of a process."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def send_signal(self, signal_number: int) -> None:
        self._popen.send_signal(signal_number)

    def kill(self) -> None:
        self._popen.kill()

    async def wait(self) -> int:
        """Its exit status; the waiting is done on a thread, never on the event loop."""
        return await asyncio.to_thread(self._popen.wait)


class ChildLauncher:
    """Starts processes from a thread of its own, so they get the priority this process had
    when the launcher was made, whatever ``lower_priority`` did to the other threads since."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None  # made at the first launch

    @property
    def thread_id(self) -> int | None:
        return self._thread.native_id if self._thread is not None else None

    async def launch(self, argv: Sequence[str], **popen: Any) -> LaunchedChild:
        """``subprocess.Popen(argv, **popen)`` on the launcher's thread; ``OSError`` as Popen."""
        loop = asyncio.get_running_loop()
        started: asyncio.Future[LaunchedChild] = loop.create_future()

        def start() -> None:
            try:
                child: LaunchedChild | BaseException = LaunchedChild(
                    subprocess.Popen(list(argv), **popen)
                )
            except BaseException as error:  # handed to the caller, raised there
                child = error
            loop.call_soon_threadsafe(_settle, started, child)

        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="child-launcher", daemon=True)
            self._thread.start()
        self._requests.put(start)
        return await started

    def close(self) -> None:
        """End the thread once the launches asked for are done (a later launch makes another)."""
        if self._thread is not None:
            self._requests.put(None)
            self._thread = None

    def _serve(self) -> None:
        while (request := self._requests.get()) is not None:
            request()


def _settle(future: asyncio.Future[LaunchedChild], outcome: LaunchedChild | BaseException) -> None:
    if future.cancelled():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def lower_priority(by: int, *, keep: set[int | None]) -> int:
    """Add ``by`` to the niceness of every thread of this process except those in ``keep``
    (native thread ids); threads made later inherit it from the thread that makes them.
    Returns how many threads were changed. Linux only: elsewhere nothing is done."""
    tasks = Path("/proc/self/task")
    if by <= 0 or not tasks.is_dir():
        return 0
    changed = 0
    for entry in tasks.iterdir():
        thread = int(entry.name)
        if thread in keep:
            continue
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            current = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(current + by, 19))
            changed += 1
    return changed
