"""What a reader of server events knows of an item and of a response (`ConversationState` keeps them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .items import item_text as content_text

_DONE = ("completed", "incomplete")


@dataclass(eq=False)
class Item:
    """One item as a reader knows it (no audio bytes)."""

    id: str
    type: str = "message"
    role: str | None = None
    status: str = "in_progress"
    content: list[dict[str, Any]] = field(default_factory=list)
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""
    output: str | None = None
    response_id: str | None = None
    previous_item_id: str | None = None
    out_of_band: bool = False
    created_at: float = 0.0
    # words: deltas until the final text is known
    parts: list[str] = field(default_factory=list)
    final_text: str | None = None
    # a user's audio: whether it is transcribed; an answer's audio: ms received, where it was cut,
    # and the words the server kept when it was cut
    has_audio: bool = False
    transcription_failed: bool = False
    audio_ms: float = 0.0
    truncated_ms: float | None = None
    heard: str | None = None
    speech_start_ms: int | None = None
    speech_end_ms: int | None = None

    @property
    def text(self) -> str:
        """Typed text, or the transcript of the item's audio (so far)."""
        if self.final_text is not None:
            return self.final_text
        if self.parts:
            return "".join(self.parts)
        return content_text({"content": self.content})

    @property
    def heard_text(self) -> str:
        """The words the listener heard: as the server trimmed them, else the transcript cut in
        proportion to the audio played."""
        if self.truncated_ms is None:
            return self.text
        if self.heard is not None:
            return self.heard
        text = self.text
        if self.audio_ms <= 0 or self.truncated_ms >= self.audio_ms:
            return text
        words = text.split()
        return " ".join(words[: int(len(words) * self.truncated_ms / self.audio_ms)])

    @property
    def completed(self) -> bool:
        return self.status in _DONE

    def to_dict(self) -> dict[str, Any]:
        """The item in GA wire shape (as the server would describe it, without audio)."""
        out: dict[str, Any] = {"id": self.id, "object": "realtime.item", "type": self.type, "status": self.status}
        if self.type == "message":
            out["role"] = self.role
            out["content"] = [dict(p) for p in self.content]
        elif self.type == "function_call":
            out.update(call_id=self.call_id, name=self.name, arguments=self.arguments)
        elif self.type == "function_call_output":
            out.update(call_id=self.call_id, output=self.output)
        return out


@dataclass(eq=False)
class Response:
    """A response in progress (or, in `ResponseDone`, just ended)."""

    id: str
    out_of_band: bool = False
    status: str = "in_progress"
    metadata: dict[str, Any] | None = None
    created_at: float = 0.0
    item_ids: list[str] = field(default_factory=list)
    # out-of-band items live here, not in the conversation
    items: dict[str, Item] = field(default_factory=dict)
