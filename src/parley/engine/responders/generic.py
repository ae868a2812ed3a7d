"""The fallback responder of the local engine: a plain, honest scripted assistant.

Used when the session's instructions match no scenario persona and no chat model is configured.
It answers briefly, echoes what it heard (useful to check the microphone and the transcription),
and says plainly what it can do offline.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

from .base import ResponseChunk, ResponseRequest, TextDelta

DEFAULT_HINT = (
    "For a real conversation, configure a chat model: set PARLEY_ENGINE_RESPONDER to chat and "
    "PARLEY_ENGINE_CHAT_URL to any OpenAI-compatible endpoint, like a local Ollama, or use OpenAI with an API key."
)

_HELP = re.compile(r"\b(help|what can you do|what do you do|who are you|what are you|how does this work|"
                   r"what can i (do|say|try))\b")
_HELLO = re.compile(r"^\W*(hi|hello|hey|good (morning|afternoon|evening)|hiya)\b")
_BYE = re.compile(r"\b(bye|goodbye|good bye|see you|that's all|thats all)\b")
_THANKS = re.compile(r"\b(thanks|thank you)\b")


def message_text(item: dict[str, Any]) -> str:
    """The words of a message item: typed text, or the transcript of its audio ("" if none)."""
    words = []
    for part in item.get("content") or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") in ("input_text", "output_text", "text"):
            text = part.get("text")
        else:
            text = part.get("transcript")
        if isinstance(text, str) and text.strip():
            words.append(text.strip())
    return " ".join(words)


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


def pick(options: Iterable[str], salt: int) -> str:
    seq = list(options)
    return seq[salt % len(seq)]


class GenericResponder:
    """A brief, scripted local assistant; it never calls tools."""

    def __init__(self, hint: str = DEFAULT_HINT) -> None:
        self.hint = hint

    def reply(self, request: ResponseRequest) -> str:
        """The whole reply text for `request` (what `respond` streams)."""
        items = request.items
        assistant_turns = sum(1 for it in items if is_message(it, "assistant"))
        users_since: list[dict[str, Any]] = []
        for it in items:
            if is_message(it, "user"):
                users_since.append(it)
            elif is_message(it, "assistant") or it.get("type") == "function_call":
                users_since = []
        latest = items[-1] if items else None
        if latest is not None and latest.get("type") == "function_call_output":
            return "Got it, thanks."
        if not users_since:
            if assistant_turns:
                return "I'm still here. Say something and I'll repeat what I heard."
            return ("Hi, I'm Parley's local voice engine, running offline with scripted replies. "
                    "Ask me what I can do.")
        heard = " ".join(t for t in (message_text(it) for it in users_since) if t)
        if not heard:
            return pick(["Sorry, I didn't catch that. Could you say it again?",
                         "Sorry, I missed that. Could you repeat it?"], assistant_turns)
        low = heard.casefold()
        if _HELP.search(low):
            return ("I'm a scripted local engine. I can hear you, transcribe you and answer with simple "
                    f"replies, and run practice scenarios like the bill negotiation. {self.hint}")
        if _BYE.search(low):
            return "Goodbye, and thanks for trying Parley!"
        if _HELLO.search(low):
            return "Hello! I'm Parley's local engine, running offline. Ask me what I can do."
        if _THANKS.search(low):
            return "You're welcome!"
        words = heard.split()
        echo = " ".join(words[:24]) + (" ..." if len(words) > 24 else "")
        already_hinted = any(self.hint in message_text(it) for it in items if is_message(it, "assistant"))
        if already_hinted:
            return f"I heard: {echo}"
        stop = "" if echo.endswith((".", "!", "?")) else "."  # "Thursday." must not become "Thursday.."
        return f"I heard: {echo}{stop} I'm a scripted local engine, so that's all I can do with it. {self.hint}"

    async def respond(self, request: ResponseRequest) -> AsyncIterator[ResponseChunk]:
        async for delta in stream_text(self.reply(request)):
            yield delta
