"""Shared test helpers: the recorded real transcript and real local services when present."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REAL_SESSION = FIXTURES / "hotline-3-agents-40-calls.ami"


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def real_session() -> Path:
    return REAL_SESSION
