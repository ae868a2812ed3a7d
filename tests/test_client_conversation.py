"""One conversation through `parley.client.RealtimeClient`, over WebSocket and over WebRTC.

The peer is the real local engine on loopback, answering through tests/chat_server.py (an
OpenAI-compatible chat server whose reply echoes the user: "You said: ...", and which calls a
tool when the user mentions it). Spoken turns are our TTS speech, checked through the engine's
whisper transcript with a WER bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from parley.apps.local import local_engine
from parley.audio.pcm import SAMPLE_RATE
from parley.client import AudioPlayer, RealtimeClient
from parley.engine.app import EngineSettings, create_app
from parley.engine.speech.wer import wer
from parley.util.serving import serve_app
from support.chat_server import ChatServerURL, run_chat_server
from support.speech import speech_pcm24k

pytestmark = pytest.mark.slow

FIRST = "Hello, I would like to check the balance of my account please."
LONG = "Tell me about all of your internet plans, their prices and speeds, and every discount you have."
STOP = "Wait, stop for a moment."


@pytest.fixture(scope="module")
def chat() -> Iterator[tuple[str, ChatServerURL]]:
    """The engine answering through the stand-in chat LLM; WebRTC candidates on loopback only."""
    with run_chat_server() as chat_url:
        settings = EngineSettings(responder="chat", chat_url=str(chat_url), chat_model="test-chat",
                                  ice_hosts=["127.0.0.1"])
        with serve_app(create_app(local_engine(settings))) as url:
            yield url, chat_url


def session_config() -> dict[str, Any]:
    return {
        "instructions": "You are a helpful assistant. Answer briefly.",
        "audio": {"input": {"transcription": {"model": "whisper-1", "language": "en"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}},
    }


async def speak(client: RealtimeClient, pcm: np.ndarray, *, speed: float = 4.0, chunk_ms: int = 20) -> None:
    """Send speech like a microphone (paced `speed` x real time; WebRTC paces itself)."""
    step = SAMPLE_RATE * chunk_ms // 1000
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, offset in enumerate(range(0, pcm.size, step)):
        await client.send_audio(pcm[offset:offset + step])
        if client.transport_name == "websocket":
            delay = start + (i + 1) * chunk_ms / 1000 / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)


def assistant_after(client: RealtimeClient, item_id: str) -> list[Any]:
    ids = client.conversation.ids
    return [client.conversation[i] for i in ids[ids.index(item_id) + 1:]
            if client.conversation[i].role == "assistant"]


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
async def test_conversation_spoken_text_tool_and_barge_in(chat: tuple[str, ChatServerURL], transport: str) -> None:
    url, chat_url = chat
    player = AudioPlayer("clock") if transport == "websocket" else None
    client = RealtimeClient(base_url=url, api_key="sk-test", transport=transport,  # type: ignore[arg-type]
                            session=session_config(), player=player, ice_hosts=["127.0.0.1"])
    tool_calls: list[Any] = []
    weather_calls: list[str] = []

    @client.tool
    async def get_weather(city: str) -> dict[str, Any]:
        """The current weather in a city.

        Args:
            city: The city's name.
        """
        weather_calls.append(city)
        return {"city": city, "sky": "sunny", "celsius": 21}

    client.on("tool_call", tool_calls.append)
    messages: list[Any] = []
    client.on("message", messages.append)
    spoken: list[Any] = []
    client.on("speaking_started", spoken.append)
    audio_ms = [0.0]
    client.on("audio", lambda a: audio_ms.__setitem__(0, audio_ms[0] + a.duration_ms))

    async with client:
        assert client.connected and client.session_id
        # the session config and the tool reached the server
        assert client.session["audio"]["input"]["transcription"]["model"] == "whisper-1"
        assert [t["name"] for t in client.session["tools"]] == ["get_weather"]
        assert client.session["tools"][0]["parameters"]["properties"]["city"]["type"] == "string"

        # 1. a spoken turn
        done = asyncio.ensure_future(client.wait_for("response.done", timeout=60))
        await speak(client, speech_pcm24k(FIRST, tail_silence_ms=1200))
        first = await done
        assert first.status == "completed"
        user = client.conversation.last("user")
        assert user is not None and wer(FIRST, user.text) <= 0.3, user.text
        answer = assistant_after(client, user.id)[0]
        assert answer.text.startswith("You said:") and wer(FIRST, answer.text.removeprefix("You said:")) <= 0.3
        turn = client.latencies[-1]
        assert turn.trigger == "speech" and turn.created_ms is not None and turn.done_ms is not None
        # the answer was spoken: audio arrived (events over WebSocket, the media track over WebRTC)
        assert spoken and spoken[0].response_id == first.response_id
        await asyncio.sleep(0.5)
        assert audio_ms[0] > 500
        # measured after the response was created (how soon is benchmarks/client.py's business)
        assert turn.first_audio_ms is not None and turn.created_ms is not None and turn.first_audio_ms > turn.created_ms

        # 2. a text turn
        item_id = await client.send_text("What plans do you have?")
        reply = await client.wait_for("response.done", timeout=30)
        assert reply.status == "completed"
        assert assistant_after(client, item_id)[0].text == "You said: What plans do you have?"
        assert client.latencies[-1].trigger == "request"

        # 3. a tool call, answered automatically
        tool_turn = asyncio.ensure_future(client.wait_for(
            "response.done", lambda e: client.latencies[-1].trigger == "tool", timeout=30))
        asked = await client.send_text("What is the weather in Paris?")
        final = await client.wait_for("message", lambda m: m.role == "assistant" and "result" in m.text, timeout=30)
        await tool_turn
        assert weather_calls == ["Paris"]
        assert tool_calls and tool_calls[0].name == "get_weather" and tool_calls[0].error is None
        assert '"sky": "sunny"' in final.text
        kinds = [client.conversation[i].type for i in client.conversation.ids]
        at = client.conversation.ids.index(asked)
        assert kinds[at:at + 4] == ["message", "function_call", "function_call_output", "message"]
        # the LLM got the tool's output back as a tool message
        assert any(m.get("role") == "tool" for r in chat_url.requests for m in r["messages"])

        # 4. barge-in: the user talks over a long answer; what was not heard is cut from the item
        if client.speaking:
            await client.wait_for("speaking_stopped", timeout=30)
        started = asyncio.ensure_future(client.wait_for("speaking_started", timeout=60))
        await speak(client, speech_pcm24k(LONG, tail_silence_ms=1200))
        await started
        long_answer = client.conversation.get(started.result().item_id) or client.conversation.last("assistant")
        assert long_answer is not None
        await asyncio.sleep(1.0)  # the user hears a second of it, then talks
        truncated = asyncio.ensure_future(client.wait_for("conversation.item.truncated", timeout=30))
        answered = asyncio.ensure_future(client.wait_for(
            "message", lambda m: m.role == "assistant" and "stop" in m.text.lower(), timeout=60))
        await speak(client, speech_pcm24k(STOP, tail_silence_ms=1000), speed=1.0)
        cut = await truncated
        assert cut.item_id == long_answer.id
        heard = cut.audio_end_ms
        assert 700 < heard < 6000, heard
        assert long_answer.truncated_ms == heard
        if transport == "websocket":
            # the client played it: much more had arrived than was heard, and it said where to cut
            assert long_answer.audio_ms > heard + 1000
            assert len(long_answer.heard_text) < len(long_answer.text)
        else:
            # the server played it and cut it: its copy keeps only the words that were heard
            assert heard <= long_answer.audio_ms + 100  # the client counted the audio it heard
            kept = await client.retrieve_item(long_answer.id)
            assert len(kept["content"][0]["transcript"]) < len(long_answer.text)
        await answered  # and the interruption was answered

        assert client.usage.responses >= 5 and client.cost > 0
        roles = [m.role for m in messages]
        assert roles.count("user") >= 4 and roles.count("assistant") >= 4
    assert client.state == "closed"
