"""The local engine's auxiliary copilot: one or two quick lines from the glossary.

Selected when the session carries the copilot's instructions (`parley.apps.copilot`); anything
else goes to `fallback`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from parley.apps.copilot import AUX_MARKER, THEM_LABEL, lookup
from parley.engine.responders.base import Responder, ResponseChunk, ResponseRequest, is_message, stream_text
from parley.engine.responders.generic import GenericResponder
from parley.protocol.items import item_text


class CopilotResponder:
    def __init__(self, fallback: Responder | None = None) -> None:
        self.fallback: Responder = fallback if fallback is not None else GenericResponder()

    async def respond(self, request: ResponseRequest) -> AsyncIterator[ResponseChunk]:
        if AUX_MARKER not in request.instructions:
            async for chunk in self.fallback.respond(request):
                yield chunk
            return
        async for delta in stream_text(self.reply(request)):
            yield delta

    @staticmethod
    def reply(request: ResponseRequest) -> str:
        last = next((item_text(i) for i in reversed(request.items) if is_message(i, "user") and item_text(i)), "")
        them = last.startswith(THEM_LABEL)
        entries = lookup(last.removeprefix(THEM_LABEL), limit=2)
        if entries:
            return " ".join(f"{e.term}: {e.quick}" for e in entries)
        if them:
            return "Take a moment: restate their question, then answer it directly with one example."
        return "Keep going: make your point, then give one concrete example."
