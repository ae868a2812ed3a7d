"""Main answers: a considered answer from the whole transcript so far.

Three answerers behind one interface: OpenAI's Responses API (when a key is set), any
OpenAI-compatible Chat Completions URL, and an offline answerer over the shipped glossary.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx

from . import lookup

MAIN_INSTRUCTIONS = (
    "You are the main assistant of a live copilot. The transcript shows what the user ('You') and the other "
    "party ('Them') said, in order. Write the answer the user could give to the other party's latest question or "
    "point: accurate, structured, at most 120 words, ready to be said aloud. No preamble."
)


@dataclass(frozen=True)
class Line:
    speaker: Literal["you", "them"]
    text: str


def transcript_text(lines: list[Line]) -> str:
    return "\n".join(f"{'You' if line.speaker == 'you' else 'Them'}: {line.text}" for line in lines)


class Answerer(Protocol):
    label: str  # shown in the UI next to the answer

    def answer(self, lines: list[Line]) -> AsyncIterator[str]: ...


class LocalAnswerer:
    """Offline: the glossary's notes on what the latest question is about."""

    label = "Offline answerer (glossary, no model)"

    async def answer(self, lines: list[Line]) -> AsyncIterator[str]:
        question = next((line.text for line in reversed(lines) if line.speaker == "them"), "")
        entries = lookup(question) or lookup(" ".join(line.text for line in lines[-4:]))
        if not entries:
            text = ("I have no offline notes on this. A solid structure: restate the question in one sentence, "
                    "answer it directly, then give one concrete example from your own work.")
        else:
            first, *more = entries
            text = f"{first.term}: {first.main}"
            if more:
                text += " Also worth mentioning: " + " ".join(f"{e.term}: {e.quick}" for e in more)
        for word in text.split(" "):
            yield word + " "


class ChatAnswerer:
    """Any OpenAI-compatible Chat Completions endpoint (a local Ollama, a hosted model)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.label = f"Main answer ({model})"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout

    async def answer(self, lines: list[Line]) -> AsyncIterator[str]:
        body = {"model": self.model, "stream": True, "messages": [
            {"role": "system", "content": MAIN_INSTRUCTIONS},
            {"role": "user", "content": transcript_text(lines)}]}
        async with httpx.AsyncClient(timeout=self._timeout) as http, \
                http.stream("POST", f"{self.base_url}/chat/completions", json=body, headers=self._headers) as r:
            if r.status_code >= 400:
                raise RuntimeError(f"the chat model answered HTTP {r.status_code}")
            async for line in r.aiter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                try:
                    delta = json.loads(line[5:])["choices"][0]["delta"].get("content")
                except (ValueError, KeyError, IndexError):
                    continue
                if delta:
                    yield delta


class ResponsesAnswerer:
    """OpenAI's Responses API (the Assistants API the copilot's first design used is retired)."""

    def __init__(self, api_key: str, model: str = "gpt-4.1-mini", base_url: str | None = None) -> None:
        from openai import AsyncOpenAI

        self._client = AsyncOpenAI(api_key=api_key, base_url=base_url)
        self.model = model
        self.label = f"Main answer (OpenAI {model})"

    async def answer(self, lines: list[Line]) -> AsyncIterator[str]:
        stream = await self._client.responses.create(
            model=self.model, instructions=MAIN_INSTRUCTIONS, input=transcript_text(lines), stream=True)
        async for event in stream:
            if event.type == "response.output_text.delta":
                yield event.delta
