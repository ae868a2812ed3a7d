"""Carrying a conversation into a new session: the replay, and what was in flight.

A new session knows nothing, so the conversation is re-created as items: typed text as it was,
an answer as the words that were heard (its transcript, cut where the audio was truncated), a
user's audio as its transcript or, without one, the audio itself from the client's ring. A function
call goes with its output only when the call itself could be replayed.

What the old session had not acknowledged is sent again in order once the new one is live:
items not yet acknowledged, `response.create`s not yet answered, raw events sent while
disconnected.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Iterable
from typing import Any

from parley.client.audio_input import AudioInput
from parley.client.responses import PendingRequest
from parley.protocol.conversation import Item

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# A WebRTC data channel message holds 64 KiB: audio items are replayed only when this small.
DATA_CHANNEL_AUDIO_BYTES = 48_000


def replay_event(item: Item, replayed_calls: set[str], audio: AudioInput, max_audio: int | None) -> dict[str, Any] | None:
    """The `conversation.item.create` that re-creates `item`, or None when it cannot be."""
    wire: dict[str, Any]
    if item.type == "message":
        content: list[dict[str, Any]] = []
        if item.role == "assistant":
            text = item.heard_text
            if text:
                content.append({"type": "output_text", "text": text})
        else:
            for part in item.content:
                kind = part.get("type")
                if kind == "input_text" and isinstance(part.get("text"), str):
                    content.append({"type": "input_text", "text": part["text"]})
                elif kind == "input_image" and part.get("image_url"):
                    content.append({"type": "input_image", "image_url": part["image_url"]})
                elif kind == "input_audio":
                    if item.text:
                        content.append({"type": "input_text", "text": item.text})
                    else:
                        pcm = audio.slice(item.speech_start_ms, item.speech_end_ms)
                        if pcm and (max_audio is None or len(pcm) * 4 // 3 < max_audio):
                            content.append({"type": "input_audio", "audio": base64.b64encode(pcm).decode()})
            if not content and item.text:
                content.append({"type": "input_text", "text": item.text})
        if not content:
            return None
        wire = {"id": item.id, "type": "message", "role": item.role or "user", "content": content}
    elif item.type == "function_call":
        if item.status == "in_progress" or not item.name:
            return None
        wire = {"id": item.id, "type": "function_call", "name": item.name, "arguments": item.arguments or "{}"}
        if item.call_id:
            wire["call_id"] = item.call_id
            replayed_calls.add(item.call_id)
    elif item.type == "function_call_output":
        if not item.call_id or item.call_id not in replayed_calls:
            return None
        wire = {"id": item.id, "type": "function_call_output", "call_id": item.call_id, "output": item.output or ""}
    else:
        return None
    return {"type": "conversation.item.create", "event_id": f"replay_{item.id}", "item": wire}


def replay_events(items: Iterable[Item], *, skip: set[str], unacked: dict[str, dict[str, Any]],
                  audio: AudioInput, audio_in_events: bool) -> list[dict[str, Any]]:
    """The events that re-create `items` in a new session (those in `skip` are there already)."""
    calls: set[str] = set()
    events = []
    for item in items:
        if item.type == "function_call" and item.call_id and item.id in skip:
            calls.add(item.call_id)
        if item.id in skip or item.id in unacked:
            continue
        event = replay_event(item, calls, audio, None if audio_in_events else DATA_CHANNEL_AUDIO_BYTES)
        if event is not None:
            events.append(event)
    return events


class InFlight:
    """What a session was sent but had not answered, to send again on the next one."""

    def __init__(self) -> None:
        self.unacked: dict[str, dict[str, Any]] = {}  # item id -> its conversation.item.create
        self.requests: dict[str, PendingRequest] = {}  # tag -> an unanswered response.create
        self.outbox: deque[str] = deque(maxlen=256)  # raw events sent while disconnected

    def to_resend(self, now: float) -> list[str]:
        texts = [_dumps(event) for event in self.unacked.values()]
        for request in self.requests.values():
            request.sent_at = now
            texts.append(_dumps(request.event))
        texts.extend(self.outbox)
        self.outbox.clear()
        return texts
