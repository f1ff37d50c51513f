"""The live AMI shell: panoramisk's ``Manager``, hardened where panoramisk 1.4 is weak.

- Bytes are decoded by our ``AmiFrameDecoder`` (incremental UTF-8, unwanted events dropped by name)
  instead of panoramisk's per-chunk ASCII decode.
- Each event goes to the sink inside its own ``try``: one failing handler never drops the
  connection or the rest of the TCP chunk.
- Every action has a deadline; an action asked while disconnected fails at once.
- Reconnects back off exponentially up to a ceiling, forever; a refused login is logged and
  retried the same way. A Ping watchdog aborts a half-open connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from ami.actions import AmiAction
from ami.codec import AmiFrameDecoder, AmiMessage, AmiProtocolError
from pbx.link import PbxLink

log = logging.getLogger(__name__)


# Actions Asterisk answers with one message. panoramisk 1.4 guesses from the answer's text that
# "Added interface to queue" (QueueAdd's success) starts a list, and then waits for the rest of a
# list that never comes, until the deadline: for these it is told there is no list.
SINGLE_ANSWER_ACTIONS = frozenset(
    {"QueueAdd", "QueueRemove", "QueuePause", "QueuePenalty", "Originate"}
)


class AmiNotConnected(ConnectionError):
    """An action was asked while no authenticated AMI session exists."""


class AmiActionFailed(RuntimeError):
    """Asterisk answered an action with ``Response: Error``."""


class AmiActionTimeout(TimeoutError):
    """Asterisk did not answer an action before its deadline."""


EventSink = Callable[[AmiMessage], None]


class _BridgeProtocol(AMIProtocol):
    """panoramisk's protocol with our decoder and a dispatch that isolates each event."""

    def __init__(self, keep_event: Callable[[str], bool], sink: EventSink) -> None:
        super().__init__()
        self._decoder = AmiFrameDecoder(keep_event)
        self._sink = sink

    def data_received(self, data: bytes) -> None:
        self._decoder.actions_pending = bool(self.responses)
        try:
            messages = self._decoder.feed(data)
        except AmiProtocolError as error:
            log.error("AMI peer broke the protocol (%s); dropping the connection", error)
            self.transport.abort()
            return
        for message in messages:
            if message.event is not None and message.action_id not in self.responses:
                self._deliver(message)
            else:
                try:
                    self.handle_message(Message(dict(message.headers)))
                except Exception:
                    log.exception("AMI response to %s could not be handled", message.action_id)

    def _deliver(self, message: AmiMessage) -> None:
        try:
            self._sink(message)
        except Exception:
            log.exception("AMI event %s failed in its handler; later events go on", message.event)


class _BridgeManager(Manager):
    """``Manager`` with exponential back-off, no blind replay of old actions, no own pinger."""

    def __init__(self, client: AmiClient, **config: Any) -> None:
        super().__init__(**config)
        self._client = client

    def connection_made(self, f: asyncio.Future) -> None:  # type: ignore[override]
        if f.cancelled():
            return
        if f.exception() is not None:
            self.reconnect_timeout = self._client.next_backoff()
            self._client.note_down(f"cannot connect: {f.exception()}")
            log.warning(
                "AMI at %s:%s not reachable (%s); retrying in %.1f s",
                self.config["host"],
                self.config["port"],
                f.exception(),
                self.reconnect_timeout,
            )
            self.loop.call_later(self.reconnect_timeout, self._reconnect_if_running)
            return
        super().connection_made(f)

    def _reconnect_if_running(self) -> None:
        if self._client.running:
            self.connect()

    def login(self, future: asyncio.Future) -> bool:  # type: ignore[override]
        try:
            authenticated = super().login(future)
        except Exception as error:
            log.error("AMI login got no answer: %s", error)
            authenticated = False
        if authenticated:
            self._client.note_up()
        else:
            self._client.note_down("login refused")
            log.error(
                "AMI refused login for user %r; check HOTLINE_AMI_USERNAME/_SECRET",
                self.config["username"],
            )
            if self.protocol is not None:
                self.protocol.transport.close()
        return authenticated

    def ping(self) -> None:
        """The client's watchdog pings with a deadline; panoramisk's fire-and-forget one is off."""

    async def send_awaiting_actions(self, *_: Any) -> None:
        # Actions from a lost session already failed on their deadline; never replay them late.
        self.awaiting_actions.clear()

    def connection_lost(self, exc: Exception | None) -> None:  # type: ignore[override]
        self._client.note_down("connection lost")
        if not self._client.running:
            return
        self.reconnect_timeout = self._client.next_backoff()
        super().connection_lost(exc)


class AmiClient(PbxLink):
    """One AMI session kept alive for the life of the service.

    ``sink`` receives each wanted event as an ``AmiMessage``; it must be quick and synchronous
    (parse and hand over), as the cacofonisk-style core is.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        secret: str,
        sink: EventSink,
        keep_event: Callable[[str], bool],
        action_timeout: float = 5.0,
        max_backoff: float = 30.0,
        ping_interval: float = 5.0,
        events: bool = True,
    ) -> None:
        """``events``: False for a session that only sends actions (Asterisk then sends it no
        events at all, so it costs neither side anything to keep)."""
        super().__init__(f"AMI session with {host}:{port}", max_backoff=max_backoff)
        self._sink = sink
        self._action_timeout = action_timeout
        self._ping_interval = ping_interval
        self._config = {
            "host": host,
            "port": port,
            "username": username,
            "secret": secret,
            "events": "on" if events else "off",
            "encoding": "utf-8",
            "reconnect_timeout": 1,
            "ping_delay": 3600,
            "protocol_factory": lambda: _BridgeProtocol(keep_event, self._sink),
        }
        self._manager: _BridgeManager | None = None
        self._watchdog: asyncio.Task[None] | None = None

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin connecting; returns at once. The PBX may come up later: we keep trying."""
        if self.running:
            return
        self.running = True
        self._manager = _BridgeManager(self, loop=asyncio.get_running_loop(), **self._config)
        self._manager.connect()
        self._watchdog = asyncio.create_task(self._watch(), name="ami-watchdog")

    async def close(self) -> None:
        self.running = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._manager is not None:
            self._manager.close()
        self.note_down("closed")

    async def _watch(self) -> None:
        """Ping on a schedule; a Ping without an answer means a half-open TCP session."""
        while self.running:
            await asyncio.sleep(self._ping_interval)
            if not self.connected:
                continue
            try:
                await self.send_action("Ping", timeout=self._ping_interval)
            except (AmiActionTimeout, AmiNotConnected, AmiActionFailed) as error:
                log.warning("AMI watchdog: %s; aborting the session to reconnect", error)
                self._abort()

    def _abort(self) -> None:
        manager = self._manager
        if manager is not None and manager.protocol is not None:
            manager.protocol.transport.abort()

    # -- actions ---------------------------------------------------------------------------------

    async def send(self, action: AmiAction, *, timeout: float | None = None) -> Any:
        """Run an action built by ``ami.actions`` (QueueAdd, QueuePause, Originate...)."""
        name, headers = action
        return await self.send_action(name, timeout=timeout, **headers)

    async def send_action(
        self, action: str, *, timeout: float | None = None, **headers: str | int | list[str]
    ) -> list[Message] | Message:
        """Send ``action`` and wait for its whole answer, at most ``timeout`` seconds."""
        for key, value in headers.items():
            values = value if isinstance(value, list) else [value]
            if any(ch in str(item) for item in values for ch in "\r\n"):
                raise ValueError(f"line break in AMI header {key!r}")
        manager = self._manager
        if not self.connected or manager is None or manager.protocol is None:
            raise AmiNotConnected(f"AMI is down ({self.last_problem}); {action} not sent")
        as_list = False if action in SINGLE_ANSWER_ACTIONS else None
        future = manager.send_action({"Action": action, **headers}, as_list=as_list)
        try:
            answer = await asyncio.wait_for(future, timeout or self._action_timeout)
        except TimeoutError:
            raise AmiActionTimeout(f"{action} got no answer in time") from None
        first = answer[0] if isinstance(answer, list) else answer
        if str(first.get("Response", "")).lower() == "error":
            raise AmiActionFailed(f"{action}: {first.get('Message', 'error')}")
        return answer
