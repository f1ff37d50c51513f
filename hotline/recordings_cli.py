"""``hotline recordings …`` and ``hotline users …``: the recordings and their people, from a shell.

Like the other commands: migrate if needed, do one thing, print it for people (or JSON with
``--json``); bad input is one line and exit code 2. ``verify`` exits 1 when it found a problem, so
a cron job can alert on it. ``purge`` only says what it would delete unless given ``--apply``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from hotline.schema import upgrade_database
from hotline.terminal import json_text, printable
from infra.config import Settings
from infra.storage import Transactions, create_engine, transactions_for
from recording.db import (
    Recording,
    mark_integrity,
    purge_candidates,
    recordings_before,
    recordings_of,
    remove_recording,
)
from recording.ingest import RecordingIngest, iter_quarantine, list_spool
from recording.store import DirectoryStore, RecordingStore
from web.users import (
    Role,
    UserError,
    list_users,
    remove_user,
    save_user,
    user_values,
)

EXIT_BAD_INPUT = 2


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        days = -1
    if days < 0:
        raise argparse.ArgumentTypeError(f"a whole number of days, 0 or more: {text!r}")
    return days


def add_commands(commands: Any) -> None:
    recordings = commands.add_parser(
        "recordings",
        help="call recordings: ingest, verify, purge, list",
        description="Recordings in HOTLINE_RECORDINGS_DIR and their rows.",
    )
    actions = recordings.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("ingest", help="move finished files from the spool into the store now")
    verify = actions.add_parser(
        "verify", help="re-hash every stored recording; exit 1 on a problem"
    )
    verify.add_argument("--json", action="store_true")
    purge = actions.add_parser(
        "purge", help="delete recordings older than DAYS, keeping those of open tickets"
    )
    purge.add_argument("--older-than", dest="days", type=_days, required=True, metavar="DAYS")
    purge.add_argument("--apply", action="store_true", help="delete (default: only show)")
    listing = actions.add_parser("list", help="recordings of a ticket or a call")
    listing.add_argument("--ticket")
    listing.add_argument("--call", help="the caller channel's uniqueid")
    listing.add_argument("--json", action="store_true")

    users = commands.add_parser(
        "users",
        help="people who may use the web side (playback) and their roles",
        description="Users: admin and supervisor hear every recording, an agent their own calls.",
    )
    actions = users.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a user, or change one's role and password")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=[role.value for role in Role])
    add.add_argument(
        "--agent",
        action="append",
        default=[],
        help="an agent's softphone interface, e.g. PJSIP/agent1 (again for each desk they use)",
    )
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    actions.add_parser("list", help="list users").add_argument("--json", action="store_true")
    actions.add_parser("remove", help="remove a user").add_argument("username")


def run_command(settings: Settings, args: argparse.Namespace) -> int:
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return asyncio.run(_run(settings, args))
    except UserError as error:
        print(f"hotline: {printable(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    password = _password(args) if args.command == "users" and args.action == "add" else ""
    await upgrade_database(settings.database_url)
    engine = create_engine(settings.database_url)
    units = transactions_for(engine, sync=settings.database_sync)
    try:
        if args.command == "users":
            return await _users(units, args, password)
        store = DirectoryStore(settings.recordings_dir)
        if args.action == "ingest":
            return await _ingest(settings, store, units)
        if args.action == "verify":
            return await _verify(store, units, args.json)
        if args.action == "purge":
            return await _purge(settings, store, units, args.days, args.apply)
        return await _list(units, args)
    finally:
        await units.close()
        await engine.dispose()


class Progress:
    """A bar on a terminal; on a pipe, a line at every tenth, so logs stay short."""

    def __init__(self, label: str, total: int, out: TextIO = sys.stderr) -> None:
        self.label, self.total, self.out = label, total, out
        self.done = 0
        self._tty = out.isatty()
        self._shown_tenth = -1

    def step(self) -> None:
        self.done += 1
        share = self.done / self.total if self.total else 1.0
        if self._tty:
            bar = "#" * int(share * 30)
            self.out.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total}")
            if self.done == self.total:
                self.out.write("\n")
        elif int(share * 10) != self._shown_tenth:
            self._shown_tenth = int(share * 10)
            self.out.write(f"{self.label}: {self.done}/{self.total} ({share:.0%})\n")
        self.out.flush()


async def _ingest(settings: Settings, store: RecordingStore, units: Transactions) -> int:
    ingest = RecordingIngest(settings.recordings_spool, store, units)
    outcomes = await ingest.ingest_pending()
    listing = await asyncio.to_thread(list_spool, settings.recordings_spool)
    quarantined = await asyncio.to_thread(lambda: len(list(iter_quarantine(ingest.spool))))
    done = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))
    print(
        f"{done or 'nothing to ingest'}; still being written: {listing.in_progress}; "
        f"in quarantine: {quarantined}; not ours, left alone: {len(listing.foreign)}"
    )
    return 0


def _check(store: RecordingStore, recording: Recording) -> str:
    found = store.stat(recording.key)
    if found is None:
        return "missing"
    if (found.sha256, found.size_bytes) != (recording.sha256, recording.size_bytes):
        return "changed"
    return "ok"


async def _verify(store: RecordingStore, units: Transactions, as_json: bool) -> int:
    recordings = await units(lambda connection: recordings_of(connection))
    verdicts: dict[str, list[Recording]] = {"ok": [], "missing": [], "changed": []}
    progress = Progress("verify", len(recordings))
    for recording in recordings:
        verdicts[await asyncio.to_thread(_check, store, recording)].append(recording)
        progress.step()
    now = datetime.now(UTC)
    for verdict, found in verdicts.items():
        ids = [recording.id for recording in found]
        await units(lambda connection, v=verdict, i=ids: mark_integrity(connection, i, v, now))
    known = {recording.key for recording in recordings}
    unknown = [
        key for key in await asyncio.to_thread(lambda: list(store.keys())) if key not in known
    ]
    problems = {
        verdict: [r.key for r in found] for verdict, found in verdicts.items() if verdict != "ok"
    }
    problems["not-in-database"] = unknown
    if as_json:
        print(json.dumps({"checked": len(recordings), "ok": len(verdicts["ok"]), **problems}))
    else:
        for verdict, keys in problems.items():
            for key in keys:  # a stored file without a row may be named anything
                print(f"{verdict:<16}{printable(key)}")
        print(
            f"checked {len(recordings)} recordings: {len(verdicts['ok'])} ok, "
            f"{len(verdicts['missing'])} missing, {len(verdicts['changed'])} changed; "
            f"{len(unknown)} stored files have no row"
        )
    return 1 if any(problems.values()) else 0


async def _purge(
    settings: Settings, store: RecordingStore, units: Transactions, days: int, apply: bool
) -> int:
    before = datetime.now(settings.zone).date() - timedelta(days=days)
    candidates = await units(lambda connection: purge_candidates(connection, before))
    older = await units(lambda connection: recordings_before(connection, before))
    kept = older - len(candidates)
    size_mb = sum(r.size_bytes for r in candidates) / 1e6
    if not apply:
        for recording in candidates[:20]:
            key, ticket = printable(recording.key), printable(recording.ticket or "-")
            print(f"would delete  {key}  ticket {ticket}")
        if len(candidates) > 20:
            print(f"… and {len(candidates) - 20} more")
        print(
            f"dry run: {len(candidates)} recordings ({size_mb:.1f} MB) made before {before} "
            f"would be deleted; {kept} of open tickets kept. Add --apply to delete them."
        )
        return 0
    progress = Progress("purge", len(candidates))
    outcomes: Counter[str] = Counter()
    for recording in candidates:
        # The file first: a crash in between leaves a row the next purge finds again.
        removed = await asyncio.to_thread(store.delete, recording.key)
        outcomes["deleted" if removed else "file was already gone"] += 1
        await units(lambda connection, i=recording.id: remove_recording(connection, i))
        progress.step()
    gone = outcomes["file was already gone"]
    print(
        f"deleted {len(candidates)} recordings ({size_mb:.1f} MB) made before {before}; "
        f"{kept} of open tickets kept" + (f"; {gone} files were already gone" if gone else "")
    )
    return 0


async def _list(units: Transactions, args: argparse.Namespace) -> int:
    found = await units(
        lambda connection: recordings_of(connection, uniqueid=args.call, ticket=args.ticket)
    )
    if args.json:
        print(json_text([_recording_json(r) for r in found]))
        return 0
    print(f"{'id':>6}  {'day':<11}{'ticket':<24}{'agent':<16}{'seconds':>8}  sha256")
    for r in found:
        ticket, agent = printable(r.ticket or "-"), printable(r.agent_interface or "-")
        print(
            f"{r.id:>6}  {r.recorded_on!s:<11}{ticket:<24}{agent:<16}"
            f"{r.duration_seconds:>8.1f}  {printable(r.sha256[:16])}"
        )
    return 0


def _recording_json(recording: Recording) -> dict[str, Any]:
    return {
        "id": recording.id,
        "key": recording.key,
        "uniqueid": recording.uniqueid,
        "ticket": recording.ticket,
        "recorded_on": recording.recorded_on.isoformat(),
        "agent": recording.agent_interface,
        "talk_seconds": recording.talk_seconds,
        "duration_seconds": recording.duration_seconds,
        "size_bytes": recording.size_bytes,
        "sha256": recording.sha256,
        "format": recording.format,
        "integrity": recording.integrity,
    }


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UserError("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the two passwords differ")
    return first


async def _users(units: Transactions, args: argparse.Namespace, password: str) -> int:
    if args.action == "add":
        values = await user_values(args.username, Role(args.role), args.agent, password)
        new = await units(lambda connection: save_user(connection, values))
        print(f"{'added' if new else 'updated'} {args.username} ({args.role})")
        return 0
    if args.action == "remove":
        if not await units(lambda connection: remove_user(connection, args.username)):
            print(f"hotline: no user {args.username!r}", file=sys.stderr)
            return 1
        print(f"removed {printable(args.username)}")
        return 0
    users = await units(list_users)
    if args.json:
        shown = [
            {"username": u.username, "role": u.role.value, "phones": list(u.phones)} for u in users
        ]
        print(json.dumps(shown))
    else:
        for user in users:
            phones = printable(",".join(user.phones) or "-")
            print(f"{printable(user.username):<20}{user.role.value:<12}{phones}")
    return 0
