"""The engine's realtime session: a sans-I/O state machine.

It owns every protocol rule (conversation and ordering, the input buffer and VAD turns,
transcription, the response lifecycle, cancel, truncate, barge-in) and never touches a socket,
a thread or a clock. Inputs are method calls (client events, microphone audio, the results of
work it asked for); outputs are taken with `take()`: server events (dicts, GA shapes) to send,
interleaved with effects (`engine.effects`) the driver must carry out — transcribe this audio,
start or cancel that response, clear playback. `engine.runtime` is that driver; the WebSocket and
WebRTC transports sit on top of it.

This module is the core: the session's config, client events and their dispatch, the
conversation's items, and time. The input side (audio, turns, commits, transcription) is
`engine.input`, over `engine.input_buffer` and `engine.turns`; responses, output and playback are
`engine.responses`.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from parley.audio.formats import InputDecoder, OutputEncoder
from parley.audio.pcm import FloatArray
from parley.engine.effects import (
    CancelResponse,
    ClearPlayback,
    CloseSession,
    Effect,
    StartResponse,
    Transcribe,
)
from parley.engine.input import SessionInput, check_transcription
from parley.engine.responses import SessionResponses
from parley.engine.turns import VAD_FRAME_MS, TurnDetection, VoiceDetector
from parley.protocol import events as ev
from parley.protocol import ids
from parley.protocol import items as it
from parley.protocol.client_events import (
    ClientEvent,
    ConversationItemCreate,
    ConversationItemDelete,
    ConversationItemRetrieve,
    ConversationItemTruncate,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    Invalid,
    OutputAudioBufferClear,
    ResponseCancel,
    ResponseCreate,
    SessionUpdate,
    parse_client_event,
)
from parley.protocol.errors import ProtocolError, error_from
from parley.protocol.items import FunctionCallItem, FunctionCallOutputItem, MessageItem
from parley.protocol.limits import MAX_SESSION_SECONDS
from parley.protocol.session import (
    RealtimeSessionConfig,
    ServerVad,
    SessionConfig,
    TranscriptionSessionConfig,
    merge_session,
    session_resource,
)

# The session's interface for its driver and tests: what it is given and what it gives back.
__all__ = [
    "VAD_FRAME_MS",
    "CancelResponse",
    "ClearPlayback",
    "CloseSession",
    "Effect",
    "Session",
    "StartResponse",
    "Transcribe",
    "VoiceDetector",
    "check_transcription",
]

Event = dict[str, Any]


class Session(SessionInput, SessionResponses):
    """One realtime session. `playback` says who plays the agent's audio: the client (WebSocket:
    audio goes out as `response.output_audio.delta`) or the server (WebRTC: the driver plays it on
    the media track and reports progress)."""

    def __init__(
        self,
        config: SessionConfig | None = None,
        *,
        detector: VoiceDetector,
        now: float,
        playback: Literal["client", "server"] = "client",
        session_id: str | None = None,
        careful_ms: float | None = None,
    ) -> None:
        """`now` is the driver's wall clock (unix seconds) at the session's start: it expires
        MAX_SESSION_SECONDS later. `careful_ms`: what a careful transcription pass costs on this
        machine, as other sessions timed it (see `SessionInput.careful_ms`)."""
        self.config: SessionConfig = config or RealtimeSessionConfig()
        self.playback = playback
        self.id = session_id or ids.session_id()
        self.expires_at = int(now) + MAX_SESSION_SECONDS
        self.conversation_id = ids.conversation_id()
        self._out: list[Event | Effect] = []
        # conversation: ordered ids and the items (wire dicts, no audio bytes)
        self._order: list[str] = []
        self._items: dict[str, dict[str, Any]] = {}
        self._audio: dict[str, FloatArray] = {}
        self._last_activity: float | None = None  # for idle_timeout_ms, in driver time (s)
        self._init_input(detector, careful_ms)
        self._init_responses()

    # -- plumbing ----------------------------------------------------------------------------------

    def take(self) -> list[Event | Effect]:
        """Everything produced since the last call, in order."""
        out, self._out = self._out, []
        return out

    def _emit(self, event: Event | Effect) -> None:
        self._out.append(event)

    def _error(self, exc: ProtocolError, client_event_id: str | None = None) -> None:
        self._emit(error_from(exc, client_event_id))

    @property
    def is_realtime(self) -> bool:
        return isinstance(self.config, RealtimeSessionConfig)

    def _input_format(self) -> str:
        return self.config.audio.input.format.type

    def _output_format(self) -> str:
        if isinstance(self.config, RealtimeSessionConfig):
            return self.config.audio.output.format.type
        return "audio/pcm"

    def _turn_detection(self) -> TurnDetection | None:
        return self.config.audio.input.turn_detection

    def _transcription_on(self) -> bool:
        return self.config.audio.input.transcription is not None

    def resource(self) -> dict[str, Any]:
        return session_resource(self.config, id=self.id, expires_at=self.expires_at)

    def close(self) -> None:
        """Give back what the session holds (its detector: a VAD model goes back to the shared pool)."""
        self._turns.close()

    def start(self, *, announce_conversation: bool = False) -> None:
        self._emit(ev.session_created(self.resource()))
        if announce_conversation:  # beta clients expect it; GA's behaviour is unconfirmed
            self._emit(ev.conversation_created(self.conversation_id))

    # -- client events -----------------------------------------------------------------------------

    def receive(self, raw: str | bytes | dict[str, Any] | ClientEvent | Invalid) -> None:
        """One client event: a JSON text, a decoded dict, or the result of `parse_client_event`."""
        event = parse_client_event(raw) if isinstance(raw, (str, bytes, bytearray, dict)) else raw
        if isinstance(event, Invalid):
            self._emit(event.error)
            return
        try:
            self._dispatch(event)
        except ProtocolError as exc:
            self._error(exc, event.event_id)

    def _dispatch(self, event: ClientEvent) -> None:
        if isinstance(event, InputAudioBufferAppend):
            self._append(event.audio)
        elif isinstance(event, SessionUpdate):
            self._update_session(event.session)
        elif isinstance(event, InputAudioBufferCommit):
            self._commit_manual()
        elif isinstance(event, InputAudioBufferClear):
            self._clear_buffer()
            self._emit(ev.input_audio_buffer_cleared())
        elif isinstance(event, ConversationItemCreate):
            self._create_item(event)
        elif isinstance(event, ConversationItemRetrieve):
            self._retrieve(event.item_id)
        elif isinstance(event, ConversationItemTruncate):
            self._truncate(event.item_id, event.content_index, event.audio_end_ms)
        elif isinstance(event, ConversationItemDelete):
            self._delete(event.item_id)
        elif isinstance(event, ResponseCreate):
            self._require_realtime("response.create")
            self.create_response(event.response)
        elif isinstance(event, ResponseCancel):
            self._cancel_request(event.response_id)
        elif isinstance(event, OutputAudioBufferClear):
            self._clear_output_buffer()

    def _require_realtime(self, what: str) -> None:
        if not self.is_realtime:
            raise ProtocolError("unsupported_event", f"{what} is not supported in a transcription session.")

    def _update_session(self, patch: dict[str, Any]) -> None:
        # OpenAI refuses a new voice once the assistant has spoken; the local engine allows it, so
        # that a hand-over (Sarah -> Marco) is heard as a different person.
        new = merge_session(self.config, patch)
        check_transcription(new)
        old_format = self._input_format()
        self.config = new
        self._input_config_changed(old_format)
        self._emit(ev.session_updated(self.resource()))

    # -- conversation items ------------------------------------------------------------------------

    def _previous(self, item_id: str) -> str | None:
        i = self._order.index(item_id)
        return self._order[i - 1] if i > 0 else None

    def _last_item(self) -> str | None:
        return self._order[-1] if self._order else None

    def _insert(self, item: dict[str, Any], previous_item_id: str | None) -> None:
        if previous_item_id is None:
            self._order.append(item["id"])
        elif previous_item_id == "root":
            self._order.insert(0, item["id"])
        else:
            self._order.insert(self._order.index(previous_item_id) + 1, item["id"])
        self._items[item["id"]] = item

    def _create_item(self, event: ConversationItemCreate) -> None:
        prev = event.previous_item_id
        if prev is not None and prev != "root" and prev not in self._items:
            raise ProtocolError("invalid_value", f"Previous item with id '{prev}' does not exist.",
                                "previous_item_id")
        item = self._item_from_client(event.item)
        self._insert(item, prev)
        previous = self._previous(item["id"])
        self._emit(ev.conversation_item_added(it.snapshot(item), previous))
        if not self._transcribing(item["id"]):
            self._emit(ev.conversation_item_done(it.snapshot(item), previous))

    def _item_from_client(self, model: MessageItem | FunctionCallItem | FunctionCallOutputItem) -> dict[str, Any]:
        item_id = model.id or ids.item_id()
        if item_id in self._items:
            raise ProtocolError("invalid_value", f"Item with id '{item_id}' already exists.", "item.id")
        if isinstance(model, FunctionCallOutputItem):
            if not any(i.get("type") == "function_call" and i.get("call_id") == model.call_id
                       for i in self._items.values()):
                raise ProtocolError("invalid_value",
                                    f"No function call with call_id '{model.call_id}' found in the conversation.",
                                    "item.call_id")
            return it.function_call_output(item_id, model.call_id, model.output)
        if isinstance(model, FunctionCallItem):
            return it.function_call(item_id, model.call_id or ids.call_id(), model.name, model.arguments)
        content: list[dict[str, Any]] = []
        for part in model.content:
            if part.type == "input_audio":
                audio = self._decode_item_audio(part.audio)
                if audio is not None:
                    self._audio[item_id] = audio
                content.append(it.input_audio(part.transcript))
                if part.transcript is None and audio is not None and audio.size:
                    self._transcribe_created(item_id, audio)
            else:
                content.append(part.model_dump(exclude_none=True))
        if model.role == "assistant":
            content = [{"type": "output_text", "text": p.get("text") or p.get("transcript") or ""}
                       if p["type"] == "output_audio" else p for p in content]
        return it.message(item_id, model.role, content)

    def _decode_item_audio(self, b64: str | None) -> FloatArray | None:
        if not b64:
            return None
        try:
            return InputDecoder(self._input_format()).decode(base64.b64decode(b64, validate=True))
        except ValueError as exc:
            raise ProtocolError("invalid_value", f"Invalid 'item.content.audio': {exc}.", "item.content.audio") from None

    def _retrieve(self, item_id: str) -> None:
        item = self._items.get(item_id)
        if item is None:
            raise ProtocolError("item_retrieve_invalid_item_id", f"Item with item_id not found: {item_id}", "item_id")
        audio = self._audio.get(item_id)
        full = it.snapshot(item)
        if audio is not None:
            role = item.get("role")
            fmt = self._input_format() if role == "user" else self._output_format()
            enc = OutputEncoder(fmt)
            data = base64.b64encode(enc.encode(audio) + enc.flush()).decode()
            for part in full.get("content", []):
                if part["type"] in ("input_audio", "output_audio"):
                    part["audio"] = data
        # A Parley extension: OpenAI's event names no previous item. With it a recorder that missed
        # several items in a row (a process killed in a gap) walks back through them.
        previous = self._previous(item_id) if item_id in self._order else None
        self._emit({**ev.conversation_item_retrieved(full), "previous_item_id": previous})

    def _delete(self, item_id: str) -> None:
        if item_id not in self._items:
            raise ProtocolError("item_delete_invalid_item_id", f"Item with item_id not found: {item_id}", "item_id")
        self._order.remove(item_id)
        del self._items[item_id]
        self._audio.pop(item_id, None)
        self._emit(ev.conversation_item_deleted(item_id))

    def _truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> None:
        item = self._items.get(item_id)
        if item is None:
            raise ProtocolError("item_truncate_invalid_item_id", f"Item with item_id not found: {item_id}", "item_id")
        if item.get("role") != "assistant":
            raise ProtocolError("invalid_value", "Only assistant messages can be truncated.", "item_id")
        content = item.get("content") or []
        if content_index >= len(content) or content[content_index].get("type") != "output_audio":
            raise ProtocolError("invalid_value", f"Content index {content_index} is not an audio part.",
                                "content_index")
        self._truncate_audio(item_id, content_index, audio_end_ms)

    # -- time --------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Driver time in seconds; drives `idle_timeout_ms`."""
        td = self._turn_detection()
        if not isinstance(td, ServerVad) or td.idle_timeout_ms is None or not self.is_realtime:
            self._last_activity = None
            return
        if self._turns.speaking or self._active is not None or self._playing is not None:
            self._last_activity = now
            return
        if self._last_activity is None:
            self._last_activity = now
            return
        if (now - self._last_activity) * 1000 >= td.idle_timeout_ms:
            self._last_activity = now
            self._timeout_triggered(td.idle_timeout_ms)

    # -- introspection (tests, sideband, the server's recorder) ------------------------------------

    @property
    def items(self) -> list[dict[str, Any]]:
        return [self._items[i] for i in self._order]

    def item_audio(self, item_id: str) -> FloatArray | None:
        return self._audio.get(item_id)

    @property
    def transcription_session(self) -> bool:
        return isinstance(self.config, TranscriptionSessionConfig)
