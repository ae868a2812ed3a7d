"""`RealtimeClient`: one realtime conversation that survives the network.

    import asyncio

    from parley.client import RealtimeClient, server_key_provider


    async def main() -> None:
        server = "http://127.0.0.1:8000"  # `parley serve`; on `parley engine` or OpenAI: api_key="..."
        async with RealtimeClient(base_url=server, key_provider=server_key_provider(server)) as client:
            client.on("message", lambda m: print(m.role, m.text))
            await client.send_text("Hello!")
            await client.wait_for("response.done")


    asyncio.run(main())

The client is a thin driver around the protocol's own reading of server events: each raw event
is read once (`parley.protocol.read_server_event`), applied to the conversation
(`parley.protocol.ConversationState`), and what it changed becomes the client's friendly events
(`message`, `transcript_delta`, `speaking_started`, ...). Subscribers of a server event type get
its typed view; an event nobody listens to costs a dict lookup.

The concerns live in their own modules: `connection` (establish, supervise, reconnect, renew),
`resume` (the replay and what was in flight), `audio_input` (the microphone and the ring of what
was sent), `subscriptions` (`on`/`off`/`events`/`wait_for`), `responses` (handles, latency, tools).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import numpy as np

from parley.audio.formats import InputDecoder, normalize_format
from parley.audio.pcm import float_to_pcm16
from parley.client.audio_input import BYTES_PER_MS, AudioInput
from parley.client.commands import Commands
from parley.client.connection import Connection, _dig
from parley.client.events import (
    Audio,
    Connected,
    Disconnected,
    ErrorEvent,
    Message,
    SpeakingStarted,
    SpeakingStopped,
    ToolCall,
    TranscriptDelta,
)
from parley.client.playback import AudioPlayer
from parley.client.policy import Key, KeyProvider, ReconnectPolicy, TurnLatency, Usage, key_from
from parley.client.responses import TAG_KEY, ResponseHandle, ResponseRun
from parley.client.resume import InFlight
from parley.client.subscriptions import EventStream, Handler, Subscriptions
from parley.client.tools import ToolRegistry, ToolResult
from parley.client.transport import RealtimeError, Transport
from parley.protocol import changes as ch
from parley.protocol.conversation import ConversationState, Item
from parley.protocol.limits import MAX_SESSION_SECONDS
from parley.protocol.pricing import DEFAULT_TABLE, PriceTable
from parley.protocol.server_events import InvalidServerEvent, read_server_event

log = logging.getLogger("parley.client")

__all__ = ["EventStream", "RealtimeClient", "ResponseHandle"]

TransportKind = Literal["websocket", "webrtc"]


class RealtimeClient(Commands):
    """A realtime session with an OpenAI-compatible upstream (OpenAI, Parley's engine or server).

    Where to connect: `url` (the full realtime endpoint, e.g.
    "wss://api.openai.com/v1/realtime?model=gpt-realtime") or `base_url` (e.g.
    "https://api.openai.com/v1" or "http://127.0.0.1:8001"; "/v1" is added when missing). With
    neither, `OPENAI_BASE_URL` or OpenAI. The key: `api_key` (default `OPENAI_API_KEY`), and/or a
    `key_provider` called for a fresh (ephemeral) key whenever the current one is refused or about
    to expire: it may return an "ek_..." string or the JSON of `POST /v1/realtime/client_secrets`.

    `session` is the GA session config applied to every session this client opens (the
    `type` is filled in: "transcription" when `intent="transcription"`). Registered tools are
    added to it. `transport` is "websocket" or "webrtc".
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        key_provider: KeyProvider | None = None,
        model: str | None = None,
        transport: TransportKind | Callable[[RealtimeClient, Key], Transport] = "websocket",
        session: dict[str, Any] | None = None,
        intent: Literal["transcription"] | None = None,
        reconnect: ReconnectPolicy | None = None,
        max_session_duration: float | None = float(MAX_SESSION_SECONDS),
        renew_margin: float = 120.0,
        player: AudioPlayer | bool | None = None,
        prices: PriceTable = DEFAULT_TABLE,
        headers: dict[str, str] | None = None,
        ice_hosts: list[str] | None = None,
        keep_audio_seconds: float = 30.0,
        name: str | None = None,
    ) -> None:
        self.name = name
        if url is None and base_url is None:
            base_url = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self._url = url
        self._base_url = base_url
        if api_key is None and key_provider is None:
            api_key = os.environ.get("OPENAI_API_KEY")
        self._key: Key | None = key_from(api_key) if api_key else None
        self._key_provider = key_provider
        self.model = model
        self._transport_kind = transport
        self.intent = intent
        self._session_type = "transcription" if intent == "transcription" else "realtime"
        self._desired: dict[str, Any] = copy.deepcopy(session or {})
        self._desired.pop("type", None)
        if isinstance(self._desired.get("tools"), list) and not self._desired["tools"]:
            self._desired.pop("tools")
        self.policy = reconnect or ReconnectPolicy()
        self.max_session_duration = max_session_duration
        self.renew_margin = renew_margin
        self.player: AudioPlayer | None = AudioPlayer() if player is True else (player or None)
        self._headers = dict(headers or {})
        self._ice_hosts = ice_hosts

        self.conversation = ConversationState()
        self.tools = ToolRegistry()
        self.usage = Usage(prices=prices)
        self.latencies: list[TurnLatency] = []
        self.rate_limits: list[dict[str, Any]] = []
        self.state: str = "idle"
        self.reconnects = 0
        self.renewals = 0
        self.key_refreshes = 0
        self.attempt_times: list[float] = []  # time.monotonic() of every connection attempt
        self.session_started_at: float | None = None
        self.user_speaking = False
        self._transport: Transport | None = None
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subs = Subscriptions(self._spawn)
        self._connection = Connection(self)
        self._audio = AudioInput(keep_audio_seconds)
        self._inflight = InFlight()
        self._runs: dict[str, ResponseRun] = {}
        self._req_seq = 0
        self._announced: set[str] = set()
        self._speaking: tuple[str | None, str | None] | None = None  # (response_id, item_id)
        self._speech_stopped_at: float | None = None
        self._resume_response = False
        self._decoder: InputDecoder | None = None
        self._session_model: str | None = None
        self._change_handlers: dict[type, Callable[[Any, dict[str, Any] | None], None]] = {
            ch.AudioReceived: self._audio_received, ch.TranscriptDelta: self._transcript_delta,
            ch.ItemPlaced: self._item_placed, ch.ItemCompleted: self._item_completed,
            ch.SessionChanged: self._session_changed, ch.SpeechStarted: self._speech_started,
            ch.SpeechStopped: self._speech_stopped, ch.InputCommitted: self._input_committed,
            ch.InputCleared: self._input_cleared, ch.ResponseStarted: self._response_started,
            ch.ResponseDone: self._response_done, ch.PlaybackStarted: self._playback_started,
            ch.PlaybackStopped: self._playback_stopped, ch.ErrorReceived: self._error, ch.InvalidEvent: self._invalid,
        }

    # -- the connection -------------------------------------------------------------------------

    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    @property
    def transport(self) -> Transport | None:
        return self._transport

    @property
    def transport_name(self) -> str:
        kind = self._transport_kind
        return kind if isinstance(kind, str) else getattr(self._transport, "name", "custom")

    @property
    def session(self) -> dict[str, Any]:
        """The session as the server last reported it."""
        return self.conversation.session

    @property
    def session_id(self) -> str | None:
        value = self.session.get("id")
        return value if isinstance(value, str) else None

    @property
    def active_response_id(self) -> str | None:
        return self.conversation.active_response_id

    def http_base(self) -> str:
        """The HTTP base of the API ("https://host/v1")."""
        return self._connection.http_base()

    def websocket_url(self, key: Key | None = None) -> str:
        return self._connection.websocket_url(key)

    async def connect(self) -> None:
        """Open the first session (config applied). Raises `ConnectError` when that fails."""
        if self.state in ("connecting", "connected", "reconnecting"):
            return
        self._closing = False
        self.state = "connecting"
        try:
            transport, _ = await self._connection.establish(initial=True)
        except BaseException:
            self.state = "closed"
            raise
        self._connection.activate(transport)
        self._supervisor = asyncio.create_task(self._connection.supervise(),
                                               name=f"parley-client-{self.name or 'reader'}")
        self._renewer = asyncio.create_task(self._connection.renew_loop(), name="parley-client-renewal")
        self._emit(Connected(self.session, self.transport_name))

    async def close(self) -> None:
        """Close the session for good (no reconnect). Safe to call more than once."""
        was_open = self.state in ("connected", "reconnecting")
        self._closing = True
        self.state = "closed"
        current = asyncio.current_task()
        for task in (self._renewer, self._supervisor):
            if task is not None and task is not current:
                task.cancel()
        transport, self._transport = self._transport, None
        if transport is not None:
            hangup = getattr(transport, "hangup", None)
            if hangup is not None and not transport.closed:
                await hangup()
            await transport.close()
        pending = [t for t in (self._renewer, self._supervisor, *self._tasks) if t is not None and t is not current]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._connection_lost("client_closed")
        if was_open:
            self._emit(Disconnected("closed by the client", 1000, will_reconnect=False))
        self._subs.end_streams()

    async def renew(self) -> None:
        """Move the conversation to a fresh session now (make before break)."""
        await self._connection.renew()

    def _finish_after_final_drop(self) -> None:
        """The connection is gone for good (not by close()): stop the background work."""
        self.state = "closed"
        self._closing = True
        if self._renewer is not None:
            self._renewer.cancel()
        self._subs.end_streams()

    def _busy(self) -> bool:
        return self.active_response_id is not None or self.user_speaking or self._tools_running()

    def _tools_running(self) -> bool:
        return any(not t.done() for r in self._runs.values() for t in r.tools.values())

    def _connection_lost(self, reason: str) -> None:
        """The session is gone: whatever it was writing ends here, as `incomplete`."""
        for change in self.conversation.connection_lost(reason):
            self._on_change(change, None)
        if self._speaking is not None:
            rid, item_id = self._speaking
            self._speaking = None
            self._emit(SpeakingStopped(rid, item_id, reason))

    # -- subscribers ----------------------------------------------------------------------------

    def on(self, type: str, handler: Handler | None = None) -> Any:
        """Call `handler(event)` for every event of `type` ("*" for all); sync or async.

        Without a handler it is a decorator: `@client.on("message")`."""
        return self._subs.on(type, handler)

    def off(self, type: str, handler: Handler) -> None:
        self._subs.off(type, handler)

    def events(self, *types: str) -> EventStream:
        """An async iterator over events (of `types`, or all) from now on."""
        return self._subs.events(*types)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._subs.events()

    async def wait_for(self, type: str, predicate: Callable[[Any], bool] | None = None,
                       timeout: float | None = 30.0) -> Any:
        """The next event of `type` (for which `predicate` holds)."""
        return await self._subs.wait_for(type, predicate, timeout)

    def _emit(self, event: Any) -> None:
        self._subs.emit(event)

    # -- events in ------------------------------------------------------------------------------

    def _feed(self, raw: str | bytes) -> dict[str, Any] | None:
        """Read one raw server event, apply it, hand it and its changes to subscribers."""
        event = read_server_event(raw)
        if isinstance(event, InvalidServerEvent):
            self._emit(ErrorEvent.client("invalid_server_event", f"The server sent something that is not an "
                                                                 f"event: {event.reason}"))
            return None
        for change in self.conversation.apply(event, time.monotonic()):
            self._on_change(change, event.data)
        if event.type == "rate_limits.updated" and isinstance(event.get("rate_limits"), list):
            self.rate_limits = event.data["rate_limits"]
        if self._subs.wants(event.type):
            self._subs.emit(event)
        return event.data

    def feed(self, raw: str | bytes) -> None:
        """Process one raw server event as if it had arrived (replaying recordings, benchmarks)."""
        self._feed(raw)

    def _on_change(self, change: ch.Change, data: dict[str, Any] | None) -> None:
        handler = self._change_handlers.get(type(change))
        if handler is not None:
            handler(change, data)

    def _item_placed(self, change: ch.ItemPlaced, _data: Any) -> None:
        self._inflight.unacked.pop(change.item.id, None)  # acknowledged
        run = self._runs.get(change.item.response_id or "")
        if change.item.out_of_band and run is not None and run.handle is not None:
            run.handle.items.append(change.item)

    def _session_changed(self, change: ch.SessionChanged, _data: Any) -> None:
        model = change.session.get("model")
        if isinstance(model, str) and model:
            self._session_model = model
        self._apply_formats()

    def _speech_stopped(self, _change: ch.SpeechStopped, _data: Any) -> None:
        self.user_speaking = False
        self._speech_stopped_at = time.monotonic()

    def _input_cleared(self, _change: ch.InputCleared, _data: Any) -> None:
        self._audio.speech_start_ms = None
        self.user_speaking = False
        self._audio.uncommitted_from_ms = self._audio.sent_ms

    def _invalid(self, change: ch.InvalidEvent, _data: Any) -> None:
        self._emit(ErrorEvent.client("invalid_server_event", change.reason))

    def _apply_formats(self) -> None:
        fmt_in = _dig(self.session, "audio", "input", "format")
        fmt_out = _dig(self.session, "audio", "output", "format")
        try:
            name_in = normalize_format(str((fmt_in.get("type") if isinstance(fmt_in, dict) else fmt_in) or "audio/pcm"))
            name_out = normalize_format(str((fmt_out.get("type") if isinstance(fmt_out, dict) else fmt_out)
                                            or "audio/pcm"))
        except ValueError:
            name_in = name_out = "audio/pcm"
        self._audio.set_format(name_in)
        self._decoder = None if name_out == "audio/pcm" else InputDecoder(name_out)

    @property
    def billing_model(self) -> str:
        return self._session_model or self.model or "gpt-realtime"

    def _error(self, change: ch.ErrorReceived, _data: Any = None) -> None:
        eid = change.client_event_id
        if eid is None:
            return
        request = self._inflight.requests.pop(eid, None)
        if request is not None:
            request.handle._fail(RealtimeError(f"{change.code}: {change.message}"))
        if eid.startswith("create_"):
            self._inflight.unacked.pop(eid[7:], None)

    def _speech_started(self, change: ch.SpeechStarted, _data: Any = None) -> None:
        self.user_speaking = True
        self._audio.speech_start_ms = change.audio_start_ms if change.audio_start_ms is not None \
            else int(self._audio.sent_ms)
        if self._transport is not None and self._transport.audio_in_events and self.player is not None:
            td = _dig(self.session, "audio", "input", "turn_detection")
            if isinstance(td, dict) and td.get("interrupt_response", True) is not False:
                self._barge_in()

    def _barge_in(self) -> None:
        assert self.player is not None
        item_id, played = self.player.clear()
        item = self.conversation.get(item_id)
        if item is not None and item.role == "assistant" and played < item.audio_ms - 1:
            self._spawn(self.truncate(item.id, played))
        if self._speaking is not None:
            rid, speaking_item = self._speaking
            self._speaking = None
            self._emit(SpeakingStopped(rid, speaking_item, "interrupted"))

    def _input_committed(self, change: ch.InputCommitted, _data: Any = None) -> None:
        self.user_speaking = False
        item = self.conversation.get(change.item_id)
        if item is not None and item.speech_start_ms is None and self._audio.speech_start_ms is not None:
            item.speech_start_ms, item.speech_end_ms = self._audio.speech_start_ms, int(self._audio.sent_ms)
        self._audio.speech_start_ms = None
        end = item.speech_end_ms if item is not None else None
        self._audio.uncommitted_from_ms = float(end) if end is not None else self._audio.sent_ms

    def _item_completed(self, change: ch.ItemCompleted, _data: Any = None) -> None:
        item = change.item
        if change.usage is not None:
            model = _dig(self.session, "audio", "input", "transcription", "model")
            self.usage.add_transcription(model if isinstance(model, str) else None, change.usage)
        if item.type == "function_call":
            self._maybe_run_tool(item, self._runs.get(item.response_id or ""))
        elif item.type == "message" and item.id not in self._announced:
            self._announced.add(item.id)
            if self._subs.wants("message"):
                self._emit(Message(item.id, item.role or "", change.text, item.status, item.response_id,
                                   item.out_of_band))

    def _transcript_delta(self, change: ch.TranscriptDelta, _data: Any = None) -> None:
        run = self._runs.get(change.item.response_id or "")
        if run is not None and run.turn.first_text_ms is None:
            run.turn.mark("first_text_ms", time.monotonic())
        if self._subs.wants("transcript_delta"):
            item = change.item
            self._emit(TranscriptDelta(item.id, item.role or "assistant", change.delta, item.text))

    def _response_started(self, change: ch.ResponseStarted, _data: Any = None) -> None:
        response = change.response
        now = time.monotonic()
        tag = (response.metadata or {}).get(TAG_KEY)
        request = self._inflight.requests.pop(tag, None) if isinstance(tag, str) else None
        if request is not None:
            if request.handle.out_of_band and not response.out_of_band:
                self.conversation.mark_out_of_band(response.id)
            turn = TurnLatency(response.id, request.kind, request.sent_at)
            request.handle._set_created(response.id)
        elif self._speech_stopped_at is not None and not response.out_of_band:
            turn = TurnLatency(response.id, "speech", self._speech_stopped_at)
            self._speech_stopped_at = None
        else:
            turn = TurnLatency(response.id, "server", now)
        turn.mark("created_ms", now)
        self._runs[response.id] = ResponseRun(response.id, response.out_of_band,
                                              request.handle if request else None, turn)

    def _response_done(self, change: ch.ResponseDone, data: dict[str, Any] | None) -> None:
        rid, status = change.response.id, change.status
        run = self._runs.pop(rid, None)
        self.usage.add_response(self.billing_model, change.usage)
        lost = data is None  # ended by the connection's loss, not by the server
        if not lost and self._speaking is not None and self._speaking[0] == rid and (
                self._transport is None or self._transport.audio_in_events):
            if self.player is not None and self.player.queued_ms > 0:
                self._spawn(self._stop_speaking_when_played(rid, status))  # still audible
            else:
                self._speaking = None
                self._emit(SpeakingStopped(rid, None, status))
        if run is None:
            return
        run.turn.status = status
        if not lost:
            run.turn.mark("done_ms", time.monotonic())
            self.latencies.append(run.turn)
            if len(self.latencies) > 10_000:
                del self.latencies[:1000]
        if run.handle is not None:
            response = data.get("response") if data is not None else None
            run.handle._set_done(response if isinstance(response, dict) else {
                "id": rid, "object": "realtime.response", "status": status, "status_details": change.status_details,
                "output": [i.to_dict() for i in change.output], "usage": change.usage})
        if run.tools:
            if lost:  # the results go to the next session, and a response with them
                self._resume_response = False
            self._spawn(self._answer_tools(run, respond=status == "completed" or lost))

    async def _stop_speaking_when_played(self, response_id: str | None, status: str) -> None:
        player = self.player
        while player is not None and self._speaking is not None and self._speaking[0] == response_id:
            left = player.queued_ms
            if left <= 0:
                self._speaking = None
                self._emit(SpeakingStopped(response_id, None, status))
                return
            await asyncio.sleep(min(left / 1000, 0.25))

    def _audio_received(self, change: ch.AudioReceived, _data: Any = None) -> None:
        rid, item_id = change.response_id, change.item_id
        run = self._runs.get(rid or "")
        if run is not None and run.turn.first_audio_ms is None:
            run.turn.mark("first_audio_ms", time.monotonic())
        if self._speaking is None or self._speaking[0] != rid:
            self._speaking = (rid, item_id)
            self._emit(SpeakingStarted(rid, item_id))
        if self.player is not None or self._subs.wants("audio"):
            pcm = base64.b64decode(change.delta)
            if self._decoder is not None:
                pcm = float_to_pcm16(self._decoder.decode(pcm))
            if self.player is not None and (run is None or not run.out_of_band):
                self.player.feed(pcm, item_id)
            if self._subs.wants("audio"):
                self._emit(Audio(pcm, item_id, rid))

    def _on_track_audio(self, pcm: bytes) -> None:
        """Audio from a WebRTC media track (PCM16 24 kHz)."""
        rid = self.active_response_id
        run = self._runs.get(rid) if rid is not None else None
        if run is not None and run.turn.first_audio_ms is None:
            samples = np.frombuffer(pcm, dtype="<i2")
            if samples.size and int(np.abs(samples).max()) > 64:
                run.turn.mark("first_audio_ms", time.monotonic())
        item_id = self._speaking[1] if self._speaking else None
        item = self.conversation.get(item_id)
        if item is not None:
            item.audio_ms += len(pcm) / BYTES_PER_MS  # over WebRTC: what was heard
        if self.player is not None:
            self.player.feed(pcm, item_id)
        if self._subs.wants("audio"):
            self._emit(Audio(pcm, item_id, rid))

    def _playback_started(self, change: ch.PlaybackStarted, _data: Any = None) -> None:
        run = self._runs.get(change.response_id or "")
        if run is not None and run.turn.first_audio_ms is None:
            run.turn.mark("first_audio_ms", time.monotonic())
        self._speaking = (change.response_id, change.item_id)
        self._emit(SpeakingStarted(change.response_id, change.item_id))

    def _playback_stopped(self, change: ch.PlaybackStopped, _data: Any = None) -> None:
        if self._speaking is None:
            return
        rid, item_id = self._speaking
        self._speaking = None
        self._emit(SpeakingStopped(rid, item_id, "cleared" if change.cleared else "done"))

    # -- tools ----------------------------------------------------------------------------------
    def _maybe_run_tool(self, item: Item, run: ResponseRun | None) -> None:
        if run is None or run.out_of_band or not item.call_id or item.call_id in run.tools:
            return
        tool = self.tools.get(item.name)
        if tool is not None:
            run.tools[item.call_id] = self._spawn(tool.run(item.arguments))

    async def _answer_tools(self, run: ResponseRun, *, respond: bool) -> None:
        """Send every tool result of a finished response, then ask for the next response."""
        calls = list(run.tools.items())
        results = await asyncio.gather(*(task for _, task in calls), return_exceptions=True)
        for (call_id, _), result in zip(calls, results, strict=True):
            if isinstance(result, BaseException):
                result = ToolResult(json.dumps({"error": f"{type(result).__name__}: {result}"}), str(result), None, 0)
            item = next((i for i in self.conversation if i.type == "function_call" and i.call_id == call_id), None)
            await self.add_item({"type": "function_call_output", "call_id": call_id, "output": result.output})
            self._emit(ToolCall(item.name or "" if item is not None else "", call_id, result.arguments,
                                result.output, result.error, result.duration_ms, run.id))
        if respond and calls:
            await self.create_response(_kind="tool")

    # -- misc -----------------------------------------------------------------------------------

    @property
    def cost(self) -> float:
        """Dollars spent so far (responses and transcription), at the price table's rates."""
        return self.usage.cost

    def announced(self, item_id: str) -> bool:
        """Whether the item was handed to `message` subscribers (it is complete with its words)."""
        return item_id in self._announced

    @property
    def speaking(self) -> bool:
        return self._speaking is not None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.warning("client task failed: %s", exc, exc_info=exc)
            if not isinstance(exc, RealtimeError):
                self._emit(ErrorEvent.client("client_task_failed", f"{type(exc).__name__}: {exc}"))

    def __repr__(self) -> str:
        return f"<RealtimeClient {self.name or ''} {self.transport_name} {self.state} session={self.session_id}>"
