"""The one place that builds real clients and wires the features into a running bridge.

Start order matters for callers: the FastAGI server listens first (so the dialplan gets answers
even while the PBX's AMI is still down), then the web app, then AMI, which retries in the
background forever instead of stopping anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from agi.routing import route_handler_for
from agi.server import FastAgiServer
from agi.survey import survey_handler_for
from ami.agent_control import AmiAgentControl, AmiCallbackDialer
from ami.client import AmiClient
from ami.codec import AmiMessage
from ami.feed import AmiFeed, keep_event
from ami.queue_log import AsteriskQueueLog
from ami.replay import ReplayClock, read_transcript, replay
from callbacks.policy import RetryPolicy
from callbacks.service import CallbackService
from callbacks.store import CallbackStore
from esl.agent_control import EslAgentControl
from esl.client import EslClient
from esl.outbound import OutboundRouter
from hotline.domain import build_router, routing_rules, sla_policy, working_calendar
from hotline.pbx_actions import ActionLinks, action_links
from hotline.pbx_owner import PbxOwner, freeswitch_link, pbx_lease, watch_ami
from hotline.pipelines import build_pipeline
from hotline.priority import ChildLauncher, lower_priority
from hotline.routing_process import COUNTERS_EVERY_SECONDS, ParentLink, RoutingProcess
from hotline.schema import upgrade_database
from infra.bus import Bus, InProcessBus, SplitBus, create_bus
from infra.config import Settings
from infra.leadership import LeaseKeeper, LeaseSpreader, process_holder_id
from infra.leases import FencedTransactions, LeaseStore
from infra.storage import Transactions, create_engine, session_factory, transactions_for
from infra.streams import RedisStream, StreamConsumer
from ivr_bypass.budget import BudgetedRouter
from ivr_bypass.decision import fallback_decision
from ivr_bypass.router import FreeAgents, SnapshotAvailability
from pbx.control import AgentControl
from pbx.naming import PbxName
from queue_stats.hotline_view import HotlineView
from queue_stats.hourly import HourlyStore
from queue_stats.journal import CallJournal
from queue_stats.named import NamedPbx
from queue_stats.service import SNAPSHOT_KEY, STATS_CHANNEL, CallObserver, QueueService, utc_now
from queue_stats.streamed_journal import CALLS_STREAM, JOURNAL_GROUP, JournalWriter
from recording.ingest import RecordingIngest
from recording.store import DirectoryStore
from survey.scale import parse_scale
from tickets.cti import CtiNotifier
from tickets.service import TicketService
from tickets.sla import sla_report
from tickets.store import TicketStore
from tickets.webhook import WebhookSender
from web.agent_actions import AgentActions
from web.api import PanelApi
from web.app import WebParts, create_app
from web.callbacks_api import CallbackApi
from web.guard import ConnectionLimits, GuardedSite, start_guarded_site
from web.live import LiveHub
from web.metrics import Metrics
from web.recordings import RecordingPlayback
from web.sessions import SessionCodec
from web.users import Authenticator, Role, add_user_if_missing, ensure_first_admin

log = logging.getLogger(__name__)

DEMO_SESSION = Path(__file__).with_name("data") / "demo-session.ami"
DEMO_USER = "demo"
STREAM_TRIM_SECONDS = 10.0
# An agent of the recorded session, who may also sit at agent2's desk (the panel lets them pick).
DEMO_AGENT, DEMO_AGENT_PHONES = "agent1", ("PJSIP/agent1", "PJSIP/agent2")


@dataclass
class Bridge:
    """Everything one ``hotline run`` process holds; built by ``build_bridge``."""

    settings: Settings
    engine: AsyncEngine
    units: Transactions
    reads: Transactions  # read-only units for the web side's look-ups
    bus: Bus
    queues: QueueService
    agi: RouteServers | RoutingProcess
    ami: AmiClient | None
    replay_path: Path | None
    replay_clock: ReplayClock | None
    replay_speed: float
    tickets: TicketService
    recordings: RecordingIngest
    store: DirectoryStore
    ticket_store: TicketStore
    webhook: WebhookSender | None = None
    routing_counters: Counter[str] = field(default_factory=Counter)
    esl: EslClient | None = None  # FreeSWITCH's Event Socket, when configured
    agent_control: AgentControl | None = None
    launcher: ChildLauncher | None = None  # starts the routing process at its own priority
    callbacks: CallbackService | None = None
    callback_store: CallbackStore | None = None
    # A hotline of several PBXs (``pbxs``): one owner per PBX (ingesting while it holds the
    # lease), the merged view every process shows, and the lease of the singletons.
    owners: list[PbxOwner] = field(default_factory=list)
    view: HotlineView | None = None
    leases: LeaseStore | None = None
    singletons: LeaseKeeper | None = None
    spreader: LeaseSpreader | None = None
    # With Redis: the stream of finished calls, and this process's consumer in its journal group.
    calls: RedisStream | None = None
    journal_consumer: StreamConsumer | None = None
    # Several PBXs: this process's own links that only act (the panel's buttons, callbacks).
    actions: ActionLinks | None = None
    web: WebParts = field(init=False)
    web_site: GuardedSite | None = None  # the web port, once it listens

    def _agi_health(self) -> dict[str, Any]:
        if isinstance(self.agi, RoutingProcess):
            return self.agi.health()
        outbound = self.agi.outbound
        return {
            "up": True,
            "port": self.agi.port,
            "process": "inline",
            **self.agi.counters,
            **({"esl_router": dict(outbound.counters)} if outbound is not None else {}),
        }

    async def health(self) -> dict[str, Any]:
        if self.ami is not None:
            ami: dict[str, Any] = {
                "up": self.ami.connected,
                "since": self.ami.state_since,
                "reconnects": self.ami.reconnects,
            }
            if not self.ami.connected:
                ami["problem"] = self.ami.last_problem
        elif self.esl is None:
            ami = {"up": True, "mode": "replay", "source": str(self.replay_path)}
        pbx: dict[str, Any] = {}
        if self.esl is not None:
            pbx["esl"] = {
                "up": self.esl.connected,
                "since": self.esl.state_since,
                "reconnects": self.esl.reconnects,
                **({} if self.esl.connected else {"problem": self.esl.last_problem}),
            }
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            database: dict[str, Any] = {"up": True}
        except Exception as error:  # reported to the probe, not raised
            database = {"up": False, "problem": type(error).__name__}
        writes = dict(self.units.counters)
        database.update(writes)
        if writes.get("wal_sync_failures"):
            database["problem"] = "the disk refused to sync the database's write-ahead log"
        if self.journal_consumer is not None:
            pbx["calls_stream"] = dict(self.journal_consumer.counters)
        if self.owners:
            pbx["pbxs"] = {owner.spec.name: owner.health() for owner in self.owners}
            if self.spreader is not None:
                pbx["spreading"] = {
                    "processes": self.spreader.processes,
                    "share": self.spreader.share,
                    **self.spreader.counters,
                }
            if self.singletons is not None:
                pbx["singletons"] = {"leader": self.singletons.held}
            if self.actions is not None:
                pbx["action_links"] = self.actions.health()
        return {
            **(
                {"ami": ami}
                if (self.ami is not None or self.esl is None) and not self.owners
                else {}
            ),
            **pbx,
            "database": database,
            "bus": {"up": await self.bus.ping()},
            "agi": self._agi_health(),
            "journal": {"pending_writes": self.queues.pending_writes, **self.queues.counters},
            "routing": dict(self.routing_counters),
            "tickets": dict(self.tickets.counters),
            "recordings": dict(self.recordings.counters),
            **({"callbacks": dict(self.callbacks.counters)} if self.callbacks else {}),
            **({"live": dict(self.web.live.counters)} if self.web.live else {}),
            **({"web": dict(self.web_site.counters)} if self.web_site else {}),
            **({"playback": dict(self.web.playback.counters)} if self.web.playback else {}),
            "sessions": dict(self.web.sessions.counters),
            **({"webhook": dict(self.webhook.counters)} if self.webhook else {}),
        }


def build_route_server(
    settings: Settings,
    engine: AsyncEngine,
    units: Transactions,
    free_agents: FreeAgents,
    *,
    on_routed: Callable[[str, Any], None],
    counters: Counter[str],
    clock: Callable[[], datetime] = utc_now,
) -> RouteServers:
    """FastAGI with the ``route`` script, as both ``hotline run`` and ``hotline agi`` serve it,
    and FreeSWITCH's outbound-socket router beside it when FreeSWITCH is configured: one
    decision, one budget, whichever PBX asks."""
    rules = routing_rules(settings)
    router = build_router(settings, engine, units, free_agents, clock)
    budgeted = BudgetedRouter(
        router.route,
        fallback_decision(rules),
        budget_seconds=settings.routing_budget_ms / 1000,
        on_routed=on_routed,
        counters=counters,
    )
    agi = FastAgiServer(
        {
            "route": route_handler_for(budgeted),
            "survey": survey_handler_for(
                parse_scale(settings.survey_scale),
                key_seconds=settings.survey_key_seconds,
                counters=counters,
            ),
        },
        host=settings.agi_host,
        port=settings.agi_port,
        read_timeout=settings.agi_read_timeout,
        warm_up=router.warm_up,
    )
    outbound = None
    if settings.esl_password.get_secret_value() or any(
        spec.kind == "freeswitch" for spec in settings.pbxs
    ):
        outbound = OutboundRouter(
            budgeted, host=settings.esl_router_host, port=settings.esl_router_port
        )
    return RouteServers(agi, outbound)


@dataclass
class RouteServers:
    """What routes calls in a process: FastAGI always, FreeSWITCH's outbound socket if set."""

    agi: FastAgiServer
    outbound: OutboundRouter | None = None

    @property
    def port(self) -> int:
        return self.agi.port

    @property
    def counters(self) -> Counter[str]:
        return self.agi.counters

    async def start(self) -> None:
        await self.agi.start()
        if self.outbound is not None:
            try:
                await self.outbound.start()
            except OSError:
                await self.agi.close()
                raise

    async def close(self) -> None:
        if self.outbound is not None:
            await self.outbound.close()
        await self.agi.close()


def build_bridge(
    settings: Settings,
    *,
    replay_path: Path | None = None,
    replay_speed: float = 1.0,
    config_path: Path | None = None,
) -> Bridge:
    """Wire the real adapters. Nothing connects here; ``run_bridge`` starts them in order."""
    freeswitch = bool(settings.esl_password.get_secret_value())
    several = bool(settings.pbxs)
    if (
        replay_path is None
        and not settings.ami_secret.get_secret_value()
        and not freeswitch
        and not several
    ):
        replay_path = DEMO_SESSION
    engine = create_engine(settings.database_url)
    bus = create_bus(settings.redis_url)
    replay_clock = ReplayClock() if replay_path is not None else None
    clock = replay_clock.current if replay_clock is not None else utc_now
    pipeline = build_pipeline(settings, clock)
    sessions = session_factory(engine)
    units = transactions_for(engine, sync=settings.database_sync)
    reads = transactions_for(engine, read_only=True)
    ticket_store = TicketStore(sessions, settings.zone, settings.ticket_prefix, units, reads)
    callback_store = CallbackStore(units, reads)
    callbacks = CallbackService(
        callback_store,
        ticket_store,
        bus,
        policy=RetryPolicy(
            settings.callback_attempts, timedelta(minutes=settings.callback_spacing_minutes)
        ),
        on_time_limit=timedelta(minutes=settings.sla_callback_minutes),
        clock=clock,
        journal=lambda call: queues.journal_call(call),  # queues: made below
        free_agents=lambda: free_agents(),
        scale=parse_scale(settings.survey_scale),
        quiet=(lambda: nobody_waiting()) if settings.callback_offer_when_quiet else None,
        offer_seconds=settings.callback_offer_seconds,
    )
    tickets = TicketService(
        ticket_store,
        bus,
        match_days=settings.ticket_match_days,
        clock=clock,
        scale=parse_scale(settings.survey_scale),
        on_missed=callbacks.requested,
    )
    observers: list[CallObserver] = [tickets]
    webhook = None
    if settings.webhook_url:
        webhook = WebhookSender(settings.webhook_url, settings.webhook_secret.get_secret_value())
        observers.append(CtiNotifier(webhook))
    pbx = PbxName(settings.pbx_name) if settings.pbx_name else None
    queues = QueueService(
        pipeline,
        CallJournal(sessions, units),
        HourlyStore(sessions, units),
        bus,
        clock=clock,
        observers=observers,
        link_ticket=tickets.link,
        queue_log=(
            AsteriskQueueLog(settings.queue_log, pbx)
            if settings.queue_log is not None and replay_path is None
            else None
        ),
        fact_listeners=[callbacks.on_fact],
    )
    # What a PBX adapter and the route link feed: with a PBX name, ids carry it.
    entry: QueueService | NamedPbx = queues if pbx is None else NamedPbx(queues, pbx)
    leases = LeaseStore(units, reads)
    store = DirectoryStore(settings.recordings_dir)
    owners, view, singletons, spreader, actions = [], None, None, None, None
    control: AgentControl | None = None
    calls, journal_consumer = None, None
    if several:
        holder = process_holder_id()
        if settings.redis_url:
            calls = RedisStream(settings.redis_url, CALLS_STREAM)
            writer = JournalWriter(
                lambda pbx, token: CallJournal(
                    sessions, FencedTransactions(units, pbx_lease(pbx), token), pbx=pbx
                )
            )
            journal_consumer = StreamConsumer(
                calls, JOURNAL_GROUP, holder, writer, handle_many=writer.many
            )
        view = HotlineView(
            bus,
            InProcessBus(),
            [spec.name for spec in settings.pbxs],
            lambda: leases.leases("pbx:"),
            clock,
        )
        spreader = LeaseSpreader(
            leases, lambda: leases.leases(), holder, [], ttl=settings.lease_seconds
        )
        owners = [
            PbxOwner(
                spec,
                settings,
                leases=leases,
                holder=holder,
                sessions=sessions,
                units=units,
                bus=bus,
                pipeline=lambda: build_pipeline(settings, clock),
                clock=clock,
                observers=observers,
                link_ticket=tickets.link,
                fact_listeners=[callbacks.on_fact],
                calls=calls,
                may_claim=spreader.may_claim,
                store=store,
            )
            for spec in settings.pbxs
        ]
        spreader.keepers = [owner.keeper for owner in owners]
        actions = action_links(settings, bus, view.agents)
        control = actions.control
        callbacks.dialer = actions.dialer
        singletons = _singletons(leases, holder, settings, callbacks, calls)
    free_agents = view.free_agents if view is not None else queues.free_agents
    nobody_waiting = view.nobody_waiting if view is not None else queues.nobody_waiting
    routing_counters: Counter[str] = Counter()
    agi: RouteServers | RoutingProcess
    launcher = None
    if settings.routing_process == "process":
        launcher = ChildLauncher()
        agi = RoutingProcess(
            free_agents=free_agents,
            on_routed=entry.on_routed,
            routing_counters=routing_counters,
            port=settings.agi_port,
            config_path=config_path,
            launcher=launcher,
        )
    else:
        agi = build_route_server(
            settings,
            engine,
            units,
            free_agents,
            on_routed=entry.on_routed,
            counters=routing_counters,
            clock=clock,
        )
    recordings = RecordingIngest(
        settings.recordings_spool,
        store,
        units,
        call_id=pbx.call_id if pbx else None,
        pbx=pbx.name if pbx else "",
    )
    ami, esl = None, None
    # With several PBXs the single-PBX link settings are not used: a link of its own here would
    # count that PBX's calls a second time and take the buttons from the action links.
    if replay_path is None and freeswitch and not several:
        esl, control = _freeswitch(settings, queues, entry, recordings, clock)
    if replay_path is None and settings.ami_secret.get_secret_value() and not several:
        ami = AmiClient(
            host=settings.ami_host,
            port=settings.ami_port,
            username=settings.ami_username,
            secret=settings.ami_secret.get_secret_value(),
            sink=AmiFeed(entry, clock).on_message,
            keep_event=keep_event,
            action_timeout=settings.ami_action_timeout,
            max_backoff=settings.ami_max_backoff,
        )
    if ami is not None:
        watch_ami(ami, queues, entry)
        control = AmiAgentControl(ami)
        callbacks.dialer = AmiCallbackDialer(
            ami, agent_ring_seconds=settings.callback_agent_ring_seconds
        )
    bridge = Bridge(
        settings=settings,
        engine=engine,
        units=units,
        reads=reads,
        bus=bus,
        queues=queues,
        agi=agi,
        ami=ami,
        replay_path=replay_path,
        replay_clock=replay_clock,
        replay_speed=replay_speed,
        tickets=tickets,
        recordings=recordings,
        store=store,
        ticket_store=ticket_store,
        webhook=webhook,
        routing_counters=routing_counters,
        esl=esl,
        agent_control=control,
        launcher=launcher,
        callbacks=callbacks,
        callback_store=callback_store,
        owners=owners,
        view=view,
        leases=leases,
        singletons=singletons,
        spreader=spreader,
        calls=calls,
        journal_consumer=journal_consumer,
        actions=actions,
    )
    bridge.web = build_web(bridge, clock)
    return bridge


def _singletons(
    leases: LeaseStore,
    holder: str,
    settings: Settings,
    callbacks: CallbackService,
    calls: RedisStream | None,
) -> LeaseKeeper:
    """The work one process of the hotline does for all (the callback scheduler, trimming the
    calls stream), run by whichever process holds the ``singletons`` lease."""
    running: list[asyncio.Task[None]] = []

    async def lead(token: int) -> None:
        running.append(asyncio.create_task(callbacks.run(), name="callback-retries"))
        if calls is not None:
            running.append(asyncio.create_task(_trim_forever(calls), name="calls-trim"))

    async def follow(why: str) -> None:
        while running:
            task = running.pop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return LeaseKeeper(
        leases, "singletons", holder, ttl=settings.lease_seconds, on_gained=lead, on_lost=follow
    )


async def _trim_forever(calls: RedisStream, every: float = STREAM_TRIM_SECONDS) -> None:
    """Drop the calls stream's entries that every group has acknowledged."""
    while True:
        await asyncio.sleep(every)
        try:
            dropped = await calls.trim_acknowledged()
        except Exception as error:  # nothing is lost: the next pass trims more
            log.warning("calls stream not trimmed: %s", error)
            continue
        if dropped:
            log.debug("calls stream: %d acknowledged entries trimmed", dropped)


def _freeswitch(
    settings: Settings,
    queues: QueueService,
    entry: QueueService | NamedPbx,
    recordings: RecordingIngest,
    clock: Callable[[], datetime],
) -> tuple[EslClient, EslAgentControl]:
    """FreeSWITCH's inbound Event Socket feeding the queue service, resynced at each login;
    a recording it closed (RECORD_STOP) is renamed for the ingest, which FreeSWITCH does not do,
    and so are those it closed while the bridge was away (found at each resync)."""
    client, feed = freeswitch_link(
        queues,
        entry,
        host=settings.esl_host,
        port=settings.esl_port,
        password=settings.esl_password.get_secret_value(),
        command_timeout=settings.esl_command_timeout,
        max_backoff=settings.esl_max_backoff,
        clock=clock,
        recordings=recordings,
    )
    return client, EslAgentControl(client.api, feed)


def build_web(bridge: Bridge, clock: Callable[[], datetime]) -> WebParts:
    """The panel's parts over the bridge's database, bus, tickets and recordings."""
    settings, units, reads, bus = bridge.settings, bridge.units, bridge.reads, bridge.bus
    policy, calendar, zone = sla_policy(settings), working_calendar(settings), settings.zone

    view = bridge.view
    live_bus: Bus = bus

    async def stats() -> dict[str, Any] | None:
        if view is not None:
            return await view.snapshot()
        return await bus.load_snapshot(SNAPSHOT_KEY)

    if view is not None:  # the merged figures are this process's own feed
        live_bus = SplitBus(bus, view.local, frozenset({STATS_CHANNEL}))

    secret = settings.session_secret.get_secret_value()
    if not secret:
        log.warning("no HOTLINE_SESSION_SECRET: web logins end when this process stops")
    return WebParts(
        health=bridge.health,
        sessions=SessionCodec(secret or None, units, reads=reads),
        authenticator=Authenticator(reads),
        secure_cookies=settings.secure_cookies,
        playback=RecordingPlayback(units, bridge.store),
        api=PanelApi(
            bridge.ticket_store,
            reads,  # the API's own look-ups only read; ticket changes go through the store
            zone,
            lambda ticket, now: sla_report(ticket.clock_facts(), now, policy, calendar, zone),
            stats,
            clock=clock,
        ),
        live=LiveHub(live_bus, stats),
        metrics=Metrics(bridge.health, stats, settings.metrics_token.get_secret_value()),
        agent_actions=AgentActions(bridge.agent_control),
        callbacks=(
            CallbackApi(bridge.callbacks, bridge.callback_store, zone, clock)
            if bridge.callbacks is not None and bridge.callback_store is not None
            else None
        ),
    )


def raise_file_limit() -> None:
    """Soft open-file limit up to the hard one: each web viewer, FastAGI call and database file
    is a descriptor, and the usual soft limit (1,024) would cap the web side at 512."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as error:
            log.warning("open-file limit stays at %d: %s", soft, error)
            return
        log.info("open-file limit raised from %d to %d", soft, wanted)


def settle_heap() -> None:
    """Once started: the long-lived objects (modules, engines, configuration) leave the garbage
    collector's generations, so its passes during calls stay short (routing p99)."""
    gc.collect()
    gc.freeze()


async def _replay_session(bridge: Bridge, messages: list[AmiMessage]) -> None:
    if bridge.replay_path is None or bridge.replay_clock is None:
        raise RuntimeError("replay scheduled without a transcript")
    log.info("no PBX configured: replaying %s at %.1fx", bridge.replay_path, bridge.replay_speed)
    bridge.queues.set_pbx_state(True, time.time(), problem=None)
    count = await replay(
        bridge.replay_path,
        AmiFeed(bridge.queues, bridge.replay_clock.current).on_message,
        bridge.replay_clock,
        keep_event=keep_event,
        speed=bridge.replay_speed,
        messages=messages,
    )
    await bridge.queues.drain(timeout=60)
    log.info("replay finished: %d AMI messages, %s", count, dict(bridge.queues.counters))


async def run_bridge(
    bridge: Bridge, stop: asyncio.Event, on_listening: Callable[[], None] | None = None
) -> None:
    """Run until ``stop`` is set, then shut down in reverse order, writing pending calls.
    ``on_listening`` is called once FastAGI and the web port accept connections."""
    settings = bridge.settings
    log.info("starting with %s", settings.redacted())
    raise_file_limit()
    await upgrade_database(settings.database_url)
    if settings.admin_user and await ensure_first_admin(
        bridge.units, settings.admin_user, settings.admin_password.get_secret_value()
    ):
        log.info("created the first admin, %s", settings.admin_user)
    messages: list[AmiMessage] = []
    if bridge.replay_path is not None and bridge.replay_clock is not None:
        # "Today" is the transcript's day: set the clock before the day's figures are loaded.
        path = bridge.replay_path
        messages = await asyncio.to_thread(lambda: list(read_transcript(path, keep_event)))
        bridge.replay_clock.seed(messages)
    await bridge.queues.load_today()
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(bridge.queues.run_writer(), name="journal-writer"),
        asyncio.create_task(bridge.queues.run_publisher(), name="stats-publisher"),
        asyncio.create_task(bridge.queues.run_hour_flusher(), name="hour-flusher"),
        asyncio.create_task(bridge.queues.run_queue_log_follow_up(), name="queue-log-follow-up"),
        asyncio.create_task(bridge.tickets.run(), name="ticket-signer"),
        asyncio.create_task(bridge.units.run_checkpoints(), name="wal-checkpoints"),
    ]
    if not bridge.owners:  # several PBXs: each has its own spool, collected by its owner
        tasks.append(asyncio.create_task(bridge.recordings.run(), name="recording-ingest"))
    if bridge.singletons is not None:
        tasks.append(asyncio.create_task(bridge.singletons.run(), name="singletons"))
    elif bridge.callbacks is not None:
        tasks.append(asyncio.create_task(bridge.callbacks.run(), name="callback-retries"))
    if bridge.webhook is not None:
        tasks.append(asyncio.create_task(bridge.webhook.run(), name="webhook"))
    await bridge.agi.start()
    if bridge.launcher is not None and settings.bridge_nice:
        changed = lower_priority(settings.bridge_nice, keep={bridge.launcher.thread_id})
        log.info("bridge threads yield the CPU to routing: niceness +%d on %d threads",
                 settings.bridge_nice, changed)  # fmt: skip
    runner = web.AppRunner(create_app(bridge.web), access_log=None)
    await runner.setup()
    limits = ConnectionLimits(
        header_timeout=settings.web_header_timeout,
        idle_timeout=settings.web_idle_timeout,
        per_address=settings.web_max_connections_per_address,
        total=settings.web_max_connections,
    )
    site = await start_guarded_site(runner, settings.web_host, settings.web_port, limits)
    bridge.web_site = site
    log.info("web listening on http://%s:%s", settings.web_host, settings.web_port)
    if on_listening is not None:
        on_listening()
    settle_heap()
    if bridge.ami is not None:
        await bridge.ami.start()
    if bridge.esl is not None:
        await bridge.esl.start()
    if bridge.view is not None:
        tasks.append(asyncio.create_task(bridge.view.run(), name="hotline-view"))
    if bridge.actions is not None:
        await bridge.actions.start()
    if bridge.journal_consumer is not None:
        tasks.append(asyncio.create_task(bridge.journal_consumer.run(), name="journal-consumer"))
    owning = [
        asyncio.create_task(owner.run(), name=f"pbx-{owner.spec.name}") for owner in bridge.owners
    ]
    if bridge.spreader is not None:
        owning.append(asyncio.create_task(bridge.spreader.run(), name="lease-spreader"))
    if bridge.ami is None and bridge.esl is None and not bridge.owners:
        tasks.append(asyncio.create_task(_replay_session(bridge, messages), name="replay"))
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        for task in owning:  # each drains its PBX's calls, then gives its lease up
            task.cancel()
        for task in owning:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if bridge.ami is not None:
            await bridge.ami.close()
        if bridge.esl is not None:
            await bridge.esl.close()
        if bridge.actions is not None:
            await bridge.actions.close()
        await bridge.agi.close()
        if bridge.launcher is not None:
            bridge.launcher.close()
        await runner.cleanup()
        if not await bridge.queues.drain(timeout=10):
            log.error(
                "%d finished calls could not be written before exit", bridge.queues.pending_writes
            )
        if not await bridge.tickets.drain(timeout=5):
            log.error("some answered calls' tickets could not be signed before exit")
        if bridge.webhook is not None:
            await bridge.webhook.close()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await bridge.bus.close()
        if bridge.calls is not None:
            await bridge.calls.close()
        await bridge.units.close()
        await bridge.reads.close()
        await bridge.engine.dispose()


async def serve(
    settings: Settings,
    *,
    replay_path: Path | None,
    replay_speed: float,
    demo: bool = False,
    config_path: Path | None = None,
) -> None:
    """``hotline run`` (and ``hotline demo``: always a replay, plus a demo login) until SIGINT
    or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if demo:
        replay_path = replay_path or DEMO_SESSION
    bridge = build_bridge(
        settings, replay_path=replay_path, replay_speed=replay_speed, config_path=config_path
    )
    on_listening: Callable[[], None] | None = None
    if demo:
        await upgrade_database(settings.database_url)
        password = secrets.token_urlsafe(9)
        supervisor_new = await add_user_if_missing(
            bridge.units, DEMO_USER, Role.SUPERVISOR, password
        )
        agent_new = await add_user_if_missing(
            bridge.units, DEMO_AGENT, Role.AGENT, password, DEMO_AGENT_PHONES
        )
        invitation = demo_invitation(settings, password, supervisor_new, agent_new)

        def invite() -> None:
            """Said once the address it gives answers: a browser sent there gets the page."""
            print(invitation, flush=True)

        on_listening = invite
    await run_bridge(bridge, stop, on_listening)


def demo_invitation(
    settings: Settings, password: str, supervisor_new: bool, agent_new: bool
) -> str:
    """What ``hotline demo`` prints: the login it made, or that existing users were kept."""
    address = f"http://{settings.web_host}:{settings.web_port}/"
    if supervisor_new:
        agent = "same password" if agent_new else "their own password, kept"
        return (
            f"hotline demo: open {address} and log in as {DEMO_USER} / {password} "
            f"(or as agent {DEMO_AGENT}, {agent})"
        )
    agent = f"; or as agent {DEMO_AGENT} / {password}" if agent_new else ""
    return (
        f"hotline demo: open {address} and log in as {DEMO_USER} with the password it already "
        f"has (users of this database are kept; 'hotline users add {DEMO_USER} --role "
        f"supervisor' sets a new one){agent}"
    )


async def serve_agi(settings: Settings, *, link_fd: int | None = None) -> None:
    """``hotline agi``: the routing FastAGI server alone, in its own process.

    Nothing else runs in this process, so nothing else can stall routing. It reads and writes
    tickets in the shared database. Started by ``hotline run`` (``link_fd``), it learns the free
    agents from its parent and reports each route back over the link, and it stops when its
    parent does. Started on its own, it sees free agents in the statistics snapshot that
    ``hotline run`` keeps on the bus (with an in-process bus it cannot see them: then an open
    ticket's owner is always tried and the dialplan's device-state check decides).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    raise_file_limit()
    link = await ParentLink.open(link_fd) if link_fd is not None else None
    if link is None:  # under hotline run, the parent has brought the schema up to date
        await upgrade_database(settings.database_url)
    engine = create_engine(settings.database_url)
    bus = create_bus(settings.redis_url)
    counters: Counter[str] = Counter()
    background: list[asyncio.Task[Any]] = []
    free_agents: FreeAgents
    if link is not None:
        free_agents = link.free_agents
        on_routed: Callable[[str, Any], None] = link.routed
    else:
        availability = SnapshotAvailability(lambda: _agents_snapshot(bus, settings))
        background.append(asyncio.create_task(availability.run(), name="agent-availability"))
        free_agents = availability

        def on_routed(uniqueid: str, decision: Any) -> None:
            log.info("routed %s: %s", uniqueid, decision.channel_variables())

    units = transactions_for(engine, sync=settings.database_sync)
    agi = build_route_server(
        settings, engine, units, free_agents, on_routed=on_routed, counters=counters
    )
    background.append(asyncio.create_task(units.run_checkpoints(), name="wal-checkpoints"))
    await agi.start()
    if link is not None:
        link.listening(agi.port)
        background.append(asyncio.create_task(_follow_parent(link, stop), name="parent-link"))
        background.append(
            asyncio.create_task(_report_to_parent(link, agi, counters), name="parent-report")
        )
    settle_heap()
    try:
        await stop.wait()
    finally:
        await agi.close()
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await units.close()
        log.info("FastAGI stopped: %s, routing %s", dict(agi.counters), dict(counters))
        if link is not None:
            link.close()
        await bus.close()
        await engine.dispose()


async def _agents_snapshot(bus: Bus, settings: Settings) -> dict[str, Any] | None:
    """The agents of the snapshot routing reads: the one PBX's, or those of every PBX's owner
    when the hotline runs several (a ``hotline agi`` of its own serves them all)."""
    if not settings.pbxs:
        return await bus.load_snapshot(SNAPSHOT_KEY)
    agents: dict[str, Any] = {}
    for spec in settings.pbxs:
        snapshot = await bus.load_snapshot(f"{SNAPSHOT_KEY}:{spec.name}")
        agents.update((snapshot or {}).get("agents", {}))
    return {"agents": agents}


async def _follow_parent(link: ParentLink, stop: asyncio.Event) -> None:
    """The routing process ends with ``hotline run``: it never holds the port for nobody."""
    await link.follow()
    log.info("hotline run has gone away: the routing process stops")
    stop.set()


async def _report_to_parent(link: ParentLink, agi: RouteServers, counters: Counter[str]) -> None:
    while True:
        link.report(dict(agi.counters), dict(counters))
        await asyncio.sleep(COUNTERS_EVERY_SECONDS)
