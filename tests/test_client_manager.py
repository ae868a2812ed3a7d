"""Two named connections (the copilot's): `mic` transcribes and assists, `speaker` only
transcribes, and the speaker's final transcripts are injected into the mic's conversation.

The engine answers through tests/chat_server.py (its reply echoes the last user message), so the
mic assistant's answer shows what it was told; the chat server also records the conversation
the engine gave it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from parley.apps.local import local_engine
from parley.audio.pcm import SAMPLE_RATE
from parley.client import ConnectionManager, RealtimeClient
from parley.engine.app import EngineSettings, create_app
from parley.engine.speech.wer import wer
from parley.util.serving import serve_app
from support.chat_server import run_chat_server
from support.speech import speech_pcm24k

pytestmark = pytest.mark.slow

SPEAKER_SAYS = "We will meet again on Thursday afternoon."
MIC_SAYS = "Can you remind me when the meeting is?"


async def speak(client: RealtimeClient, pcm: np.ndarray, speed: float = 4.0) -> None:
    step = SAMPLE_RATE // 50
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, offset in enumerate(range(0, pcm.size, step)):
        await client.send_audio(pcm[offset:offset + step])
        delay = start + (i + 1) * 0.02 / speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


async def test_speaker_transcripts_reach_the_mic_assistant() -> None:
    with run_chat_server() as chat_url:
        engine = local_engine(EngineSettings(responder="chat", chat_url=str(chat_url), chat_model="test-chat"))
        with serve_app(create_app(engine)) as url:
            manager = ConnectionManager(base_url=url, api_key="sk-test")
            mic = manager.add("mic", session={
                "instructions": "You are a meeting copilot. Answer in one short sentence.",
                "output_modalities": ["text"],
                "audio": {"input": {"transcription": {"model": "whisper-1", "language": "en"},
                                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 400,
                                                       "create_response": True, "interrupt_response": False}}},
            })
            speaker = manager.add("speaker", intent="transcription", session={
                "audio": {"input": {"transcription": {"model": "whisper-1", "language": "en"},
                                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}},
            })
            injection = manager.inject("speaker", into="mic", label="SYSTEM_AUDIO_TRANSCRIPT", respond=True)
            seen: list[tuple[str, str]] = []
            manager.on("message", lambda name, m: seen.append((name, m.role)))

            async with manager:
                assert manager.status() == {"mic": "connected", "speaker": "connected"}
                assert speaker.session["type"] == "transcription"
                assert mic.session["type"] == "realtime"

                # the other side of the call speaks: only transcribed, then told to the mic assistant
                told = asyncio.ensure_future(mic.wait_for(
                    "message", lambda m: m.role == "assistant" and "SYSTEM_AUDIO_TRANSCRIPT" in m.text, timeout=60))
                await speak(speaker, speech_pcm24k(SPEAKER_SAYS, tail_silence_ms=1000))
                answer = await told
                heard = speaker.conversation.last("user")
                assert heard is not None and wer(SPEAKER_SAYS, heard.text) <= 0.3, heard.text
                assert not any(i.role == "assistant" for i in speaker.conversation)  # transcription only
                assert injection.count == 1
                # the mic assistant's answer uses what the speaker said
                assert "thursday" in answer.text.lower(), answer.text
                injected = [i for i in mic.conversation if i.role == "user" and i.text.startswith("SYSTEM_AUDIO")]
                assert len(injected) == 1 and heard.text in injected[0].text

                # the user asks at the mic: the engine gives the LLM the speaker's words as context
                asked = asyncio.ensure_future(mic.wait_for(
                    "message", lambda m: m.role == "assistant" and "remind" in m.text.lower(), timeout=60))
                await speak(mic, speech_pcm24k(MIC_SAYS, tail_silence_ms=1000))
                await asked
                context = " ".join(str(m.get("content")) for m in chat_url.requests[-1]["messages"])
                assert "thursday" in context.lower() and "remind" in context.lower()
                mic_user = [i for i in mic.conversation if i.role == "user" and i.has_audio]
                assert mic_user and wer(MIC_SAYS, mic_user[0].text) <= 0.3
                order = [i.text[:20] for i in mic.conversation if i.role == "user"]
                assert order[0].startswith("SYSTEM_AUDIO") and not order[1].startswith("SYSTEM_AUDIO")

            assert ("speaker", "user") in seen and ("mic", "assistant") in seen
            assert manager.status() == {"mic": "closed", "speaker": "closed"}
            assert mic.usage.responses == 2 and speaker.usage.responses == 0


async def test_manager_events_merge_the_connections(engine_url: str) -> None:
    manager = ConnectionManager(base_url=engine_url, api_key="sk-test")
    manager.add("a", session={"output_modalities": ["text"], "audio": {"input": {"turn_detection": None}}})
    manager.add("b", intent="transcription")
    got: list[tuple[str, Any]] = []
    async with manager:
        stream = manager.events("session.updated", "response.done")

        async def collect() -> None:
            async for name, event in stream:
                got.append((name, event))
                if event.type == "response.done":
                    return

        collector = asyncio.ensure_future(collect())
        await asyncio.sleep(0.05)
        await manager["b"].update_session({"audio": {"input": {"transcription": {"model": "whisper-1"}}}})
        await manager["a"].send_text("Hello?")
        await asyncio.wait_for(collector, 30)
        await stream.aclose()
    assert ("b", "session.updated") in [(n, e.type) for n, e in got]
    assert got[-1][0] == "a"
