"""The history page in headless Chromium against `parley serve`: what a call's end and outcome read as,
and a call still in progress followed live (a real server call, typed turns over its data channel).

The calls are put on record with the server's own Store (real SQLite) for the browser's user, one
per way a call ends; the page must say what a person means ("You hung up", "Ended at the 20-minute
cap", "Accepted $94.99/month from Marco") while the JSON keeps the machine codes. Screenshots at
desktop and phone width go to artifacts/screenshots/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.server.db import Store
from parley.server.settings import ServerSettings
from support.browser import browser, until
from support.rtc import of_type
from support.server import call_json, eventually, http, make_settings, running_server, say_text, server_call

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
OUTCOME = {"new_monthly_price": 94.99, "old_monthly_price": 129.99, "monthly_savings": 35.0, "term_months": 12,
           "total_savings": 420.0, "plan": "Internet 500 + TV Basic", "accepted_by": "Marco",
           "persona": "negotiator/marco", "recorded_at": "2025-01-01T00:00:00+00:00"}
# (end reason or None for a call in progress, outcome) -> what the Outcome column says
CALLS: list[tuple[str | None, dict[str, Any] | None, str]] = [
    ("hangup", OUTCOME, "Accepted $94.99/month from Marco"),
    ("upstream_closed:peer_closed", None, "You hung up"),
    ("max_duration", None, "Ended at the 20-minute cap"),  # 1200 s below: the figure is the setting's
    ("sideband_lost", None, "Connection lost"),
    ("max_cost", None, "Ended at the $2.00 cost cap for a call"),
    (None, None, "In progress"),
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> ServerSettings:
    return make_settings(tmp_path_factory.mktemp("history"), max_call_seconds=1200.0)


@pytest.fixture(scope="module")
def server(settings: ServerSettings) -> Iterator[str]:
    with running_server(settings) as url:
        yield url


async def _record_calls(settings: ServerSettings, user_id: str) -> list[str]:
    store = Store(settings.database)
    ids = []
    try:
        for n, (reason, outcome, _) in enumerate(CALLS):
            call_id = f"call_history_{n}"
            await store.create_call(id=call_id, user_id=user_id, kind="server", persona="negotiator/sarah",
                                    persona_name="Sarah", model="gpt-realtime")
            if outcome is not None:
                await store.add_persona(call_id, "negotiator/marco", "Marco")
                await store.set_outcome(call_id, outcome)
            if reason is not None:
                await store.end_call(call_id, reason=reason)
            ids.append(call_id)
    finally:
        await store.close()
    return ids


async def test_outcome_column_reads_as_people_say_it(server: str, settings: ServerSettings) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with browser(None) as chromium:
        page = await chromium.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(server + "/history.html")
        # a new user: no calls yet (and, from that first answer, the cookie that makes them a user)
        await until(page, "document.querySelector('#calls').textContent.includes('No calls yet')", 10)
        user = await page.evaluate("fetch('/api/me').then(r => r.json())")
        assert user["method"] == "client-cookie", user
        ids = await _record_calls(settings, user["user_id"])
        await page.reload()
        await until(page, f"document.querySelectorAll('tr[data-call]').length === {len(ids)}", 10)
        for call_id, (_, _, said) in zip(ids, CALLS, strict=True):
            cells = await page.eval_on_selector_all(f'tr[data-call="{call_id}"] td', "tds => tds.map(t => t.textContent)")
            assert cells[3].strip() == said, (call_id, cells)
        table = await page.text_content("#calls") or ""
        assert "upstream_closed" not in table and "_" not in table, table
        # the picked call's details say how it ended too, the code on hover
        await page.click(f'tr[data-call="{ids[1]}"]')
        await until(page, "document.querySelector('#detail-meta').textContent.includes('You hung up')", 10)
        await page.screenshot(path=str(ARTIFACTS / "history-ends.png"), full_page=True)

        # the JSON keeps the machine codes, with the sentences beside them
        cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
        async with httpx.AsyncClient(base_url=server, cookies=cookies) as http:
            listed = {c["id"]: c for c in (await http.get("/api/calls")).json()}
            md = (await http.get(f"/api/calls/{ids[2]}/transcript?format=md")).text
        assert listed[ids[1]]["end_reason"] == "upstream_closed:peer_closed"
        assert listed[ids[1]]["end_reason_text"] == "You hung up"
        assert listed[ids[0]]["outcome"]["new_monthly_price"] == 94.99
        assert listed[ids[0]]["outcome_text"] == "Accepted $94.99/month from Marco"
        assert "Ended at the 20-minute cap (`max_duration`)" in md

        phone = await chromium.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        await phone.context.add_cookies(await page.context.cookies())
        await phone.goto(server + "/history.html")
        await until(phone, f"document.querySelectorAll('tr[data-call]').length === {len(ids)}", 10)
        assert await phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        # one column: every cell shown lies inside its panel (none cut off at the right)
        clipped = await phone.evaluate("[...document.querySelectorAll('#calls td')].filter(td => td.offsetParent && "
                                       "td.getBoundingClientRect().right > td.closest('.panel').getBoundingClientRect().right)"
                                       ".map(td => td.textContent)")
        assert clipped == [], clipped
        await phone.screenshot(path=str(ARTIFACTS / "history-phone.png"), full_page=True)


LIVE = "#detail-live"
BUBBLES = "document.querySelectorAll('#detail-transcript .bubble')"
BOX = "document.querySelector('#detail-transcript')"
NOTICE = "document.querySelector('#detail-notice')"


async def test_an_active_call_is_followed_live(server: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with browser(None) as chromium:
        page = await chromium.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(server + "/history.html")
        await until(page, "document.querySelector('#calls').textContent.includes('No calls yet')", 10)
        cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
        async with http(server, cookies=cookies) as c, server_call(c) as (peer, call_id):
            await peer.wait_for(of_type("response.done"), start=say_text(peer, "Hello there, my bill is too high."))
            await eventually(lambda: _said(c, call_id, 2), timeout=30)
            await page.goto(f"{server}/history.html?call={call_id}")
            await until(page, f"{BUBBLES}.length === 2", 10)
            assert await page.is_visible(LIVE)
            row = await page.text_content(f'tr[data-call="{call_id}"]') or ""
            assert "In progress" in row, row
            # lines already on the page are left alone: a mark put on them survives the updates; and a
            # reader scrolled up (a short box here, so two lines overflow it) stays where they are
            await page.evaluate(f"{BUBBLES}.forEach(b => b.dataset.seen = '1')")
            await page.evaluate(f"Object.assign({BOX}.style, {{minHeight: '0', maxHeight: '60px'}}); {BOX}.scrollTop = 0")
            assert await page.evaluate(f"{BOX}.scrollHeight > {BOX}.clientHeight")

            # a new turn through the real server: it appears without a reload, after what was there
            await peer.wait_for(of_type("response.done"),
                                start=say_text(peer, "What about my internet speed and the TV channels?"))
            said = await until(page, f"[...{BUBBLES}].length >= 4 && [...{BUBBLES}].map(b => b.textContent)", 30,
                               context=f"[...{BUBBLES}].map(b => b.textContent)")
            assert "internet speed" in said[2], said
            assert await page.evaluate(f"[...{BUBBLES}].slice(0, 2).every(b => b.dataset.seen === '1')")
            assert await page.evaluate("performance.getEntriesByType('navigation').length === 1")
            assert await page.is_visible(LIVE)
            assert await page.evaluate(f"{BOX}.scrollTop") == 0

            # reads that fail (the network, not the server, drops them): a quiet notice, no error, still live
            await page.evaluate(f"{BOX}.scrollTop = {BOX}.scrollHeight")
            await page.route(f"**/api/calls/{call_id}", lambda route: route.abort())
            await until(page, f"!{NOTICE}.hidden && {NOTICE}.textContent.includes('trying again')", 15)
            assert await page.evaluate("document.querySelectorAll('#detail .errors').length") == 0
            assert await page.is_visible(LIVE)
            await page.unroute(f"**/api/calls/{call_id}")
            # it picks up again, and a reader at the bottom follows the new lines
            n = await page.evaluate(f"{BUBBLES}.length")
            await peer.wait_for(of_type("response.done"), start=say_text(peer, "Can you lower the price today?"))
            await until(page, f"{BUBBLES}.length >= {n + 2} && {NOTICE}.hidden", 40,
                        context=f"[{NOTICE}.textContent, [...{BUBBLES}].map(b => b.textContent)]")
            await until(page, f"{BOX}.scrollHeight - {BOX}.scrollTop - {BOX}.clientHeight < 2", 5)

            await page.evaluate(f"{BOX}.style.cssText = ''")  # the page's own box again, for the picture
            await page.screenshot(path=str(ARTIFACTS / "history-live.png"), full_page=True)

            # the call ends: the marker goes, the end shows in the details and in the list
            r = await c.post(f"/api/calls/{call_id}/hangup")
            assert r.status_code == 200, r.text
            await until(page, f"document.querySelector('{LIVE}').hidden", 15)
            ended = (await call_json(c, call_id))["end_reason_text"]
            await until(page, f"document.querySelector('#detail-meta').textContent.includes({ended!r})", 10,
                        context="document.querySelector('#detail-meta').textContent")
            await until(page, f"!document.querySelector('tr[data-call=\"{call_id}\"]').textContent.includes('In progress')",
                        15, context=f"document.querySelector('tr[data-call=\"{call_id}\"]').textContent")
            assert await page.evaluate(f"{BUBBLES}.length") >= 4
            assert await page.evaluate("document.querySelectorAll('#detail .errors').length") == 0


async def _said(c: httpx.AsyncClient, call_id: str, n: int) -> dict[str, Any] | None:
    call = await call_json(c, call_id)
    lines = [i for i in call["transcript"] if i["kind"] == "message" and i["role"] in ("user", "assistant") and i["text"]]
    return call if len(lines) >= n else None
