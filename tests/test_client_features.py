"""RealtimeClient's commands against the real engine: out-of-band responses, cancel, manual
interrupt with truncation, push-to-talk, clear, delete/retrieve, the event iterator."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from parley.apps.local import local_engine
from parley.audio.pcm import SAMPLE_RATE, float_to_pcm16
from parley.client import AudioPlayer, RealtimeClient, RealtimeError
from parley.engine.app import EngineSettings, create_app
from parley.engine.speech.wer import wer
from parley.util.serving import serve_app
from support.chat_server import ChatServerURL, run_chat_server
from support.speech import speech_pcm24k

pytestmark = pytest.mark.slow

MANUAL = {"audio": {"input": {"transcription": {"model": "whisper-1", "language": "en"}, "turn_detection": None}}}
TEXT = {"output_modalities": ["text"], **MANUAL}


@pytest.fixture(scope="module")
def drip() -> Iterator[tuple[str, ChatServerURL]]:
    """The engine answering through the stand-in LLM, one word every 0.15 s."""
    with run_chat_server() as chat_url:
        settings = EngineSettings(responder="chat", chat_url=str(chat_url), chat_model="drip-0.15")
        with serve_app(create_app(local_engine(settings))) as url:
            yield url, chat_url


async def test_out_of_band_response_stays_out_of_the_conversation(drip: tuple[str, ChatServerURL]) -> None:
    url, chat_url = drip
    async with RealtimeClient(base_url=url, api_key="sk-test", session=TEXT) as client:
        item_id = await client.send_text("I want faster internet.", respond=False)
        handle = await client.create_response(
            conversation="none", output_modalities=["text"], instructions="Classify the topic in one word.",
            input=[{"type": "item_reference", "id": item_id}], metadata={"purpose": "classify"})
        response = await handle.done(timeout=30)
        assert response["status"] == "completed" and response["metadata"]["purpose"] == "classify"
        assert response.get("conversation_id") is None
        assert handle.id == response["id"] and handle.text == "You said: I want faster internet."
        assert handle.out_of_band and handle.items and not any(i.id in client.conversation for i in handle.items)
        assert client.conversation.ids == [item_id]  # nothing was added
        assert chat_url.requests[-1]["messages"][0] == {"role": "system",
                                                        "content": "Classify the topic in one word."}
        assert client.latencies[-1].trigger == "request" and client.latencies[-1].first_text_ms is not None


async def test_cancel_and_the_conflicting_response_create(drip: tuple[str, ChatServerURL]) -> None:
    url, _ = drip
    async with RealtimeClient(base_url=url, api_key="sk-test", session=TEXT) as client:
        await client.send_text("Tell me a long story about a dragon and a knight.", respond=False)
        first = await client.create_response()
        await first.created()
        second = await client.create_response()  # one at a time: the server refuses it
        with pytest.raises(RealtimeError, match="conversation_already_has_active_response"):
            await second.done(timeout=10)
        await asyncio.sleep(0.4)
        await client.cancel_response()
        done = await first.done(timeout=10)
        assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
        answer = client.conversation.last("assistant")
        assert answer is not None and answer.status == "incomplete" and 0 < len(answer.text) < 40
        assert client.active_response_id is None


async def test_manual_interrupt_truncates_at_what_was_played(drip: tuple[str, ChatServerURL]) -> None:
    url, _ = drip
    player = AudioPlayer("clock")
    stops: list[Any] = []
    async with RealtimeClient(base_url=url, api_key="sk-test", session=MANUAL, player=player) as client:
        client.on("speaking_stopped", stops.append)
        started = asyncio.ensure_future(client.wait_for("speaking_started", timeout=30))
        await client.send_text("Please read me the whole list of your internet plans and their prices.")
        await started
        # the answer is written faster than it is spoken: the player still holds most of it
        await client.wait_for("response.done", timeout=30)
        assert player.queued_ms > 1500
        truncated = asyncio.ensure_future(client.wait_for("conversation.item.truncated", timeout=10))
        await client.interrupt()
        assert player.queued_ms == 0
        cut = await truncated
        item = client.conversation[cut.item_id]
        assert 500 < cut.audio_end_ms < item.audio_ms - 1500 and item.truncated_ms == cut.audio_end_ms
        assert stops and stops[-1].reason == "interrupted"
        assert len(item.heard_text.split()) < len(item.text.split())


async def test_push_to_talk_commit_and_clear(drip: tuple[str, ChatServerURL]) -> None:
    url, _ = drip
    sentence = "Our next meeting is on Thursday."
    async with RealtimeClient(base_url=url, api_key="sk-test", session=TEXT) as client:
        # audio at 16 kHz as int16 and at 48 kHz as float: both resampled to the session's 24 kHz
        speech = speech_pcm24k(sentence, tail_silence_ms=300)
        from parley.audio.resample import resample

        await client.send_audio((resample(speech, SAMPLE_RATE, 16000) * 32767).astype(np.int16), rate=16000)
        await client.clear_audio()
        await client.wait_for("input_audio_buffer.cleared", timeout=10)
        await client.send_audio(resample(speech, SAMPLE_RATE, 48000), rate=48000)
        committed = asyncio.ensure_future(client.wait_for("input_audio_buffer.committed", timeout=10))
        await client.commit_audio()
        item_id = (await committed).item_id
        await client.create_response()
        await client.wait_for("response.done", timeout=30)
        await client.wait_for("message", lambda m: m.item_id == item_id, timeout=10) \
            if not client.announced(item_id) else None
        user = client.conversation[item_id]
        assert wer(sentence, user.text) <= 0.3, user.text
        assert client.conversation.ids == [item_id, client.conversation.last("assistant").id]  # type: ignore[union-attr]
        # delete and retrieve
        server = await client.retrieve_item(item_id)
        assert server["content"][0]["type"] == "input_audio"
        await client.delete_item(item_id)
        await client.wait_for("conversation.item.deleted", timeout=10)
        assert item_id not in client.conversation
        with pytest.raises(RealtimeError, match="item_retrieve_invalid_item_id"):
            await client.retrieve_item(item_id)
        # raw PCM16 bytes work too
        await client.send_audio(float_to_pcm16(speech))


async def test_events_iterator_and_handlers(drip: tuple[str, ChatServerURL]) -> None:
    url, _ = drip
    client = RealtimeClient(base_url=url, api_key="sk-test", session=TEXT)
    order: list[str] = []

    @client.on("message")
    async def on_message(message: Any) -> None:  # async handlers run as tasks
        order.append(f"async:{message.role}")

    def broken(_event: Any) -> None:
        raise RuntimeError("a buggy handler must not break the client")

    client.on("response.created", broken)
    async with client:
        stream = client.events("message", "response.done")
        await client.send_text("Hi")
        seen = []
        async for event in stream:
            seen.append(event.type)
            if event.type == "response.done":
                break
        assert seen[-1] == "response.done" and seen.count("message") == 2
        client.off("message", on_message)
        await client.send_text("Again")
        await client.wait_for("response.done", timeout=10)
        await asyncio.sleep(0.05)
        assert order == ["async:user", "async:assistant"]
        everything = client.events()
    # closing ends every iterator
    rest = [event.type async for event in everything]
    assert rest[-1] == "disconnected"
    with pytest.raises(RealtimeError):
        await client.send_text("closed")
