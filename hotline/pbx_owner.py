"""One PBX of several, followed by whichever bridge process holds its lease.

While a process holds ``pbx:<name>`` it runs that PBX's whole ingest: an AMI login, a queue
service of its own (statistics, journal writes fenced by the lease's token, hour rows, the
snapshot ``stats:<name>``) and queue_log recovery. Taking over is the ordinary start of that
ingest: count the day from the journal, log in, resync (QueueStatus), and journal from
queue_log the calls nobody wrote while the PBX had no owner. Losing the lease stops it all at
once; a write still in flight is refused by the fence, and the next owner brings that call in
from queue_log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ami.client import AmiClient
from ami.feed import AmiFeed, keep_event, resync_from_asterisk
from ami.queue_log import AsteriskQueueLog
from esl.client import EslClient
from esl.feed import FreeswitchFeed
from hotline.pbx_actions import follow_tier_changes
from infra.bus import Bus
from infra.config import PbxSpec, Settings
from infra.leadership import LeaseKeeper
from infra.leases import FencedTransactions, LeaseStore
from infra.storage import Transactions
from infra.streams import RedisStream
from pbx.facts import DomainEvent
from pbx.naming import PbxName
from queue_stats.hourly import HourlyStore
from queue_stats.journal import CallJournal, Journal
from queue_stats.named import NamedPbx
from queue_stats.pipeline import EventPipeline
from queue_stats.service import CallObserver, QueueService, TicketLinker
from queue_stats.streamed_journal import StreamedJournal
from recording.ingest import RecordingIngest
from recording.store import RecordingStore

log = logging.getLogger(__name__)

DRAIN_ON_LOSS_SECONDS = 2.0


def pbx_lease(name: str) -> str:
    return f"pbx:{name}"


@dataclass
class Ingest:
    """What runs while the lease is held: the PBX's link (AMI or the Event Socket) and its
    queue service."""

    token: int
    service: QueueService
    link: AmiClient | EslClient
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    recordings: RecordingIngest | None = None


class PbxOwner:
    """Claims one PBX's lease forever and runs its ingest while it holds it."""

    def __init__(
        self,
        spec: PbxSpec,
        settings: Settings,
        *,
        leases: LeaseStore,
        holder: str,
        sessions: async_sessionmaker[AsyncSession],
        units: Transactions,
        bus: Bus,
        pipeline: Callable[[], EventPipeline],
        clock: Callable[[], datetime],
        observers: Sequence[CallObserver],
        link_ticket: TicketLinker | None,
        fact_listeners: Sequence[Callable[[DomainEvent], None]],
        calls: RedisStream | None = None,
        may_claim: Callable[[LeaseKeeper], Awaitable[bool]] | None = None,
        store: RecordingStore | None = None,
    ) -> None:
        """``calls``: the hotline's stream of finished calls (with Redis); without it the owner
        writes its calls to the database itself, fenced the same way. ``store``: where the
        PBX's recordings go (from its ``recordings_spool``, if it has one)."""
        self.spec = spec
        self._store = store
        self._calls = calls
        self.name = PbxName(spec.name)
        self._settings = settings
        self._sessions = sessions
        self._units = units
        self._bus = bus
        self._pipeline = pipeline
        self._clock = clock
        self._observers = observers
        self._link_ticket = link_ticket
        self._fact_listeners = fact_listeners
        self.ingest: Ingest | None = None
        self.takeovers: list[float] = []  # when this process took the PBX (epoch seconds)
        self.keeper = LeaseKeeper(
            leases,
            pbx_lease(spec.name),
            holder,
            ttl=settings.lease_seconds,
            on_gained=self._start,
            on_lost=self._stop,
            may_claim=may_claim,
        )

    async def run(self) -> None:
        await self.keeper.run()

    def health(self) -> dict[str, Any]:
        ingest = self.ingest
        if ingest is None:
            return {"owner": False}
        return {
            "owner": True,
            "token": ingest.token,
            "up": ingest.link.connected,
            "since": ingest.link.state_since,
            "journal": {"pending_writes": ingest.service.pending_writes, **ingest.service.counters},
            **(
                {"recordings": dict(ingest.recordings.counters)}
                if ingest.recordings is not None
                else {}
            ),
        }

    async def _start(self, token: int) -> None:
        spec, settings = self.spec, self._settings
        fenced = FencedTransactions(self._units, pbx_lease(spec.name), token)
        journal: Journal = CallJournal(self._sessions, fenced, pbx=spec.name)
        if self._calls is not None:
            journal = StreamedJournal(journal, self._calls, spec.name, token)
        service = QueueService(
            self._pipeline(),
            journal,
            HourlyStore(self._sessions, fenced, pbx=spec.name),
            self._bus,
            clock=self._clock,
            observers=self._observers,
            link_ticket=self._link_ticket,
            queue_log=(
                AsteriskQueueLog(spec.queue_log, self.name) if spec.queue_log is not None else None
            ),
            fact_listeners=self._fact_listeners,
            pbx=spec.name,
            owner_token=token,
            still_owner=lambda: self.keeper.held and self.keeper.token == token,
        )
        entry = NamedPbx(service, self.name)
        recordings = None
        if spec.recordings_spool is not None and self._store is not None:
            recordings = RecordingIngest(
                spec.recordings_spool,
                self._store,
                self._units,
                call_id=self.name.call_id,
                pbx=spec.name,
            )
        extra: list[Coroutine[Any, Any, None]] = []
        if spec.kind == "freeswitch":
            link: AmiClient | EslClient = self._freeswitch(service, entry, recordings, extra)
        else:
            ami = AmiClient(
                host=spec.ami_host,
                port=spec.ami_port,
                username=spec.ami_username,
                secret=spec.ami_secret.get_secret_value(),
                sink=AmiFeed(entry, self._clock).on_message,
                keep_event=keep_event,
                action_timeout=settings.ami_action_timeout,
                max_backoff=min(settings.ami_max_backoff, settings.lease_seconds),
            )
            watch_ami(ami, service, entry)
            link = ami
        ingest = Ingest(token, service, link, recordings=recordings)
        self.ingest = ingest
        self.takeovers.append(time.time())
        try:
            await service.load_today()
        except Exception as error:  # the resync and queue_log still bring the live state in
            log.error("PBX %s: the day's figures could not be loaded: %s", spec.name, error)
        ingest.tasks = [
            asyncio.create_task(service.run_writer(), name=f"journal-{spec.name}"),
            asyncio.create_task(service.run_publisher(), name=f"stats-{spec.name}"),
            asyncio.create_task(service.run_hour_flusher(), name=f"hours-{spec.name}"),
            asyncio.create_task(service.run_queue_log_follow_up(), name=f"qlog-{spec.name}"),
            *(asyncio.create_task(work, name=f"{spec.name}-extra") for work in extra),
        ]
        if recordings is not None:
            ingest.tasks.append(
                asyncio.create_task(recordings.run(), name=f"recordings-{spec.name}")
            )
        await link.start()
        log.info("PBX %s: ingesting (lease token %d)", spec.name, token)

    def _freeswitch(
        self,
        service: QueueService,
        entry: NamedPbx,
        recordings: RecordingIngest | None,
        extra: list[Coroutine[Any, Any, None]],
    ) -> EslClient:
        """FreeSWITCH's inbound Event Socket into the PBX's queue service, resynced at login;
        the agent changes other processes made on their action links reach its feed
        (``extra`` gets that work), and the recordings it closes go to the ingest."""
        spec, settings = self.spec, self._settings
        client, feed = freeswitch_link(
            service,
            entry,
            host=spec.esl_host,
            port=spec.esl_port,
            password=spec.esl_password.get_secret_value(),
            command_timeout=settings.esl_command_timeout,
            max_backoff=min(settings.esl_max_backoff, settings.lease_seconds),
            clock=self._clock,
            recordings=recordings,
        )
        extra.append(follow_tier_changes(self._bus, spec.name, feed))
        service.set_pbx_state(False, client.state_since, "not connected yet")
        return client

    async def _stop(self, why: str) -> None:
        ingest, self.ingest = self.ingest, None
        if ingest is None:
            return
        await ingest.link.close()
        # Calls already finished go in while the token may still be good (a clean stop).
        await ingest.service.drain(timeout=DRAIN_ON_LOSS_SECONDS)
        for task in ingest.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.warning("PBX %s: ingest stopped (%s)", self.spec.name, why)


def freeswitch_link(
    service: QueueService,
    entry: QueueService | NamedPbx,
    *,
    host: str,
    port: int,
    password: str,
    command_timeout: float,
    max_backoff: float,
    clock: Callable[[], datetime],
    recordings: RecordingIngest | None = None,
) -> tuple[EslClient, FreeswitchFeed]:
    """A FreeSWITCH's inbound Event Socket feeding ``entry``, resynced at each login; the
    service's PBX state says when the link is down or back (one PBX's or one of several).

    With ``recordings``, a recording FreeSWITCH closed (RECORD_STOP) is renamed for the ingest,
    which FreeSWITCH does not do, and so are those it closed while nobody followed it (found
    at each resync)."""
    finishing: set[asyncio.Task[Any]] = set()

    def in_background(work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        finishing.add(task)
        task.add_done_callback(finishing.discard)

    async def api(command: str) -> str:  # the client is made below: it needs the feed
        return await client.api(command)

    feed = FreeswitchFeed(
        entry,
        api,
        clock=clock,
        on_recording=(
            (lambda path: in_background(recordings.finished(path))) if recordings else None
        ),
        on_resynced=(
            (lambda live: in_background(recordings.finish_stopped(live))) if recordings else None
        ),
    )
    client = EslClient(
        host=host,
        port=port,
        password=password,
        sink=feed.on_event,
        command_timeout=command_timeout,
        max_backoff=max_backoff,
    )

    def on_login() -> None:
        service.set_pbx_state(True, client.state_since)
        feed.on_login()

    client.on_login = on_login
    client.on_down = lambda problem: service.set_pbx_state(False, client.state_since, problem)
    return client, feed


def watch_ami(ami: AmiClient, service: QueueService, entry: QueueService | NamedPbx) -> None:
    """Resync after every login; the PBX state says when the link is down or back."""
    resyncs: set[asyncio.Task[None]] = set()

    def on_login() -> None:
        entry.begin_resync()
        service.set_pbx_state(True, ami.state_since)
        task = asyncio.get_running_loop().create_task(
            # AmiClient's send_action takes a keyword ``timeout`` the protocol's headers do not
            resync_from_asterisk(entry, ami),  # type: ignore[arg-type]
            name="ami-resync",
        )
        resyncs.add(task)
        task.add_done_callback(resyncs.discard)

    ami.on_login = on_login
    ami.on_down = lambda problem: service.set_pbx_state(False, ami.state_since, problem)
    service.set_pbx_state(False, ami.state_since, "not connected yet")
