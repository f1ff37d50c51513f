"""``hotline``: the command line. Each sub-command loads the settings once and hands them on."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.replay_settings import REPLAY_DEFAULTS, ReplaySettings, configured

if TYPE_CHECKING:
    from infra.config import Settings

EXIT_CONFIG_ERROR = 2


def _positive_speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("speed cannot be negative")
    return value


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Every command's parser; for ``hotline replay`` only its own (a replay is a whole process
    a user waits for, and the management commands' modules take a quarter of a second to load)."""
    parser = argparse.ArgumentParser(
        prog="hotline",
        description="hotline-bridge: the service beside Asterisk for a citizen hotline.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="TOML settings file (default: $HOTLINE_CONFIG); HOTLINE_* variables override it",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run the bridge: AMI client, FastAGI server and web in one process",
        description=(
            "Run the bridge until SIGINT/SIGTERM. FastAGI and web start first; AMI is retried "
            "with back-off while the PBX is away. Without HOTLINE_AMI_SECRET no PBX is "
            "configured and a recorded real session is replayed instead."
        ),
    )
    run.add_argument(
        "--replay",
        metavar="PATH",
        type=Path,
        help="feed this AMI wire transcript instead of connecting to a PBX",
    )
    run.add_argument(
        "--speed",
        type=_positive_speed,
        default=1.0,
        help="replay speed: 1 is real time, 0 as fast as possible (default 1)",
    )

    demo = commands.add_parser(
        "demo",
        help="the web panel on embedded defaults, fed a real recorded session",
        description=(
            "Serve the bridge and its panel with no PBX: a real recorded Asterisk 22 session is "
            "replayed (in real time unless --speed), and a 'demo' supervisor is set up with a "
            "new password, printed at start."
        ),
    )
    demo.add_argument("--replay", metavar="PATH", type=Path, help="another AMI wire transcript")
    demo.add_argument(
        "--speed", type=_positive_speed, default=1.0, help="replay speed (default 1, real time)"
    )

    replay = commands.add_parser(
        "replay",
        help="replay an AMI or ESL transcript and print the queue and agent statistics",
        description=(
            "Feed a raw AMI wire transcript (\\r\\n line ends, as on the socket), or a FreeSWITCH "
            "Event Socket transcript (.esl, or .esl.gz), through the same pipeline as a live "
            "connection and print the statistics at its end."
        ),
    )
    replay.add_argument("path", metavar="PATH", type=Path, help="the transcript")
    replay.add_argument("--json", action="store_true", help="print exactly one JSON object")

    agi = commands.add_parser(
        "agi",
        help="run only the routing FastAGI server, in its own process",
        description=(
            "Serve agi://HOST:PORT/route alone (HOTLINE_AGI_HOST/PORT), so nothing else in a "
            "process can stall routing. Tickets and the directory come from the shared "
            "database; free agents from the statistics snapshot that 'hotline run' keeps in Redis."
        ),
    )
    # 'hotline run' starts its routing process with the link it talks over; not for people.
    agi.add_argument("--link-fd", type=int, help=argparse.SUPPRESS)
    if _command_of(sys.argv[1:] if argv is None else argv) == "replay":
        return parser

    from hotline import manage, prompts_cli, recordings_cli

    manage.add_commands(commands)
    recordings_cli.add_commands(commands)
    prompts_cli.add_parser(commands)

    db = commands.add_parser("db", help="database schema", description="Database schema.")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_commands.add_parser(
        "upgrade", help="apply migrations", description="Apply the Alembic migrations."
    )
    upgrade.add_argument("--revision", default="head", help="target revision (default head)")
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from hotline.service import serve

    if args.replay is not None and not args.replay.is_file():
        print(f"hotline: no transcript at {args.replay}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    return _serve_until_stopped(
        serve(
            settings,
            replay_path=args.replay,
            replay_speed=args.speed,
            demo=args.command == "demo",
            config_path=Path(args.config) if args.config else None,
        ),
        settings,
    )


def _serve_until_stopped(service: Coroutine[Any, Any, None], settings: Settings) -> int:
    """Run a long-running command until it stops: a bad setting found late exits 2, an OS error
    at start (a port in use) exits 1."""
    from infra.config import ConfigError

    try:
        from hotline.loop import run as run_loop

        run_loop(service, settings.event_loop)
    except ConfigError as error:
        print(f"hotline: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except OSError as error:
        logging.getLogger("hotline").error("cannot start: %s", error)
        return 1
    return 0


def _replay(settings: Settings | ReplaySettings, args: argparse.Namespace) -> int:
    from esl.replay import is_esl_transcript
    from hotline.pipelines import build_pipeline
    from queue_stats.pipeline import format_table

    if not args.path.is_file():
        print(f"hotline: no transcript at {args.path}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if is_esl_transcript(args.path):
        from esl.callcenter import EslEventError
        from esl.codec import EslProtocolError
        from esl.replay import EslClock, replay_esl_file

        esl_clock = EslClock()
        pipeline = build_pipeline(settings, esl_clock.current)
        try:
            calls = replay_esl_file(args.path, pipeline, esl_clock)
        except (EslProtocolError, EslEventError) as error:
            print(f"hotline: {args.path}: unreadable ESL transcript: {error}", file=sys.stderr)
            return 1
        snapshot = pipeline.snapshot(esl_clock.current())
    else:
        from ami.codec import AmiProtocolError
        from ami.feed import replay_file
        from ami.replay import ReplayClock

        clock = ReplayClock()
        pipeline = build_pipeline(settings, clock.current)
        try:
            calls = replay_file(args.path, pipeline, clock)
        except AmiProtocolError as error:
            print(f"hotline: {args.path} is not an AMI transcript: {error}", file=sys.stderr)
            return 1
        snapshot = pipeline.snapshot(clock.current())
    if args.json:
        print(json.dumps(snapshot, ensure_ascii=False))
    else:
        print(format_table(snapshot))
        print(f"\n{len(calls)} calls finished; {pipeline.counters['events']} events used")
    return 0


def _agi(settings: Settings, args: argparse.Namespace) -> int:
    from hotline.service import serve_agi

    return _serve_until_stopped(serve_agi(settings, link_fd=args.link_fd), settings)


def _db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    from hotline.schema import upgrade_database_sync

    upgrade_database_sync(settings.database_url, args.revision)
    print(f"database at revision {args.revision}")
    return 0


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (after ``--config PATH`` if given)."""
    words = list(argv)
    while words:
        word = words.pop(0)
        if word == "--config":
            words = words[1:]
        elif not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser(argv).parse_args(argv)
    if args.command == "replay" and not configured(args.config):
        # Nothing to validate: a replay need not load pydantic (see infra/replay_settings.py).
        _configure_logging(REPLAY_DEFAULTS.log_level)
        return _replay(REPLAY_DEFAULTS, args)
    from infra.config import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"hotline: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    _configure_logging(settings.log_level)
    if args.command in ("run", "demo"):
        return _run(settings, args)
    if args.command == "replay":
        return _replay(settings, args)
    if args.command == "agi":
        return _agi(settings, args)
    if args.command in ("enterprise", "tickets"):
        from hotline.manage import run_command

        return run_command(settings, args)
    if args.command == "prompts":
        from hotline import prompts_cli

        return prompts_cli.run(settings.survey_scale, args)
    if args.command in ("recordings", "users"):
        from hotline import recordings_cli

        return recordings_cli.run_command(settings, args)
    return _db_upgrade(settings, args)


if __name__ == "__main__":
    sys.exit(main())
