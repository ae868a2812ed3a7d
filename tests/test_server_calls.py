"""Calls through the Parley server with aiortc peers, the real local engine as upstream and a real
SQLite file: the unified flow (POST /api/calls + sideband recording, tools, escalation, caps) and the
browser-direct flow (POST /api/session, the peer posts its offer upstream with the ek_ key and
reports its events)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.engine.app import create_app as create_engine_app
from parley.engine.speech.wer import wer
from parley.util.serving import serve_app
from support.rtc import RtcPeer, of_type
from support.server import (
    call_json,
    eventually,
    http,
    make_engine,
    make_settings,
    running_app,
    running_server,
    say_text,
    server_call,
    wait_done,
)
from support.speech import speech_pcm24k

pytestmark = pytest.mark.slow

BILL = "Hi, I would like to lower my monthly bill, it is too expensive."
# Spoken turns carry their intent in several words the scripted policy knows ("manager", "someone
# else", "in charge"; "yes", "I will take it", "sign me up"), and no word whisper could turn into
# one that blocks it ("that" heard as "not"), so one word misheard under load ("super minor" for
# "supervisor") changes nothing.
SUPERVISOR = "I want to talk to your manager, someone else in charge."
ACCEPT = "Yes please, I will take it. Sign me up."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(tmp_path_factory.mktemp("calls"), rate_limit_per_minute=600, rate_limit_burst=100,
                             max_concurrent_calls=20)
    with running_server(settings) as url:
        yield url


async def _say(peer: RtcPeer, text: str, *, heard: bool = True) -> dict[str, Any]:
    """Speak `text`; the response to it (heard=True: after its audio finished playing)."""
    start = len(peer.events)
    peer.mic.say(speech_pcm24k(text))
    if heard:
        return await wait_done(peer, start)
    return await peer.wait_for(of_type("response.done"), timeout=60, start=start)


async def test_spoken_call_is_recorded_with_transfer_and_outcome(server: str) -> None:
    async with http(server) as c:
        await _spoken_call(c)


async def _spoken_call(c: httpx.AsyncClient) -> None:
    async with server_call(c) as (peer, call_id):
        # Sarah calls transfer_to_supervisor; the server answers it, switches to Marco, asks for a response
        first = await _say(peer, SUPERVISOR, heard=False)  # Marco's audio follows Sarah's without a gap
        assert "supervisor" in first["response"]["output"][0]["content"][0]["transcript"]
        updated = await peer.wait_for(lambda e: e["type"] == "session.updated"
                                      and "Marco" in e["session"]["instructions"], timeout=30)
        voiced = await peer.wait_for(lambda e: e["type"] == "session.updated"
                                     and e["session"]["audio"]["output"]["voice"] == "cedar", timeout=30)
        assert peer.events.index(voiced) > peer.events.index(updated)
        intro = await wait_done(peer, peer.events.index(updated))
        assert "Marco" in intro["response"]["output"][0]["content"][0]["transcript"]
        # accepting: Marco calls record_outcome, the server stores it and asks Marco to close the call
        start = len(peer.events)
        await _say(peer, ACCEPT, heard=False)
        answered = await peer.wait_for(lambda e: e["type"] == "conversation.item.added"
                                       and e["item"]["type"] == "function_call_output", timeout=30, start=start)
        await peer.wait_for(of_type("response.done"), start=peer.events.index(answered))

        call = await eventually(lambda: _with_outcome(c, call_id), timeout=15)
        r = await c.post(f"/api/calls/{call_id}/hangup")
        assert r.json() == {"call_id": call_id, "status": "ended", "end_reason": "hangup"}

    call = await call_json(c, call_id)
    assert call["kind"] == "server" and call["status"] == "ended" and call["end_reason"] == "hangup"
    assert [p["id"] for p in call["personas"]] == ["negotiator/sarah", "negotiator/marco"]
    outcome = call["outcome"]
    assert outcome["old_monthly_price"] == 129.99
    assert 0 < outcome["new_monthly_price"] < 129.99
    assert outcome["monthly_savings"] == round(129.99 - outcome["new_monthly_price"], 2)
    assert outcome["accepted_by"] == "Marco"

    items = call["transcript"]
    said = [(i["role"], i["kind"]) for i in items]
    # both sides, in the order they spoke: user, Sarah + transfer, Marco, user, Marco + outcome, Marco
    users = [i for i in items if i["role"] == "user"]
    assert [round(wer(t, u["text"]), 2) <= 0.35 for t, u in zip([SUPERVISOR, ACCEPT], users, strict=True)] \
        == [True] * 2, [u["text"] for u in users]
    assert said.index(("assistant", "function_call")) < said.index(("tool", "function_call_output"))
    transfer = next(i for i in items if i["kind"] == "function_call")
    assert transfer["data"]["name"] == "transfer_to_supervisor" and transfer["persona"] == "negotiator/sarah"
    speakers = [i["speaker"] for i in items if i["kind"] == "message"]
    assert speakers == ["You", "Sarah", "Marco", "You", "Marco", "Marco"]
    recorded = next(i for i in items if i["kind"] == "function_call" and i["data"]["name"] == "record_outcome")
    assert recorded["persona"] == "negotiator/marco"
    assert all(i["status"] in ("completed", "truncated") for i in items)

    # usage and cost per response, adding up to the call's totals
    responses = [r for r in call["responses"] if r["kind"] == "response"]
    assert len(responses) >= 4  # Sarah: transfer; Marco: introduction with an offer, acceptance, closing
    assert {r["persona"] for r in responses} == {"negotiator/sarah", "negotiator/marco"}
    assert call["usage"]["output_tokens"] == sum(r["output_tokens"] for r in call["responses"])
    assert call["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in call["responses"]), abs=1e-5)
    assert call["cost_usd"] > 0
    assert any(r["kind"] == "transcription" for r in call["responses"])

    md = await c.get(f"/api/calls/{call_id}/transcript", headers={"accept": "text/markdown"})
    assert md.headers["content-type"].startswith("text/markdown")
    assert "**Sarah:**" in md.text and "**Marco:**" in md.text and "Sarah → Marco" in md.text
    assert "Outcome: $129.99 →" in md.text
    js = await c.get(f"/api/calls/{call_id}/transcript?format=json")
    assert [i["item_id"] for i in js.json()["transcript"]] == [i["item_id"] for i in items]
    listed = (await c.get("/api/calls")).json()
    assert call_id in [x["id"] for x in listed]


async def _with_outcome(c: httpx.AsyncClient, call_id: str) -> dict[str, Any] | None:
    call = await call_json(c, call_id)
    closing_done = sum(1 for r in call["responses"] if r["kind"] == "response") >= 4
    return call if call["outcome"] and closing_done else None


async def test_escalate_switches_the_agent_mid_call(server: str) -> None:
    async with http(server) as c, server_call(c) as (peer, call_id):
        start = say_text(peer, "Hi, my bill is too high.")
        await peer.wait_for(of_type("response.done"), start=start)
        start = say_text(peer, "Tell me more about my plan and what else you can do for me today.")
        await peer.wait_for(of_type("response.created"), start=start)
        r = await c.post(f"/api/calls/{call_id}/escalate")  # while Sarah is speaking
        assert r.status_code == 200, r.text
        assert r.json()["persona"]["name"] == "Marco"
        updated = await peer.wait_for(lambda e: e["type"] == "session.updated"
                                      and "Marco" in e["session"]["instructions"], start=start)
        created = await peer.wait_for(of_type("response.created"), start=peer.events.index(updated))
        done = await peer.wait_for(lambda e: e["type"] == "response.done"
                                   and e["response"]["id"] == created["response"]["id"], start=start)
        assert "Marco" in done["response"]["output"][0]["content"][0]["transcript"]
        r = await c.post(f"/api/calls/{call_id}/escalate")
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_supervisor"
        r = await c.post(f"/api/calls/{call_id}/events", json={"events": []})
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_direct_call"
        # the sideband (and so the record) may trail the data channel by a moment
        call = await eventually(lambda: _last_speaker(c, call_id, "Marco"))
        assert [p["name"] for p in call["personas"]] == ["Sarah", "Marco"]
        notes = [i for i in call["transcript"] if i["role"] == "system"]
        assert notes and "Sarah has transferred this call to you" in notes[0]["text"]
        said = [(i["speaker"], i["status"]) for i in call["transcript"] if i["role"] == "assistant"]
        assert said[-1] == ("Marco", "completed") and all(who == "Sarah" for who, _ in said[:-1]), said


async def _last_speaker(c: httpx.AsyncClient, call_id: str, speaker: str) -> dict[str, Any] | None:
    call = await call_json(c, call_id)
    return call if call["transcript"] and call["transcript"][-1]["speaker"] == speaker else None


async def test_peer_hangup_ends_the_record(server: str) -> None:
    async with http(server) as c:
        async with server_call(c) as (peer, call_id):
            await peer.wait_for(of_type("response.done"), start=say_text(peer, "Hello there."))
        # the peer closed its connection: the engine ends the call, the sideband closes, the record ends
        call = await eventually(lambda: _ended(c, call_id), timeout=45)
        assert call["end_reason"].startswith("upstream_closed")
        assert [i["role"] for i in call["transcript"]] == ["user", "assistant"]


async def _ended(c: httpx.AsyncClient, call_id: str) -> dict[str, Any] | None:
    call = await call_json(c, call_id)
    return call if call["status"] == "ended" else None


@pytest.mark.parametrize(("caps", "reason"), [
    ({"max_call_seconds": 3.0}, "max_duration"),
    ({"max_call_cost_usd": 0.0001}, "max_cost"),
    ({"daily_cost_cap_usd": 0.0001}, "daily_cost_cap"),
])
async def test_caps_end_calls_and_record_why(tmp_path: Path, caps: dict[str, float], reason: str) -> None:
    settings = make_settings(tmp_path, **caps)
    with running_server(settings) as url:
        async with http(url) as c, server_call(c) as (peer, call_id):
            if reason != "max_duration":
                say_text(peer, "Hi, my bill is too high.")
            call = await eventually(lambda: _ended(c, call_id), timeout=30)
            assert call["end_reason"] == reason
            metrics = (await c.get("/metrics")).text
            assert f'parley_caps_total{{cap="{reason}"}} 1' in metrics
            if reason == "daily_cost_cap":  # and no new call today
                r = await c.post("/api/session", json={})
                assert r.status_code == 429 and r.json()["error"]["code"] == "daily_cost_cap"
                assert int(r.headers["retry-after"]) > 0
        # the upstream call is gone too
        async with httpx.AsyncClient() as plain:
            engine_health = (await plain.get(f"{url}/v1/realtime/healthz")).json()
        assert engine_health["calls"] == 0


async def test_calls_through_an_engine_by_url(tmp_path: Path) -> None:
    with serve_app(create_engine_app(make_engine())) as engine_url:
        settings = make_settings(tmp_path, upstream="url", upstream_url=f"{engine_url}/v1",
                                 upstream_api_key="sk-server-key")
        with running_server(settings) as url:
            async with http(url) as c:
                async with server_call(c) as (peer, call_id):
                    await peer.wait_for(of_type("response.done"), start=say_text(peer, "Hi, my bill is too high."))
                    call = await eventually(lambda: _has_items(c, call_id, 2))
                    assert [i["speaker"] for i in call["transcript"]] == ["You", "Sarah"]
                    assert (await c.post(f"/api/calls/{call_id}/hangup")).status_code == 200
                session = (await c.post("/api/session", json={})).json()
                assert session["calls_url"] == f"{engine_url}/v1/realtime/calls"


async def _has_items(c: httpx.AsyncClient, call_id: str, n: int) -> dict[str, Any] | None:
    call = await call_json(c, call_id)
    return call if len(call["transcript"]) >= n and call["responses"] else None


async def test_direct_webrtc_call_with_the_ephemeral_key_is_reported_and_stored(server: str) -> None:
    async with http(server) as c:
        key = (await c.post("/api/session", json={"persona": "negotiator/sarah"})).json()
        peer = RtcPeer()
        try:
            async with httpx.AsyncClient(timeout=30) as upstream:
                r = await upstream.post(key["calls_url"], content=await peer.offer(),
                                        headers={"authorization": f"Bearer {key['value']}",
                                                 "content-type": "application/sdp"})
            assert r.status_code == 201, r.text
            rtc_id = r.headers["location"].rsplit("/", 1)[1]
            await peer.answer(r.text)
            await peer.wait_for(of_type("session.created"))
            peer.mic.say(speech_pcm24k(BILL))
            await peer.wait_for(of_type("response.done"), timeout=60)
            # the browser relays what its data channel delivered (audio deltas and all: the server drops them)
            events = list(peer.events)
            half = len(events) // 2
            r1 = await c.post(key["events_url"], json={"events": events[:half], "upstream_call_id": rtc_id})
            r2 = await c.post(key["events_url"], json={"events": events[half:]})
            assert r1.status_code == r2.status_code == 200, (r1.text, r2.text)
            assert r1.json()["accepted"] + r2.json()["accepted"] > 5
            assert r2.json()["status"] == "active"
            call = await call_json(c, key["call_id"])
            assert call["kind"] == "direct"
            assert [i["speaker"] for i in call["transcript"]] == ["You", "Sarah"]
            assert wer(BILL, call["transcript"][0]["text"]) <= 0.35
            assert call["cost_usd"] > 0
            # hanging up through the server ends the upstream call it was told about
            r = await c.post(f"/api/calls/{key['call_id']}/hangup")
            assert r.json()["end_reason"] == "hangup"
            r = await c.post(key["events_url"], json={"events": events[:1]})
            assert r.status_code == 409
            await asyncio.sleep(0.5)
            assert (await c.get("/v1/realtime/healthz")).json()["calls"] == 0
        finally:
            await peer.close()


@pytest.mark.parametrize("form", ["sdp", "multipart"])
async def test_browser_style_offers(server: str, form: str) -> None:
    """A browser posts raw application/sdp (persona in the query) and reads the answer and the Location;
    a form posts multipart sdp + persona."""
    async with http(server) as c:
        peer = RtcPeer()
        try:
            offer = await peer.offer()
            if form == "sdp":
                r = await c.post("/api/calls", params={"persona": "negotiator/marco"}, content=offer,
                                 headers={"content-type": "application/sdp"})
                assert r.headers["content-type"] == "application/sdp"
                answer = r.text
            else:
                r = await c.post("/api/calls", files={"sdp": (None, offer), "persona": (None, "negotiator/marco")})
                answer = r.text
            assert r.status_code == 201, r.text
            call_id = r.headers["x-parley-call-id"]
            assert r.headers["location"] == f"/api/calls/{call_id}"
            assert answer.startswith("v=0")
            await peer.answer(answer)
            created = await peer.wait_for(of_type("session.created"))
            assert "Marco" in created["session"]["instructions"]
            done = await peer.wait_for(of_type("response.done"), start=say_text(peer, "Hello?"))
            assert "Marco" in str(done["response"]["output"])
            await eventually(lambda: _has_items(c, call_id, 2))
            assert (await c.post(f"/api/calls/{call_id}/hangup")).json()["status"] == "ended"
            call = await call_json(c, call_id)
            assert call["persona"] == "negotiator/marco" and len(call["transcript"]) == 2
        finally:
            await peer.close()


async def test_sideband_reconnects_after_a_network_drop(tmp_path: Path) -> None:
    with running_app(make_settings(tmp_path)) as (url, app):
        async with http(url) as c, server_call(c) as (peer, call_id):
            await peer.wait_for(of_type("response.done"), start=say_text(peer, "Hi, my bill is too high."))
            await eventually(lambda: _has_items(c, call_id, 2))
            live = app.state.server.calls.live[call_id]
            first = live.conn
            # the sideband's TCP connection dies without a close handshake; the call itself goes on
            live.task.get_loop().call_soon_threadsafe(first._connection.transport.abort)  # on the server's loop
            await eventually(lambda: _reconnected(app, call_id, first), timeout=10)
            await peer.wait_for(of_type("response.done"), start=say_text(peer, "I have been a customer for six years."))
            call = await eventually(lambda: _has_items(c, call_id, 4))
            assert [i["speaker"] for i in call["transcript"]] == ["You", "Sarah", "You", "Sarah"]
            assert call["status"] == "active"


async def _reconnected(app: Any, call_id: str, old: Any) -> bool:
    live = app.state.server.calls.live.get(call_id)
    return live is not None and live.conn is not old
