"""The copilot: help during a live call or interview, from two audio streams.

`mic` is the user (transcription and a fast, text-only auxiliary assistant); `speaker` is the
other party, captured from the system audio (transcription only). Final `speaker` lines are
injected into the `mic` conversation labelled as the other party. A slower "main" answer is
built from the whole transcript by `answerer`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

THEM_LABEL = "[Them]"
# The marker line the local engine uses to recognise the auxiliary assistant (its instructions
# are ordinary text for a real model).
AUX_MARKER = "You are Parley's live copilot."
AUX_INSTRUCTIONS = f"""{AUX_MARKER} You help the user during a live call or interview.
Messages that start with {THEM_LABEL} are what the other party just said (transcribed from the system audio);
other user messages are the user's own words.
Answer immediately, in one or two short lines: a relevant fact, definition or phrasing the user can say next.
No greetings, no apologies, no questions back. If the user hesitates (umm, uh), suggest how to continue.
A fuller answer comes separately from the main assistant."""


def mic_session(transcription_model: str = "whisper-1") -> dict[str, Any]:
    """The `mic` connection: the user's words, and quick text-only answers."""
    return {
        "type": "realtime",
        "instructions": AUX_INSTRUCTIONS,
        "output_modalities": ["text"],
        "audio": {"input": {
            "transcription": {"model": transcription_model, "language": "en"},
            # Quick turns: the aux answer should come while it still helps.
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400, "create_response": True,
                               "interrupt_response": False},
        }},
    }


def speaker_session(transcription_model: str = "whisper-1") -> dict[str, Any]:
    """The `speaker` connection: the other party's words, transcribed, never answered."""
    return {
        "type": "transcription",
        "audio": {"input": {
            "transcription": {"model": transcription_model, "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
        }},
    }


def them_item(text: str) -> dict[str, Any]:
    """The `conversation.item.create` item that tells the mic session what the other party said."""
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"{THEM_LABEL} {text}"}]}


@dataclass(frozen=True)
class Entry:
    term: str
    aliases: tuple[str, ...]
    quick: str
    main: str


def _norm(text: str) -> str:
    return " " + re.sub(r"[^a-z0-9+#]+", " ", text.lower()).strip() + " "


@lru_cache(maxsize=1)
def glossary() -> tuple[Entry, ...]:
    data = yaml.safe_load(resources.files(__package__).joinpath("glossary.yaml").read_text(encoding="utf-8"))
    return tuple(Entry(e["term"], tuple(e["aliases"]), e["quick"], e["main"]) for e in data["entries"])


def lookup(text: str, limit: int = 3) -> list[Entry]:
    """Glossary entries the text mentions, best (longest alias, earliest) first."""
    norm = _norm(text)
    scored: list[tuple[int, int, Entry]] = []
    for entry in glossary():
        best: tuple[int, int] | None = None
        for alias in entry.aliases:
            at = norm.find(_norm(alias))
            if at >= 0 and (best is None or len(alias) > best[0]):
                best = (len(alias), at)
        if best is not None:
            scored.append((-best[0], best[1], entry))
    return [e for _, _, e in sorted(scored, key=lambda s: (s[0], s[1]))][:limit]
