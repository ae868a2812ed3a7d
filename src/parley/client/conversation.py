"""The client's copy of the conversation.

Items are kept by id and ordered the way the server orders them (`previous_item_id`), not the
way their events happened to arrive; transcripts of both roles are assembled from their deltas.
Because user transcription runs asynchronously, a user's words may arrive after the assistant
already started answering: the order of `Conversation` is still the order of speech.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

INAUDIBLE = "(inaudible)"


@dataclass
class Item:
    """One conversation item as the client knows it (no audio bytes, except kept user audio)."""

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
    created_at: float = field(default_factory=time.monotonic)
    # assembled words: deltas until the final text is known
    parts: list[str] = field(default_factory=list)
    final_text: str | None = None
    # user audio: transcription state; assistant audio: ms received and where it was cut
    has_audio: bool = False
    transcription_failed: bool = False
    audio_ms: float = 0.0
    truncated_ms: float | None = None
    speech_start_ms: int | None = None
    speech_end_ms: int | None = None
    announced: bool = False

    @property
    def text(self) -> str:
        """Typed text, or the transcript of the item's audio (so far)."""
        if self.final_text is not None:
            return self.final_text
        if self.parts:
            return "".join(self.parts)
        return content_text(self.content)

    @property
    def heard_text(self) -> str:
        """The words the listener heard: the transcript cut where the audio was truncated."""
        text = self.text
        if self.truncated_ms is None or self.audio_ms <= 0 or self.truncated_ms >= self.audio_ms:
            return text
        words = text.split()
        return " ".join(words[: int(len(words) * self.truncated_ms / self.audio_ms)])

    @property
    def completed(self) -> bool:
        return self.status in ("completed", "incomplete")

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


def content_text(content: list[dict[str, Any]]) -> str:
    words = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        text = part.get("text") if kind in ("input_text", "output_text", "text") else part.get("transcript")
        if isinstance(text, str) and text:
            words.append(text)
    return " ".join(words)


class Conversation:
    """Items by id, in the server's order."""

    def __init__(self) -> None:
        self._items: dict[str, Item] = {}
        self._order: list[str] = []

    # -- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[Item]:
        items = self._items
        return (items[i] for i in list(self._order))

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __getitem__(self, item_id: str) -> Item:
        return self._items[item_id]

    def get(self, item_id: str | None) -> Item | None:
        return self._items.get(item_id) if item_id is not None else None

    @property
    def ids(self) -> list[str]:
        return list(self._order)

    @property
    def items(self) -> list[Item]:
        return list(self)

    def messages(self) -> list[tuple[str, str]]:
        """(role, text) of every message with words, in conversation order."""
        return [(i.role or "", i.text) for i in self if i.type == "message" and i.text]

    def transcript(self) -> str:
        """The conversation as text, one "role: words" line per message."""
        return "\n".join(f"{role}: {text}" for role, text in self.messages())

    def last(self, role: str | None = None, type: str = "message") -> Item | None:
        for item_id in reversed(self._order):
            item = self._items[item_id]
            if item.type == type and (role is None or item.role == role):
                return item
        return None

    # -- writing (by the client as events arrive) -----------------------------------------------

    def place(self, item: Item, previous_item_id: str | None, *, at_root: bool = False) -> None:
        """Put `item` after `previous_item_id` (None or unknown: at the end; `at_root`: first)."""
        known = item.id in self._items
        self._items[item.id] = item
        if known:
            current = self._order.index(item.id)
            before = self._order[current - 1] if current > 0 else None
            if previous_item_id is None or previous_item_id == before or previous_item_id not in self._items:
                return
            self._order.pop(current)
        item.previous_item_id = previous_item_id
        if at_root:
            self._order.insert(0, item.id)
        elif previous_item_id is not None and previous_item_id in self._items and previous_item_id != item.id:
            self._order.insert(self._order.index(previous_item_id) + 1, item.id)
        else:
            self._order.append(item.id)

    def upsert(self, data: dict[str, Any], previous_item_id: str | None = None, *, at_root: bool = False) -> Item:
        """Create or update an item from its wire shape."""
        item_id = data.get("id")
        if not isinstance(item_id, str) or not item_id:
            raise ValueError("item without an id")
        item = self._items.get(item_id)
        if item is None:
            item = Item(id=item_id)
            self.place(item, previous_item_id, at_root=at_root)
        elif previous_item_id is not None:
            self.place(item, previous_item_id)
        update_item(item, data)
        return item

    def remove(self, item_id: str) -> Item | None:
        item = self._items.pop(item_id, None)
        if item is not None:
            self._order.remove(item_id)
        return item

    def clear(self) -> None:
        self._items.clear()
        self._order.clear()


def update_item(item: Item, data: dict[str, Any]) -> None:
    kind = data.get("type")
    if isinstance(kind, str):
        item.type = kind
    status = data.get("status")
    if isinstance(status, str):
        item.status = status
    role = data.get("role")
    if isinstance(role, str):
        item.role = role
    content = data.get("content")
    if isinstance(content, list):
        parts = [dict(p) for p in content if isinstance(p, dict)]
        for p in parts:
            p.pop("audio", None)  # never keep base64 audio in the state
            if p.get("type") in ("input_audio", "output_audio", "audio"):
                item.has_audio = True
        if parts or not item.content:
            item.content = parts
        words = content_text(parts)
        if words and item.completed:
            item.final_text = words
        elif words and not item.parts and item.role == "user":
            item.final_text = words
    for key in ("call_id", "name", "output"):
        value = data.get(key)
        if isinstance(value, str):
            setattr(item, key, value)
    arguments = data.get("arguments")
    if isinstance(arguments, str) and (arguments or not item.arguments):
        item.arguments = arguments
