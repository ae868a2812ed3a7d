"""The response side of the engine's `Session`: `response.create` to `response.done`.

A response waits for the transcripts of the items it answers, then asks the driver to run a
responder (`StartResponse`) over a copy of its context; the driver reports the responder's
words, speech and function calls, and the session writes them as output items, in the
conversation or, out of band, only in the response. It also keeps what truncation needs (how an
assistant item was spoken) and, for WebRTC, the server-side output audio buffer.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from parley.audio.formats import OutputEncoder
from parley.audio.pcm import SAMPLE_RATE, FloatArray
from parley.engine.effects import CancelResponse, ClearPlayback, Effect, StartResponse
from parley.engine.responders.base import ResponseRequest
from parley.engine.tokens import estimate_tokens
from parley.protocol import events as ev
from parley.protocol import ids
from parley.protocol import items as it
from parley.protocol.client_events import ResponseParams
from parley.protocol.errors import ProtocolError
from parley.protocol.items import FunctionCallItem, FunctionCallOutputItem, ItemReference, MessageItem
from parley.protocol.session import RealtimeSessionConfig, SessionConfig

KEEP_FINISHED_RESPONSES = 16


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


class SessionResponses:
    """Part of `Session` (a mixin: it shares the session's items and output)."""

    # what it uses of the rest of the session
    config: SessionConfig
    playback: Literal["client", "server"]
    conversation_id: str
    _order: list[str]
    _items: dict[str, dict[str, Any]]
    _audio: dict[str, FloatArray]

    if TYPE_CHECKING:
        def _emit(self, event: dict[str, Any] | Effect) -> None: ...
        def _output_format(self) -> str: ...
        def _insert(self, item: dict[str, Any], previous_item_id: str | None) -> None: ...
        def _previous(self, item_id: str) -> str | None: ...
        def _last_item(self) -> str | None: ...
        def _transcribing(self, item_id: str) -> bool: ...

    def _init_responses(self) -> None:
        self._responses: dict[str, _Response] = {}
        self._active: str | None = None  # the default-conversation response in progress
        self._playing: str | None = None  # WebRTC: response whose audio is playing
        # assistant item -> how it was spoken (pieces and length), for truncation
        self._spoken: dict[str, _Message] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

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
        resp.waiting_for = {i for i in self._context_ids(resp) if self._transcribing(i)}
        self._maybe_start(resp)
        return resp.id

    def _context_ids(self, resp: _Response) -> list[str]:
        if resp.params is None or resp.params.input is None:
            return list(self._order)
        return [x.id for x in resp.params.input if isinstance(x, ItemReference) and x.id in self._items]

    def _transcript_done(self, item_id: str) -> None:
        """An item's transcript came: the responses that answer it may start."""
        for resp in list(self._responses.values()):
            if item_id in resp.waiting_for:
                resp.waiting_for.discard(item_id)
                self._maybe_start(resp)

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

    # -- output ------------------------------------------------------------------------------------

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
            previous = self._last_item()
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
        previous = self._last_item()
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

    # -- what was heard: truncation and WebRTC playback (the server-side output buffer) ------------

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

    # -- introspection -----------------------------------------------------------------------------

    def message_item_id(self, response_id: str) -> str | None:
        """The assistant message a live response is writing (where its audio belongs)."""
        resp = self._responses.get(response_id)
        return resp.message.item["id"] if resp is not None and resp.message is not None else None

    @property
    def active_response(self) -> str | None:
        return self._active


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
