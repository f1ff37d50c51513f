"""Another site's page making the browser act: a login form posted across, a Basic PATCH.

A form can post ``text/plain`` (no CORS preflight) with any body, and a browser that has HTTP
Basic credentials for the panel sends them with any request, whoever's page made it.
"""

from __future__ import annotations

import json

import pytest

from tests.security.conftest import SUPERVISOR, Hotline, fresh_caller, new_ticket, web_client

pytestmark = pytest.mark.security

EVIL = "http://evil.example"


@pytest.mark.parametrize(
    ("content_type", "headers"),
    [
        ("text/plain", {"Origin": EVIL}),
        ("text/plain", {"Origin": "null"}),
        ("text/plain", {"Sec-Fetch-Site": "cross-site"}),
        ("text/plain", {}),
        ("application/x-www-form-urlencoded", {"Origin": EVIL}),
        ("application/json", {"Origin": EVIL}),
    ],
    ids=["text-evil-origin", "text-null-origin", "text-cross-site-fetch", "text-no-origin",
         "form-evil-origin", "json-evil-origin"],
)  # fmt: skip
async def test_a_cross_site_login_sets_no_cookie(
    hotline: Hotline, content_type: str, headers: dict[str, str]
) -> None:
    """The right password, posted as another site's form posts it: no session comes of it."""
    async with web_client("127.0.8.1") as client:
        async with client.post(
            hotline.url("/api/v1/login"),
            data=json.dumps(SUPERVISOR.login),
            headers={"Content-Type": content_type, **headers},
        ) as response:
            status = response.status
            set_cookie = response.headers.getall("Set-Cookie", [])
        jar = [cookie.key for cookie in client.cookie_jar]
    print(f"\nlogin as {content_type} with {headers}: {status}, Set-Cookie {set_cookie}")
    assert status in (403, 415)
    assert set_cookie == [] and jar == []


async def test_a_cross_site_basic_patch_is_refused(hotline: Hotline) -> None:
    """A browser holding Basic credentials, on another site's page: the PATCH is refused and
    the ticket unchanged; the same PATCH from a script (no Origin) goes through."""
    number = await new_ticket(hotline, fresh_caller())
    url = hotline.url(f"/api/v1/tickets/{number}")
    basic = {"Authorization": SUPERVISOR.basic}
    change = {"category": "forged by another site"}
    async with web_client("127.0.8.2") as client:
        async with client.patch(url, json=change, headers={**basic, "Origin": EVIL}) as response:
            cross_site = response.status
        async with client.get(url, headers=basic) as response:
            category_after = (await response.json())["category"]
        async with client.patch(
            url, json=change, headers={**basic, "Sec-Fetch-Site": "cross-site"}
        ) as response:
            fetch_cross_site = response.status
        async with client.patch(url, json={"category": "from a script"}, headers=basic) as script:
            from_script = script.status
    print(
        f"\nBasic PATCH with Origin {EVIL}: {cross_site}, with Sec-Fetch-Site cross-site: "
        f"{fetch_cross_site}; category after: {category_after!r}; from a script: {from_script}"
    )
    assert cross_site == 403 and fetch_cross_site == 403
    assert category_after != change["category"]
    assert from_script == 200


async def test_a_cookie_change_needs_the_csrf_token(hotline: Hotline) -> None:
    """Same origin but no (or a wrong) X-CSRF-Token: a logged-in browser's cookie alone
    changes nothing."""
    number = await new_ticket(hotline, fresh_caller())
    url = hotline.url(f"/api/v1/tickets/{number}")
    origin = {"Origin": f"http://127.0.0.1:{hotline.web_port}"}
    async with web_client("127.0.8.3") as client:
        login = SUPERVISOR.login
        async with client.post(hotline.url("/api/v1/login"), json=login) as response:
            assert response.status == 200
        statuses = []
        for token in ({}, {"X-CSRF-Token": "not the token"}):
            async with client.patch(
                url, json={"category": "no token"}, headers={**origin, **token}
            ) as response:
                statuses.append(response.status)
        async with client.get(url) as response:
            category = (await response.json())["category"]
    print(f"\ncookie PATCH without / with a wrong CSRF token: {statuses}")
    assert statuses == [403, 403]
    assert category != "no token"
