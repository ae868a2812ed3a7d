"""The copilot on the server: its two connections as personas, and the main answers.

The page opens two calls through /api/calls: `copilot/mic` (the user, with the quick assistant)
and `copilot/speaker` (the other party, transcription only). It injects each final line of
theirs into the mic call, so the mic call's recording holds both parties. Main answers are
written here from that recording and stored on the mic call.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from parley.apps.copilot import THEM_LABEL, mic_session, speaker_session
from parley.apps.copilot.answerer import Answerer, ChatAnswerer, Line, LocalAnswerer, ResponsesAnswerer

from .db import ItemRecord, Store, TranscriptItem, utcnow
from .settings import ServerSettings


@dataclass(frozen=True)
class CopilotConnection:
    """One of the copilot's two calls: who it is for the call machinery (id, name, its session)."""

    id: str
    name: str
    role: str
    voice: str = "alloy"

    def card(self) -> dict[str, Any]:
        return {"scenario": "copilot", "title": "Copilot",
                "persona": {"id": self.id, "name": self.name, "role": self.role, "voice": self.voice}}


PERSONAS = {
    "copilot/mic": CopilotConnection("copilot/mic", "Quick answer", "Your microphone and the quick assistant"),
    "copilot/speaker": CopilotConnection("copilot/speaker", "Them", "The other party (system audio)"),
}


def session_for(persona: CopilotConnection, settings: ServerSettings) -> dict[str, Any]:
    config = (mic_session if persona.id == "copilot/mic" else speaker_session)(settings.transcription_model)
    if config["type"] == "realtime":
        config["model"] = settings.model
    return config


def answerer_for(settings: ServerSettings) -> Answerer:
    """OpenAI's Responses API with a key, a chat URL when configured, else the offline glossary."""
    chat_url = os.environ.get("PARLEY_COPILOT_CHAT_URL")
    model = os.environ.get("PARLEY_COPILOT_MODEL")
    if chat_url:
        return ChatAnswerer(chat_url, model or "llama3.2", os.environ.get("PARLEY_COPILOT_CHAT_API_KEY"))
    if settings.upstream_kind == "openai" and settings.openai_api_key:
        return ResponsesAnswerer(settings.openai_api_key.get_secret_value(), model or "gpt-4.1-mini",
                                 base_url=settings.openai_base_url)
    return LocalAnswerer()


def lines_of(items: list[TranscriptItem]) -> list[Line]:
    """Both parties' lines from the mic call's recording, in order."""
    out: list[Line] = []
    for item in items:
        if item.role != "user" or not item.text:
            continue
        if item.text.startswith(THEM_LABEL):
            out.append(Line("them", item.text.removeprefix(THEM_LABEL).strip()))
        else:
            out.append(Line("you", item.text))
    return out


async def stream_answer(store: Store, call_id: str, answerer: Answerer, question: str | None = None) -> AsyncIterator[str]:
    """Server-sent events: the label, the answer's deltas, then done; the answer is stored on the call.

    `question` is their latest line as the page has it: its copy in the recording may still be on
    its way over the sideband.
    """
    items = await store.items(call_id)
    lines = lines_of(items)
    if question and not any(line.speaker == "them" and line.text == question for line in lines[-3:]):
        lines.append(Line("them", question))
    yield _sse({"label": answerer.label})
    text = ""
    try:
        async for delta in answerer.answer(lines):
            text += delta
            yield _sse({"delta": delta})
    except Exception as exc:  # a model that fails must not break the page
        yield _sse({"error": str(exc) or type(exc).__name__, "done": True})
        return
    seq = max((i.seq for i in items), default=0.0) + 0.5
    item_id = f"main_{len([i for i in items if i.kind == 'main_answer']) + 1}_{call_id}"[:64]
    await store.save_item(call_id, ItemRecord(item_id=item_id, seq=seq, role="assistant", kind="main_answer",
                                              persona=None, text=text.strip(), data={"label": answerer.label},
                                              started_at=utcnow()))
    yield _sse({"done": True, "text": text.strip()})


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"
