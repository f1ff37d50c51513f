"""``hotline enterprise …`` and ``hotline tickets …``: the directory and the tickets from a shell.

Each command migrates the database if needed, does one thing and prints it for people (or one
JSON document with ``--json``). Bad input is a one-line error and exit code 2. Text that came
from callers (names, numbers) reaches the terminal with its control characters made visible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from hotline.schema import upgrade_database
from hotline.terminal import json_text, printable
from infra.config import Settings
from infra.storage import create_engine, session_factory
from ivr_bypass.decision import normalise_number
from ivr_bypass.directory import DirectoryError, EnterpriseDirectory
from tickets.model import TicketError, TicketStatus
from tickets.sla import SlaReport, clock_on_time_rates, on_time_rate, sla_report
from tickets.store import Ticket, TicketEdit, TicketStore
from tickets.views import call_json, local_time, sla_verdict, ticket_json

EXIT_BAD_INPUT = 2


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def add_commands(commands: Any) -> None:
    enterprise = commands.add_parser(
        "enterprise",
        help="the enterprise directory (numbers routed to the priority line)",
        description="Numbers of key enterprises; their calls go to the enterprise queue.",
    )
    actions = enterprise.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add or rename an entry")
    add.add_argument("number", help="phone number in any usual spelling (+86 …, 0…, spaces)")
    add.add_argument("name", help="the enterprise's name")
    remove = actions.add_parser("remove", help="remove an entry")
    remove.add_argument("number")
    actions.add_parser("list", help="list the directory").add_argument(
        "--json", action="store_true"
    )

    tickets = commands.add_parser(
        "tickets",
        help="work orders: list, show, change status, edit, SLA on-time rate",
        description="Tickets (work orders) and their 12345 SLA clocks.",
    )
    actions = tickets.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list tickets, newest first")
    listing.add_argument("--status", choices=[s.value for s in TicketStatus])
    listing.add_argument("--open", action="store_true", help="only tickets not resolved/closed")
    listing.add_argument("--overdue", action="store_true", help="only tickets with a late clock")
    listing.add_argument("--caller", help="caller number (any usual spelling)")
    listing.add_argument("--since", type=_day, help="opened on or after this day (local)")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="one ticket with its SLA clocks and calls")
    show.add_argument("number")
    show.add_argument("--json", action="store_true")
    status = actions.add_parser("status", help="move a ticket to another status")
    status.add_argument("number")
    status.add_argument("status", choices=[s.value for s in TicketStatus])
    edit = actions.add_parser("edit", help="change category, description, department, rating")
    edit.add_argument("number")
    edit.add_argument("--category")
    edit.add_argument("--description")
    edit.add_argument("--department")
    edit.add_argument("--satisfaction", type=int, choices=range(1, 6), metavar="1-5")
    rate = actions.add_parser("sla", help="on-time rate of tickets opened in a period")
    rate.add_argument("--from", dest="start", type=_day, help="first day (default: 30 days ago)")
    rate.add_argument("--to", dest="end", type=_day, help="last day, inclusive (default: today)")
    rate.add_argument("--json", action="store_true")


def run_command(settings: Settings, args: argparse.Namespace) -> int:
    # Migration chatter would bury the one line these commands print.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return asyncio.run(_run(settings, args))
    except (DirectoryError, TicketError) as error:
        print(f"hotline: {printable(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    await upgrade_database(settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        sessions = session_factory(engine)
        if args.command == "enterprise":
            return await _enterprise(EnterpriseDirectory(sessions), args)
        store = TicketStore(sessions, settings.zone, settings.ticket_prefix)
        return await _tickets(store, settings, args)
    finally:
        await engine.dispose()


async def _enterprise(directory: EnterpriseDirectory, args: argparse.Namespace) -> int:
    if args.action == "add":
        entry = await directory.add(args.number, args.name, datetime.now(UTC))
        print(f"{printable(entry.number)}  {printable(entry.name)}")
    elif args.action == "remove":
        if not await directory.remove(args.number):
            print(f"hotline: {printable(args.number)} is not in the directory", file=sys.stderr)
            return 1
        print(f"removed {printable(args.number)}")
    else:
        entries = await directory.entries()
        if args.json:
            print(json_text([{"number": e.number, "name": e.name} for e in entries]))
        else:
            for entry in entries:
                print(f"{printable(entry.number):<16}{printable(entry.name)}")
    return 0


async def _tickets(store: TicketStore, settings: Settings, args: argparse.Namespace) -> int:
    from hotline.domain import sla_policy, working_calendar

    policy, calendar, zone = sla_policy(settings), working_calendar(settings), settings.zone
    now = datetime.now(UTC)

    def report(ticket: Ticket) -> SlaReport:
        return sla_report(ticket.clock_facts(), now, policy, calendar, zone)

    if args.action == "list":
        caller = normalise_number(args.caller).digits if args.caller else None
        since = None
        if args.since:
            since = datetime.combine(args.since, time(), zone)
        found = await store.list(
            status=TicketStatus(args.status) if args.status else None,
            caller_digits=caller,
            opened_from=since,
            only_open=args.open,
            limit=max(1, args.limit) if not args.overdue else 100_000,
        )
        rows = [(ticket, report(ticket)) for ticket in found]
        if args.overdue:
            rows = [(t, r) for t, r in rows if r.on_time is False and t.is_open][: args.limit]
        if args.json:
            print(json_text([ticket_json(t, r, zone) for t, r in rows]))
        else:
            print(f"{'ticket':<24}{'status':<11}{'caller':<14}{'owner':<16}{'opened':<18}sla")
            for ticket, sla in rows:
                cells = (ticket.number, ticket.status, ticket.caller_number or "-")
                number, status, caller = (printable(cell) for cell in cells)
                owner = printable(ticket.owner_agent or "-")
                print(
                    f"{number:<24}{status:<11}{caller:<14}{owner:<16}"
                    f"{local_time(ticket.opened_at, zone):<18}{sla_verdict(sla)}"
                )
        return 0
    if args.action == "show":
        ticket = await store.get(args.number)
        calls = await store.calls_of(ticket.number)
        document = ticket_json(ticket, report(ticket), zone)
        document["calls"] = [call_json(call, zone) for call in calls]
        if args.json:
            print(json_text(document))
        else:
            for key, value in document.items():
                if key not in ("clocks", "calls"):
                    print(f"{key:<14}{'' if value is None else printable(value)}")
            print("clocks:")
            for clock in document["clocks"]:
                print(
                    f"  {clock['name']:<10}due {clock['due']}  {clock['state']}"
                    f"{'  done ' + clock['done_at'] if clock['done_at'] else ''}"
                )
            print(f"calls: {len(calls)}")
            for call in document["calls"]:
                outcome, agent = printable(call["outcome"]), printable(call["agent"] or "-")
                print(f"  {call['started_at']}  {outcome:<22}{agent}")
        return 0
    if args.action == "status":
        ticket = await store.set_status(args.number, TicketStatus(args.status), now)
        print(f"{printable(ticket.number)} is {ticket.status}")
        return 0
    if args.action == "edit":
        edit = TicketEdit(args.category, args.description, args.department, args.satisfaction)
        ticket = await store.edit(args.number, edit, now)
        print(f"{printable(ticket.number)} updated")
        return 0
    end = args.end or now.astimezone(zone).date()
    start = args.start or end - timedelta(days=29)
    found = await store.list(
        opened_from=datetime.combine(start, time(), zone),
        opened_until=datetime.combine(end + timedelta(days=1), time(), zone),
        limit=10_000_000,
    )
    reports = [report(ticket) for ticket in found]
    rate = on_time_rate(reports)
    summary = {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "tickets": len(reports),
        "settled": sum(r.on_time is not None for r in reports),
        "on_time": sum(r.on_time is True for r in reports),
        "late": sum(r.on_time is False for r in reports),
        "on_time_rate": rate,
        "clocks": clock_on_time_rates(reports),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        shown = "-" if rate is None else f"{rate * 100:.1f} %"
        print(
            f"{start} .. {end}: {summary['tickets']} tickets, {summary['settled']} settled, "
            f"{summary['late']} late; on-time rate {shown}"
        )
        for name, clock_rate in summary["clocks"].items():
            print(
                f"  {name:<9} on time {'-' if clock_rate is None else f'{clock_rate * 100:.1f} %'}"
            )
    return 0
