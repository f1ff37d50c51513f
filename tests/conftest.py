"""Shared test helpers: the recorded real transcript and real local services when present."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy.engine import make_url

# Property tests that pin their examples (the same ones on every machine and in CI) search on
# at random, for longer, under HYPOTHESIS_PROFILE=explore; a failure found there is replayed
# from .hypothesis/ and then kept in the test as an explicit case.
settings.register_profile(
    "explore",
    max_examples=1000,
    derandomize=False,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])

FIXTURES = Path(__file__).parent / "fixtures"
REAL_SESSION = FIXTURES / "hotline-3-agents-40-calls.ami"
DEFAULT_TEST_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def services_required() -> bool:
    """CI sets HOTLINE_REQUIRE_SERVICES=1: then a missing Redis/PostgreSQL fails, never skips."""
    return os.environ.get("HOTLINE_REQUIRE_SERVICES") == "1"


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    if port_open(host, port):
        return
    message = f"{name} is not listening on {host}:{port}"
    if services_required():
        pytest.fail(message)
    pytest.skip(message)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback TCP port free now and never handed out before in this run: the kernel may
    give the same free port to two probes in a row (a web port and a router port once met)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@pytest.fixture
def real_session() -> Path:
    return REAL_SESSION


@contextlib.asynccontextmanager
async def throwaway_postgres() -> AsyncIterator[str]:
    """A database of its own on the local PostgreSQL server (trust auth, database ``test``)."""
    admin_url = make_url(os.environ.get("HOTLINE_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES))
    need_service("PostgreSQL", admin_url.host or "127.0.0.1", admin_url.port or 5432)
    import asyncpg

    name = f"hotline_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url.render_as_string(hide_password=False))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        test_url = admin_url.set(drivername="postgresql+asyncpg", database=name)
        yield test_url.render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with throwaway_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated database: a SQLite file, then a throwaway database on the real PostgreSQL."""
    from hotline.schema import upgrade_database

    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/hotline.db"
        await upgrade_database(url)
        yield url
        return
    async with throwaway_postgres() as url:
        await upgrade_database(url)
        yield url


@pytest.fixture
def password_checks(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """How many scrypt password checks the web side has run so far in this test."""
    import web.users

    checks = 0
    real = web.users.password_matches

    def counted(password: str, stored: str) -> bool:
        nonlocal checks
        checks += 1
        return real(password, stored)

    monkeypatch.setattr(web.users, "password_matches", counted)
    return lambda: checks
