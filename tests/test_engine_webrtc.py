"""The local engine over WebRTC: aiortc peers created through the openai SDK, sideband control."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI

from parley.apps.local import local_engine
from parley.apps.scenarios import get_persona
from parley.engine.app import Engine, EngineSettings, create_app
from parley.engine.speech.wer import wer
from parley.util.serving import serve_app
from support.conformance import validate_server_event
from support.rtc import RtcPeer, of_type
from support.speech import speech_pcm24k

pytestmark = pytest.mark.slow

BILL = "Hi, I would like to lower my monthly bill, it is too expensive."


@pytest.fixture(scope="module")
def rtc_engine() -> Iterator[tuple[str, Engine]]:
    engine = local_engine(EngineSettings(ice_hosts=["127.0.0.1"]))
    with serve_app(create_app(engine)) as url:
        yield url, engine


def sarah_session() -> dict[str, Any]:
    persona = get_persona("negotiator/sarah")
    return {"type": "realtime", "instructions": persona.instructions,
            "audio": {"input": {"transcription": {"model": "whisper-1"}}, "output": {"voice": persona.voice}}}


@pytest.fixture
async def call(rtc_engine: tuple[str, Engine]) -> AsyncIterator[tuple[RtcPeer, str, AsyncOpenAI]]:
    url, _engine = rtc_engine
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-local")
    peer = RtcPeer()
    raw = await client.realtime.calls.with_raw_response.create(sdp=await peer.offer(), session=sarah_session())  # type: ignore[arg-type]
    assert raw.http_response.status_code == 201
    location = raw.headers["location"]
    assert location.startswith("/v1/realtime/calls/rtc_")
    await peer.answer(raw.http_response.text)
    try:
        yield peer, location.rsplit("/", 1)[1], client
    finally:
        await peer.close()


async def test_spoken_turn_over_webrtc(call: tuple[RtcPeer, str, AsyncOpenAI]) -> None:
    peer, _call_id, _client = call
    created = await peer.wait_for(of_type("session.created"))
    assert created["session"]["audio"]["output"]["voice"] == get_persona("negotiator/sarah").voice
    peer.mic.say(speech_pcm24k(BILL))
    done = await peer.wait_for(of_type("response.done"), timeout=60)
    stopped = await peer.wait_for(of_type("output_audio_buffer.stopped"), timeout=30)
    assert stopped["response_id"] == done["response"]["id"]
    for event in peer.events:
        validate_server_event(event)
    types = [e["type"] for e in peer.events]
    assert "response.output_audio.delta" not in types  # audio is on the track
    assert types.index("output_audio_buffer.started") < types.index("output_audio_buffer.stopped")
    transcript = next(e for e in peer.events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert wer(BILL, transcript["transcript"]) <= 0.25, transcript["transcript"]
    answer = done["response"]["output"][0]["content"][0]["transcript"]
    assert answer
    # Sarah's voice arrived on the media track, well above silence
    speaking = [level for _, level in peer.heard if level > -40]
    assert len(speaking) > 25  # more than half a second of speech


async def test_sideband_sees_the_call_and_changes_the_agent(call: tuple[RtcPeer, str, AsyncOpenAI]) -> None:
    peer, call_id, client = call
    await peer.wait_for(of_type("session.created"))
    async with client.realtime.connect(call_id=call_id) as sideband:  # type: ignore[call-arg]
        first = json.loads(await sideband.recv_bytes())
        assert first["type"] == "session.created"
        marco = get_persona("negotiator/marco")
        await sideband.session.update(session={"type": "realtime", "instructions": marco.instructions,  # type: ignore[arg-type]
                                               "audio": {"output": {"voice": marco.voice}}})
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["type"] != "session.updated":
            seen.append(json.loads(await asyncio.wait_for(sideband.recv_bytes(), 10)))
        start = len(peer.events)
        peer.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Who am I talking to?"}]}})
        await sideband.response.create()
        done = await peer.wait_for(of_type("response.done"), start=start, timeout=30)
        while seen[-1]["type"] != "response.done":
            seen.append(json.loads(await asyncio.wait_for(sideband.recv_bytes(), 10)))
    answer = done["response"]["output"][0]["content"][0]["transcript"]
    assert "Marco" in answer, answer
    # the sideband saw the same events as the browser's channel, in the same order
    peer_ids = [e["event_id"] for e in peer.events if e["type"] != "session.created"]
    side_ids = [e["event_id"] for e in seen if e["type"] != "session.created"]
    assert side_ids == peer_ids[peer_ids.index(side_ids[0]):][: len(side_ids)]


async def test_barge_in_truncates_at_what_was_played(call: tuple[RtcPeer, str, AsyncOpenAI]) -> None:
    peer, _call_id, _client = call
    await peer.wait_for(of_type("session.created"))
    # A long answer: ask by text, then talk over it once it is audible.
    peer.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "Tell me everything about my plan and your offers."}]}})
    peer.send({"type": "response.create", "response": {"instructions": get_persona("negotiator/sarah").instructions}})
    started = await peer.wait_for(of_type("output_audio_buffer.started"), timeout=30)
    await asyncio.sleep(1.0)
    mark = len(peer.events)
    peer.mic.say(speech_pcm24k("Wait, stop, I have a question."))
    cleared = await peer.wait_for(of_type("output_audio_buffer.cleared"), start=mark, timeout=30)
    truncated = await peer.wait_for(of_type("conversation.item.truncated"), start=mark, timeout=10)
    assert cleared["response_id"] == started["response_id"]
    done = next(e for e in peer.events if e["type"] == "response.done" and e["response"]["id"] == started["response_id"])
    item = done["response"]["output"][0]
    assert truncated["item_id"] == item["id"]
    # about a second had been played when the user's speech was detected
    assert 700 <= truncated["audio_end_ms"] <= 3000, truncated


async def test_output_audio_buffer_clear_from_the_client(call: tuple[RtcPeer, str, AsyncOpenAI]) -> None:
    peer, _call_id, _client = call
    await peer.wait_for(of_type("session.created"))
    peer.send({"type": "response.create"})
    started = await peer.wait_for(of_type("output_audio_buffer.started"), timeout=30)
    await asyncio.sleep(0.3)
    peer.send({"type": "output_audio_buffer.clear"})
    cleared = await peer.wait_for(of_type("output_audio_buffer.cleared"), timeout=10)
    assert cleared["response_id"] == started["response_id"]


async def test_hangup_and_peer_leaving_end_the_call(rtc_engine: tuple[str, Engine]) -> None:
    url, engine = rtc_engine
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-local")
    for how in ("hangup", "peer_leaves"):
        peer = RtcPeer()
        raw = await client.realtime.calls.with_raw_response.create(sdp=await peer.offer())
        call_id = raw.headers["location"].rsplit("/", 1)[1]
        await peer.answer(raw.http_response.text)
        await peer.wait_for(of_type("session.created"))
        assert call_id in engine.calls
        if how == "hangup":
            async with httpx.AsyncClient(base_url=url) as http:
                r = await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers={"Authorization": "Bearer sk"})
                assert r.status_code == 200
        else:
            await peer.close()
        for _ in range(200):
            if call_id not in engine.calls:
                break
            await asyncio.sleep(0.05)
        assert call_id not in engine.calls, how
        await peer.close()
    assert not engine.runners


async def test_bad_requests(rtc_engine: tuple[str, Engine]) -> None:
    url, _engine = rtc_engine
    async with httpx.AsyncClient(base_url=url) as http:
        r = await http.post("/v1/realtime/calls", content="v=0 nonsense", headers={
            "Authorization": "Bearer sk", "Content-Type": "application/sdp"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "sdp"
        r = await http.post("/v1/realtime/calls", content="hello", headers={"Content-Type": "application/sdp"})
        assert r.status_code == 401
        r = await http.post("/v1/realtime/calls/rtc_nope/hangup", headers={"Authorization": "Bearer sk"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "call_id_not_found"
        r = await http.post("/v1/realtime/calls", headers={"Authorization": "Bearer sk"},
                            files={"sdp": (None, "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"),
                                   "session": (None, json.dumps({"type": "realtime", "bogus": 1}))})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_parameter"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url.replace("http", "ws") + "/v1/realtime?call_id=rtc_nope",
                                      additional_headers={"Authorization": "Bearer sk"}):
            pass
    assert refused.value.response.status_code == 404


async def test_answer_offers_only_the_pinned_host(rtc_engine: tuple[str, Engine]) -> None:
    peer = RtcPeer()
    try:
        async with httpx.AsyncClient(base_url=rtc_engine[0]) as http:
            r = await http.post("/v1/realtime/calls", content=await peer.offer(), headers={
                "Authorization": "Bearer sk", "Content-Type": "application/sdp"})
    finally:
        await peer.close()
    assert r.status_code == 201 and r.headers["content-type"].startswith("application/sdp")
    candidates = [line for line in r.text.splitlines() if line.startswith("a=candidate")]
    assert candidates and all(" 127.0.0.1 " in c for c in candidates)


async def test_the_answer_is_opus_only_and_an_offer_without_opus_is_refused(rtc_engine: tuple[str, Engine]) -> None:
    from aiortc import RTCRtpSender

    async def post(peer: RtcPeer) -> httpx.Response:
        async with httpx.AsyncClient(base_url=rtc_engine[0]) as http:
            return await http.post("/v1/realtime/calls", content=await peer.offer(), headers={
                "Authorization": "Bearer sk", "Content-Type": "application/sdp"})

    peer = RtcPeer()  # aiortc offers Opus, G.722, PCMU and PCMA, like a browser
    try:
        r = await post(peer)
    finally:
        await peer.close()
    assert r.status_code == 201
    codecs = [line.split()[1] for line in r.text.splitlines() if line.startswith("a=rtpmap:")]
    assert [c for c in codecs if not c.startswith("opus/")] == [] and codecs  # as OpenAI answers

    peer = RtcPeer()
    pcmu = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/PCMU"]
    peer.pc.getTransceivers()[0].setCodecPreferences(pcmu)
    try:
        r = await post(peer)
    finally:
        await peer.close()
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_offer" and r.json()["error"]["param"] == "sdp"
