"""Copilot: from the end of the other party's question to the first quick-answer token and to the main answer.

    .venv/bin/python benchmarks/copilot.py [--questions 8]

The local engine runs in-process; the "speaker" connection (transcription only) hears TTS
questions streamed in real time, the "mic" connection runs the quick assistant; each final
speaker line is injected into the mic session, which answers; the main answer comes from the
offline answerer (or the one PARLEY_COPILOT_* / OPENAI_API_KEY selects). Per exchange it prints
both times, then p50/p95.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from machine import describe, percentile
from parley.apps.copilot import THEM_LABEL, mic_session, speaker_session
from parley.apps.copilot.answerer import Line
from parley.apps.copilot.terminal import default_answerer
from parley.apps.local import local_engine
from parley.audio.pcm import SAMPLE_RATE, float_to_pcm16
from parley.client import ConnectionManager
from parley.engine.app import EngineSettings, create_app
from parley.engine.speech.tts import Tts
from parley.util.serving import serve_app

QUESTIONS = [
    "How does a load balancer work?",
    "What is the time complexity of binary search?",
    "When would you use a hash map?",
    "Can you explain the CAP theorem?",
    "How would you design a rate limiter?",
    "What is the difference between a process and a thread?",
    "Why would you add a database index?",
    "How do you handle caching and invalidation?",
]


async def run(base_url: str, questions: int) -> None:
    answerer = default_answerer()
    manager = ConnectionManager(base_url=base_url, api_key="sk-bench")
    manager.add("mic", session=mic_session())
    speaker = manager.add("speaker", intent="transcription", session=speaker_session())
    manager.inject("speaker", into="mic", template=THEM_LABEL + " {text}", respond=True)
    lines: list[Line] = []
    first_aux: list[float] = []
    mains: list[float] = []
    state: dict[str, float | None] = {"end": None, "aux": None}

    def on_aux_delta(name: str, _event: object) -> None:
        if name == "mic" and state["end"] is not None and state["aux"] is None:
            state["aux"] = time.perf_counter()

    manager.on("response.output_text.delta", on_aux_delta)
    transcripts: asyncio.Queue[str] = asyncio.Queue()
    speaker.on("conversation.item.input_audio_transcription.completed",
               lambda e: transcripts.put_nowait(e.transcript.strip()))
    await manager.connect()
    tts = Tts()
    print(f"main answers by: {answerer.label}")
    try:
        for n in range(questions):
            question = QUESTIONS[n % len(QUESTIONS)]
            pcm = tts.synthesize_all(question, voice="echo")
            state["end"], state["aux"] = None, None
            async def speak(pcm: np.ndarray = pcm) -> None:
                step = SAMPLE_RATE // 50
                start = time.perf_counter()
                audio = np.concatenate([pcm, np.zeros(SAMPLE_RATE * 2, np.float32)])
                for i, off in enumerate(range(0, audio.size, step)):
                    if off >= pcm.size and state["end"] is None:
                        state["end"] = time.perf_counter()  # the question has been said
                    await speaker.send_audio(float_to_pcm16(audio[off:off + step]))
                    delay = start + (i + 1) * 0.02 - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)

            voice = asyncio.create_task(speak())
            heard = await asyncio.wait_for(transcripts.get(), 30)
            lines.append(Line("them", heard))
            answer = "".join([part async for part in answerer.answer(list(lines))])
            done = time.perf_counter()
            end = state["end"]
            assert end is not None
            aux_ms = ((state["aux"] or done) - end) * 1000
            main_ms = (done - end) * 1000
            first_aux.append(aux_ms)
            mains.append(main_ms)
            print(f"exchange {n + 1}: end of question -> first quick token {aux_ms:6.0f} ms, "
                  f"-> main answer {main_ms:6.0f} ms   heard {heard!r}  main {answer[:40]!r}")
            await voice
            await asyncio.sleep(0.5)
    finally:
        await manager.close()
    print()
    print(f"end of the other party's question -> first quick-answer token: p50 {percentile(first_aux, 50):.0f} ms, "
          f"p95 {percentile(first_aux, 95):.0f} ms (the page's promise: within a second)")
    print(f"end of the other party's question -> main answer complete:   p50 {percentile(mains, 50):.0f} ms, "
          f"p95 {percentile(mains, 95):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=8)
    args = parser.parse_args()
    print(f"machine: {describe()}")
    with serve_app(create_app(local_engine(EngineSettings()))) as url:
        asyncio.run(run(f"{url}/v1", args.questions))


if __name__ == "__main__":
    main()
