"""Record real FastAGI sessions: what Asterisk 22 sends to ``agi://…/route`` and what we answer.

    python -m tests.recorder.agi_session tests/fixtures/agi/route-sessions.agi

A proxy listens where the dialplan asks (127.0.0.1:4573) and forwards to the real routing server
(``hotline.service.build_route_server`` on a throw-away SQLite database, clock fixed at the start
of the recording). Three citizen calls go through the sandbox: a new caller with a Chinese name,
the same caller again (open ticket) and a withheld number. Each connection is written as lines
prefixed ``>`` (Asterisk to bridge) or ``<`` (bridge to Asterisk), byte for byte but for the
line ends, which are ``\\n`` on this wire.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from hotline.schema import upgrade_database
from hotline.service import build_route_server
from infra.config import Settings
from infra.storage import create_engine, transactions_for
from tests.conftest import free_port
from tests.recorder.testbed import Phones, Sandbox

LISTEN_PORT = 4573
CALLS = (("13800138000", "张三"), ("13800138000", "张三"), ("anonymous", "Anonymous"))


class RecordingProxy:
    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self.connections: list[list[tuple[str, bytes]]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log: list[tuple[str, bytes]] = []
        self.connections.append(log)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, mark: str) -> None:
            while line := await source.readline():
                log.append((mark, line))
                sink.write(line)
                await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer, ">"), pump(up_reader, writer, "<"))


async def record() -> tuple[list[str], Counter[str]]:
    sandbox, _ = Sandbox.start()
    sandbox.reset_state()
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite+aiosqlite:///{scratch}/hotline.db"
        await upgrade_database(url)
        settings = Settings(database_url=url, agi_host="127.0.0.1", agi_port=free_port())
        engine = create_engine(url)
        counters: Counter[str] = Counter()
        units = transactions_for(engine)
        server = build_route_server(
            settings,
            engine,
            units,
            lambda: None,
            on_routed=lambda uniqueid, decision: None,
            counters=counters,
            clock=lambda: started_at,
        )
        await server.start()
        proxy = RecordingProxy(server.port)
        listener = await asyncio.start_server(proxy.handle, "127.0.0.1", LISTEN_PORT)
        phones = Phones(Path(scratch))
        try:
            phones.start_agent("agent1")
            for caller, name in CALLS:
                call = phones.call(caller, name, 2)
                await call.wait_async(timeout=60)
        finally:
            phones.stop_all()
            listener.close()
            await server.close()
            await units.close()
            await engine.dispose()
    lines = [
        f"# recorded {started_at.isoformat()} from Asterisk 22 (tests/recorder/agi_session.py)"
    ]
    for number, log in enumerate(proxy.connections, 1):
        lines.append(f"# connection {number}")
        for mark, raw in log:
            lines.append(f"{mark} {raw.decode('utf-8').rstrip(chr(10))}")
    return lines, counters


def main(out: Path) -> None:
    lines, counters = asyncio.run(record())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} lines written to {out}; routing counters {dict(counters)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
