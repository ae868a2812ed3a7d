"""`parley copilot`: the copilot in a terminal, from two audio sources.

The microphone (or a WAV file) is "You" on a session with the quick auxiliary assistant; a
loopback/monitor device (or a WAV file) is "Them" on a transcription-only session. Their final
lines go into the assistant's conversation, and each gets a main answer from the answerer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any, TextIO

from . import THEM_LABEL, mic_session, speaker_session
from .answerer import Answerer, ChatAnswerer, Line, LocalAnswerer, ResponsesAnswerer


def default_answerer() -> Answerer:
    """OpenAI's Responses API with a key, a chat URL when configured, else the offline glossary."""
    if os.environ.get("PARLEY_COPILOT_CHAT_URL"):
        return ChatAnswerer(os.environ["PARLEY_COPILOT_CHAT_URL"], os.environ.get("PARLEY_COPILOT_MODEL", "llama3.2"),
                            os.environ.get("PARLEY_COPILOT_CHAT_API_KEY"))
    if os.environ.get("OPENAI_API_KEY"):
        return ResponsesAnswerer(os.environ["OPENAI_API_KEY"], os.environ.get("PARLEY_COPILOT_MODEL", "gpt-4.1-mini"))
    return LocalAnswerer()


async def run_copilot(*, base_url: str, api_key: str | None, mic: str, speaker: str, answerer: Answerer | None = None,
                      out: TextIO = sys.stdout, speed: float = 1.0, settle_s: float = 3.0) -> list[dict[str, Any]]:
    """Run until both sources end (files) or Ctrl-C (devices); returns the timeline, also printed as JSON lines."""
    from parley.client import ConnectionManager
    from parley.client.cli import credentials, feed_source

    answerer = answerer or default_answerer()
    manager = ConnectionManager(base_url=base_url)
    # Each connection its own keys: on a Parley server, short-lived ones for its copilot personas.
    manager.add("mic", session=mic_session(), **credentials(api_key, base_url, persona="copilot/mic"))
    manager.add("speaker", intent="transcription", session=speaker_session(),
                **credentials(api_key, base_url, persona="copilot/speaker"))
    manager.inject("speaker", into="mic", template=THEM_LABEL + " {text}", respond=True)
    lines: list[Line] = []
    timeline: list[dict[str, Any]] = []
    started = time.monotonic()
    tasks: set[asyncio.Task[None]] = set()

    def emit(kind: str, text: str, **extra: Any) -> None:
        entry = {"t": round(time.monotonic() - started, 3), "kind": kind, "text": text, **extra}
        timeline.append(entry)
        out.write(json.dumps(entry) + "\n")
        out.flush()

    async def main_answer() -> None:
        words = [part async for part in answerer.answer(list(lines))]
        emit("main", "".join(words).strip(), label=answerer.label)

    def on_transcript(name: str, event: Any) -> None:
        text = event.transcript.strip()
        if not text:
            return
        line = Line("them", text) if name == "speaker" else Line("you", text)
        lines.append(line)
        emit(line.speaker, text)
        if line.speaker == "them":
            task = asyncio.ensure_future(main_answer())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def on_message(name: str, message: Any) -> None:
        if name == "mic" and message.role == "assistant" and message.text:
            emit("aux", message.text)

    manager.on("conversation.item.input_audio_transcription.completed", on_transcript)
    manager.on("message", on_message)
    await manager.connect()
    try:
        await asyncio.gather(feed_source(manager["mic"], mic, speed), feed_source(manager["speaker"], speaker, speed))
        await asyncio.sleep(settle_s)  # the last turns' transcripts and answers
        if tasks:
            await asyncio.wait(tasks, timeout=30)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await manager.close()
    return timeline
