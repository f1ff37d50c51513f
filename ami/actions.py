"""AMI actions the bridge sends, built and checked as pure values before anything is sent.

Each helper returns ``(action_name, headers)``; ``AmiClient.send`` runs it with a deadline.
Names come from configuration or an authenticated operator, never straight from a caller, yet
they are still checked: a line break or an odd character never reaches the AMI socket.
"""

from __future__ import annotations

import re

_INTERFACE = re.compile(r"^[A-Za-z]+/[A-Za-z0-9_.@+-]{1,80}$")
# A Local channel may end in /n: no optimising away (it keeps its recording in the bridge).
_CHANNEL = re.compile(r"^[A-Za-z]+/[A-Za-z0-9_.@+-]{1,80}(/n)?$")
_QUEUE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DIALPLAN_NAME = re.compile(r"^[A-Za-z0-9_+*#.-]{1,80}$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

AmiAction = tuple[str, dict[str, str | int | list[str]]]


class InvalidAction(ValueError):
    """A value that must not be sent to Asterisk."""


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.match(value):
        raise InvalidAction(f"not a valid {what}: {value!r}")
    return value


def _free_text(value: str, what: str, limit: int = 128) -> str:
    if any(ch in value for ch in "\r\n\0") or len(value) > limit:
        raise InvalidAction(f"{what} must be one line of at most {limit} characters")
    return value


def queue_add(
    queue: str,
    interface: str,
    member_name: str = "",
    penalty: int = 0,
    paused: bool = False,
    reason: str = "",
) -> AmiAction:
    headers: dict[str, str | int | list[str]] = {
        "Queue": _check(_QUEUE, queue, "queue"),
        "Interface": _check(_INTERFACE, interface, "interface"),
        "Penalty": int(penalty),
        "Paused": "true" if paused else "false",
    }
    if member_name:
        headers["MemberName"] = _free_text(member_name, "member name", 64)
    if reason:
        headers["Reason"] = _free_text(reason, "reason")
    return "QueueAdd", headers


def queue_remove(queue: str, interface: str) -> AmiAction:
    return "QueueRemove", {
        "Queue": _check(_QUEUE, queue, "queue"),
        "Interface": _check(_INTERFACE, interface, "interface"),
    }


def queue_pause(
    interface: str, paused: bool, reason: str = "", queue: str | None = None
) -> AmiAction:
    """Pause or unpause a member; without ``queue`` in every queue it belongs to."""
    headers: dict[str, str | int | list[str]] = {
        "Interface": _check(_INTERFACE, interface, "interface"),
        "Paused": "true" if paused else "false",
    }
    if queue is not None:
        headers["Queue"] = _check(_QUEUE, queue, "queue")
    if reason:
        headers["Reason"] = _free_text(reason, "reason")
    return "QueuePause", headers


def originate(
    channel: str,
    context: str,
    exten: str,
    *,
    priority: int = 1,
    caller_id: str = "",
    timeout_seconds: float = 30,
    variables: dict[str, str] | None = None,
) -> AmiAction:
    """Ring ``channel`` and, when it answers, run ``exten@context`` (never an application)."""
    headers: dict[str, str | int | list[str]] = {
        "Channel": _check(_CHANNEL, channel, "channel"),
        "Context": _check(_DIALPLAN_NAME, context, "context"),
        "Exten": _check(_DIALPLAN_NAME, exten, "extension"),
        "Priority": int(priority),
        "Timeout": int(timeout_seconds * 1000),
        "Async": "true",
    }
    if caller_id:
        headers["CallerID"] = _free_text(caller_id, "caller ID", 80)
    if variables:
        headers["Variable"] = [
            f"{_check(_VARIABLE, name, 'variable name')}={_free_text(value, name)}"
            for name, value in variables.items()
        ]
    return "Originate", headers
