"""Property-based fuzzing of every operation in the served OpenAPI document, logged in.

Schemathesis writes requests from the app's OpenAPI document (a test holds it equal to what
``GET /api/v1/openapi.json`` serves): valid ones and invalid ones (wrong types, out-of-range
numbers, odd strings, missing or extra fields, other methods and content types), and sends them
to the running process with a supervisor's session cookie and its CSRF token. Any 5xx fails
that operation's test, with the request as a curl command to replay it.

Paths that name a ticket or a recording are sent twice: as generated (almost always unknown),
and with a real ticket's number or the real recording's id, so bodies and ranges reach the code
behind the look-up. ``POST /api/v1/logout`` gets a throwaway session for each request, so it
never ends the one the others use. Fuzzed logins come from an address of their own and may run
into the throttle (429); a 401 or 429 anywhere else means the session was lost, and fails.

In CI the run is the same every time: 25 examples per operation in the fuzzing phase (plus
schemathesis' examples and coverage phases), derandomized, from a fixed seed. To search further,
at random:

    HOTLINE_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest tests/security/test_fuzz.py \\
        -p no:cacheprovider

The seed of such a run is printed (``-s``, and with a failure's output); the same
``HOTLINE_FUZZ_SEED`` and ``HOTLINE_FUZZ_EXAMPLES`` run the same search again.

One 5xx is the API's documented answer, not a fault: the agent actions say 503 "no PBX is
connected" when there is no PBX, and this process replays a recording instead of having one.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from requests.adapters import HTTPAdapter
from schemathesis.checks import not_a_server_error

from tests.security.conftest import (
    SUPERVISOR,
    Hotline,
    fresh_caller,
    new_ticket,
    running_hotline,
)
from web.openapi import DOCUMENT

pytestmark = pytest.mark.security

CI_EXAMPLES, CI_SEED = 25, 20261125
EXPLORING = {"HOTLINE_FUZZ_EXAMPLES", "HOTLINE_FUZZ_SEED"} & set(os.environ) != set()
EXAMPLES = int(os.environ.get("HOTLINE_FUZZ_EXAMPLES", CI_EXAMPLES))
SEED = int(os.environ.get("HOTLINE_FUZZ_SEED", random.randrange(2**32) if EXPLORING else CI_SEED))
REQUEST_SECONDS = 10
NO_PBX = {"error": "no PBX is connected (this is a replay)"}
AGENT_ACTIONS = frozenset({"/api/v1/agent/pause", "/api/v1/agent/queues"})
LOGOUT = ("POST", "/api/v1/logout")
LOGIN = "/api/v1/login"
# The throttle counts failed logins per address: the fuzzed logins come from an address of
# their own, so when it blocks them (429) the supervisor's logins are not held up with them.
SESSION_ADDRESS, GUESSES_ADDRESS = "127.0.11.1", "127.0.11.2"


class FromAddress(HTTPAdapter):
    """Connections from one loopback source address."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **{**kwargs, "source_address": (self.address, 0)})


def session_from(address: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", FromAddress(address))
    return session


@dataclass
class Fuzzer:
    """Sends schemathesis' cases to the running process as a logged-in supervisor."""

    hotline: Hotline
    session: requests.Session
    csrf: str
    guesser: requests.Session  # for the login cases
    tickets: list[str]
    recording: int
    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # "PATCH 400": how often
    announced: set[str] = field(default_factory=set)

    def send(self, case: schemathesis.Case) -> None:
        if case.operation.label not in self.announced:  # shown with a failure's output
            self.announced.add(case.operation.label)
            print(
                f"{case.operation.label}: HOTLINE_FUZZ_SEED={SEED} HOTLINE_FUZZ_EXAMPLES={EXAMPLES}"
            )
        if (case.method.upper(), case.operation.path) == LOGOUT:
            session, csrf = supervisor_session(self.hotline)  # a throwaway one
            with session:
                self._check(case, session, csrf)
            return
        if case.operation.path == LOGIN:
            self._check(case, self.guesser, "")
            return
        self._check(case, self.session, self.csrf)
        real = {}
        if "number" in (case.path_parameters or {}):
            real["number"] = self.tickets[self.sent % len(self.tickets)]
        if "recording_id" in (case.path_parameters or {}):
            real["recording_id"] = self.recording
        if real:
            case.path_parameters = {**case.path_parameters, **real}
            self._check(case, self.session, self.csrf)

    def _check(self, case: schemathesis.Case, session: requests.Session, csrf: str) -> None:
        # A connection of its own per request: the guard's 2 s idle deadline cannot cut a
        # pooled one just as a slow example is sent on it.
        headers = {"X-CSRF-Token": csrf, "Connection": "close"}
        response = case.call(
            base_url=self.hotline.url(""), session=session, headers=headers,
            timeout=REQUEST_SECONDS,
        )  # fmt: skip
        self.sent += 1
        self.answers[f"{case.method.upper()} {response.status_code}"] += 1
        if case.operation.path != LOGIN and response.status_code in (401, 429):
            pytest.fail(
                f"{case.operation.label} refused the supervisor's session "
                f"({response.status_code}): the rest of the run would test nothing"
            )
        if documented_unavailable(case, response):
            return
        case.validate_response(response, checks=[not_a_server_error])


def documented_unavailable(case: schemathesis.Case, response: Any) -> bool:
    """The agent actions' 503 when no PBX is connected (this process replays; it has none)."""
    if case.operation.path not in AGENT_ACTIONS or response.status_code != 503:
        return False
    try:
        return bool(response.json() == NO_PBX)
    except ValueError:
        return False


def supervisor_session(hotline: Hotline) -> tuple[requests.Session, str]:
    """A requests session logged in as the supervisor, and its CSRF token."""
    session = session_from(SESSION_ADDRESS)
    response = session.post(
        hotline.url("/api/v1/login"), json=SUPERVISOR.login, timeout=REQUEST_SECONDS
    )
    assert response.status_code == 200, response.text
    return session, str(response.json()["csrf"])


@pytest.fixture(scope="module")
def hotline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hotline]:
    """Replayed to the end, so the statistics exist and ``/api/v1/stats`` is not a 503."""
    with running_hotline(tmp_path_factory.mktemp("hotline")) as running:
        running.wait_until_replayed()
        yield running


@pytest.fixture(scope="module")
def fuzzer(hotline: Hotline) -> Iterator[Fuzzer]:
    tickets = [asyncio.run(new_ticket(hotline, fresh_caller())) for _ in range(3)]
    recording = hotline.drop_recording()
    session, csrf = supervisor_session(hotline)
    with session, session_from(GUESSES_ADDRESS) as guesser:
        fuzzer = Fuzzer(hotline, session, csrf, guesser, tickets, recording)
        yield fuzzer
    print(f"\nfuzzing sent {fuzzer.sent} requests: {dict(sorted(fuzzer.answers.items()))}")


@pytest.fixture(scope="module")
def served_document(fuzzer: Fuzzer) -> dict[str, Any]:
    response = fuzzer.session.get(
        fuzzer.hotline.url("/api/v1/openapi.json"), timeout=REQUEST_SECONDS
    )
    assert response.status_code == 200
    return dict(response.json())


def test_the_fuzzed_document_is_the_served_one(served_document: dict[str, Any]) -> None:
    """The cases below are written from the app's document as the process serves it, every
    operation of it (schemathesis, loading from the URL, would leave out the one serving it)."""
    assert served_document == json.loads(json.dumps(DOCUMENT))
    served = {
        (method.upper(), path) for path, item in served_document["paths"].items() for method in item
    }
    fuzzed = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    print(f"\nfuzzing {len(fuzzed)} operations: {EXAMPLES} examples each, seed {SEED}")
    assert fuzzed == served and len(served) >= 16


# Built when the module is collected, so each operation is a test of its own; the requests go
# to the process the fixtures start (``case.call(base_url=...)``).
schema = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "max-examples": EXAMPLES,
                "deterministic": not EXPLORING,
                "with-security-parameters": False,  # the session is ours; no forged cookies
                "database": "none",
            },
        }
    ),
)


@schema.parametrize()
def test_no_request_gets_a_server_error(case: schemathesis.Case, fuzzer: Fuzzer) -> None:
    fuzzer.send(case)
