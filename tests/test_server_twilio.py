"""Phone calls through Twilio Media Streams, end to end on loopback: a real `parley serve` app on the
local engine, a peer that speaks Twilio's protocol over a real WebSocket (spoken mu-law in, Sarah's
mu-law out with marks), the voice webhook signed with the `twilio` package, a real SQLite file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from parley.engine.speech.wer import wer
from support.server import eventually, http, make_settings, running_server
from support.twilio import TwilioPeer, energy_dbfs, ulaw_ms, ulaw_speech, voice_webhook

pytestmark = pytest.mark.slow

TOKEN = "twilio-test-auth-token"
AUTH = {"Authorization": "Bearer phone-user-token"}
BILL = "Hi, I would like to lower my monthly bill, it is too expensive."
INTERRUPT = "Wait, wait, what other offers do you have for me?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(tmp_path_factory.mktemp("twilio"), twilio_auth_token=TOKEN, auth="bearer",
                             auth_tokens={"phone": "phone-user-token"}, max_concurrent_calls=10,
                             twilio_numbers={"+15550002222": "negotiator/marco"})
    with running_server(settings) as url:
        yield url


async def _phone_call(client: httpx.AsyncClient) -> dict[str, Any]:
    calls = await eventually(lambda: _calls(client, status="active"), timeout=30)
    return calls[0]  # type: ignore[no-any-return]


async def _calls(client: httpx.AsyncClient, status: str | None = None) -> list[dict[str, Any]]:
    r = await client.get("/api/calls")
    assert r.status_code == 200, r.text
    return [c for c in r.json() if c["channel"] == "phone" and status in (None, c["status"])]


async def _detail(client: httpx.AsyncClient, call_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/calls/{call_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _said(call: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [i for i in call["transcript"] if i["role"] == role and i["kind"] == "message"]


async def test_a_phone_call_with_barge_in_and_keypad(server: str) -> None:
    async with http(server, headers=AUTH) as client:
        hook = await voice_webhook(client, server, auth_token=TOKEN)
        assert hook.status == 200, hook.body
        assert hook.verbs == ["Connect"]
        assert hook.stream_url == server.replace("http://", "ws://") + "/telephony/twilio/media"
        assert set(hook.parameters) == {"parley_token"}

        async with TwilioPeer.connect(hook.stream_url, hook.parameters) as peer:
            # Sarah speaks first: mu-law media with marks, echoed as they play.
            call = await _phone_call(client)
            assert call["caller"] == "+•••••••••67" and call["persona"] == "negotiator/sarah"
            await peer.wait_for(lambda: peer.played_marks, timeout=60)
            await eventually(lambda: _greeted(client, call["id"]), timeout=60)
            await peer.wait_for(lambda: peer.idle and peer.played, timeout=60)
            assert energy_dbfs(bytes(peer.played)) > -45  # audible speech, decoded as mu-law

            # A spoken turn; while her answer plays, the caller talks over her.
            heard_before = len(peer.played)
            peer.say(ulaw_speech(BILL))
            await peer.wait_for(lambda: len(peer.played) - heard_before >= 8 * 700, timeout=90)
            assert not peer.idle, "her answer is still playing"
            peer.say(ulaw_speech(INTERRUPT, lead_silence_ms=0))
            await peer.wait_for(lambda: peer.clears, timeout=30)
            played_ms = peer.played_at_clear[0] - ulaw_ms(heard_before)

            # The cut answer is truncated where the caller was when the server heard them speak.
            def cut(detail: dict[str, Any]) -> list[dict[str, Any]]:
                return [i for i in _said(detail, "assistant") if i["status"] == "truncated"]

            detail = await eventually(lambda: _when(client, call["id"], cut), timeout=30)
            truncated = cut(detail)[0]
            heard_ms = truncated["audio_end_ms"]
            # Heard as of the last mark echoed (one every 100 ms) before the server saw the speech start;
            # Twilio went on playing until the clear arrived.
            assert 0 < heard_ms <= played_ms + 1, (heard_ms, played_ms)
            assert played_ms - heard_ms < 800, (heard_ms, played_ms)

            # Her answer to the interruption plays out; then a keypad digit reaches her.
            answers = len(_said(detail, "assistant"))
            detail = await eventually(lambda: _when(client, call["id"], lambda d: len(
                [i for i in _said(d, "assistant") if i["status"] == "completed"]) >= answers), timeout=90)
            await peer.wait_for(lambda: peer.idle and not peer.saying, timeout=60)
            assistant_before = len(_said(detail, "assistant"))
            await peer.dtmf("1")
            detail = await eventually(lambda: _when(client, call["id"], lambda d: any(
                i["text"] == "[keypad] 1" for i in _said(d, "user"))), timeout=30)
            detail = await eventually(lambda: _when(client, call["id"], lambda d: len(
                _said(d, "assistant")) > assistant_before), timeout=60)
            await peer.stop()
            await peer.wait_for(lambda: peer.closed is not None, timeout=15)

        ended = await eventually(lambda: _when(client, call["id"], lambda d: d["status"] == "ended"), timeout=15)
        assert ended["end_reason"] == "caller_hangup"
        assert ended["channel"] == "phone" and ended["caller"] == "+•••••••••67"
        users = [i["text"] for i in _said(ended, "user")]
        assert wer(BILL, users[0]) <= 0.5, users
        assert "[keypad] 1" in users
        assert all(i["text"] for i in _said(ended, "assistant")), ended["transcript"]
        assert ended["usage"]["output_tokens"] > 0
        listed = await _calls(client)
        assert listed[0]["id"] == call["id"] and listed[0]["caller"] == "+•••••••••67"
        markdown = (await client.get(f"/api/calls/{call['id']}/transcript?format=md")).text
        assert "by phone from +•••••••••67" in markdown and "5551234567" not in markdown


async def _greeted(client: httpx.AsyncClient, call_id: str) -> bool:
    return any(i["status"] == "completed" for i in _said(await _detail(client, call_id), "assistant"))


async def _when(client: httpx.AsyncClient, call_id: str, check: Any) -> dict[str, Any] | None:
    detail = await _detail(client, call_id)
    return detail if check(detail) else None


async def test_the_webhook_needs_twilios_signature(server: str) -> None:
    async with http(server) as client:
        bad = await voice_webhook(client, server, auth_token=None, signature="bm90IGEgc2lnbmF0dXJl")
        assert bad.status == 403 and json.loads(bad.body)["error"]["code"] == "bad_signature"
        missing = await voice_webhook(client, server, auth_token=None)
        assert missing.status == 403 and json.loads(missing.body)["error"]["code"] == "bad_signature"
        other_token = await voice_webhook(client, server, auth_token="someone-elses-token")
        assert other_token.status == 403
        # the persona by the number called, or by a query parameter (signed as part of the URL)
        good = await voice_webhook(client, server, auth_token=TOKEN, called="+15550002222")
        assert good.status == 200 and good.stream_url
        by_query = await voice_webhook(client, server, auth_token=TOKEN, query="persona=negotiator/marco")
        assert by_query.status == 200
        unknown = await voice_webhook(client, server, auth_token=TOKEN, query="persona=nobody/here")
        assert unknown.status == 400 and json.loads(unknown.body)["error"]["code"] == "unknown_persona"
        r = await client.post("/telephony/twilio/voice", json={"From": "+1"})
        assert r.status_code == 415


async def test_without_a_token_the_webhook_is_off_unless_opened(tmp_path: Any) -> None:
    with running_server(make_settings(tmp_path / "off")) as url:
        async with http(url) as client:
            off = await voice_webhook(client, url, auth_token=None)
            assert off.status == 403 and json.loads(off.body)["error"]["code"] == "twilio_not_configured"
    with running_server(make_settings(tmp_path / "open", twilio_insecure=True,
                                      public_url="https://parley.example.org")) as url:
        async with http(url) as client:
            opened = await voice_webhook(client, url, auth_token=None)
            assert opened.status == 200
            assert opened.stream_url == "wss://parley.example.org/telephony/twilio/media"


async def _refused(url: str, parameters: dict[str, str], before: tuple[str, ...] = ()) -> Any:
    async with websockets.connect(url) as ws:
        for raw in before:
            await ws.send(raw)
        peer = TwilioPeer(ws)
        await peer.send({"event": "connected", "protocol": "Call"})
        await peer.send({"event": "start", "sequenceNumber": "1", "streamSid": peer.sid, "start": {
            "streamSid": peer.sid, "callSid": "CA9", "accountSid": "AC9", "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": parameters}})
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 15)
        return closed.value.rcvd


async def test_the_media_socket_takes_only_streams_a_signed_webhook_started(server: str) -> None:
    media = server.replace("http://", "ws://") + "/telephony/twilio/media"
    for parameters in ({}, {"parley_token": "made-up"}):
        close = await _refused(media, parameters)
        assert close is not None and close.code == 1008 and "token" in close.reason
    async with http(server, headers=AUTH) as client:
        hook = await voice_webhook(client, server, auth_token=TOKEN)
        # garbage before the start is dropped; the stream with its token is taken
        async with websockets.connect(media) as ws:
            for raw in ("{not json", json.dumps({"event": "media", "streamSid": "MZx", "media": {"payload": ""}})):
                await ws.send(raw)
            peer = TwilioPeer(ws)
            await peer.start(hook.parameters)
            # bad frames mid-call: dropped and counted, the call goes on
            await peer.send({"event": "media", "sequenceNumber": "1", "streamSid": peer.sid,
                             "media": {"payload": "/w=="}})  # out of order
            await peer.send({"event": "media", "sequenceNumber": "999999", "streamSid": "MZsomeoneelse",
                             "media": {"payload": "/w=="}})
            await ws.send("x" * 70_000)
            await ws.send("[]")
            await peer.wait_for(lambda: peer.played_marks, timeout=60)  # Sarah's greeting still plays
            metrics = (await client.get("/metrics")).text
            for reason in ("invalid_json", "before_start", "out_of_order", "unknown_stream", "oversized"):
                assert f'parley_phone_frames_dropped_total{{reason="{reason}"}}' in metrics, reason
            # the API's hangup ends a phone call like any other
            call = await _phone_call(client)
            r = await client.post(f"/api/calls/{call['id']}/hangup")
            assert r.status_code == 200 and r.json()["status"] == "ended", r.text
            await peer.wait_for(lambda: peer.closed is not None, timeout=15)
            await peer.close()
            assert (await _detail(client, call["id"]))["end_reason"] == "hangup"
        # the token was good once
        close = await _refused(media, hook.parameters)
        assert close is not None and close.code == 1008
