"""``/healthz`` as a monitoring script reads it: the whole report needs a login.

Test processes of ``hotline run`` get ``MONITOR_ENV``, so they create this admin at start; the
probe logs in with HTTP Basic on every read (an anonymous probe gets only ``ok`` and ``up``).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

MONITOR_USER, MONITOR_PASSWORD = "monitor", "monitor test password"
MONITOR_ENV = {"HOTLINE_ADMIN_USER": MONITOR_USER, "HOTLINE_ADMIN_PASSWORD": MONITOR_PASSWORD}
MONITOR_AUTHORIZATION = (
    "Basic " + base64.b64encode(f"{MONITOR_USER}:{MONITOR_PASSWORD}".encode()).decode()
)


def read_health(web_port: int, timeout: float = 2) -> tuple[int, dict]:
    """(status, report) of the process on ``web_port``; raises OSError while it is not up."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{web_port}/healthz",
        headers={"Authorization": MONITOR_AUTHORIZATION},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http)
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
