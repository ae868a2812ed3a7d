"""Local engine over WebSocket: turn latency, STT word error rate, memory per session.

    .venv/bin/python benchmarks/engine_ws.py [--turns 20]

Speech made by our TTS is streamed in real time (20 ms appends) through the official openai
SDK; for each turn it prints the time from `input_audio_buffer.speech_stopped` to the first
`response.output_audio.delta` received, the transcript's WER, then p50/p95 over all turns and
the resident memory each additional idle session costs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from openai import AsyncOpenAI

from machine import describe, percentile, rss_mb
from parley.apps.local import local_engine
from parley.apps.scenarios import get_persona
from parley.audio.pcm import SAMPLE_RATE, float_to_pcm16
from parley.engine.app import EngineSettings, create_app
from parley.engine.speech.tts import Tts
from parley.engine.speech.wer import normalize, wer
from parley.util.serving import serve_app

SENTENCES = [
    "Hi, I would like to lower my monthly bill.",
    "I have been a customer for six years.",
    "Another company offered me internet for fifty dollars a month.",
    "If you cannot help me I will cancel my service.",
    "Can I speak to your supervisor please?",
    "What does that offer include?",
    "That is still too expensive for me.",
    "Okay, I will take that offer.",
    "My internet keeps dropping in the evening.",
    "Thank you for your help today.",
]


def speech(text: str, voice: str) -> np.ndarray:
    pcm = Tts().synthesize_all(text, voice=voice)
    return np.concatenate([np.zeros(SAMPLE_RATE // 4, np.float32), pcm, np.zeros(SAMPLE_RATE * 3 // 2, np.float32)])


async def one_turn(conn: object, pcm: np.ndarray) -> tuple[float, str]:
    step = SAMPLE_RATE // 50
    stopped_at: float | None = None
    first_audio: float | None = None
    transcript = ""
    done = asyncio.Event()

    async def reader() -> None:
        nonlocal stopped_at, first_audio, transcript
        while True:
            event = json.loads(await conn.recv_bytes())  # type: ignore[attr-defined]
            kind = event["type"]
            if kind == "input_audio_buffer.speech_stopped" and stopped_at is None:
                stopped_at = time.perf_counter()
            elif kind == "response.output_audio.delta" and first_audio is None:
                first_audio = time.perf_counter()
            elif kind == "conversation.item.input_audio_transcription.completed":
                transcript = event["transcript"]
            elif kind == "response.done":
                done.set()
                if transcript:
                    return
            elif kind == "error":
                print("  error:", event["error"]["message"])
            if done.is_set() and transcript:
                return

    task = asyncio.create_task(reader())
    start = time.perf_counter()
    for i, off in enumerate(range(0, pcm.size, step)):
        data = base64.b64encode(float_to_pcm16(pcm[off : off + step])).decode()
        await conn.send({"type": "input_audio_buffer.append", "audio": data})  # type: ignore[attr-defined]
        delay = start + (i + 1) * 0.02 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.wait_for(task, 30)
    assert stopped_at is not None and first_audio is not None
    return (first_audio - stopped_at) * 1000, transcript


async def run(url: str, turns: int) -> None:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-bench")
    persona = get_persona("negotiator/sarah")
    latencies: list[float] = []
    errors: list[float] = []
    refs, hyps = [], []
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.recv_bytes()
        await conn.session.update(session={  # type: ignore[arg-type]
            "type": "realtime", "instructions": persona.instructions,
            "audio": {"input": {"transcription": {"model": "whisper-1", "language": "en"}}}})
        voices = ["alloy", "echo", "coral", "ash"]
        for n in range(turns):
            text = SENTENCES[n % len(SENTENCES)]
            ms, heard = await one_turn(conn, speech(text, voices[n % len(voices)]))
            latencies.append(ms)
            errors.append(wer(text, heard))
            refs.append(normalize(text))
            hyps.append(normalize(heard))
            print(f"turn {n + 1:2d}: speech_stopped -> first audio delta {ms:7.1f} ms   WER {errors[-1]:.2f}   {heard!r}")
    total_words = sum(len(r.split()) for r in refs)
    corpus_wer = sum(wer(r, h, normalize_text=False) * len(r.split()) for r, h in zip(refs, hyps, strict=True))
    print()
    print(f"speech_stopped -> first response.output_audio.delta over {turns} turns: "
          f"p50 {percentile(latencies, 50):.1f} ms, p95 {percentile(latencies, 95):.1f} ms "
          f"(target p50 <= 100, p95 <= 250)")
    print(f"STT word error rate (normalized, whisper tiny.en): {corpus_wer / total_words:.1%} over {total_words} words "
          f"(target <= 10%)")


async def memory(url: str, sessions: int) -> None:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-bench")
    conns = []
    await asyncio.sleep(0.5)
    before = rss_mb()
    managers = [client.realtime.connect(model="gpt-realtime") for _ in range(sessions)]
    for m in managers:
        conns.append(await m.__aenter__())
        await conns[-1].recv_bytes()
    await asyncio.sleep(1.0)
    after = rss_mb()
    for m in managers:
        await m.__aexit__(None, None, None)
    print(f"memory: {(after - before) / sessions:.1f} MB per additional idle session "
          f"({sessions} sessions, RSS {before:.0f} -> {after:.0f} MB; target <= 50 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=20, help="idle sessions for the memory figure")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    with serve_app(create_app(local_engine(EngineSettings()))) as url:
        asyncio.run(run(url, args.turns))
        asyncio.run(memory(url, args.sessions))


if __name__ == "__main__":
    main()
