"""The local engine's own responder: a plain, honest scripted assistant.

The engine's default when no chat model is configured and no app gave it a responder of its own
(apps fall back to it for sessions that are not theirs).
It answers briefly, echoes what it heard (useful to check the microphone and the transcription),
and says plainly what it can do offline.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

from parley.protocol.items import item_text

from .base import ResponseChunk, ResponseRequest, is_message, stream_text

DEFAULT_HINT = (
    "For a real conversation, configure a chat model: set PARLEY_ENGINE_RESPONDER to chat and "
    "PARLEY_ENGINE_CHAT_URL to any OpenAI-compatible endpoint, like a local Ollama, or use OpenAI with an API key."
)

_HELP = re.compile(r"\b(help|what can you do|what do you do|who are you|what are you|how does this work|"
                   r"what can i (do|say|try))\b")
_HELLO = re.compile(r"^\W*(hi|hello|hey|good (morning|afternoon|evening)|hiya)\b")
_BYE = re.compile(r"\b(bye|goodbye|good bye|see you|that's all|thats all)\b")
_THANKS = re.compile(r"\b(thanks|thank you)\b")


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
        heard = " ".join(t for t in (item_text(it) for it in users_since) if t)
        if not heard:
            return pick(["Sorry, I didn't catch that. Could you say it again?",
                         "Sorry, I missed that. Could you repeat it?"], assistant_turns)
        low = heard.casefold()
        if _HELP.search(low):
            return ("I'm a scripted local engine. I can hear you, transcribe you and answer with simple "
                    f"replies, and play the practice scenarios an app brings. {self.hint}")
        if _BYE.search(low):
            return "Goodbye, and thanks for trying Parley!"
        if _HELLO.search(low):
            return "Hello! I'm Parley's local engine, running offline. Ask me what I can do."
        if _THANKS.search(low):
            return "You're welcome!"
        words = heard.split()
        echo = " ".join(words[:24]) + (" ..." if len(words) > 24 else "")
        already_hinted = any(self.hint in item_text(it) for it in items if is_message(it, "assistant"))
        if already_hinted:
            return f"I heard: {echo}"
        stop = "" if echo.endswith((".", "!", "?")) else "."  # "Thursday." must not become "Thursday.."
        return f"I heard: {echo}{stop} I'm a scripted local engine, so that's all I can do with it. {self.hint}"

    async def respond(self, request: ResponseRequest) -> AsyncIterator[ResponseChunk]:
        async for delta in stream_text(self.reply(request)):
            yield delta
