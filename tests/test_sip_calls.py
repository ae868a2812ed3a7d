"""Phone calls through SIP, offline: a SIP phone (aiosipua + RTP, tests/support/sip_phone.py) calls
the engine's SIP address; the engine fires the signed `realtime.call.incoming` webhook at a real
`parley serve` (the engine in process as its upstream), which accepts with Sarah's session and
records the call over the sideband. Everything on loopback, the real models."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from parley.audio.resample import resample
from parley.engine.app import Engine
from parley.engine.sip.signalling import incoming_call_webhook
from parley.util.serving import serve_app
from support.server import make_engine, make_settings, running_app, running_server, shared_speech
from support.sip_phone import SipPhone, bad_datagrams
from support.speech import speech_pcm24k

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
NUMBER = "+15550123"
TOKEN = "phone-user-token"
TRANSFER_TO = "tel:+15550100"
BILL = "Hi, I would like to lower my monthly bill, it is too expensive."


@dataclass
class Line:
    url: str  # the server
    engine: Engine
    sip: tuple[str, int]  # the engine's SIP address
    hooks: list[tuple[bytes, dict[str, str], int]]  # webhooks the engine sent: body, headers, server's status
    app: Any  # the server's app, for fault injection


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    """`parley serve` with the engine in process taking SIP on a free loopback port; its webhooks
    pass through a recording relay (so a test can replay one) to the server's /webhooks/openai."""
    engine = make_engine(sip_addr="127.0.0.1:0", sip_webhook_secret=SECRET)
    settings = make_settings(tmp_path_factory.mktemp("sip"), openai_webhook_secret=SECRET, auth="bearer",
                             auth_tokens={f"tel:{NUMBER}": TOKEN}, transfer_to=TRANSFER_TO,
                             rate_limit_burst=50, max_concurrent_calls=4)
    hooks: list[tuple[bytes, dict[str, str], int]] = []
    target: dict[str, str] = {}

    async def relay(request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-") or k == "content-type"}
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(target["url"], content=body, headers=headers)
        hooks.append((body, headers, r.status_code))
        return Response(r.content, status_code=r.status_code, media_type="application/json")

    with running_app(settings, engine=engine) as (url, app), \
            serve_app(Starlette(routes=[Route("/hook", relay, methods=["POST"])])) as relay_url:
        target["url"] = f"{url}/webhooks/openai"
        assert engine.sip is not None
        engine.sip.webhook_url = f"{relay_url}/hook"
        yield Line(url, engine, engine.sip.address, hooks, app)


@pytest.fixture
async def phone() -> AsyncIterator[SipPhone]:
    phone = await SipPhone.open(NUMBER)
    try:
        yield phone
    finally:
        await phone.close()


def api(line: Line) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=line.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"})


async def speech_end(phone: SipPhone, since: float, *, quiet_s: float = 1.2, timeout: float = 60.0) -> float:
    """Wait until the agent has spoken after `since` and then been quiet for `quiet_s`; when it began."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        began = phone.first_audible_after(since)
        if began is not None:
            last = max(h.at for h in phone.heard if h.at >= began and abs(h.pcm8k).max() > 300)
            if time.monotonic() - last > quiet_s:
                return began
        await asyncio.sleep(0.1)
    raise AssertionError("the agent said nothing")


async def transcribe(phone: SipPhone, since: float) -> str:
    heard = await shared_speech().transcribe(resample(phone.heard_24k(since), 24_000, 16_000), None, "en")
    return heard.text.lower()


async def wait_until(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def phone_call(client: httpx.AsyncClient, upstream_id: str | None = None) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        calls = (await client.get("/api/calls")).json()
        return calls[0] if calls and calls[0]["status"] == "active" else None
    return dict(await wait_until(find))


async def test_phone_call_end_to_end(line: Line, phone: SipPhone) -> None:
    start = time.monotonic()
    hooks = len(line.hooks)
    await phone.call(line.sip)
    await wait_until(lambda: _true(len(line.hooks) > hooks))  # the relay notes it once the server answered
    body, _headers, status = line.hooks[-1]
    assert status == 200 and b'"realtime.call.incoming"' in body and NUMBER.encode() in body
    async with api(line) as client:
        call = await phone_call(client)
        assert call["persona"] == "negotiator/sarah"

        # Sarah greets first: energy on the line, and whisper hears words in it.
        greeted = await speech_end(phone, start)
        greeting = await transcribe(phone, greeted)
        assert greeting.strip(), "the greeting was silent"
        assert any(w in greeting for w in ("sarah", "help", "calling", "thanks", "northwind")), greeting

        # A spoken sentence gets a spoken answer.
        said = await phone.say(speech_pcm24k(BILL))
        answered = await speech_end(phone, said)
        assert (await transcribe(phone, answered)).strip()

        # Both sides are in the history.
        async def recorded() -> dict[str, Any] | None:
            detail = (await client.get(f"/api/calls/{call['id']}")).json()
            roles = {i["role"] for i in detail["transcript"] if i["text"]}
            return detail if {"user", "assistant"} <= roles else None
        detail = await wait_until(recorded)
        user_text = " ".join(i["text"] for i in detail["transcript"] if i["role"] == "user").lower()
        assert "bill" in user_text or "monthly" in user_text, user_text

        # "Transfer me to a human": a SIP REFER reaches the phone.
        r = await client.post(f"/api/calls/{call['id']}/transfer")
        assert r.status_code == 200, r.text
        await asyncio.wait_for(phone.referred.wait(), 10)
        assert phone.refers == [TRANSFER_TO]

        # The caller's BYE ends the call and its recording.
        await phone.hang_up()

        async def ended() -> bool:
            return bool((await client.get(f"/api/calls/{call['id']}")).json()["status"] == "ended")
        await wait_until(ended)
        assert not line.engine.calls

    # The same webhook again is refused, and starts nothing.
    body, headers, _status = line.hooks[-1]
    async with httpx.AsyncClient(base_url=line.url, timeout=30) as raw:
        r = await raw.post("/webhooks/openai", content=body, headers=headers)
        assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate_webhook"
    assert not line.engine.calls


async def test_server_hangup_sends_bye(line: Line, phone: SipPhone) -> None:
    await phone.call(line.sip)
    async with api(line) as client:
        call = await phone_call(client)
        # Escalation works on a phone call as on a browser call (the sideband's session.update).
        r = await client.post(f"/api/calls/{call['id']}/escalate")
        assert r.status_code == 200 and "marco" in r.json()["persona"]["id"], r.text
        r = await client.post(f"/api/calls/{call['id']}/hangup")
        assert r.status_code == 200 and r.json()["status"] == "ended"
    await asyncio.wait_for(phone.bye_received.wait(), 10)
    await wait_until(lambda: _true(not line.engine.calls))


async def test_keypad_digit_reaches_the_sideband(line: Line, phone: SipPhone) -> None:
    await phone.call(line.sip)
    upstream_id = next(iter(line.engine.calls))
    key = line.engine.settings.api_keys[-1]  # the server's own key for its in-process engine
    ws_url = line.url.replace("http://", "ws://") + f"/v1/realtime?call_id={upstream_id}"
    async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        phone.send_digit("7")

        async def digit() -> dict[str, Any]:
            while True:
                event = json.loads(await ws.recv())
                if event["type"] == "input_audio_buffer.dtmf_event_received":
                    return dict(event)
        event = await asyncio.wait_for(digit(), 15)
        assert event["event"] == "7"
    await phone.hang_up()
    await wait_until(lambda: _true(not line.engine.calls))


async def test_a_webhook_that_failed_part_way_is_handled_on_retry(line: Line, phone: SipPhone) -> None:
    calls = line.app.state.server.calls
    start = calls.start_phone_call

    async def fails_once(*args: Any, **kwargs: Any) -> Any:
        # Fault injection: this attempt dies part-way (as on a database outage); the next is real.
        calls.start_phone_call = start
        raise RuntimeError("injected failure")

    calls.start_phone_call = fails_once
    hooks = len(line.hooks)
    await phone.call(line.sip)  # the engine retries the delivery, as OpenAI does: the retry is acted on
    await wait_until(lambda: _true(len(line.hooks) >= hooks + 2))  # the relay notes it once answered
    (first, _h, failed), (again, headers, answered) = line.hooks[hooks:hooks + 2]
    assert (failed, answered) == (500, 200) and first == again
    async with httpx.AsyncClient(base_url=line.url, timeout=30) as raw:
        r = await raw.post("/webhooks/openai", content=again, headers=headers)
        assert r.status_code == 409  # once handled, the same id is a replay again
    await phone.hang_up()
    await wait_until(lambda: _true(not line.engine.calls))


async def _true(value: bool) -> bool:
    return value


async def test_bad_signature_starts_nothing(line: Line) -> None:
    assert line.engine.sip is not None
    wrong = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    hook = incoming_call_webhook("rtc_forged", [{"name": "From", "value": f"<sip:{NUMBER}@127.0.0.1>"}], wrong)
    async with httpx.AsyncClient(base_url=line.url, timeout=30) as raw, api(line) as client:
        before = len((await client.get("/api/calls")).json())
        r = await raw.post("/webhooks/openai", content=hook.body, headers=hook.headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_webhook_signature"
        unsigned = {k: v for k, v in hook.headers.items() if k != "webhook-signature"}
        r = await raw.post("/webhooks/openai", content=hook.body, headers=unsigned)
        assert r.status_code == 400
        assert len((await client.get("/api/calls")).json()) == before
    assert not line.engine.calls


async def test_without_a_secret_the_webhook_is_off(tmp_path: Any) -> None:
    hook = incoming_call_webhook("rtc_any", [{"name": "From", "value": f"<sip:{NUMBER}@127.0.0.1>"}], SECRET)
    with running_server(make_settings(tmp_path)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as raw:
            r = await raw.post("/webhooks/openai", content=hook.body, headers=hook.headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "webhooks_not_configured"


async def test_malformed_sip_and_stray_rtp_are_dropped(line: Line, phone: SipPhone,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    assert line.engine.sip is not None
    dropped = line.engine.sip.dropped
    caplog.set_level(logging.INFO, logger="parley.engine.sip")
    before = dropped["sip_malformed"]
    for datagram in bad_datagrams():
        phone.transport._udp_transport.sendto(datagram, line.sip)  # type: ignore[union-attr]
    await wait_until(lambda: _true(dropped["sip_malformed"] >= before + len(bad_datagrams())))
    assert "malformed SIP" in caplog.text

    # The listener goes on: a call, and RTP to it from a stranger's socket is dropped.
    await phone.call(line.sip)
    stranger = await SipPhone.open("+15550999")
    try:
        assert phone.remote_rtp is not None
        stranger.send_packet(0, b"\xff" * 160, to=phone.remote_rtp)
        await wait_until(lambda: _true(dropped["rtp_stranger"] >= 1))
        assert "dropped RTP (stranger)" in caplog.text
    finally:
        await stranger.close()
    await phone.hang_up()
    await wait_until(lambda: _true(not line.engine.calls))


