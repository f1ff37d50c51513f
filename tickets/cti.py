"""Calls as generic CTI events (newCall, answer, hangup) for another ticket system's webhook.

A ``CallObserver``: it turns the call tracker's records into ``CtiEvent``s and hands them to the
``WebhookSender``, whose ``submit`` never waits. ``newCall`` goes out when the caller reaches a
queue; a call answered by the preferred-agent step or ended before any queue gets its
``newCall`` just before its next event, so every call a receiver sees starts with one.
"""

from __future__ import annotations

from collections import OrderedDict

from queue_stats.calls import CallRecord
from tickets.webhook import CtiEvent, CtiEventName, WebhookSender, hangup_cause

ANNOUNCED_LIMIT = 10_000


class CtiNotifier:
    def __init__(self, sender: WebhookSender) -> None:
        self._sender = sender
        self._announced: OrderedDict[str, None] = OrderedDict()

    def call_offered(self, call: CallRecord) -> None:
        self._announce(call)

    def call_answered(self, call: CallRecord) -> None:
        self._announce(call)
        self._sender.submit(
            CtiEvent(
                CtiEventName.ANSWER,
                call.uniqueid,
                call.caller_number,
                call.dialled_number,
                call.answered_at or call.started_at,
                user=call.agent_name or call.agent_interface,
                answering_number=call.agent_interface,
                ticket=call.ticket,
            )
        )

    def call_finished(self, call: CallRecord) -> None:
        self._announce(call)
        self._announced.pop(call.uniqueid, None)
        self._sender.submit(
            CtiEvent(
                CtiEventName.HANGUP,
                call.uniqueid,
                call.caller_number,
                call.dialled_number,
                call.ended_at or call.started_at,
                user=call.agent_name or call.agent_interface,
                answering_number=call.agent_interface,
                cause=hangup_cause(str(call.outcome or "unknown"), call.hangup_cause),
                ticket=call.ticket,
            )
        )

    def _announce(self, call: CallRecord) -> None:
        if call.uniqueid in self._announced:
            return
        self._announced[call.uniqueid] = None
        while len(self._announced) > ANNOUNCED_LIMIT:
            self._announced.popitem(last=False)
        self._sender.submit(
            CtiEvent(
                CtiEventName.NEW_CALL,
                call.uniqueid,
                call.caller_number,
                call.dialled_number,
                call.started_at,
                ticket=call.ticket,
            )
        )
