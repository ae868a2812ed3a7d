"""The interface between the engine's session and whatever writes the agent's words.

A responder sees the conversation as GA items (plain dicts, audio bytes removed; user audio
items carry their transcript) and yields text deltas and/or function calls. It never sees
audio and never talks to a socket: the session turns its output into protocol events and the
TTS turns its text into speech.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ResponseRequest:
    """Everything a responder may use to write one response."""

    instructions: str
    # GA conversation items in conversation order: {"type": "message", "role": ..., "content": [...]},
    # {"type": "function_call", ...}, {"type": "function_call_output", ...}.
    items: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    output_modalities: tuple[str, ...] = ("audio",)
    max_output_tokens: int | None = None
    metadata: dict[str, str] | None = None
    voice: str = "alloy"
    model: str = "gpt-realtime"


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: str  # a JSON string, as on the wire
    call_id: str | None = None  # the session assigns one when None


ResponseChunk = TextDelta | FunctionCall


class ResponderError(Exception):
    """A responder could not write the response (its model endpoint failed, timed out, ...).

    The session turns it into a `failed` response whose error message is `str(exc)`.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Responder(Protocol):
    """Writes one response. Cancellation arrives as `asyncio.CancelledError` (barge-in)."""

    def respond(self, request: ResponseRequest) -> AsyncIterator[ResponseChunk]: ...


# -- helpers for responders -------------------------------------------------------------------


def is_message(item: dict[str, Any], role: str) -> bool:
    return item.get("type", "message") == "message" and item.get("role") == role


def text_chunks(text: str) -> list[str]:
    """Word-sized chunks (each with its trailing space) that concatenate to `text`."""
    return re.findall(r"\S+\s*", text)


async def stream_text(text: str) -> AsyncIterator[TextDelta]:
    """Yield `text` as word-sized deltas, letting other tasks (and a cancellation) in between."""
    for i, chunk in enumerate(text_chunks(text)):
        if i:
            await asyncio.sleep(0)
        yield TextDelta(chunk)
