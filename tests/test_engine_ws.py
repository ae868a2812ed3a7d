"""The local engine over WebSocket, driven by the official openai SDK (and raw websockets for beta)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI

from parley.apps.local import local_engine
from parley.apps.scenarios import get_persona
from parley.audio.levels import dbfs
from parley.audio.pcm import SAMPLE_RATE, float_to_pcm16
from parley.engine.app import EngineSettings, create_app
from parley.engine.speech.wer import wer
from parley.util.serving import serve_app
from support.chat_server import arun_chat_server
from support.realtime import audio_of, collect_until, is_type, recv_event, stream_pcm
from support.speech import silence, speech_pcm24k

pytestmark = pytest.mark.slow

BILL = "Hi, I would like to lower my monthly bill, it is too expensive."


def client(url: str, key: str = "sk-local-test") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{url}/v1", api_key=key)


def sarah_session(**audio_input: Any) -> dict[str, Any]:
    persona = get_persona("negotiator/sarah")
    return {
        "type": "realtime",
        "instructions": persona.instructions,
        "audio": {
            "input": {"transcription": {"model": "whisper-1", "language": "en"}, **audio_input},
            "output": {"voice": persona.voice},
        },
    }


async def test_sdk_spoken_turn_gets_sarahs_answer(engine_url: str) -> None:
    async with client(engine_url).realtime.connect(model="gpt-realtime") as conn:
        created = await recv_event(conn)
        assert created["type"] == "session.created"
        await conn.session.update(session=sarah_session())  # type: ignore[arg-type]
        updated = await collect_until(conn, is_type("session.updated"))
        assert updated[-1]["session"]["audio"]["input"]["transcription"]["model"] == "whisper-1"

        speech = np.concatenate([silence(300), speech_pcm24k(BILL), silence(1200)])
        sender = asyncio.create_task(stream_pcm(conn, speech))
        events = await collect_until(conn, is_type("response.done"), timeout=60)
        await sender

    types = [e["type"] for e in events]
    for expected in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                     "input_audio_buffer.committed", "conversation.item.added", "response.created",
                     "response.output_item.added", "response.content_part.added",
                     "response.output_audio.delta", "response.output_audio_transcript.delta",
                     "response.output_audio.done", "response.output_audio_transcript.done",
                     "response.content_part.done", "response.output_item.done", "response.done"):
        assert expected in types, (expected, types)
    # OpenAI's order: the turn, then the response lifecycle.
    assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.speech_stopped") \
        < types.index("input_audio_buffer.committed") < types.index("response.created")
    assert types.index("response.output_item.added") < types.index("response.content_part.added") \
        < types.index("response.output_audio.delta") < types.index("response.output_audio.done") \
        < types.index("response.content_part.done") < types.index("response.output_item.done") \
        < types.index("response.done")

    transcript = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert wer(BILL, transcript["transcript"]) <= 0.25, transcript["transcript"]
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["usage"]["output_token_details"]["audio_tokens"] > 0
    answer = done["output"][0]["content"][0]["transcript"]
    assert "$" in answer or "offer" in answer.lower() or "help" in answer.lower(), answer
    audio = audio_of(events)
    assert audio.size > SAMPLE_RATE  # more than a second of speech
    assert dbfs(audio) > -40


async def test_text_turn_and_manual_commit(engine_url: str) -> None:
    async with client(engine_url).realtime.connect(model="gpt-realtime") as conn:
        await recv_event(conn)
        await conn.session.update(session={**sarah_session(turn_detection=None), "output_modalities": ["text"]})  # type: ignore[arg-type]
        await collect_until(conn, is_type("session.updated"))
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                   "content": [{"type": "input_text", "text": "Hello?"}]})
        added = await collect_until(conn, is_type("conversation.item.done"))
        assert added[0]["type"] == "conversation.item.added"
        await conn.response.create()
        events = await collect_until(conn, is_type("response.done"))
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text and events[-1]["response"]["output"][0]["content"][0]["text"] == text
        assert not any(e["type"] == "response.output_audio.delta" for e in events)

        # push-to-talk: append, commit, respond
        await stream_pcm(conn, np.concatenate([speech_pcm24k(BILL), silence(200)]), speed=4)
        await conn.input_audio_buffer.commit()
        events = await collect_until(conn, is_type("input_audio_buffer.committed"))
        item_id = events[-1]["item_id"]
        await conn.response.create()
        events = await collect_until(conn, is_type("response.done"), timeout=60)
        completed = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
        assert completed and completed[0]["item_id"] == item_id
        assert events[-1]["response"]["status"] == "completed"

        # committing an empty buffer is an error, and the session goes on
        await conn.input_audio_buffer.commit()
        err = await collect_until(conn, is_type("error"))
        assert err[-1]["error"]["code"] == "input_audio_buffer_commit_empty"


async def test_one_active_response_cancel_and_truncate(engine_url: str) -> None:
    async with client(engine_url).realtime.connect(model="gpt-realtime") as conn:
        await recv_event(conn)
        await conn.session.update(session=sarah_session(turn_detection=None))  # type: ignore[arg-type]
        await collect_until(conn, is_type("session.updated"))
        await conn.response.cancel()
        err = await collect_until(conn, is_type("error"))
        assert err[-1]["error"]["code"] == "response_cancel_not_active"

        await conn.send({"type": "response.create"})
        await conn.send({"type": "response.create", "event_id": "second"})
        events = await collect_until(conn, is_type("response.done"))
        errors = [e for e in events if e["type"] == "error"]
        assert errors and errors[0]["error"]["code"] == "conversation_already_has_active_response"
        assert errors[0]["error"]["event_id"] == "second"
        done = events[-1]["response"]
        item_id = done["output"][0]["id"]
        total_ms = audio_of(events).size * 1000 // SAMPLE_RATE
        assert total_ms > 1000

        # the listener heard 800 ms: truncate there; the unheard transcript goes away
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=800)
        truncated = await collect_until(conn, is_type("conversation.item.truncated"))
        assert truncated[-1]["audio_end_ms"] == 800
        await conn.conversation.item.retrieve(item_id=item_id)
        got = (await collect_until(conn, is_type("conversation.item.retrieved")))[-1]["item"]
        part = got["content"][0]
        heard = np.frombuffer(base64.b64decode(part["audio"]), dtype="<i2")
        assert abs(heard.size * 1000 / SAMPLE_RATE - 800) < 25
        full = done["output"][0]["content"][0]["transcript"]
        assert len(part["transcript"]) < len(full)
        assert full.startswith(part["transcript"].split(" ")[0])

        # beyond the end: clamped to the real duration
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=10**6)
        clamped = await collect_until(conn, is_type("conversation.item.truncated"))
        assert clamped[-1]["audio_end_ms"] == 800

        await conn.conversation.item.delete(item_id=item_id)
        assert (await collect_until(conn, is_type("conversation.item.deleted")))[-1]["item_id"] == item_id
        await conn.conversation.item.retrieve(item_id=item_id)
        err = await collect_until(conn, is_type("error"))
        assert err[-1]["error"]["code"] == "item_retrieve_invalid_item_id"


async def test_barge_in_cancels_the_response_and_the_client_truncates() -> None:
    """The user talks while the agent's answer is still being written and spoken: the server cancels
    it (turn_detected), and the client truncates the item at what it played."""
    async with arun_chat_server() as chat_url:
        # "drip-0.3": the stand-in LLM writes a word every 0.3 s, so the answer is still in progress.
        engine = local_engine(EngineSettings(responder="chat", chat_url=str(chat_url), chat_model="drip-0.3"))
        with serve_app(create_app(engine)) as url:
            async with client(url).realtime.connect(model="gpt-realtime") as conn:
                await recv_event(conn)
                await conn.session.update(session={"type": "realtime", "audio": {"input": {  # type: ignore[arg-type]
                    "transcription": {"model": "whisper-1"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}})
                await collect_until(conn, is_type("session.updated"))
                first = speech_pcm24k("I want to cancel my service today please.", lead_silence_ms=200,
                                      tail_silence_ms=0)
                second = speech_pcm24k("Wait, what offers do you have?", lead_silence_ms=0, tail_silence_ms=1500)
                sender = asyncio.create_task(stream_pcm(conn, np.concatenate([first, silence(1500), second])))
                events = await collect_until(
                    conn, lambda e: e["type"] == "response.done" and e["response"]["status"] == "completed",
                    timeout=60)
                await sender
                cancelled = [e["response"] for e in events
                             if e["type"] == "response.done" and e["response"]["status"] == "cancelled"]
                assert cancelled, [e["type"] for e in events]
                assert cancelled[0]["status_details"]["reason"] == "turn_detected"
                item = cancelled[0]["output"][0]
                assert item["status"] == "incomplete"
                sent_ms = audio_of(events, cancelled[0]["id"]).size * 1000 // SAMPLE_RATE
                assert sent_ms > 0
                types = [e["type"] for e in events]
                second_start = [i for i, t in enumerate(types) if t == "input_audio_buffer.speech_started"][1]
                cancel_at = next(i for i, e in enumerate(events) if e["type"] == "response.done")
                assert second_start < cancel_at
                # the client had played 150 ms of it
                await conn.conversation.item.truncate(item_id=item["id"], content_index=0, audio_end_ms=150)
                truncated = await collect_until(conn, is_type("conversation.item.truncated"))
                assert truncated[-1]["audio_end_ms"] == min(150, sent_ms)


async def test_malformed_input_gets_errors_and_the_session_goes_on(engine_url: str) -> None:
    ws_url = engine_url.replace("http", "ws") + "/v1/realtime?model=gpt-realtime"
    async with websockets.connect(ws_url, additional_headers={"Authorization": "Bearer sk-test"},
                                  max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"

        async def expect_error(payload: str | bytes, code: str) -> dict[str, Any]:
            await ws.send(payload)
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if event["type"] == "error":
                    assert event["error"]["code"] == code, event
                    return event

        await expect_error("not json", "invalid_json")
        await expect_error(b"\x00\x01binary", "invalid_json")
        await expect_error(json.dumps({"type": "no.such.event"}), "invalid_value")
        await expect_error(json.dumps({"event_id": "x"}), "missing_required_parameter")
        await expect_error(json.dumps({"type": "conversation.item.create"}), "missing_required_parameter")
        await expect_error(json.dumps({"type": "input_audio_buffer.append", "audio": "***"}), "invalid_value")
        odd = base64.b64encode(b"\x01\x02\x03").decode()
        await expect_error(json.dumps({"type": "input_audio_buffer.append", "audio": odd}), "invalid_value")
        huge = base64.b64encode(bytes(16 * 1024 * 1024)).decode()
        await expect_error(json.dumps({"type": "input_audio_buffer.append", "audio": huge}), "invalid_value")
        await expect_error(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                             "voice": "x"}}), "unknown_parameter")
        await expect_error(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"format": {"type": "audio/opus"}}}}}), "invalid_value")
        await expect_error(json.dumps({"type": "conversation.item.truncate", "item_id": "nope",
                                       "content_index": 0, "audio_end_ms": 5}), "item_truncate_invalid_item_id")
        # still alive: a text turn works
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}}))
        await ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if event["type"] == "response.done":
                assert event["response"]["status"] == "completed"
                break


async def test_beta_client_gets_beta_event_names(engine_url: str) -> None:
    ws_url = engine_url.replace("http", "ws") + "/v1/realtime?model=gpt-4o-realtime-preview"
    async with websockets.connect(ws_url, max_size=None, additional_headers={
            "Authorization": "Bearer sk-test", "OpenAI-Beta": "realtime=v1"}) as ws:
        seen: list[dict[str, Any]] = []

        async def until(kind: str) -> None:
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 20))
                from support.conformance import validate_server_event

                validate_server_event(event, beta=True)
                seen.append(event)
                if event["type"] == kind:
                    return

        await until("session.created")
        assert "modalities" in seen[0]["session"] and "audio" not in seen[0]["session"]
        await ws.send(json.dumps({"type": "session.update", "session": {
            "modalities": ["text", "audio"], "voice": "ash", "input_audio_format": "pcm16",
            "turn_detection": None, "instructions": get_persona("negotiator/sarah").instructions}}))
        await until("session.updated")
        assert seen[-1]["session"]["voice"] == "ash"
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "My bill is too high."}]}}))
        await ws.send(json.dumps({"type": "response.create"}))
        await until("response.done")
    types = {e["type"] for e in seen}
    assert {"conversation.created", "conversation.item.created", "response.audio.delta",
            "response.audio_transcript.delta", "response.audio.done"} <= types
    assert not types & {"conversation.item.added", "conversation.item.done", "response.output_audio.delta"}
    done = seen[-1]["response"]
    assert done["output"][0]["content"][0]["type"] == "audio"


async def test_transcription_session(engine_url: str) -> None:
    async with client(engine_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await recv_event(conn)
        assert created["session"]["type"] == "transcription"
        await conn.session.update(session={"type": "transcription", "audio": {"input": {  # type: ignore[arg-type]
            "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}}})
        await collect_until(conn, is_type("session.updated"))
        sentence = "Another company offered me internet for fifty dollars a month."
        sender = asyncio.create_task(stream_pcm(conn, np.concatenate([speech_pcm24k(sentence), silence(900)]),
                                                speed=2))
        events = await collect_until(conn, is_type("conversation.item.input_audio_transcription.completed"))
        await sender
    assert wer(sentence, events[-1]["transcript"]) <= 0.25
    assert not any(e["type"].startswith("response.") for e in events)


async def test_client_secrets_and_ephemeral_keys(engine_url: str) -> None:
    persona = get_persona("negotiator/sarah")
    async with httpx.AsyncClient(base_url=engine_url) as http:
        r = await http.post("/v1/realtime/client_secrets", json={"session": {"type": "realtime"}})
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        r = await http.post("/v1/realtime/client_secrets", headers={"Authorization": "Bearer sk-x"},
                            json={"expires_after": {"anchor": "created_at", "seconds": 5}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "expires_after.seconds"
        r = await http.post("/v1/realtime/client_secrets", headers={"Authorization": "Bearer sk-x"},
                            json={"session": {"type": "realtime", "audio": {"output": {"speed": 9}}}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "session.audio.output.speed"

    secret = await client(engine_url).realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 10},
        session={"type": "realtime", "instructions": persona.instructions,  # type: ignore[typeddict-item]
                 "audio": {"output": {"voice": "cedar"}}})
    assert secret.value.startswith("ek_")
    async with client(engine_url, secret.value).realtime.connect() as conn:
        created = await recv_event(conn)
        assert created["session"]["audio"]["output"]["voice"] == "cedar"
        assert created["session"]["instructions"] == persona.instructions
    # the browser's way: subprotocols instead of a header
    ws_url = engine_url.replace("http", "ws") + "/v1/realtime"
    async with websockets.connect(ws_url, subprotocols=[  # type: ignore[list-item]
            "realtime", f"openai-insecure-api-key.{secret.value}"]) as ws:
        assert ws.subprotocol == "realtime"
        assert json.loads(await ws.recv())["type"] == "session.created"

    await asyncio.sleep(10.5)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {secret.value}"}):
            pass
    assert refused.value.response.status_code == 401
    assert b"expired" in (refused.value.response.body or b"")


async def test_silence_is_not_a_turn(engine_url: str) -> None:
    async with client(engine_url).realtime.connect(model="gpt-realtime") as conn:
        await recv_event(conn)
        rng = np.random.default_rng(1)
        noise = (rng.standard_normal(SAMPLE_RATE * 2) * 0.003).astype(np.float32)
        await conn.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(float_to_pcm16(noise)).decode()})
        types: list[str] = []
        with pytest.raises(TimeoutError):
            while True:
                types.append((await recv_event(conn, timeout=1.5))["type"])
    assert "input_audio_buffer.speech_started" not in types


async def test_a_refused_websocket_logs_no_error(engine_url: str) -> None:
    # uvicorn logs "returned without completing handshake" at ERROR after a denial response it
    # did send (Kludex/uvicorn#3138); alerting on ERROR would then fire for every bad request.
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        ws_url = engine_url.replace("http", "ws") + "/v1/realtime?call_id=rtc_unknown"
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(ws_url, additional_headers={"Authorization": "Bearer sk-test"}):
                pass
        assert refused.value.response.status_code == 404
        await asyncio.sleep(0.2)  # uvicorn logs after the app returns
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in errors] == []
