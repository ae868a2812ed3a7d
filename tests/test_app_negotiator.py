"""The bill-negotiation practice call in headless Chromium against `parley serve` (local engine).

The fake microphone says a sentence about the bill; the page must show Sarah's greeting, the
user's words, an offer, the speaking indicator and a latency figure; the supervisor button brings
Marco; typing an acceptance records the outcome; the history page lists the call. Screenshots go
to artifacts/screenshots/ (not committed).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from parley.apps.local import local_engine
from parley.audio.wav import write_wav
from parley.engine.app import EngineSettings
from parley.engine.speech.wer import wer
from parley.server.app import create_app
from parley.server.settings import ServerSettings
from parley.util.serving import serve_app
from support.browser import browser, until
from support.speech import speech_wav

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SAID = "Hi, my monthly bill is too expensive. Lower it or I will cancel my service."
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("parley-data")
    settings = ServerSettings(upstream="local", data_dir=data, rate_limit_per_minute=600, rate_limit_burst=50,
                              max_concurrent_calls=4)
    with serve_app(create_app(settings, engine=local_engine(EngineSettings(ice_hosts=["127.0.0.1"])))) as url:
        yield url


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Chromium loops the file: one sentence, then a long pause for the answers.
    return speech_wav(tmp_path_factory.mktemp("wav"), SAID, lead_silence_ms=4000, tail_silence_ms=40000)


BUBBLES = "[...document.querySelectorAll('#transcript .bubble')].map(b => [b.classList[1], " \
          "b.querySelector('.who') ? b.querySelector('.who').textContent : '', b.querySelector('.text') ? " \
          "b.querySelector('.text').textContent : ''])"


async def test_practice_call_end_to_end(server: str, mic_wav: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with browser(mic_wav) as chromium:
        page = await chromium.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(server + "/")
        await until(page, "document.querySelector('#provider').textContent.includes('Northwind Cable')", 10)
        assert "$129.99" in await page.text_content("#bill")
        await page.click("#start")

        # Sarah picks up first
        greeting = await until(page, f"(() => {{ const b = {BUBBLES}; return b.length && b[0][0] === 'assistant' "
                                     "&& /Sarah/.test(b[0][2]) ? b[0] : null; })()")
        assert greeting[1] == "Sarah"
        # the user's words, then Sarah's answer with an offer
        said = await until(page, f"(() => {{ const u = {BUBBLES}.filter(b => b[0] === 'user' && b[2].length > 20); "
                                 "return u.length ? u[0][2] : null; })()")
        assert wer(SAID, said) <= 0.4, said
        offer = await until(page, f"(() => {{ const b = {BUBBLES}; const i = b.findIndex(x => x[0] === 'user'); "
                                  "const a = b.slice(i + 1).filter(x => x[0] === 'assistant' && /\\$\\d/.test(x[2])); "
                                  "return a.length ? a[0][2] : null; })()")
        assert re.search(r"\$\d+\.\d\d", offer), offer
        await until(page, "document.querySelector('#speaking').dataset.on === 'true'", 30)
        latency = await until(page, "/\\d+ ms/.test(document.querySelector('#latency').textContent) && "
                                    "document.querySelector('#latency').textContent", 30)
        assert int(latency.split()[0]) > 0
        await page.screenshot(path=str(ARTIFACTS / "negotiator-mid-call.png"), full_page=True)
        await until(page, "document.querySelector('#speaking').dataset.on === 'false'", 60)

        # the supervisor takes over, with his own name and voice
        await page.click("#supervisor")
        marco = await until(page, f"(() => {{ const m = {BUBBLES}.filter(b => b[1] === 'Marco'); "
                                  "return m.length && /Marco/.test(m[0][2]) ? m[0][2] : null; })()")
        assert "Marco" in marco
        voice = await page.evaluate("window.parleyCall.state.session.audio.output.voice")
        assert voice == "cedar"
        await until(page, "document.querySelector('#speaking').dataset.on === 'false'", 60)

        # accept by text; the outcome is recorded and shown
        await page.fill("#text", "Okay, I accept that offer.")
        await page.press("#text", "Enter")
        price = await until(page, "!document.querySelector('#outcome').hidden && "
                                  "document.querySelector('#outcome-price').textContent", 60)
        assert re.search(r"\$\d+\.\d\d", price), price
        # the typed line reads as sent, not greyed out as if still pending
        typed = await page.evaluate("[...document.querySelectorAll('#transcript .bubble.user')]"
                                    ".filter(b => b.textContent.includes('I accept')).map(b => b.className)")
        assert typed and all("pending" not in c for c in typed), typed
        call_id = await page.evaluate("window.parleyCall.state.callId")
        await page.click("#end")
        await until(page, "document.querySelector('#status').dataset.status === 'disconnected'", 10)
        assert "save" in (await page.text_content("#outcome-detail") or "")
        assert await page.evaluate("[document.querySelector('#mic-level').value, "
                                   "document.querySelector('#agent-level').value]") == [0, 0]  # no frozen meters

        # the call is stored, with its transcript, cost and recording
        async with httpx.AsyncClient(base_url=server, cookies=await _cookies(page)) as http:
            for _ in range(100):
                detail = (await http.get(f"/api/calls/{call_id}")).json()
                if detail.get("has_audio"):
                    break
                await asyncio.sleep(0.1)
            assert detail["has_audio"], "the page uploaded no recording"
            audio = await http.get(f"/api/calls/{call_id}/audio")
            assert audio.status_code == 200 and audio.headers["content-type"].startswith("audio/")
            assert len(audio.content) > 20_000  # tens of seconds of both voices
        assert detail["status"] != "active"
        assert detail["outcome"] and detail["outcome"]["new_monthly_price"] < 129.99
        assert [p["name"] for p in detail["personas"]][:2] == ["Sarah", "Marco"]
        assert detail["cost_usd"] > 0

        history = await chromium.new_page(viewport={"width": 1280, "height": 900})
        await history.context.add_cookies(await page.context.cookies())
        await history.goto(server + "/history.html")
        await until(history, f"document.querySelector('tr[data-call=\"{call_id}\"]') !== null", 10)
        await until(history, "document.querySelectorAll('#detail-transcript .bubble').length > 3", 10)
        row = await history.text_content(f'tr[data-call="{call_id}"]')
        assert "Sarah" in row and "Marco" in row and "$" in row
        md = await history.get_attribute("#dl-md", "href")
        assert md and md.endswith("format=md")
        assert await history.is_visible("#dl-audio")
        # what was said, not the agent's tool calls ("record_outcome({...})" is no line of Sarah's)
        said = await history.eval_on_selector_all("#detail-transcript .bubble .text", "ts => ts.map(t => t.textContent)")
        assert not [t for t in said if "record_outcome" in t or "transfer_to_supervisor" in t], said
        await history.screenshot(path=str(ARTIFACTS / "history.png"), full_page=True)
        await history.set_viewport_size({"width": 390, "height": 844})
        await until(history, "document.documentElement.scrollWidth <= window.innerWidth", 5,
                    context="document.documentElement.scrollWidth")
        await history.screenshot(path=str(ARTIFACTS / "history-call-phone.png"), full_page=True)


async def _cookies(page: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in await page.context.cookies()}


async def test_browser_direct_push_to_talk_and_text(server: str, mic_wav: Path) -> None:
    async with browser(mic_wav) as chromium:
        page = await chromium.new_page()
        await page.goto(server + "/")
        await page.click("summary:has-text('Audio settings')")
        await page.check("#direct")
        await page.check("#ptt")
        await page.click("#start")
        await until(page, "window.parleyCall && window.parleyCall.state.status === 'connected'", 30)
        assert await page.evaluate("window.parleyCall.options.mode") == "direct"
        # the greeting comes over the direct connection
        await until(page, f"{BUBBLES}.some(b => b[0] === 'assistant' && b[2].length > 10)", 30)
        answers = "window.parleyCall.state.items.filter(i => i.role === 'assistant' && i.status !== 'in_progress').length"
        before = await until(page, answers, 30)
        # push to talk: hold, speak (the fake microphone talks), release
        box = await page.query_selector("#mic")
        assert box is not None
        await box.hover()
        await page.mouse.down()
        await asyncio.sleep(5.0)
        await page.mouse.up()
        await until(page, f"{answers} > {before}", 60)
        # text input
        before = await page.evaluate(answers)
        await page.fill("#text", "What does that offer include?")
        await page.press("#text", "Enter")
        await until(page, f"{answers} > {before}", 30)
        call_id = await page.evaluate("window.parleyCall.state.callId")
        await page.click("#end")
        # the events the browser reported are stored
        async with httpx.AsyncClient(base_url=server, cookies=await _cookies(page)) as http:
            for _ in range(50):
                detail = (await http.get(f"/api/calls/{call_id}")).json()
                if sum(1 for i in detail.get("transcript", []) if i["role"] == "assistant") >= 2:
                    break
                await asyncio.sleep(0.2)
        assert sum(1 for i in detail["transcript"] if i["role"] == "assistant") >= 2


async def test_denied_microphone_is_explained_on_a_phone(server: str) -> None:
    async with browser(None, deny_microphone=True) as chromium:
        page = await chromium.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        await page.goto(server + "/")
        await page.click("#start")
        message = await until(page, "document.querySelector('#errors').textContent", 15)
        assert "denied" in message.lower() and "microphone" in message.lower()
        assert await page.get_attribute("#status", "data-status") == "disconnected"
        # phone width: one column, nothing wider than the screen
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "negotiator-phone.png"), full_page=True)


@pytest.fixture(scope="module")
def quiet_mic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A microphone in a quiet room (Chromium's own fake device beeps): the user types."""
    return write_wav(tmp_path_factory.mktemp("quiet") / "quiet.wav", np.zeros(24_000 * 5, dtype=np.float32), 24_000)


async def _connected_call(chromium: Any, server: str) -> Any:
    page = await chromium.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(server + "/")
    await until(page, "document.querySelector('#provider').textContent.includes('Northwind Cable')", 10)
    await page.click("#start")
    await until(page, "window.parleyCall && window.parleyCall.state.status === 'connected'", 30)
    return page


async def test_asking_for_a_supervisor_shows_no_error(server: str, quiet_mic: Path) -> None:
    """Pressing the button when Sarah is quiet: the server has nothing to cancel, and the page
    shows no protocol error for it ("Cancellation failed: no active response found")."""
    async with browser(quiet_mic) as chromium:
        page = await _connected_call(chromium, server)
        await until(page, f"{BUBBLES}.some(b => b[0] === 'assistant' && /Sarah/.test(b[2]))", 30)
        await until(page, "window.parleyCall.state.items.every(i => i.status !== 'in_progress') && "
                          "document.querySelector('#speaking').dataset.on === 'false'", 30)
        await page.click("#supervisor")
        await until(page, f"{BUBBLES}.some(b => b[1] === 'Marco' && /Marco/.test(b[2]))", 30, context=BUBBLES)
        await until(page, "document.querySelector('#speaking').dataset.on === 'false'", 60)
        assert await page.text_content("#errors") == ""
        assert await page.evaluate("window.parleyCall.state.errors") == []
        # our own cancel racing the end of a response is harmless: counted, not shown ...
        await page.evaluate("window.parleyCall.sendClientEvent({type: 'response.cancel'})")
        await until(page, "window.parleyCall.state.ignoredErrors === 1", 10)
        assert await page.text_content("#errors") == ""
        # ... while a real error still reaches the user
        await page.evaluate("window.parleyCall.sendClientEvent({type: 'conversation.item.truncate', "
                            "item_id: 'no_such_item', content_index: 0, audio_end_ms: 0})")
        shown = await until(page, "document.querySelector('#errors').textContent", 10)
        assert "no_such_item" in shown, shown
        await page.click("#end")


async def test_sarah_introduces_herself_once(server: str, quiet_mic: Path) -> None:
    """The user cuts into her greeting (typing while she speaks); her answer does not start with a
    second "Hi, this is Sarah with Northwind Cable"."""
    async with browser(quiet_mic) as chromium:
        page = await _connected_call(chromium, server)
        await until(page, "document.querySelector('#speaking').dataset.on === 'true'", 30)
        await asyncio.sleep(1.0)  # a second into "Thanks for calling Northwind Cable, this is Sarah..."
        await page.fill("#text", "My bill is too expensive.")
        await page.press("#text", "Enter")
        answer = await until(page, f"(() => {{ const b = {BUBBLES}; const i = b.findIndex(x => x[0] === 'user'); "
                                   "const a = b.slice(i + 1).filter(x => x[0] === 'assistant' && /\\$\\d/.test(x[2])); "
                                   "return i >= 0 && a.length ? a[0][2] : null; })()", 30, context=BUBBLES)
        greeting = (await page.evaluate(BUBBLES))[0]
        assert greeting[0] == "assistant" and greeting[2].startswith("Thanks for calling"), greeting
        assert not re.search(r"this is Sarah|Sarah with", answer), answer
        await page.click("#end")


async def test_the_agents_own_transfer_is_shown_as_marco(server: str, quiet_mic: Path) -> None:
    """The user asks Sarah for her supervisor (no button): her transfer tool hands the call over on
    the server, and the page learns who speaks from the server (the personas it records on the
    call), not from the instructions' prose."""
    async with browser(quiet_mic) as chromium:
        page = await _connected_call(chromium, server)
        await until(page, f"{BUBBLES}.some(b => b[0] === 'assistant' && /Sarah/.test(b[2]))", 30)
        await page.fill("#text", "I want to speak to your supervisor, please.")
        await page.press("#text", "Enter")
        marco = await until(page, f"{BUBBLES}.filter(b => b[1] === 'Marco').map(b => b[2])[0]", 60, context=BUBBLES)
        assert "Marco" in marco, marco
        bubbles = await page.evaluate(BUBBLES)
        assert bubbles[0][:2] == ["assistant", "Sarah"], bubbles  # her lines keep her name
        assert (await page.text_content("#speaking") or "").startswith("Marco")
        assert await page.is_disabled("#supervisor")  # Marco has nobody to hand over to
        call_id = await page.evaluate("window.parleyCall.state.callId")
        asked = await page.evaluate("performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)")
        assert f"/api/calls/{call_id}" in asked, asked
        await page.click("#end")
