"""A conversation as the server's events describe it: sans-I/O, one reading for every reader.

`ConversationState.apply(event, now)` takes one server event (raw, a dict, or a view from
`read_server_event`) and returns what it changed (`protocol.changes`). It imports no asyncio,
no sockets and no clock: `now` (any clock the caller likes) only stamps new items and responses.

The state owns the rules every reader needs the same way:

- item order by `previous_item_id` (null: the first item; unknown or absent: the end), not by
  arrival; an item a response mentions before the conversation places it waits at the end; a
  retrieved item the reader missed (`conversation.item.retrieved`) goes before the one naming it;
- out-of-band responses (`conversation_id` null) keep their items to themselves;
- when an item is complete with its words: typed text at once, a user's audio when its transcript
  arrives (or fails, or the session does not transcribe), an answer at its `done`;
- the active response, the session as the server reported it;
- `item_text()` and `heard_text()` (the words of a truncated answer that were heard).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from . import changes as ch
from .items import item_text as content_text
from .records import Item, Response
from .server_events import InvalidServerEvent, ServerEvent, read_server_event

__all__ = ["ConversationState", "Item", "Response"]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _b64_size(b64: str) -> int:
    return len(b64) * 3 // 4 - (2 if b64.endswith("==") else 1 if b64.endswith("=") else 0)


class ConversationState:
    """Items by id in the server's order, the responses in progress and the session."""

    def __init__(self) -> None:
        self._items: dict[str, Item] = {}
        self._order: list[str] = []
        self.session: dict[str, Any] = {}
        self.responses: dict[str, Response] = {}
        self.active_response_id: str | None = None
        self._speech: tuple[str | None, int | None, int | None] | None = None  # item id, start, end
        self._completed: dict[str, str] = {}  # item id -> the words its last ItemCompleted carried
        self._bytes_per_ms = 48.0  # of output audio, in the session's output format
        self._now = 0.0
        self._handlers: dict[str, Callable[[ServerEvent, list[ch.Change]], None]] = {
            "session.created": self._session,
            "session.updated": self._session,
            "error": self._error,
            "input_audio_buffer.speech_started": self._speech_started,
            "input_audio_buffer.speech_stopped": self._speech_stopped,
            "input_audio_buffer.committed": self._committed,
            "input_audio_buffer.cleared": self._cleared,
            "conversation.item.added": self._item_added,
            "conversation.item.done": self._item_done,
            "conversation.item.retrieved": self._retrieved,
            "conversation.item.truncated": self._truncated,
            "conversation.item.deleted": self._deleted,
            "conversation.item.input_audio_transcription.delta": self._transcription_delta,
            "conversation.item.input_audio_transcription.completed": self._transcription_completed,
            "conversation.item.input_audio_transcription.failed": self._transcription_failed,
            "response.created": self._response_created,
            "response.output_item.added": self._output_item,
            "response.output_item.done": self._output_item,
            "response.output_text.delta": self._text_delta,
            "response.output_audio_transcript.delta": self._text_delta,
            "response.output_text.done": self._text_done,
            "response.output_audio_transcript.done": self._text_done,
            "response.output_audio.delta": self._audio_delta,
            "response.function_call_arguments.delta": self._arguments_delta,
            "response.function_call_arguments.done": self._arguments_done,
            "response.done": self._response_done,
            "output_audio_buffer.started": self._playback_started,
            "output_audio_buffer.stopped": self._playback_stopped,
            "output_audio_buffer.cleared": self._playback_stopped,
        }

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
        """An item of the conversation, or of a response in progress (out of band)."""
        if item_id is None:
            return None
        item = self._items.get(item_id)
        if item is None:
            for response in self.responses.values():
                if item_id in response.items:
                    return response.items[item_id]
        return item

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

    def item_text(self, item_id: str) -> str:
        item = self.get(item_id)
        return item.text if item is not None else ""

    def heard_text(self, item_id: str) -> str:
        item = self.get(item_id)
        return item.heard_text if item is not None else ""

    def position(self, item_id: str) -> int:
        """The item's index in the conversation (ValueError when it is not in it)."""
        return self._order.index(item_id)

    @property
    def transcribing(self) -> bool:
        """Whether the session (as last reported) transcribes the user's audio."""
        if self.session.get("type") == "transcription":
            return True
        audio = self.session.get("audio")
        inp = audio.get("input") if isinstance(audio, dict) else None
        return isinstance(inp, dict) and isinstance(inp.get("transcription"), dict)

    @property
    def output_bytes_per_ms(self) -> float:
        return self._bytes_per_ms

    # -- applying events ------------------------------------------------------------------------

    def apply(self, event: ServerEvent | dict[str, Any] | str | bytes, now: float) -> list[ch.Change]:
        """Apply one server event; what it changed. Never raises on bad input."""
        if not isinstance(event, ServerEvent):
            event = read_server_event(event)
        handler = self._handlers.get(event.type)
        if handler is None:
            return [ch.InvalidEvent(event.reason)] if isinstance(event, InvalidServerEvent) else []
        self._now = now
        out: list[ch.Change] = []
        try:
            handler(event, out)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            # A field of the wrong shape: the event is invalid, the state keeps what it had.
            out.append(ch.InvalidEvent(f"malformed {event.type!r} event: {type(exc).__name__}: {exc}"))
        return out

    def connection_lost(self, reason: str) -> list[ch.Change]:
        """The session is gone: whatever it was writing ends here, as `incomplete`."""
        out: list[ch.Change] = []
        for rid in list(self.responses):
            response = self.responses.pop(rid)
            response.status = "incomplete"
            for item in self._response_items(response):
                if item.status == "in_progress":
                    item.status = "incomplete"
                    self._check_complete(item, out)
            out.append(ch.ResponseDone(response, "incomplete", {"type": "incomplete", "reason": reason}, None,
                                       tuple(self._response_items(response))))
        self.active_response_id = None
        self._speech = None
        return out

    def mark_out_of_band(self, response_id: str) -> None:
        """The caller knows a response is out of band though its events did not say so."""
        response = self.responses.get(response_id)
        if response is not None:
            response.out_of_band = True
            if self.active_response_id == response_id:
                self.active_response_id = None

    def forget(self, item_id: str) -> Item | None:
        """Drop an item without an event (a reader that knows it no longer exists upstream)."""
        item = self._items.pop(item_id, None)
        if item is not None:
            self._order.remove(item_id)
            self._completed.pop(item_id, None)
        return item

    def clear(self) -> None:
        self._items.clear()
        self._order.clear()
        self._completed.clear()
        self.responses.clear()
        self.active_response_id = None

    # -- placement ------------------------------------------------------------------------------

    def _place(self, item: Item, previous: str | None, *, explicit: bool) -> None:
        """Put `item` after `previous`; `explicit` when the event said where (null: first)."""
        item.previous_item_id = previous
        if previous is not None and previous in self._items and previous != item.id:
            self._order.insert(self._order.index(previous) + 1, item.id)
        elif previous is None and explicit:
            self._order.insert(0, item.id)
        else:
            self._order.append(item.id)

    def _upsert(self, wire: dict[str, Any], previous: Any, explicit: bool, out: list[ch.Change]) -> Item | None:
        item_id = _str(wire.get("id"))
        if not item_id:
            out.append(ch.InvalidEvent("an item without an id"))
            return None
        prev = _str(previous)
        item = self._items.get(item_id)
        if item is None:
            item = Item(id=item_id, created_at=self._now)
            self._update(item, wire)
            self._items[item_id] = item
            self._place(item, prev, explicit=explicit)
            out.append(ch.ItemPlaced(item, prev))
            return item
        if explicit and prev != item.previous_item_id and (prev is None or prev in self._items) and prev != item_id:
            # The conversation says where an item a response mentioned first belongs.
            self._order.remove(item_id)
            self._place(item, prev, explicit=True)
        elif explicit and prev is not None and prev not in self._items and prev != item_id:
            item.previous_item_id = prev  # one this reader missed: where a retrieved copy of it goes
        self._update(item, wire)
        return item

    def _orphan_user_audio(self, item_id: str, out: list[ch.Change]) -> Item:
        """A user audio item an event names before (or without) its placement."""
        item = self._items.get(item_id)
        if item is None:
            item = Item(id=item_id, role="user", status="completed", has_audio=True, created_at=self._now,
                        content=[{"type": "input_audio", "transcript": None}])
            self._items[item_id] = item
            self._place(item, None, explicit=False)
            out.append(ch.ItemPlaced(item, None))
        return item

    @staticmethod
    def _update(item: Item, data: dict[str, Any]) -> None:
        kind = _str(data.get("type"))
        if kind:
            item.type = kind
        status = _str(data.get("status"))
        if status:
            item.status = status
        role = _str(data.get("role"))
        if role:
            item.role = role
        content = data.get("content")
        if isinstance(content, list):
            parts = [dict(p) for p in content if isinstance(p, dict)]
            for p in parts:
                p.pop("audio", None)  # never keep base64 audio in the state
                if p.get("type") in ("input_audio", "output_audio"):
                    item.has_audio = True
            if parts or not item.content:
                item.content = parts
            words = content_text({"content": parts})
            if words and item.truncated_ms is not None:
                item.heard = words  # the server's copy of a cut answer holds the words that were heard
            elif words and (item.completed or (not item.parts and item.role == "user")):
                item.final_text = words
        for key in ("call_id", "name", "output"):
            value = _str(data.get(key))
            if value is not None:
                setattr(item, key, value)
        arguments = _str(data.get("arguments"))
        if arguments is not None and (arguments or not item.arguments):
            item.arguments = arguments
        if item.type == "message" and item.role == "user" and item.has_audio and item.status == "in_progress":
            item.status = "completed"  # committed audio is final; only its transcript may follow

    # -- completion -----------------------------------------------------------------------------

    def _words_pending(self, item: Item) -> bool:
        """A user's audio whose transcript is still on the way."""
        if item.role != "user" or not item.has_audio or item.final_text is not None or item.transcription_failed:
            return False
        if self.session:
            return self.transcribing
        # No session seen (a reader that joined late): an audio part without a transcript waits.
        return any(p.get("type") == "input_audio" and p.get("transcript") is None for p in item.content)

    def _check_complete(self, item: Item, out: list[ch.Change], usage: dict[str, Any] | None = None) -> None:
        if not item.completed or self._words_pending(item):
            return
        text = item.text
        before = self._completed.get(item.id)
        if before is not None and before == text:
            return
        self._completed[item.id] = text
        out.append(ch.ItemCompleted(item, text, before is None, usage))

    def _response_items(self, response: Response) -> list[Item]:
        found = [response.items.get(i) or self._items.get(i) for i in response.item_ids]
        return [i for i in found if i is not None]

    # -- handlers -------------------------------------------------------------------------------

    def _session(self, event: ServerEvent, out: list[ch.Change]) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            raise TypeError("'session' is not an object")
        was_transcribing = self.transcribing
        self.session = session
        audio = session.get("audio")
        output = audio.get("output") if isinstance(audio, dict) else None
        fmt = output.get("format") if isinstance(output, dict) else None
        name = fmt.get("type") if isinstance(fmt, dict) else fmt
        self._bytes_per_ms = 8.0 if name in ("audio/pcmu", "audio/pcma") else 48.0
        out.append(ch.SessionChanged(session))
        # Items that waited for a transcript the session no longer promises are complete now.
        if was_transcribing and not self.transcribing:
            for item in self:
                self._check_complete(item, out)

    def _error(self, event: ServerEvent, out: list[ch.Change]) -> None:
        err = event.get("error")
        err = err if isinstance(err, dict) else {}
        out.append(ch.ErrorReceived(_str(err.get("code")), str(err.get("message") or ""), _str(err.get("param")),
                                    _str(err.get("event_id")), _str(err.get("type"))))

    def _speech_started(self, event: ServerEvent, out: list[ch.Change]) -> None:
        start = event.get("audio_start_ms")
        start = start if isinstance(start, int) else None
        self._speech = (event.item_id, start, None)
        out.append(ch.SpeechStarted(event.item_id, start))

    def _speech_stopped(self, event: ServerEvent, out: list[ch.Change]) -> None:
        end = event.get("audio_end_ms")
        end = end if isinstance(end, int) else None
        start = self._speech[1] if self._speech is not None else None
        self._speech = (event.item_id, start, end)
        out.append(ch.SpeechStopped(event.item_id, end))

    def _committed(self, event: ServerEvent, out: list[ch.Change]) -> None:
        item_id = event.item_id
        if not item_id:
            raise ValueError("no item_id")
        previous = _str(event.get("previous_item_id"))
        item = self._items.get(item_id)
        if item is None:
            item = Item(id=item_id, role="user", status="completed", has_audio=True, created_at=self._now,
                        content=[{"type": "input_audio", "transcript": None}])
            self._items[item_id] = item
            self._place(item, previous, explicit="previous_item_id" in event)
            out.append(ch.ItemPlaced(item, previous))
        speech = self._speech
        if speech is not None and speech[0] in (item_id, None):
            item.speech_start_ms, item.speech_end_ms = speech[1], speech[2]
        self._speech = None
        out.append(ch.InputCommitted(item_id, previous))

    def _cleared(self, _event: ServerEvent, out: list[ch.Change]) -> None:
        self._speech = None
        out.append(ch.InputCleared())

    def _item_added(self, event: ServerEvent, out: list[ch.Change]) -> None:
        wire = event.get("item")
        if not isinstance(wire, dict):
            raise TypeError("'item' is not an object")
        item = self._upsert(wire, event.get("previous_item_id"), "previous_item_id" in event, out)
        if item is not None:
            self._check_complete(item, out)

    _item_done = _item_added

    def _retrieved(self, event: ServerEvent, out: list[ch.Change]) -> None:
        wire = event.get("item")
        if not isinstance(wire, dict):
            raise TypeError("'item' is not an object")
        item_id = _str(wire.get("id"))
        item = self.get(item_id)
        if item is not None and item.truncated_ms is not None:
            # Parley's engine trims a cut answer's transcript to what was played: the words heard.
            # OpenAI documents removing it instead; then the estimate from the audio stands.
            words = content_text(wire)
            if words:
                item.heard = words
        elif item_id and (item is None or item_id not in self._completed):
            # Backfill by a reader that missed events. The copy names no previous item: an unknown
            # one goes just before the item that named it as its previous, else at the end.
            if item is None:
                item = self._items[item_id] = Item(id=item_id, created_at=self._now)
                after = next((i for i in self._order if self._items[i].previous_item_id == item_id), None)
                self._order.insert(self._order.index(after) if after is not None else len(self._order), item_id)
                out.append(ch.ItemPlaced(item, None))
            self._update(item, wire)
            self._check_complete(item, out)
        out.append(ch.ItemRetrieved(item, wire))

    def _truncated(self, event: ServerEvent, out: list[ch.Change]) -> None:
        item_id = event.item_id
        end = event.get("audio_end_ms")
        if not item_id or not isinstance(end, int | float) or isinstance(end, bool):
            raise ValueError("needs item_id and a numeric audio_end_ms")
        item = self.get(item_id)
        said = item.text if item is not None else ""
        if item is not None:
            item.truncated_ms = float(end)
            item.heard = None
        out.append(ch.ItemTruncated(item_id, int(end), item.heard_text if item is not None else "", said))

    def _deleted(self, event: ServerEvent, out: list[ch.Change]) -> None:
        item_id = event.item_id
        if not item_id:
            raise ValueError("no item_id")
        self.forget(item_id)
        out.append(ch.ItemDeleted(item_id))

    def _transcription_delta(self, event: ServerEvent, out: list[ch.Change]) -> None:
        delta = event.get("delta")
        if not event.item_id or not isinstance(delta, str):
            raise ValueError("needs item_id and a string delta")
        item = self._orphan_user_audio(event.item_id, out)
        item.parts.append(delta)
        out.append(ch.TranscriptDelta(item, delta))

    def _transcription_completed(self, event: ServerEvent, out: list[ch.Change]) -> None:
        if not event.item_id:
            raise ValueError("no item_id")
        item = self._orphan_user_audio(event.item_id, out)
        transcript = event.get("transcript")
        item.final_text = transcript.strip() if isinstance(transcript, str) else ""
        item.parts.clear()
        item.transcription_failed = False
        for part in item.content:
            if part.get("type") == "input_audio":
                part["transcript"] = item.final_text
        usage = event.get("usage")
        self._check_complete(item, out, usage if isinstance(usage, dict) else None)

    def _transcription_failed(self, event: ServerEvent, out: list[ch.Change]) -> None:
        if not event.item_id:
            raise ValueError("no item_id")
        item = self._orphan_user_audio(event.item_id, out)
        item.transcription_failed = True
        self._check_complete(item, out)

    def _response_created(self, event: ServerEvent, out: list[ch.Change]) -> None:
        resp = event.get("response")
        rid = _str(resp.get("id")) if isinstance(resp, dict) else None
        if not isinstance(resp, dict) or not rid:
            raise ValueError("a response without an id")
        out_of_band = "conversation_id" in resp and resp.get("conversation_id") is None
        metadata = resp.get("metadata")
        response = Response(rid, out_of_band, metadata=metadata if isinstance(metadata, dict) else None,
                            created_at=self._now)
        self.responses[rid] = response
        if not out_of_band:
            self.active_response_id = rid
        out.append(ch.ResponseStarted(response))

    def _response_item(self, event: ServerEvent, out: list[ch.Change], wire: dict[str, Any] | None = None
                       ) -> Item | None:
        """The item an output event is about: in the conversation, or of an out-of-band response."""
        item_id = event.item_id or _str((wire or {}).get("id"))
        if not item_id:
            return None
        rid = event.response_id
        response = self.responses.get(rid) if rid else None
        item = self._items.get(item_id) or (response.items.get(item_id) if response is not None else None)
        if item is None:
            item = Item(id=item_id, role="assistant", response_id=rid, created_at=self._now)
            if response is not None and response.out_of_band:
                item.out_of_band = True
                response.items[item_id] = item
            else:
                self._items[item_id] = item
                self._place(item, None, explicit=False)  # until the conversation says where
            out.append(ch.ItemPlaced(item, None))
        if response is not None and item_id not in response.item_ids:
            response.item_ids.append(item_id)
        if rid and item.response_id is None:
            item.response_id = rid
        return item

    def _output_item(self, event: ServerEvent, out: list[ch.Change]) -> None:
        wire = event.get("item")
        if not isinstance(wire, dict):
            raise TypeError("'item' is not an object")
        item = self._response_item(event, out, wire)
        if item is None:
            raise ValueError("an item without an id")
        self._update(item, wire)
        if event.type == "response.output_item.done":
            if item.status == "in_progress":
                item.status = "completed"
            self._check_complete(item, out)

    def _text_delta(self, event: ServerEvent, out: list[ch.Change]) -> None:
        delta = event.get("delta")
        if not isinstance(delta, str):
            raise TypeError("'delta' is not a string")
        item = self._response_item(event, out)
        if item is None:
            raise ValueError("no item_id")
        item.parts.append(delta)
        out.append(ch.TranscriptDelta(item, delta))

    def _text_done(self, event: ServerEvent, out: list[ch.Change]) -> None:
        item = self._response_item(event, out)
        text = event.get("transcript", event.get("text"))
        if item is not None and isinstance(text, str):
            item.final_text = text

    def _audio_delta(self, event: ServerEvent, out: list[ch.Change]) -> None:
        # The hot path: 50 events a second per call.
        data = event.data
        b64 = data.get("delta")
        if b64.__class__ is not str:
            raise TypeError("'delta' is not a string")
        item = self._items.get(data.get("item_id"))  # type: ignore[arg-type]
        if item is None:
            item = self._response_item(event, out)
        ms = _b64_size(b64) / self._bytes_per_ms
        if item is not None:
            item.audio_ms += ms
        rid = data.get("response_id")
        out.append(ch.AudioReceived(rid if rid.__class__ is str else None, item.id if item is not None else None,
                                    b64, ms))

    def _arguments_delta(self, event: ServerEvent, out: list[ch.Change]) -> None:
        delta = event.get("delta")
        item = self._response_item(event, out)
        if item is not None and isinstance(delta, str):
            item.type, item.role = "function_call", None
            item.arguments += delta

    def _arguments_done(self, event: ServerEvent, out: list[ch.Change]) -> None:
        item = self._response_item(event, out)
        if item is None:
            raise ValueError("no item_id")
        item.type, item.role = "function_call", None
        for key in ("arguments", "name", "call_id"):
            value = _str(event.get(key))
            if value is not None:
                setattr(item, key, value)
        item.status = "completed"
        self._check_complete(item, out)

    def _response_done(self, event: ServerEvent, out: list[ch.Change]) -> None:
        resp = event.get("response")
        if not isinstance(resp, dict):
            raise TypeError("'response' is not an object")
        rid = _str(resp.get("id")) or ""
        status = _str(resp.get("status")) or "completed"
        response = self.responses.pop(rid, None)
        if response is None:  # a response this reader never saw start
            out_of_band = "conversation_id" in resp and resp.get("conversation_id") is None
            response = Response(rid, out_of_band, created_at=self._now)
        response.status = status
        final = "completed" if status == "completed" else "incomplete"
        outputs = resp.get("output")
        for wire in outputs if isinstance(outputs, list) else []:
            if not isinstance(wire, dict) or not _str(wire.get("id")):
                continue
            item = self._items.get(wire["id"]) or response.items.get(wire["id"])
            if item is None:
                if response.out_of_band:
                    item = response.items[wire["id"]] = Item(id=wire["id"], out_of_band=True, response_id=rid,
                                                             created_at=self._now)
                    out.append(ch.ItemPlaced(item, None))
                else:
                    item = self._upsert(wire, None, False, out)
                    if item is None:
                        continue
                    item.response_id = rid
            if wire["id"] not in response.item_ids:
                response.item_ids.append(wire["id"])
            self._update(item, wire)
            if item.status == "in_progress":
                item.status = final
        for item in self._response_items(response):
            if item.status == "in_progress":
                item.status = final
            self._check_complete(item, out)
        if self.active_response_id == rid:
            self.active_response_id = None
        usage = resp.get("usage")
        details = resp.get("status_details")
        out.append(ch.ResponseDone(response, status, details if isinstance(details, dict) else None,
                                   usage if isinstance(usage, dict) else None, tuple(self._response_items(response))))

    def _playback_started(self, event: ServerEvent, out: list[ch.Change]) -> None:
        rid = event.response_id
        item = next((i for i in reversed(self.items) if i.response_id == rid and i.role == "assistant"), None)
        out.append(ch.PlaybackStarted(rid, item.id if item is not None else None))

    def _playback_stopped(self, event: ServerEvent, out: list[ch.Change]) -> None:
        out.append(ch.PlaybackStopped(event.response_id, event.type == "output_audio_buffer.cleared"))
