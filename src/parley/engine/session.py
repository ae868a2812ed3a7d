"""The engine's realtime session: a sans-I/O state machine.

It owns every protocol rule (conversation and ordering, the input buffer and VAD turns,
transcription, the response lifecycle, cancel, truncate, barge-in) and never touches a socket,
a thread or a clock. Inputs are method calls (client events, microphone audio, the results of
work it asked for); outputs are taken with `take()`: server events (dicts, GA shapes) to send,
interleaved with effects (`engine.effects`) the driver must carry out — transcribe this audio,
start or cancel that response, clear playback. `engine.runtime` is that driver; the WebSocket and
WebRTC transports sit on top of it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from parley.audio.formats import InputDecoder, OutputEncoder
from parley.audio.pcm import SAMPLE_RATE, FloatArray
from parley.engine.effects import (
    CancelResponse,
    ClearPlayback,
    CloseSession,
    Effect,
    StartResponse,
    Transcribe,
)
from parley.engine.input_buffer import InputBuffer
from parley.engine.responders.base import ResponseRequest
from parley.engine.speech import stt
from parley.engine.tokens import estimate_tokens
from parley.engine.turns import (
    VAD_FRAME_MS,
    SpeechStarted,
    TurnDetection,
    TurnDetector,
    VoiceDetector,
    VoicePaused,
    VoiceResumed,
)
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
    ResponseParams,
    SessionUpdate,
    parse_client_event,
)
from parley.protocol.errors import ProtocolError, error_from
from parley.protocol.items import FunctionCallItem, FunctionCallOutputItem, ItemReference, MessageItem
from parley.protocol.limits import MAX_SESSION_SECONDS, MIN_COMMIT_MS
from parley.protocol.session import (
    RealtimeSessionConfig,
    SemanticVad,
    ServerVad,
    SessionConfig,
    TranscriptionSessionConfig,
    merge_session,
    session_resource,
)

# The session's interface for its driver and tests: the effects it returns are re-exported here.
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
# Buffered audio kept while nobody speaks (the prefix padding comes from here).
IDLE_KEEP_MS = 2_000
MAX_BUFFER_MS = 15 * 60 * 1000
KEEP_FINISHED_RESPONSES = 16
def check_transcription(config: SessionConfig, param: str = "session") -> None:
    """Refuse, as OpenAI refuses a value it does not support, a transcription language the local
    STT model cannot do: it would only guess English words for the speech."""
    tr = config.audio.input.transcription
    if tr is None:
        return
    asked = [(tr.language, f"{param}.audio.input.transcription.language")] if tr.language else []
    asked += [(code, f"{param}.audio.input.transcription.languages[{i}]") for i, code in enumerate(tr.languages or [])]
    for code, where in asked:
        if code.strip().lower().split("-")[0] not in stt.LANGUAGES:
            supported = ", ".join(f"'{c}'" for c in sorted(stt.LANGUAGES))
            raise ProtocolError(
                "invalid_value",
                f"Invalid value: {code!r}. Supported values are: {supported} (the local engine transcribes "
                f"with {stt.MODEL_NAME}, which knows no other language).",
                where,
            )


# -- state -------------------------------------------------------------------------------------


@dataclass
class _Stt:
    attempt: int = 0
    speculative_until_ms: float | None = None  # audio end of the running speculative attempt
    audio: FloatArray | None = None  # what the current attempt transcribes
    quick_text: str | None = None  # the quick pass's words, while a careful pass is running
    text: str | None = None
    error: str | None = None  # a failed speculative attempt, reported once committed
    committed: bool = False
    done: bool = False
    audio_ms: float = 0.0


@dataclass
class _Message:
    item: dict[str, Any]
    output_index: int
    text: str = ""
    audio: list[FloatArray] = field(default_factory=list)
    audio_samples: int = 0
    # (first audio sample, text) per spoken piece: how truncation knows what was heard
    pieces: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class _Response:
    id: str
    out_of_band: bool
    modalities: list[str]
    voice: str
    speed: float
    max_output_tokens: int | str
    metadata: dict[str, str] | None
    params: ResponseParams | None
    output: list[dict[str, Any]] = field(default_factory=list)
    message: _Message | None = None
    waiting_for: set[str] = field(default_factory=set)
    started: bool = False
    done: bool = False
    output_text_tokens: int = 0
    output_audio_samples: int = 0
    input_tokens: tuple[int, int] = (0, 0)  # (text, audio)
    audio_started: bool = False
    encoder: OutputEncoder | None = None

    @property
    def audio(self) -> bool:
        return "audio" in self.modalities


class Session:
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
    ) -> None:
        """`now` is the driver's wall clock (unix seconds) at the session's start: it expires
        MAX_SESSION_SECONDS later."""
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
        self._stt: dict[str, _Stt] = {}
        self._responses: dict[str, _Response] = {}
        self._active: str | None = None  # the default-conversation response in progress
        # input audio: a buffer in session time (ms since the first audio of the session)
        self._decoder = InputDecoder(self._input_format())
        self._buffer = InputBuffer()
        self._turns = TurnDetector(detector, self._buffer)
        self._turn_item: str | None = None  # the user message of the turn being spoken
        self._last_activity: float | None = None  # for idle_timeout_ms, in driver time (s)
        self._playing: str | None = None  # WebRTC: response whose audio is playing
        # assistant item -> how it was spoken (pieces and length), for truncation
        self._spoken: dict[str, _Message] = {}

    # -- plumbing -------------------------------------------------------------------------------

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

    def _turn_detection(self) -> ServerVad | SemanticVad | None:
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

    # -- client events --------------------------------------------------------------------------

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
        old_formats = (self._input_format(), self._output_format())
        self.config = new
        if self._input_format() != old_formats[0]:
            self._decoder = InputDecoder(self._input_format())
        if self._turn_detection() is None and self._turns.speaking:
            self._end_speech_state()
        self._emit(ev.session_updated(self.resource()))

    # -- input audio and turns ------------------------------------------------------------------

    def _append(self, data: bytes) -> None:
        try:
            pcm = self._decoder.decode(data)
        except ValueError as exc:
            raise ProtocolError(
                "invalid_value",
                f"Invalid 'audio': {exc} (the session's input format is {self._input_format()}).",
                "audio",
            ) from None
        self.receive_audio(pcm)

    def receive_audio(self, pcm: FloatArray) -> None:
        """Microphone audio, float32 at 24 kHz (WebRTC hands it here directly)."""
        if pcm.size == 0:
            return
        chunk_start_ms = self._buffer.end_ms
        self._buffer.append(pcm)
        td = self._turn_detection()
        if td is None:
            if self._buffer.ms > MAX_BUFFER_MS:
                self._buffer.drop_before(self._buffer.end_ms - MAX_BUFFER_MS)
            return
        for signal in self._turns.hear(td, pcm, chunk_start_ms):
            if isinstance(signal, SpeechStarted):
                self._speech_started(td, signal.start_ms)
            elif isinstance(signal, VoicePaused):
                self._voice_paused(signal.start_ms, signal.voice_end_ms)
            elif isinstance(signal, VoiceResumed):
                self._voice_resumed()
            else:
                self._speech_stopped(td, signal.start_ms, signal.end_ms)
        if not self._turns.speaking and self._buffer.ms > IDLE_KEEP_MS * 2:
            self._buffer.drop_before(self._buffer.end_ms - IDLE_KEEP_MS)

    def _clear_buffer(self) -> None:
        self._buffer.clear()
        self._end_speech_state()

    def _end_speech_state(self) -> None:
        self._turns.end()
        self._turn_item = None

    def _speech_started(self, td: TurnDetection, start_ms: float) -> None:
        item_id = ids.item_id()
        self._turn_item = item_id
        self._stt[item_id] = _Stt()
        self._emit(ev.input_audio_buffer_speech_started(int(start_ms), item_id))
        if td.interrupt_response:
            if self._active is not None:
                self._cancel(self._active, reason="turn_detected")
            self._stop_playback()  # WebRTC: a finished response may still be playing

    def _voice_paused(self, start_ms: float, voice_end_ms: float) -> None:
        item_id = self._turn_item
        assert item_id is not None
        stt = self._stt[item_id]
        if stt.speculative_until_ms is None:
            # The silence window is time the STT can use: start on what was said so far. If the
            # user goes on, the attempt is discarded.
            stt.attempt += 1
            stt.speculative_until_ms = voice_end_ms
            self._transcribe(item_id, stt, self._buffer.slice(start_ms, voice_end_ms))

    def _voice_resumed(self) -> None:
        item_id = self._turn_item
        assert item_id is not None
        stt = self._stt[item_id]
        if stt.speculative_until_ms is not None:
            # Speech resumed: the speculative transcript is stale.
            stt.speculative_until_ms, stt.text, stt.error, stt.quick_text = None, None, None, None
            stt.attempt += 1

    def _speech_stopped(self, td: TurnDetection, start_ms: float, end_ms: float) -> None:
        item_id = self._turn_item
        assert item_id is not None
        self._turn_item = None
        self._emit(ev.input_audio_buffer_speech_stopped(int(end_ms), item_id))
        audio = self._buffer.slice(start_ms, end_ms)
        self._buffer.drop_before(end_ms)
        self._commit(item_id, audio)
        if self.is_realtime and td.create_response:
            if self._active is None:
                self.create_response(None)

    def _commit_manual(self) -> None:
        if self._turns.speaking and self._turn_item is not None:
            item_id = self._turn_item
            self._end_speech_state()
        else:
            item_id = ids.item_id()
            self._stt[item_id] = _Stt()
        audio = self._buffer.audio()
        ms = audio.size * 1000 / SAMPLE_RATE
        if ms < MIN_COMMIT_MS:
            self._stt.pop(item_id, None)
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {ms:.2f}ms of audio.",
            )
        self._buffer.clear()
        self._commit(item_id, audio)

    def _commit(self, item_id: str, audio: FloatArray) -> None:
        previous = self._order[-1] if self._order else None
        self._emit(ev.input_audio_buffer_committed(item_id, previous))
        item = it.message(item_id, "user", [it.input_audio(None)])
        self._insert(item, previous)
        self._audio[item_id] = audio
        self._emit(ev.conversation_item_added(it.snapshot(item), previous))
        stt = self._stt.setdefault(item_id, _Stt())
        stt.committed = True
        stt.audio_ms = audio.size * 1000 / SAMPLE_RATE
        if stt.text is not None and stt.speculative_until_ms is not None:
            self._transcript_ready(item_id, stt, error=stt.error)
        elif stt.speculative_until_ms is None:
            stt.attempt += 1
            self._transcribe(item_id, stt, audio)
        # else: the speculative attempt is still running and covers this audio.

    def _transcribe(self, item_id: str, stt: _Stt, audio: FloatArray, careful: bool = False) -> None:
        tr = self.config.audio.input.transcription
        stt.audio = audio
        self._emit(Transcribe(item_id, stt.attempt, audio, tr.language if tr else "en", tr.prompt if tr else None,
                              careful))

    def transcription_result(self, item_id: str, attempt: int, text: str | None, error: str | None = None,
                             *, sure: bool = True) -> None:
        """The driver's answer to `Transcribe`. `sure=False` (the STT doubted a word of its quick
        pass): the turn waits for a careful pass of the same audio, whose words are final and
        are what the responder answers, in place of these."""
        stt = self._stt.get(item_id)
        if stt is None or stt.done or attempt != stt.attempt:
            return
        if error is None and not sure and stt.quick_text is None and stt.audio is not None:
            stt.quick_text = text or ""
            self._transcribe(item_id, stt, stt.audio, careful=True)
            return
        if error is not None and stt.quick_text is not None:
            text, error = stt.quick_text, None  # the careful pass failed: the quick one stands
        stt.text = text if error is None else None
        if error is not None:
            stt.text, stt.error = "", error
            if stt.committed:
                self._transcript_ready(item_id, stt, error=error)
            return
        if stt.committed:
            self._transcript_ready(item_id, stt)

    def _transcript_ready(self, item_id: str, stt: _Stt, error: str | None = None) -> None:
        stt.done = True
        stt.audio = None  # no careful pass can come now; the item keeps its own audio
        text = (stt.text or "").strip()
        item = self._items.get(item_id)
        if self._transcription_on():
            if error is not None:
                self._emit(ev.conversation_item_input_audio_transcription_failed(item_id, "transcription_failed", error))
            else:
                if text:
                    self._emit(ev.conversation_item_input_audio_transcription_delta(item_id, text))
                model = self.config.audio.input.transcription.model if self.config.audio.input.transcription else None
                usage = (ev.transcription_usage_duration(stt.audio_ms / 1000) if model in (None, "whisper-1")
                         else ev.transcription_usage_tokens(estimate_tokens(text) + int(stt.audio_ms / 100),
                                                            estimate_tokens(text), int(stt.audio_ms / 100)))
                self._emit(ev.conversation_item_input_audio_transcription_completed(item_id, text, usage))
        if item is not None:
            for part in item["content"]:
                if part["type"] == "input_audio":
                    part["transcript"] = text if error is None else None
            self._emit(ev.conversation_item_done(it.snapshot(item), self._previous(item_id)))
        for resp in list(self._responses.values()):
            if item_id in resp.waiting_for:
                resp.waiting_for.discard(item_id)
                self._maybe_start(resp)

    # -- conversation items ---------------------------------------------------------------------

    def _previous(self, item_id: str) -> str | None:
        i = self._order.index(item_id)
        return self._order[i - 1] if i > 0 else None

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
        pending = self._stt.get(item["id"])
        if pending is None or pending.done:
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
                    stt = self._stt[item_id] = _Stt(attempt=1, committed=True, audio_ms=audio.size * 1000 / SAMPLE_RATE)
                    self._transcribe(item_id, stt, audio)
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
        self._emit(ev.conversation_item_retrieved(full))

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

    def _truncate_audio(self, item_id: str, content_index: int, audio_end_ms: float) -> None:
        item = self._items[item_id]
        msg = self._message_state(item_id)
        audio = self._audio.get(item_id)
        if msg is not None:  # still being written: stop it where the listener stopped hearing
            owner = next(r for r in self._responses.values() if r.message is msg)
            self._cancel(owner.id, reason="client_cancelled")
            audio = self._audio.get(item_id)
        total_ms = 0.0 if audio is None else audio.size * 1000 / SAMPLE_RATE
        end_ms = int(min(max(audio_end_ms, 0), total_ms))  # clamped to what exists
        cut = end_ms * SAMPLE_RATE // 1000
        if audio is not None:
            self._audio[item_id] = audio[:cut]
        part = item["content"][content_index]
        spoken = self._spoken.get(item_id)
        # Timed against the item as first spoken, so a second truncate cuts the same way.
        pieces, total = (spoken.pieces, spoken.audio_samples) if spoken else ([], 0 if audio is None else audio.size)
        part["transcript"] = _heard(pieces, cut, total, part.get("transcript") or "")
        self._emit(ev.conversation_item_truncated(item_id, content_index, end_ms))

    # -- responses ------------------------------------------------------------------------------

    def create_response(self, params: ResponseParams | None) -> str | None:
        """`response.create` (or a VAD turn). Returns the response id."""
        assert isinstance(self.config, RealtimeSessionConfig)
        cfg = self.config
        out_of_band = params is not None and params.out_of_band
        if not out_of_band and self._active is not None:
            raise ProtocolError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._active}. "
                "Wait until the response is finished before creating a new one.",
            )
        p = params or ResponseParams()
        audio_params = p.audio.output if p.audio and p.audio.output else None
        voice_value = audio_params.voice if audio_params and audio_params.voice else cfg.audio.output.voice
        voice = voice_value if isinstance(voice_value, str) else voice_value.id
        resp = _Response(
            id=ids.response_id(),
            out_of_band=out_of_band,
            modalities=list(p.output_modalities or cfg.output_modalities),
            voice=voice,
            speed=cfg.audio.output.speed,
            max_output_tokens=p.max_output_tokens or cfg.max_output_tokens,
            metadata=p.metadata,
            params=params,
        )
        self._responses[resp.id] = resp
        if not out_of_band:
            self._active = resp.id
        self._emit(ev.response_created(self._response_object(resp)))
        self._emit(ev.rate_limits_updated([
            ev.rate_limit("requests", 5000, 4999, 0.012),
            ev.rate_limit("tokens", 40_000, 40_000 - 4096, 6.1),
        ]))
        context = self._context_ids(resp)
        resp.waiting_for = {i for i in context if i in self._stt and not self._stt[i].done}
        self._maybe_start(resp)
        return resp.id

    def _context_ids(self, resp: _Response) -> list[str]:
        if resp.params is None or resp.params.input is None:
            return list(self._order)
        return [x.id for x in resp.params.input if isinstance(x, ItemReference) and x.id in self._items]

    def _maybe_start(self, resp: _Response) -> None:
        if resp.started or resp.done or resp.waiting_for:
            return
        resp.started = True
        assert isinstance(self.config, RealtimeSessionConfig)
        cfg = self.config
        p = resp.params or ResponseParams()
        context = self._context(resp)
        resp.input_tokens = self._input_tokens(p.instructions or cfg.instructions, context)
        tools = [t.model_dump(exclude_none=True) for t in (p.tools if p.tools is not None else cfg.tools)]
        choice = p.tool_choice if p.tool_choice is not None else cfg.tool_choice
        request = ResponseRequest(
            instructions=p.instructions if p.instructions is not None else cfg.instructions,
            items=[it.snapshot(item) for item in context],  # the responder must not change the conversation
            tools=tools,
            tool_choice=choice if isinstance(choice, str) else choice.model_dump(exclude_none=True),
            output_modalities=tuple(resp.modalities),
            max_output_tokens=None if resp.max_output_tokens == "inf" else int(resp.max_output_tokens),
            metadata=resp.metadata,
            voice=resp.voice,
            model=cfg.model,
        )
        self._emit(StartResponse(resp.id, request, resp.audio, resp.voice, resp.speed))

    def _context(self, resp: _Response) -> list[dict[str, Any]]:
        if resp.params is None or resp.params.input is None:
            return [self._items[i] for i in self._order]
        out: list[dict[str, Any]] = []
        for x in resp.params.input:
            if isinstance(x, ItemReference):
                if x.id in self._items:
                    out.append(self._items[x.id])
            else:
                out.append(self._item_from_inline(x))
        return out

    def _item_from_inline(self, model: MessageItem | FunctionCallItem | FunctionCallOutputItem) -> dict[str, Any]:
        data = model.model_dump(exclude_none=True)
        data.setdefault("id", ids.item_id())
        return data

    def _input_tokens(self, instructions: str, context: list[dict[str, Any]]) -> tuple[int, int]:
        text = estimate_tokens(instructions)
        audio = 0
        for item in context:
            if item.get("type") == "message":
                audio_arr = self._audio.get(item["id"])
                if audio_arr is not None and item.get("role") == "user":
                    audio += int(audio_arr.size * 10 / SAMPLE_RATE) + 1  # ~1 token / 100 ms
                elif audio_arr is not None:
                    audio += int(audio_arr.size * 20 / SAMPLE_RATE) + 1  # ~1 token / 50 ms
                else:
                    text += estimate_tokens(it.item_text(item)) + 4
            else:
                text += estimate_tokens(str(item.get("arguments") or item.get("output") or "")) + 4
        return text, audio

    def _response_object(self, resp: _Response, status: str = "in_progress",
                         details: dict[str, Any] | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        fmt = self._output_format()
        return ev.response_object(
            resp.id,
            status=status,
            status_details=details,
            output=[it.snapshot(item) for item in resp.output],
            conversation_id=None if resp.out_of_band else self.conversation_id,
            output_modalities=list(resp.modalities),
            max_output_tokens=resp.max_output_tokens,
            audio_output={"format": {"type": fmt, **({"rate": SAMPLE_RATE} if fmt == "audio/pcm" else {})},
                          "voice": resp.voice},
            metadata=None if resp.metadata is None else dict(resp.metadata),
            usage=usage,
        )

    def _live(self, response_id: str) -> _Response | None:
        resp = self._responses.get(response_id)
        return resp if resp is not None and not resp.done else None

    def _open_message(self, resp: _Response) -> _Message:
        if resp.message is not None:
            return resp.message
        item_id = ids.item_id()
        part_type = "audio" if resp.audio else "text"
        item = it.message(item_id, "assistant", [], status="in_progress")
        msg = _Message(item=item, output_index=len(resp.output))
        resp.message = msg
        resp.output.append(item)
        self._emit(ev.response_output_item_added(resp.id, msg.output_index, it.snapshot(item)))
        if not resp.out_of_band:
            previous = self._order[-1] if self._order else None
            self._insert(item, previous)
            self._emit(ev.conversation_item_added(it.snapshot(item), previous))
        part = {"type": "audio", "transcript": ""} if part_type == "audio" else {"type": "text", "text": ""}
        item["content"].append(it.output_audio("") if resp.audio else it.output_text(""))
        self._emit(ev.response_content_part_added(resp.id, item_id, msg.output_index, 0, part))
        self._spoken[item_id] = msg
        return msg

    def response_text(self, response_id: str, text: str) -> None:
        """Words of the reply, as the responder writes them."""
        resp = self._live(response_id)
        if resp is None or not text:
            return
        msg = self._open_message(resp)
        msg.text += text
        resp.output_text_tokens += estimate_tokens(text)
        item_id = msg.item["id"]
        if resp.audio:
            msg.item["content"][0]["transcript"] = msg.text
            self._emit(ev.response_output_audio_transcript_delta(resp.id, item_id, msg.output_index, 0, text))
        else:
            msg.item["content"][0]["text"] = msg.text
            self._emit(ev.response_output_text_delta(resp.id, item_id, msg.output_index, 0, text))
        limit = resp.max_output_tokens
        if limit != "inf" and resp.output_text_tokens > int(limit):
            self._finish(resp, "incomplete", ev.status_details("incomplete", "max_output_tokens"))
            self._emit(CancelResponse(resp.id))

    def response_audio(self, response_id: str, pcm: FloatArray, piece: str | None = None) -> None:
        """Speech for the reply, float32 at 24 kHz; `piece` marks the start of a spoken text piece."""
        resp = self._live(response_id)
        if resp is None or pcm.size == 0:
            return
        msg = self._open_message(resp)
        if piece is not None:
            msg.pieces.append((msg.audio_samples, piece))
        msg.audio.append(pcm)
        msg.audio_samples += pcm.size
        resp.output_audio_samples += pcm.size
        if self.playback == "client":
            if resp.encoder is None:  # one per response: G.711 resampling state is per stream
                resp.encoder = OutputEncoder(self._output_format())
            data = base64.b64encode(resp.encoder.encode(pcm)).decode()
            if data:
                self._emit(ev.response_output_audio_delta(resp.id, msg.item["id"], msg.output_index, 0, data))
        elif not resp.audio_started:
            resp.audio_started = True
            self._playing = resp.id
            self._emit(ev.output_audio_buffer_started(resp.id))

    def response_function_call(self, response_id: str, name: str, arguments: str, call_id: str | None = None) -> None:
        resp = self._live(response_id)
        if resp is None:
            return
        self._close_message(resp, "completed")
        item_id, call = ids.item_id(), call_id or ids.call_id()
        index = len(resp.output)
        item = it.function_call(item_id, call, name, "", status="in_progress")
        resp.output.append(item)
        self._emit(ev.response_output_item_added(resp.id, index, it.snapshot(item)))
        previous = self._order[-1] if self._order else None
        if not resp.out_of_band:
            self._insert(item, previous)
            self._emit(ev.conversation_item_added(it.snapshot(item), previous))
        if arguments:
            self._emit(ev.response_function_call_arguments_delta(resp.id, item_id, index, call, arguments))
        self._emit(ev.response_function_call_arguments_done(resp.id, item_id, index, call, name, arguments))
        item["arguments"] = arguments
        item["status"] = "completed"
        resp.output_text_tokens += estimate_tokens(name + arguments) + 4
        self._emit(ev.response_output_item_done(resp.id, index, it.snapshot(item)))
        if not resp.out_of_band:
            self._emit(ev.conversation_item_done(it.snapshot(item), previous))

    def _message_state(self, item_id: str) -> _Message | None:
        for resp in self._responses.values():
            if not resp.done and resp.message is not None and resp.message.item["id"] == item_id:
                return resp.message
        return None

    def _close_message(self, resp: _Response, status: str) -> None:
        msg = resp.message
        if msg is None:
            return
        resp.message = None
        item, item_id, index = msg.item, msg.item["id"], msg.output_index
        if msg.audio:
            self._audio[item_id] = np.concatenate(msg.audio)
            msg.audio = []  # the item's audio now lives in self._audio
        if resp.audio:
            if self.playback == "client":
                tail = resp.encoder.flush() if resp.encoder is not None else b""
                if tail:
                    self._emit(ev.response_output_audio_delta(resp.id, item_id, index, 0, base64.b64encode(tail).decode()))
            self._emit(ev.response_output_audio_done(resp.id, item_id, index, 0))
            self._emit(ev.response_output_audio_transcript_done(resp.id, item_id, index, 0, msg.text))
            part = {"type": "audio", "transcript": msg.text}
        else:
            self._emit(ev.response_output_text_done(resp.id, item_id, index, 0, msg.text))
            part = {"type": "text", "text": msg.text}
        self._emit(ev.response_content_part_done(resp.id, item_id, index, 0, part))
        item["status"] = status
        self._emit(ev.response_output_item_done(resp.id, index, it.snapshot(item)))
        if not resp.out_of_band and item_id in self._items:
            self._emit(ev.conversation_item_done(it.snapshot(item), self._previous(item_id)))

    def response_complete(self, response_id: str) -> None:
        """The responder finished and all its speech was handed over."""
        resp = self._live(response_id)
        if resp is None:
            return
        if not resp.output:
            self._open_message(resp)  # a response always has at least one item
        self._finish(resp, "completed", None)

    def response_failed(self, response_id: str, message: str) -> None:
        resp = self._live(response_id)
        if resp is None:
            return
        self._emit(ev.error_event("response_failed", message, type="server_error"))
        self._finish(resp, "failed", ev.status_details("failed", error={"type": "server_error", "code": "responder_error"}))

    def _finish(self, resp: _Response, status: str, details: dict[str, Any] | None) -> None:
        self._close_message(resp, "completed" if status == "completed" else "incomplete")
        resp.done = True
        if self._active == resp.id:
            self._active = None
        finished = [r for r in self._responses.values() if r.done and r.id != self._playing]
        for old in finished[:-KEEP_FINISHED_RESPONSES]:  # a long call must not grow without bound
            del self._responses[old.id]
        text_in, audio_in = resp.input_tokens
        usage = ev.usage(
            input_text=text_in,
            input_audio=audio_in,
            output_text=resp.output_text_tokens,
            output_audio=int(resp.output_audio_samples * 20 / SAMPLE_RATE),
        )
        self._emit(ev.response_done(self._response_object(resp, status, details, usage)))

    def _cancel_request(self, response_id: str | None) -> None:
        target = response_id or self._active
        if target is None or self._live(target) is None:
            raise ProtocolError("response_cancel_not_active", "Cancellation failed: no active response found")
        self._cancel(target, reason="client_cancelled")

    def _cancel(self, response_id: str, reason: str) -> None:
        resp = self._live(response_id)
        if resp is None:
            return
        self._emit(CancelResponse(response_id))
        self._stop_playback(response_id)
        self._finish(resp, "cancelled", ev.status_details("cancelled", reason))

    # -- WebRTC playback (server-side output buffer) ---------------------------------------------

    def _clear_output_buffer(self) -> None:
        if self.playback != "server":
            raise ProtocolError("unsupported_event",
                                "output_audio_buffer.clear is only supported for WebRTC and SIP sessions.")
        self._stop_playback()

    def _stop_playback(self, response_id: str | None = None) -> None:
        if self.playback == "server" and self._playing is not None and response_id in (None, self._playing):
            self._emit(ClearPlayback(self._playing))
            self._playing = None

    def playback_cleared(self, response_id: str, item_id: str | None, played_ms: float) -> None:
        """The driver dropped queued audio; `played_ms` of `item_id` had been heard."""
        resp = self._responses.get(response_id)
        if resp is not None and not resp.done:
            self._cancel(response_id, reason="client_cancelled")  # VAD barge-ins were cancelled already
        if item_id is not None and item_id in self._items:
            self._truncate_audio(item_id, 0, played_ms)
        self._emit(ev.output_audio_buffer_cleared(response_id))

    def playback_stopped(self, response_id: str) -> None:
        """The driver played the last of a response's audio."""
        if self._playing == response_id:
            self._playing = None
        self._emit(ev.output_audio_buffer_stopped(response_id))

    # -- time -----------------------------------------------------------------------------------

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
            item_id = ids.item_id()
            start = max(self._buffer.start_ms, self._buffer.end_ms - td.idle_timeout_ms)
            self._emit(ev.input_audio_buffer_timeout_triggered(int(start), int(self._buffer.end_ms), item_id))
            audio = self._buffer.slice(start, self._buffer.end_ms)
            self._buffer.drop_before(self._buffer.end_ms)
            self._stt[item_id] = _Stt()
            self._commit(item_id, audio)
            self.create_response(None)

    # -- introspection (tests, sideband, the server's recorder) ----------------------------------

    @property
    def items(self) -> list[dict[str, Any]]:
        return [self._items[i] for i in self._order]

    def item_audio(self, item_id: str) -> FloatArray | None:
        return self._audio.get(item_id)

    def message_item_id(self, response_id: str) -> str | None:
        """The assistant message a live response is writing (where its audio belongs)."""
        resp = self._responses.get(response_id)
        return resp.message.item["id"] if resp is not None and resp.message is not None else None

    @property
    def active_response(self) -> str | None:
        return self._active

    @property
    def transcription_session(self) -> bool:
        return isinstance(self.config, TranscriptionSessionConfig)


def _heard(pieces: list[tuple[int, str]], cut: int, total: int, transcript: str) -> str:
    """The part of an assistant transcript spoken before sample `cut` (of `total`).

    Pieces are timed by where their audio starts; inside the piece that was cut, words are
    taken in proportion to the time heard.
    """
    if cut >= total:
        return transcript
    if not pieces:
        words = transcript.split()
        return " ".join(words[: len(words) * cut // total]) if total else ""
    heard: list[str] = []
    for i, (start, text) in enumerate(pieces):
        if start >= cut:
            break
        end = pieces[i + 1][0] if i + 1 < len(pieces) else total
        if end <= cut:
            heard.append(text)
            continue
        words = text.split()
        heard.append(" ".join(words[: len(words) * (cut - start) // max(end - start, 1)]))
        break
    return " ".join(h for h in heard if h)
