"""The hardened AMI shell against a scripted AMI peer on loopback.

The real-Asterisk behaviour is covered by the integration tests; here we force the failures
panoramisk 1.4 handles badly: split UTF-8, a raising handler, silence, refusal, a dropped link.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ami.actions import queue_add
from ami.client import AmiActionTimeout, AmiClient, AmiNotConnected
from ami.codec import AmiMessage, parse_message


class ScriptedAmi:
    """A tiny AMI peer: greets, answers Login (or refuses it), answers or ignores actions."""

    def __init__(self, accept_login: bool = True, answer_pings: bool = True) -> None:
        self.accept_login = accept_login
        self.answer_pings = answer_pings
        self.writers: list[asyncio.StreamWriter] = []
        self.logins = 0
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def send(self, data: bytes) -> None:
        writer = self.writers[-1]
        writer.write(data)
        await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                action = parse_message(raw.decode().strip())
                reply = None
                if action["Action"] == "Login":
                    self.logins += 1
                    status = "Success" if self.accept_login else "Error"
                    reply = f"Response: {status}\r\nActionID: {action['ActionID']}\r\n"
                    reply += "Message: Authentication accepted\r\n\r\n"
                elif action["Action"] == "QueueAdd":  # Asterisk 22's own words
                    reply = f"Response: Success\r\nActionID: {action['ActionID']}\r\n"
                    reply += "Message: Added interface to queue\r\n\r\n"
                elif action["Action"] == "Ping" and self.answer_pings:
                    reply = (
                        f"Response: Success\r\nActionID: {action['ActionID']}\r\nPing: Pong\r\n\r\n"
                    )
                if reply:
                    writer.write(reply.encode())
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def peer() -> AsyncIterator[ScriptedAmi]:
    ami = ScriptedAmi()
    await ami.start()
    yield ami
    await ami.stop()


def make_client(port: int, sink, **kwargs) -> AmiClient:  # type: ignore[no-untyped-def]
    return AmiClient(
        host="127.0.0.1",
        port=port,
        username="hotline",
        secret="s",
        sink=sink,
        keep_event=lambda name: name != "VarSet",
        **kwargs,
    )


async def test_events_are_utf8_and_isolated_from_a_failing_handler(peer: ScriptedAmi) -> None:
    seen: list[AmiMessage] = []

    def sink(message: AmiMessage) -> None:
        if message.get("Uniqueid") == "boom":
            raise RuntimeError("handler bug")
        seen.append(message)

    client = make_client(peer.port, sink)
    await client.start()
    assert await client.wait_connected(2)
    name = "张三丰".encode()
    frames = (
        b"Event: Newchannel\r\nUniqueid: boom\r\n\r\n"
        b"Event: VarSet\r\nVariable: X\r\n\r\n"
        b"Event: Newchannel\r\nUniqueid: 1.1\r\nCallerIDName: " + name + b"\r\n\r\n"
    )
    cut = frames.index(name) + 2  # in the middle of the first character
    await peer.send(frames[:cut])
    await asyncio.sleep(0.05)
    await peer.send(frames[cut:])
    await asyncio.sleep(0.1)
    assert [m["CallerIDName"] for m in seen] == ["张三丰"]
    assert client.connected  # the raising handler did not drop the session
    assert (await client.send_action("Ping"))["Ping"] == "Pong"  # type: ignore[index]
    await client.close()


async def test_actions_have_deadlines_and_fail_fast_when_down(peer: ScriptedAmi) -> None:
    peer.answer_pings = False
    client = make_client(peer.port, lambda m: None, ping_interval=60)
    with pytest.raises(AmiNotConnected):
        await client.send_action("Ping")
    await client.start()
    assert await client.wait_connected(2)
    started = asyncio.get_running_loop().time()
    with pytest.raises(AmiActionTimeout):
        await client.send_action("Ping", timeout=0.3)
    assert asyncio.get_running_loop().time() - started < 1
    with pytest.raises(ValueError, match="line break"):
        await client.send_action("QueuePause", Reason="x\r\nAction: Originate")
    await client.close()


async def test_watchdog_reconnects_a_half_open_session(peer: ScriptedAmi) -> None:
    client = make_client(peer.port, lambda m: None, ping_interval=0.2, max_backoff=0.5)
    await client.start()
    assert await client.wait_connected(2)
    peer.answer_pings = False  # the link looks open but nothing answers
    await asyncio.sleep(0.6)
    peer.answer_pings = True
    for _ in range(40):
        if peer.logins >= 2 and client.connected:
            break
        await asyncio.sleep(0.1)
    assert peer.logins >= 2
    assert client.connected
    assert client.reconnects >= 1
    await client.close()


async def test_pbx_that_is_not_there_yet_is_retried_with_backoff() -> None:
    probe = ScriptedAmi()
    await probe.start()
    port = probe.port
    await probe.stop()  # nothing listens there now
    client = make_client(port, lambda m: None, max_backoff=0.5)
    await client.start()
    await asyncio.sleep(0.3)
    assert not client.connected
    assert "cannot connect" in client.last_problem
    late = ScriptedAmi()
    await late.start(port)
    try:
        assert await client.wait_connected(3)
    finally:
        await client.close()
        await late.stop()


async def test_refused_login_is_reported_and_retried() -> None:
    peer = ScriptedAmi(accept_login=False)
    await peer.start()
    client = make_client(peer.port, lambda m: None, max_backoff=0.5)
    await client.start()
    await asyncio.sleep(1.5)
    assert not client.connected
    assert client.last_problem in ("login refused", "connection lost")
    assert peer.logins >= 2
    await client.close()
    await peer.stop()


async def test_queue_add_is_answered_at_once_not_at_its_deadline(peer: ScriptedAmi) -> None:
    """panoramisk alone would take "Added interface to queue" for the start of a list."""
    client = make_client(peer.port, lambda m: None, ping_interval=60)
    await client.start()
    assert await client.wait_connected(2)
    answer = await client.send(queue_add("hotline", "PJSIP/agent4"), timeout=2)
    assert answer["Message"] == "Added interface to queue"  # type: ignore[index]
    await client.close()
