"""`RealtimeClient`: one realtime conversation that survives the network.

    async with RealtimeClient(base_url="http://127.0.0.1:8000", api_key="sk-...") as client:
        client.on("message", lambda m: print(m.role, m.text))
        await client.send_text("Hello!")
        await client.wait_for("response.done")

The event path is built for throughput: raw JSON is parsed once with `json`, the client's own
bookkeeping is a dict lookup by type, and a typed wrapper is made only for events somebody
subscribed to (`on()`, `events()`, `wait_for()`).

Resilience: when the transport drops, the client reconnects with exponential backoff and jitter
(`ReconnectPolicy`), mints a fresh key through `key_provider` when the old one is refused or about
to expire, re-applies the session config, replays the conversation as items (assistant audio as
its transcript, user audio as its transcript or, without one, the audio itself), re-sends what was
in flight (unacknowledged items, unanswered `response.create`, the user's unfinished utterance)
and emits `reconnected`. Before the upstream's maximum session duration it renews the session
the same way, opening the new one before closing the old.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from parley.audio.formats import InputDecoder, OutputEncoder, normalize_format
from parley.audio.pcm import float_to_pcm16, int16_to_float, pcm16_to_float
from parley.audio.resample import StreamResampler
from parley.client.conversation import Conversation, Item, update_item
from parley.client.events import (
    Audio,
    Connected,
    Disconnected,
    ErrorEvent,
    KeyRefreshed,
    Message,
    Reconnected,
    Reconnecting,
    SpeakingStarted,
    SpeakingStopped,
    ToolCall,
    TranscriptDelta,
    wrap,
)
from parley.client.playback import AudioPlayer
from parley.client.policy import Key, KeyProvider, ReconnectPolicy, TurnLatency, Usage, key_from, resolve_key
from parley.client.tools import Tool, ToolRegistry, ToolResult
from parley.client.transport import (
    AuthenticationError,
    ConnectError,
    RealtimeError,
    Transport,
    TransportClosed,
    WebSocketTransport,
)
from parley.protocol.pricing import DEFAULT_TABLE, PriceTable

log = logging.getLogger(__name__)

__all__ = ["EventStream", "RealtimeClient", "ResponseHandle"]

TAG_KEY = "parley_request"
SAMPLE_RATE = 24_000
BYTES_PER_MS = 48
MAX_APPEND_BYTES = 8 * 1024 * 1024  # raw bytes per append event (the limit is 15 MiB of base64)
_ITEM_EVENTS = ("conversation.item.added", "conversation.item.done", "conversation.item.created")
_loads = json.loads
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

Handler = Callable[[Any], Any]
TransportKind = Literal["websocket", "webrtc"]


PREFIX_MS = 300
RESUME_MAX_MS = 15_000
SILENCE_RMS = 180  # int16 RMS of a 20 ms frame below which it counts as silence (about -45 dBFS)


def _trim_leading_silence(pcm: bytes) -> bytes:
    frame = SAMPLE_RATE // 50
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    frames = samples.size // frame
    if frames == 0:
        return b""
    levels = np.sqrt(np.mean(samples[: frames * frame].astype(np.float32).reshape(frames, frame) ** 2, axis=1))
    voiced = np.flatnonzero(levels > SILENCE_RMS)
    if voiced.size == 0:
        return b""
    first = max(0, int(voiced[0]) * frame - SAMPLE_RATE * PREFIX_MS // 1000)
    return pcm[first * 2:]


def _new_item_id() -> str:
    return "item_" + secrets.token_hex(10)


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


class ResponseHandle:
    """A `response.create` this client sent: await it for the final response object."""

    def __init__(self, client: RealtimeClient, tag: str, *, out_of_band: bool) -> None:
        loop = asyncio.get_running_loop()
        self._client = client
        self.tag = tag
        self.out_of_band = out_of_band
        self.id: str | None = None
        self.response: dict[str, Any] | None = None
        self._created: asyncio.Future[str] = loop.create_future()
        self._done: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.items: list[Item] = []

    async def created(self, timeout: float | None = 30.0) -> str:
        return await asyncio.wait_for(asyncio.shield(self._created), timeout)

    async def done(self, timeout: float | None = 60.0) -> dict[str, Any]:
        """The `response` object of `response.done` (raises if the server refused the request)."""
        return await asyncio.wait_for(asyncio.shield(self._done), timeout)

    def __await__(self) -> Any:
        return self.done().__await__()

    @property
    def status(self) -> str | None:
        return _dig(self.response, "status")

    @property
    def text(self) -> str:
        """The words of the response's messages (text or audio transcript)."""
        items = self.items
        if not items and self.id is not None:
            items = [i for i in self._client.conversation if i.response_id == self.id]
        return " ".join(i.text for i in items if i.type == "message" and i.text)

    def _set_created(self, response_id: str) -> None:
        self.id = response_id
        if not self._created.done():
            self._created.set_result(response_id)

    def _set_done(self, response: dict[str, Any]) -> None:
        self.response = response
        if not self._done.done():
            self._done.set_result(response)

    def _fail(self, error: Exception) -> None:
        for fut in (self._created, self._done):
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved: no "never retrieved" warning when nobody awaits


class _Response:
    __slots__ = ("handle", "id", "items", "out_of_band", "status", "tools", "turn")

    def __init__(self, response_id: str, out_of_band: bool, handle: ResponseHandle | None,
                 turn: TurnLatency) -> None:
        self.id = response_id
        self.out_of_band = out_of_band
        self.handle = handle
        self.turn = turn
        self.items: dict[str, Item] = {}
        self.tools: dict[str, asyncio.Task[ToolResult]] = {}
        self.status = "in_progress"


class _Request:
    __slots__ = ("event", "handle", "kind", "sent_at")

    def __init__(self, event: dict[str, Any], handle: ResponseHandle, kind: str) -> None:
        self.event = event
        self.handle = handle
        self.kind = kind
        self.sent_at = time.monotonic()


class EventStream:
    """An async iterator over the client's events (all, or of some types), from the moment it
    was made until the client closes."""

    _END = object()

    def __init__(self, client: RealtimeClient, types: tuple[str, ...]) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._unsubscribe = client._subscribe(types, self._queue.put_nowait)
        client._streams.add(self)

    def _end(self) -> None:
        self._queue.put_nowait(self._END)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Any:
        event = await self._queue.get()
        if event is self._END:
            self._unsubscribe()
            raise StopAsyncIteration
        return event

    def get_nowait(self) -> Any:
        """The next queued event or None."""
        try:
            event = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        return None if event is self._END else event

    def close(self) -> None:
        self._unsubscribe()
        self._end()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class RealtimeClient:
    """A realtime session with an OpenAI-compatible upstream (OpenAI, Parley's engine or server).

    Where to connect: `url` (the full realtime endpoint, e.g.
    "wss://api.openai.com/v1/realtime?model=gpt-realtime") or `base_url` (e.g.
    "https://api.openai.com/v1" or "http://127.0.0.1:8000"; "/v1" is added when missing). With
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
        max_session_duration: float | None = 3600.0,
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
        self._keep_audio_bytes = int(keep_audio_seconds * SAMPLE_RATE * 2)

        # state
        self.conversation = Conversation()
        self.tools = ToolRegistry()
        self.usage = Usage(prices=prices)
        self.latencies: list[TurnLatency] = []
        self.session: dict[str, Any] = {}
        self.rate_limits: list[dict[str, Any]] = []
        self.state: str = "idle"
        self.reconnects = 0
        self.renewals = 0
        self.key_refreshes = 0
        self.attempt_times: list[float] = []  # time.monotonic() of every connection attempt
        self.session_started_at: float | None = None
        self._transport: Transport | None = None
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subs: dict[str, list[Handler]] = {}
        self._subs_all: list[Handler] = []
        self._user_handlers: dict[tuple[str, Handler], Callable[[], None]] = {}
        self._streams: set[EventStream] = set()
        self._responses: dict[str, _Response] = {}
        self._requests: dict[str, _Request] = {}
        self._unacked: dict[str, dict[str, Any]] = {}
        self._outbox: deque[str] = deque(maxlen=256)
        self._root_inserts: set[str] = set()
        self._req_seq = 0
        self.active_response_id: str | None = None
        self._speaking: tuple[str | None, str | None] | None = None  # (response_id, item_id)
        self.user_speaking = False
        self._speech_start_ms: int | None = None
        self._speech_stopped_at: float | None = None
        self._resume_response = False
        self._handshake_waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        # audio
        self._resamplers: dict[int, StreamResampler] = {}
        self._odd_byte: dict[int, bytes] = {}
        self._encoder: OutputEncoder | None = None
        self._decoder: InputDecoder | None = None
        self._out_bytes_per_ms = 48.0
        self._ring = bytearray()
        self._ring_start_ms = 0.0
        self._sent_ms = 0.0
        self._uncommitted_from_ms = 0.0
        self._audio_backlog = b""
        self._audio_lock = asyncio.Lock()
        self._replayed_ids: set[str] = set()
        self._speech_bounds: tuple[str, int | None, int | None] | None = None
        self._session_model: str | None = None

        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "session.created": self._on_session,
            "session.updated": self._on_session,
            "transcription_session.created": self._on_session,
            "transcription_session.updated": self._on_session,
            "error": self._on_error,
            "rate_limits.updated": self._on_rate_limits,
            "input_audio_buffer.speech_started": self._on_speech_started,
            "input_audio_buffer.speech_stopped": self._on_speech_stopped,
            "input_audio_buffer.committed": self._on_committed,
            "input_audio_buffer.cleared": self._on_buffer_cleared,
            "input_audio_buffer.timeout_triggered": self._on_committed,
            "conversation.item.added": self._on_item,
            "conversation.item.created": self._on_item,
            "conversation.item.done": self._on_item,
            "conversation.item.deleted": self._on_item_deleted,
            "conversation.item.truncated": self._on_item_truncated,
            "conversation.item.input_audio_transcription.delta": self._on_transcription_delta,
            "conversation.item.input_audio_transcription.completed": self._on_transcription_completed,
            "conversation.item.input_audio_transcription.failed": self._on_transcription_failed,
            "response.created": self._on_response_created,
            "response.output_item.added": self._on_output_item,
            "response.output_item.done": self._on_output_item,
            "response.output_text.delta": self._on_text_delta,
            "response.text.delta": self._on_text_delta,
            "response.output_audio_transcript.delta": self._on_text_delta,
            "response.audio_transcript.delta": self._on_text_delta,
            "response.output_text.done": self._on_text_done,
            "response.text.done": self._on_text_done,
            "response.output_audio_transcript.done": self._on_text_done,
            "response.audio_transcript.done": self._on_text_done,
            "response.output_audio.delta": self._on_audio_delta,
            "response.audio.delta": self._on_audio_delta,
            "response.function_call_arguments.delta": self._on_arguments_delta,
            "response.function_call_arguments.done": self._on_arguments_done,
            "response.done": self._on_response_done,
            "output_audio_buffer.started": self._on_output_buffer_started,
            "output_audio_buffer.stopped": self._on_output_buffer_stopped,
            "output_audio_buffer.cleared": self._on_output_buffer_stopped,
        }

    # ==========================================================================================
    # connection lifecycle
    # ==========================================================================================

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
    def session_id(self) -> str | None:
        value = self.session.get("id")
        return value if isinstance(value, str) else None

    async def connect(self) -> None:
        """Open the first session (config applied). Raises `ConnectError` when that fails."""
        if self.state in ("connecting", "connected", "reconnecting"):
            return
        self._closing = False
        self.state = "connecting"
        try:
            transport, _ = await self._establish(initial=True)
        except BaseException:
            self.state = "closed"
            raise
        self._activate(transport)
        self._supervisor = asyncio.create_task(self._supervise(), name=f"parley-client-{self.name or 'reader'}")
        self._renewer = asyncio.create_task(self._renew_loop(), name="parley-client-renewal")
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
        self._end_all_responses("client_closed")
        if was_open:
            self._emit(Disconnected("closed by the client", 1000, will_reconnect=False))
        self._end_streams()

    def _end_streams(self) -> None:
        for stream in list(self._streams):
            stream._end()
        self._streams.clear()

    def _finish_after_final_drop(self) -> None:
        """The connection is gone for good (not by close()): stop the background work."""
        self.state = "closed"
        self._closing = True
        if self._renewer is not None:
            self._renewer.cancel()
        self._end_streams()

    # -- endpoints ------------------------------------------------------------------------------

    def http_base(self) -> str:
        """The HTTP base of the API ("https://host/v1")."""
        if self._base_url is not None:
            base = self._base_url.rstrip("/")
            scheme, netloc, path, _, _ = urlsplit(base)
            scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
            if not path.endswith("/v1"):
                path = path + "/v1"
            return urlunsplit((scheme, netloc, path, "", ""))
        assert self._url is not None
        scheme, netloc, path, _, _ = urlsplit(self._url)
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        path = path.rstrip("/")
        path = path.removesuffix("/calls").removesuffix("/realtime")
        return urlunsplit((scheme, netloc, path, "", ""))

    def websocket_url(self, key: Key | None = None) -> str:
        if self._url is not None and urlsplit(self._url).path.rstrip("/").endswith("/realtime"):
            scheme, netloc, path, query, _ = urlsplit(self._url)
            params = dict(parse_qsl(query))
        else:
            scheme, netloc, path, _, _ = urlsplit(self.http_base() + "/realtime")
            params = {}
        scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
        if self.intent == "transcription":
            params.setdefault("intent", "transcription")
        elif "model" not in params and "call_id" not in params:
            model = self.model or (None if key is not None and key.ephemeral else "gpt-realtime")
            if model:
                params["model"] = model
        return urlunsplit((scheme, netloc, path, urlencode(params), ""))

    # -- establishing sessions -------------------------------------------------------------------

    def _new_transport(self, key: Key) -> Transport:
        kind = self._transport_kind
        if callable(kind):
            return kind(self, key)
        if kind == "webrtc":
            from parley.client.webrtc import WebRTCTransport

            session = None if key.ephemeral else {"type": self._session_type, **self._config()}
            if session is not None and self.model and self._session_type == "realtime":
                session.setdefault("model", self.model)
            return WebRTCTransport(self.http_base() + "/realtime/calls", session=session, ice_hosts=self._ice_hosts,
                                   headers=self._headers)
        if kind != "websocket":
            raise ValueError(f"unknown transport {kind!r}")
        return WebSocketTransport(self.websocket_url(key), headers=self._headers)

    async def _key_for(self, force: bool, reason: str) -> Key:
        if self._key_provider is not None and (force or self._key is None or self._key.expiring()):
            self._key = await resolve_key(self._key_provider)
            self.key_refreshes += 1
            self._emit(KeyRefreshed(self._key.expires_at, reason))
        if self._key is None:
            raise AuthenticationError("No API key: pass api_key= or key_provider= (or set OPENAI_API_KEY).",
                                      status=401)
        return self._key

    async def _establish(self, *, initial: bool, renewal: bool = False) -> tuple[Transport, int]:
        """A transport carrying a configured session with the conversation replayed.

        Returns it and how many items were replayed. Retries per the policy (the first
        connection only with `retry_initial`); raises the last error when it gives up. A key
        the upstream refuses is replaced through the key provider at once, without backoff."""
        policy = self.policy
        attempt = 0
        force_key = False
        refreshed_for_auth = False
        last_error: str | None = None
        # after a drop the first attempt waits too (the peer just went away); otherwise not
        backoff_index = 0 if initial or renewal else 1
        while True:
            attempt += 1
            if backoff_index > 0 and not force_key:
                delay = policy.delay(backoff_index)
                if not renewal:
                    self._emit(Reconnecting(attempt, delay, last_error))
                await asyncio.sleep(delay)
            if self._closing:
                raise TransportClosed("closed by the client")
            self.attempt_times.append(time.monotonic())
            transport: Transport | None = None
            try:
                key = await self._key_for(force_key, "refused" if force_key else "expiring")
                force_key = False
                transport = self._new_transport(key)
                await transport.open(key.value)
                replayed = await self._open_session(transport, resume=not initial)
                return transport, replayed
            except AuthenticationError as exc:
                if transport is not None:
                    await transport.close()
                last_error = str(exc)
                if self._key_provider is None or refreshed_for_auth:
                    raise
                force_key = refreshed_for_auth = True
            except (ConnectError, TransportClosed, TimeoutError) as exc:
                if transport is not None:
                    await transport.close()
                last_error = f"{type(exc).__name__}: {exc}"
                retryable = not isinstance(exc, ConnectError) or exc.retryable
                if not retryable or not policy.enabled or (initial and not policy.retry_initial):
                    raise
                if policy.max_attempts is not None and attempt >= policy.max_attempts:
                    raise ConnectError(f"Gave up after {attempt} attempts; last error: {last_error}") from exc
                backoff_index += 1
            except BaseException:
                if transport is not None:
                    await transport.close()
                raise

    async def _open_session(self, transport: Transport, *, resume: bool) -> int:
        timeout = self.policy.handshake_timeout
        transport.on_audio = self._on_track_audio
        await self._read_until(transport, lambda d: d.get("type") in ("session.created",
                                                                      "transcription_session.created"), timeout)
        config = self._config()
        if config or self._session_type == "transcription":
            eid = "parley_session_" + secrets.token_hex(4)
            await transport.send(_dumps({"type": "session.update", "event_id": eid,
                                         "session": {"type": self._session_type, **config}}))
            reply = await self._read_until(
                transport, lambda d: d.get("type") == "session.updated"
                or (d.get("type") == "error" and _dig(d, "error", "event_id") == eid), timeout)
            if reply.get("type") == "error":
                err = reply.get("error") or {}
                raise ConnectError(f"The session config was refused: {err.get('message')}", status=400,
                                   code=err.get("code"))
        if not resume:
            return 0
        return await self._replay(transport, set(), timeout)

    async def _read_until(self, transport: Transport, predicate: Callable[[dict[str, Any]], bool],
                          timeout: float) -> dict[str, Any]:
        """Read and dispatch events from a transport nobody else reads yet, until one matches."""
        async with asyncio.timeout(timeout):
            while True:
                data = self._feed(await transport.recv())
                if data is not None and predicate(data):
                    return data

    def _replay_event(self, item: Item, replayed: set[str], max_audio: int | None = None) -> dict[str, Any] | None:
        wire: dict[str, Any]
        if item.type == "message":
            content: list[dict[str, Any]] = []
            if item.role == "assistant":
                text = item.heard_text if item.truncated_ms is not None else item.text
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
                            audio = self._ring_slice(item.speech_start_ms, item.speech_end_ms)
                            if audio and (max_audio is None or len(audio) * 4 // 3 < max_audio):
                                content.append({"type": "input_audio", "audio": base64.b64encode(audio).decode()})
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
        elif item.type == "function_call_output":
            if not item.call_id or item.call_id not in replayed:
                return None
            wire = {"id": item.id, "type": "function_call_output", "call_id": item.call_id, "output": item.output or ""}
        else:
            return None
        if item.type == "function_call" and item.call_id:
            replayed.add(item.call_id)
        return {"type": "conversation.item.create", "event_id": f"replay_{item.id}", "item": wire}

    async def _replay(self, transport: Transport, skip: set[str], timeout: float) -> int:
        """Re-create the conversation's items in the session on `transport`."""
        call_ids: set[str] = set()
        events = []
        for item in self.conversation:
            if item.type == "function_call" and item.call_id and item.id in skip:
                call_ids.add(item.call_id)
            if item.id in skip or item.id in self._unacked:
                continue
            # a WebRTC data channel message holds 64 KiB: no room for audio there
            event = self._replay_event(item, call_ids, None if transport.audio_in_events else 48_000)
            if event is not None:
                events.append(event)
        self._replayed_ids = set(skip) | {e["item"]["id"] for e in events}
        if not events:
            return 0
        for event in events:
            await transport.send(_dumps(event))
        last_id, last_eid = events[-1]["item"]["id"], events[-1]["event_id"]
        await self._read_until(transport, lambda d: (d.get("type") in _ITEM_EVENTS and _dig(d, "item", "id") == last_id)
                               or (d.get("type") == "error" and _dig(d, "error", "event_id") == last_eid), timeout)
        return len(events)

    def _activate(self, transport: Transport) -> None:
        """Make `transport` the live one and re-send what the previous session left in flight."""
        resume_audio = self._audio_to_resume()
        self._transport = transport
        self.state = "connected"
        self.session_started_at = time.monotonic()
        self._ring.clear()
        self._ring_start_ms = self._sent_ms = self._uncommitted_from_ms = 0.0
        self._speech_start_ms = None
        self.user_speaking = False
        self._apply_formats()
        texts = [_dumps(event) for event in self._unacked.values()]
        for request in self._requests.values():
            request.sent_at = time.monotonic()
            texts.append(_dumps(request.event))
        texts.extend(self._outbox)
        self._outbox.clear()
        resume, self._resume_response = self._resume_response, False
        if resume_audio:
            # ahead of any newer microphone audio (send_audio flushes the backlog first)
            self._audio_backlog = resume_audio
        if texts or resume or resume_audio:
            self._spawn(self._resend(texts, resume, bool(resume_audio)))

    async def _resend(self, texts: list[str], resume: bool, audio: bool) -> None:
        """What the previous session left in flight, in order: unacknowledged items, unanswered
        response requests, raw events sent while disconnected; then a new response for one the
        drop cut off, and the user's unfinished utterance."""
        for text in texts:
            await self._send_now(text)
        if resume:
            await self.create_response(_kind="resume")
        if audio:
            await self.send_audio(b"")

    async def _send_now(self, text: str) -> None:
        transport = self._transport
        if transport is None:
            return
        with contextlib.suppress(TransportClosed):
            await transport.send(text)

    # -- the read loop, drops, renewal ------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            transport = self._transport
            if transport is None:
                return
            feed = self._feed
            recv = transport.recv
            try:
                while True:
                    feed(await recv())
            except TransportClosed as exc:
                closed = exc
            if self._closing:
                return
            if transport is not self._transport:
                continue  # replaced by a renewal: read the new one
            await self._handle_drop(transport, closed)
            if self.state != "connected":
                return

    async def _handle_drop(self, transport: Transport, closed: TransportClosed) -> None:
        dropped_at = time.monotonic()
        policy = self.policy
        will = policy.enabled and (closed.code != 1000 or policy.on_normal_close)
        self._resume_response = self.active_response_id is not None and policy.resume_response
        self._end_all_responses("disconnected")
        self.state = "reconnecting" if will else "closed"
        self._transport = None
        await transport.close()
        self._emit(Disconnected(closed.reason, closed.code, will_reconnect=will))
        if not will:
            self._finish_after_final_drop()
            return
        first_attempt = len(self.attempt_times)
        try:
            new, replayed = await self._establish(initial=False)
        except (RealtimeError, OSError) as exc:
            if self._closing:
                return
            self.state = "closed"
            self._emit(ErrorEvent.client("reconnect_failed", f"Could not reconnect: {exc}"))
            self._emit(Disconnected(f"gave up reconnecting: {exc}", None, will_reconnect=False))
            self._finish_after_final_drop()
            return
        # what could not be replayed (an answer cut off before its first word, a half-written
        # function call) does not exist in the new session: forget it here too
        for item in self.conversation.items:
            if item.id not in self._replayed_ids and item.id not in self._unacked:
                self.conversation.remove(item.id)
        resumed = self._resume_response
        self._activate(new)
        self.reconnects += 1
        self._emit(Reconnected(self.session, "drop", len(self.attempt_times) - first_attempt,
                               time.monotonic() - dropped_at, replayed, resumed))

    async def _renew_loop(self) -> None:
        while not self._closing:
            limit = self.max_session_duration
            if limit is None:
                return
            started = self.session_started_at or time.monotonic()
            due = started + max(limit - self.renew_margin, 1.0)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self._closing:
                return
            if self.state != "connected" or self.session_started_at != started:
                continue  # a reconnect made a new session meanwhile
            hard = started + limit - min(self.renew_margin / 4, 5.0)
            await self._quiet_moment(hard)
            try:
                await self.renew()
            except (RealtimeError, OSError, TimeoutError) as exc:
                log.warning("session renewal failed: %s", exc)
                self._emit(ErrorEvent.client("renewal_failed", f"Could not renew the session: {exc}"))
                await asyncio.sleep(min(10.0, max(self.renew_margin / 4, 0.5)))

    async def _quiet_moment(self, deadline: float) -> None:
        """Wait until nobody speaks, no response runs and no tool works (or the deadline)."""
        # polled: the conditions change inside event handlers all over the client
        while self._busy() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def _busy(self) -> bool:
        return self.active_response_id is not None or self.user_speaking or self._tools_running()

    async def renew(self) -> None:
        """Move the conversation to a fresh session now (make before break)."""
        if self.state != "connected":
            return
        began = time.monotonic()
        first_attempt = len(self.attempt_times)
        new, replayed = await self._establish(initial=False, renewal=True)
        old = self._transport
        if self.state != "connected" or old is None:
            await new.close()
            return
        # items completed on the old session while the new one was being prepared
        for _ in range(3):
            missing = [i.id for i in self.conversation if i.id not in self._replayed_ids
                       and i.completed and i.id not in self._unacked]
            if not missing:
                break
            replayed += await self._replay(new, set(self._replayed_ids), self.policy.handshake_timeout)
        self._activate(new)
        await old.close()
        self.renewals += 1
        self._emit(Reconnected(self.session, "renewal", len(self.attempt_times) - first_attempt,
                               time.monotonic() - began, replayed, False))

    def _tools_running(self) -> bool:
        return any(not t.done() for r in self._responses.values() for t in r.tools.values())

    def _end_all_responses(self, reason: str) -> None:
        """The session is gone: whatever it was writing ends here, as `incomplete`."""
        for rid in list(self._responses):
            state = self._responses.pop(rid)
            for item in list(state.items.values()) + [i for i in self.conversation if i.response_id == rid]:
                if item.status == "in_progress":
                    item.status = "incomplete"
                    self._announce(item, out_of_band=state.out_of_band)
            response: dict[str, Any] = {"id": rid, "object": "realtime.response", "status": "incomplete",
                        "status_details": {"type": "incomplete", "reason": reason}, "output": [], "usage": None}
            if state.handle is not None:
                state.handle._set_done(response)
            state.turn.status = "incomplete"
            if state.tools:
                self._resume_response = False
                self._spawn(self._answer_tools(state, respond=True))
        if self._speaking is not None:
            speaking_rid, speaking_item = self._speaking
            self._speaking = None
            self._emit(SpeakingStopped(speaking_rid, speaking_item, reason))
        self.active_response_id = None

    # ==========================================================================================
    # events in
    # ==========================================================================================

    def _feed(self, raw: str | bytes) -> dict[str, Any] | None:
        """Parse one raw server event, update the state, hand it to subscribers."""
        try:
            data = _loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            self._emit(ErrorEvent.client("invalid_server_event", f"The server sent something that is not JSON: {exc}"))
            return None
        if data.__class__ is not dict:
            self._emit(ErrorEvent.client("invalid_server_event", "The server sent a JSON value that is not an object."))
            return None
        kind = data.get("type")
        handler = self._handlers.get(kind)  # type: ignore[arg-type]
        if handler is not None:
            try:
                handler(data)
            except Exception as exc:  # a malformed event must never stop the client
                log.debug("could not handle %s", kind, exc_info=True)
                self._emit(ErrorEvent.client("invalid_server_event", f"Could not handle a {kind!r} event: "
                                                                     f"{type(exc).__name__}: {exc}"))
        subs = self._subs.get(kind)  # type: ignore[arg-type]
        if subs is not None or self._subs_all:
            event = wrap(data)
            if subs is not None:
                for callback in list(subs):
                    self._call(callback, event)
            for callback in list(self._subs_all):
                self._call(callback, event)
        return data

    def feed(self, raw: str | bytes) -> None:
        """Process one raw server event as if it had arrived (replaying recordings, benchmarks)."""
        self._feed(raw)

    # -- subscribers ---------------------------------------------------------------------------

    def _subscribe(self, types: Iterable[str], callback: Handler) -> Callable[[], None]:
        kinds = tuple(types)
        if not kinds:
            self._subs_all.append(callback)
        for kind in kinds:
            self._subs.setdefault(kind, []).append(callback)

        def unsubscribe() -> None:
            if not kinds:
                with contextlib.suppress(ValueError):
                    self._subs_all.remove(callback)
            for kind in kinds:
                listeners = self._subs.get(kind)
                if listeners is not None:
                    with contextlib.suppress(ValueError):
                        listeners.remove(callback)
                    if not listeners:
                        del self._subs[kind]

        return unsubscribe

    def _wants(self, kind: str) -> bool:
        return kind in self._subs or bool(self._subs_all)

    def _call(self, callback: Handler, event: Any) -> None:
        try:
            result = callback(event)
        except Exception:
            log.exception("an event handler for %s failed", getattr(event, "type", event))
            return
        if asyncio.iscoroutine(result):
            self._spawn(result)

    def _emit(self, event: Any) -> None:
        kind = event.type
        subs = self._subs.get(kind)
        if subs is not None:
            for callback in list(subs):
                self._call(callback, event)
        for callback in list(self._subs_all):
            self._call(callback, event)

    def on(self, type: str, handler: Handler | None = None) -> Any:
        """Call `handler(event)` for every event of `type` ("*" for all); sync or async.

        Without a handler it is a decorator: `@client.on("message")`."""

        def register(fn: Handler) -> Handler:
            self._user_handlers[(type, fn)] = self._subscribe(() if type == "*" else (type,), fn)
            return fn

        return register(handler) if handler is not None else register

    def off(self, type: str, handler: Handler) -> None:
        unsubscribe = self._user_handlers.pop((type, handler), None)
        if unsubscribe is not None:
            unsubscribe()

    def events(self, *types: str) -> EventStream:
        """An async iterator over events (of `types`, or all) from now on."""
        return EventStream(self, types)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self.events()

    async def wait_for(self, type: str, predicate: Callable[[Any], bool] | None = None,
                       timeout: float | None = 30.0) -> Any:
        """The next event of `type` (for which `predicate` holds)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def check(event: Any) -> None:
            if not future.done() and (predicate is None or predicate(event)):
                future.set_result(event)

        unsubscribe = self._subscribe((type,), check)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            unsubscribe()

    # -- bookkeeping per event type -------------------------------------------------------------

    def _on_session(self, data: dict[str, Any]) -> None:
        session = data.get("session")
        if isinstance(session, dict):
            self.session = session
            model = session.get("model")
            if isinstance(model, str) and model:
                self._session_model = model
            self._apply_formats()

    def _apply_formats(self) -> None:
        fmt_in = _dig(self.session, "audio", "input", "format")
        fmt_out = _dig(self.session, "audio", "output", "format")
        try:
            name_in = normalize_format(str((fmt_in.get("type") if isinstance(fmt_in, dict) else fmt_in) or "audio/pcm"))
            name_out = normalize_format(str((fmt_out.get("type") if isinstance(fmt_out, dict) else fmt_out)
                                            or "audio/pcm"))
        except ValueError:
            name_in = name_out = "audio/pcm"
        self._encoder = None if name_in == "audio/pcm" else OutputEncoder(name_in)
        self._decoder = None if name_out == "audio/pcm" else InputDecoder(name_out)
        self._out_bytes_per_ms = 48.0 if name_out == "audio/pcm" else 8.0

    @property
    def billing_model(self) -> str:
        return self._session_model or self.model or "gpt-realtime"

    def _on_error(self, data: dict[str, Any]) -> None:
        error = data.get("error")
        if not isinstance(error, dict):
            return
        eid = error.get("event_id")
        if not isinstance(eid, str):
            return
        request = self._requests.pop(eid, None)
        if request is not None:
            request.handle._fail(RealtimeError(f"{error.get('code')}: {error.get('message')}"))
        if eid.startswith("create_"):
            self._unacked.pop(eid[7:], None)

    def _on_rate_limits(self, data: dict[str, Any]) -> None:
        limits = data.get("rate_limits")
        if isinstance(limits, list):
            self.rate_limits = limits

    def _on_speech_started(self, data: dict[str, Any]) -> None:
        self.user_speaking = True
        start = data.get("audio_start_ms")
        self._speech_start_ms = start if isinstance(start, int) else int(self._sent_ms)
        if self._transport is not None and self._transport.audio_in_events and self.player is not None \
                and self._interrupts():
            self._barge_in()

    def _interrupts(self) -> bool:
        td = _dig(self.session, "audio", "input", "turn_detection")
        return isinstance(td, dict) and td.get("interrupt_response", True) is not False

    def _barge_in(self) -> None:
        assert self.player is not None
        item_id, played = self.player.clear()
        item = self.conversation.get(item_id)
        if item is not None and item.role == "assistant" and played < item.audio_ms - 1:
            item.truncated_ms = played
            self._spawn(self.truncate(item.id, played))
        if self._speaking is not None:
            rid, speaking_item = self._speaking
            self._speaking = None
            self._emit(SpeakingStopped(rid, speaking_item, "interrupted"))

    def _on_speech_stopped(self, data: dict[str, Any]) -> None:
        self.user_speaking = False
        self._speech_stopped_at = time.monotonic()
        end = data.get("audio_end_ms")
        item_id = data.get("item_id")
        if isinstance(item_id, str):
            self._speech_bounds = (item_id, self._speech_start_ms, end if isinstance(end, int) else None)

    def _on_committed(self, data: dict[str, Any]) -> None:
        item_id = data.get("item_id")
        if not isinstance(item_id, str):
            return
        if data.get("type") == "input_audio_buffer.timeout_triggered":
            return  # the committed event that follows places the item
        self.user_speaking = False
        item = self.conversation.get(item_id)
        if item is None:
            item = Item(id=item_id, type="message", role="user", status="completed", has_audio=True,
                        content=[{"type": "input_audio", "transcript": None}])
            self.conversation.place(item, data.get("previous_item_id") if isinstance(data.get("previous_item_id"),
                                                                                     str) else None)
        bounds = self._speech_bounds
        if bounds is not None and bounds[0] == item_id:
            item.speech_start_ms, item.speech_end_ms = bounds[1], bounds[2]
        elif self._speech_start_ms is not None:
            item.speech_start_ms, item.speech_end_ms = self._speech_start_ms, int(self._sent_ms)
        self._speech_start_ms = None
        self._uncommitted_from_ms = float(item.speech_end_ms) if item.speech_end_ms is not None else self._sent_ms

    def _on_buffer_cleared(self, _data: dict[str, Any]) -> None:
        self._speech_start_ms = None
        self.user_speaking = False
        self._uncommitted_from_ms = self._sent_ms

    def _on_item(self, data: dict[str, Any]) -> None:
        wire = data.get("item")
        if not isinstance(wire, dict):
            return
        item_id = wire.get("id")
        if not isinstance(item_id, str):
            return
        prev = data.get("previous_item_id")
        item = self.conversation.upsert(wire, prev if isinstance(prev, str) else None,
                                        at_root=item_id in self._root_inserts)
        self._root_inserts.discard(item_id)
        self._unacked.pop(item_id, None)
        if item.type == "message" and item.role == "user" and item.has_audio and item.status == "in_progress":
            item.status = "completed"  # committed audio is final; only its transcript may follow
        if data.get("type") != "conversation.item.added" or item.role in ("user", "system"):
            self._announce(item)

    def _announce(self, item: Item, *, out_of_band: bool = False) -> None:
        if item.announced or item.type != "message" or not item.completed:
            return
        if item.role == "user" and item.has_audio and item.final_text is None and not item.transcription_failed \
                and self._transcribing():
            return  # its words are on the way
        item.announced = True
        if self._wants("message"):
            self._emit(Message(item.id, item.role or "", item.text, item.status, item.response_id, out_of_band))

    def _transcribing(self) -> bool:
        return isinstance(_dig(self.session, "audio", "input", "transcription"), dict)

    def _on_item_deleted(self, data: dict[str, Any]) -> None:
        item_id = data.get("item_id")
        if isinstance(item_id, str):
            self.conversation.remove(item_id)

    def _on_item_truncated(self, data: dict[str, Any]) -> None:
        item = self.conversation.get(data.get("item_id"))
        end = data.get("audio_end_ms")
        if item is not None and isinstance(end, int | float):
            item.truncated_ms = float(end)

    def _user_item(self, item_id: Any) -> Item | None:
        if not isinstance(item_id, str):
            return None
        item = self.conversation.get(item_id)
        if item is None:
            item = Item(id=item_id, type="message", role="user", status="completed", has_audio=True,
                        content=[{"type": "input_audio", "transcript": None}])
            self.conversation.place(item, None)
        return item

    def _on_transcription_delta(self, data: dict[str, Any]) -> None:
        item = self._user_item(data.get("item_id"))
        delta = data.get("delta")
        if item is None or not isinstance(delta, str):
            return
        item.parts.append(delta)
        if self._wants("transcript_delta"):
            self._emit(TranscriptDelta(item.id, item.role or "user", delta, item.text))

    def _on_transcription_completed(self, data: dict[str, Any]) -> None:
        item = self._user_item(data.get("item_id"))
        if item is None:
            return
        transcript = data.get("transcript")
        item.final_text = transcript if isinstance(transcript, str) else ""
        item.parts.clear()
        for part in item.content:
            if part.get("type") == "input_audio":
                part["transcript"] = item.final_text
        model = _dig(self.session, "audio", "input", "transcription", "model")
        self.usage.add_transcription(model if isinstance(model, str) else None, data.get("usage"))
        self._announce(item)

    def _on_transcription_failed(self, data: dict[str, Any]) -> None:
        item = self._user_item(data.get("item_id"))
        if item is not None:
            item.transcription_failed = True
            self._announce(item)

    # responses

    def _on_response_created(self, data: dict[str, Any]) -> None:
        response = data.get("response")
        if not isinstance(response, dict) or not isinstance(response.get("id"), str):
            return
        rid = response["id"]
        now = time.monotonic()
        out_of_band = "conversation_id" in response and response.get("conversation_id") is None
        tag = _dig(response, "metadata", TAG_KEY)
        request = self._requests.pop(tag, None) if isinstance(tag, str) else None
        if request is not None:
            out_of_band = out_of_band or request.handle.out_of_band
            turn = TurnLatency(rid, request.kind, request.sent_at)
            request.handle._set_created(rid)
        elif self._speech_stopped_at is not None and not out_of_band:
            turn = TurnLatency(rid, "speech", self._speech_stopped_at)
            self._speech_stopped_at = None
        else:
            turn = TurnLatency(rid, "server", now)
        turn.mark("created_ms", now)
        self._responses[rid] = _Response(rid, out_of_band, request.handle if request else None, turn)
        if not out_of_band:
            self.active_response_id = rid

    def _response_item(self, data: dict[str, Any], wire: dict[str, Any] | None = None) -> Item | None:
        """The item an output event is about: in the conversation, or of an out-of-band response."""
        item_id = data.get("item_id") or (wire or {}).get("id")
        if not isinstance(item_id, str):
            return None
        item = self.conversation.get(item_id)
        if item is not None:
            return item
        rid = data.get("response_id")
        state = self._responses.get(rid) if isinstance(rid, str) else None
        if state is not None and state.out_of_band:
            item = state.items.get(item_id)
            if item is None:
                item = state.items[item_id] = Item(id=item_id, type="message", role="assistant", response_id=rid)
                if state.handle is not None:
                    state.handle.items.append(item)
            return item
        item = Item(id=item_id, type="message", role="assistant", response_id=rid if isinstance(rid, str) else None)
        self.conversation.place(item, None)
        return item

    def _on_output_item(self, data: dict[str, Any]) -> None:
        wire = data.get("item")
        if not isinstance(wire, dict):
            return
        item = self._response_item(data, wire)
        if item is None:
            return
        update_item(item, wire)
        rid = data.get("response_id")
        if isinstance(rid, str):
            item.response_id = rid
        if data.get("type") == "response.output_item.done":
            state = self._responses.get(rid) if isinstance(rid, str) else None
            if item.type == "function_call":
                self._maybe_run_tool(item, state)
            self._announce(item, out_of_band=state is not None and state.out_of_band)

    def _on_text_delta(self, data: dict[str, Any]) -> None:
        delta = data.get("delta")
        if not isinstance(delta, str):
            return
        item = self._response_item(data)
        if item is None:
            return
        item.parts.append(delta)
        state = self._responses.get(data.get("response_id"))  # type: ignore[arg-type]
        if state is not None and state.turn.first_text_ms is None:
            state.turn.mark("first_text_ms", time.monotonic())
        if self._wants("transcript_delta"):
            self._emit(TranscriptDelta(item.id, item.role or "assistant", delta, item.text))

    def _on_text_done(self, data: dict[str, Any]) -> None:
        item = self._response_item(data)
        text = data.get("transcript", data.get("text"))
        if item is not None and isinstance(text, str):
            item.final_text = text

    def _on_audio_delta(self, data: dict[str, Any]) -> None:
        b64 = data.get("delta")
        if not isinstance(b64, str):
            return
        item = self._response_item(data)
        rid = data.get("response_id")
        size = len(b64) * 3 // 4 - (2 if b64.endswith("==") else 1 if b64.endswith("=") else 0)
        if item is not None:
            item.audio_ms += size / self._out_bytes_per_ms
        state = self._responses.get(rid)  # type: ignore[arg-type]
        if state is not None and state.turn.first_audio_ms is None:
            state.turn.mark("first_audio_ms", time.monotonic())
        item_id = item.id if item is not None else None
        if self._speaking is None or self._speaking[0] != rid:
            self._speaking = (rid if isinstance(rid, str) else None, item_id)
            self._emit(SpeakingStarted(self._speaking[0], item_id))
        if self.player is not None or self._wants("audio"):
            pcm = base64.b64decode(b64)
            if self._decoder is not None:
                pcm = float_to_pcm16(self._decoder.decode(pcm))
            if self.player is not None and (state is None or not state.out_of_band):
                self.player.feed(pcm, item_id)
            if self._wants("audio"):
                self._emit(Audio(pcm, item_id, rid if isinstance(rid, str) else None))

    def _on_track_audio(self, pcm: bytes) -> None:
        """Audio from a WebRTC media track (PCM16 24 kHz)."""
        rid = self.active_response_id
        if rid is not None:
            state = self._responses.get(rid)
            if state is not None and state.turn.first_audio_ms is None:
                samples = np.frombuffer(pcm, dtype="<i2")
                if samples.size and int(np.abs(samples).max()) > 64:
                    state.turn.mark("first_audio_ms", time.monotonic())
        item_id = self._speaking[1] if self._speaking else None
        if item_id is not None:
            item = self.conversation.get(item_id)
            if item is not None:
                item.audio_ms += len(pcm) / BYTES_PER_MS  # over WebRTC: what was heard
        if self.player is not None:
            self.player.feed(pcm, item_id)
        if self._wants("audio"):
            self._emit(Audio(pcm, item_id, rid))

    def _on_arguments_delta(self, data: dict[str, Any]) -> None:
        delta = data.get("delta")
        item = self._response_item(data)
        if item is not None and isinstance(delta, str):
            item.type = "function_call"
            item.role = None
            item.arguments += delta

    def _on_arguments_done(self, data: dict[str, Any]) -> None:
        item = self._response_item(data)
        if item is None:
            return
        item.type = "function_call"
        item.role = None
        for key in ("arguments", "name", "call_id"):
            value = data.get(key)
            if isinstance(value, str):
                setattr(item, key, value)
        item.status = "completed"
        rid = data.get("response_id")
        self._maybe_run_tool(item, self._responses.get(rid) if isinstance(rid, str) else None)

    def _on_response_done(self, data: dict[str, Any]) -> None:
        response = data.get("response")
        if not isinstance(response, dict):
            return
        rid = response.get("id")
        raw_status = response.get("status")
        status: str = raw_status if isinstance(raw_status, str) else "completed"
        now = time.monotonic()
        state = self._responses.pop(rid, None) if isinstance(rid, str) else None
        self.usage.add_response(self.billing_model, response.get("usage"))
        out_of_band = state.out_of_band if state is not None else response.get("conversation_id", "") is None
        for wire in response.get("output") or []:
            if not isinstance(wire, dict) or not isinstance(wire.get("id"), str):
                continue
            item = self.conversation.get(wire["id"]) or (state.items.get(wire["id"]) if state else None)
            if item is None:
                continue
            if item.status == "in_progress":
                final = wire.get("status")
                item.status = final if isinstance(final, str) and final in ("completed", "incomplete") else (
                    "completed" if status == "completed" else "incomplete")
            self._announce(item, out_of_band=out_of_band)
        if isinstance(rid, str):
            for item in self.conversation:
                if item.response_id == rid and item.status == "in_progress":
                    item.status = "completed" if status == "completed" else "incomplete"
                    self._announce(item)
        if self.active_response_id == rid:
            self.active_response_id = None
        if self._speaking is not None and self._speaking[0] == rid and (
                self._transport is None or self._transport.audio_in_events):
            if self.player is not None and self.player.queued_ms > 0:
                self._spawn(self._stop_speaking_when_played(rid, status))  # still audible
            else:
                self._speaking = None
                self._emit(SpeakingStopped(rid, None, status))
        if state is not None:
            state.status = status
            state.turn.status = status
            state.turn.mark("done_ms", now)
            self.latencies.append(state.turn)
            if len(self.latencies) > 10_000:
                del self.latencies[:1000]
            if state.handle is not None:
                state.handle._set_done(response)
            if state.tools:
                self._spawn(self._answer_tools(state, respond=status == "completed"))

    async def _stop_speaking_when_played(self, response_id: str | None, status: str) -> None:
        player = self.player
        while player is not None and self._speaking is not None and self._speaking[0] == response_id:
            left = player.queued_ms
            if left <= 0:
                self._speaking = None
                self._emit(SpeakingStopped(response_id, None, status))
                return
            await asyncio.sleep(min(left / 1000, 0.25))

    def _on_output_buffer_started(self, data: dict[str, Any]) -> None:
        rid = data.get("response_id")
        rid = rid if isinstance(rid, str) else None
        state = self._responses.get(rid) if rid else None
        if state is not None and state.turn.first_audio_ms is None:
            state.turn.mark("first_audio_ms", time.monotonic())
        item = next((i for i in reversed(self.conversation.items) if i.response_id == rid and i.role == "assistant"),
                    None)
        self._speaking = (rid, item.id if item else None)
        self._emit(SpeakingStarted(rid, item.id if item else None))

    def _on_output_buffer_stopped(self, data: dict[str, Any]) -> None:
        if self._speaking is None:
            return
        rid, item_id = self._speaking
        self._speaking = None
        self._emit(SpeakingStopped(rid, item_id, "cleared" if data.get("type", "").endswith("cleared") else "done"))

    # -- tools --------------------------------------------------------------------------------

    def tool(self, fn: Callable[..., Any] | None = None, *, name: str | None = None,
             description: str | None = None, timeout: float | None = 30.0) -> Any:
        """Register a function as a tool (also usable as `@client.tool` or `@client.tool(name=...)`)."""

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            self.tools.add(f, name=name, description=description, timeout=timeout)
            self._tools_changed()
            return f

        return register(fn) if fn is not None else register

    def add_tool(self, fn: Callable[..., Any] | Tool, *, name: str | None = None,
                 description: str | None = None, timeout: float | None = 30.0) -> Tool:
        tool = self.tools.add(fn, name=name, description=description, timeout=timeout)
        self._tools_changed()
        return tool

    def remove_tool(self, name: str) -> None:
        self.tools.remove(name)
        self._tools_changed()

    def _tools_changed(self) -> None:
        if self.state == "connected":
            self._spawn(self._send_session_patch({}, wait=False))

    def _maybe_run_tool(self, item: Item, state: _Response | None) -> None:
        if state is None or state.out_of_band or not item.call_id or item.call_id in state.tools:
            return
        tool = self.tools.get(item.name)
        if tool is None:
            return
        state.tools[item.call_id] = self._spawn(tool.run(item.arguments))

    async def _answer_tools(self, state: _Response, *, respond: bool) -> None:
        """Send every tool result of a finished response, then ask for the next response."""
        calls = list(state.tools.items())
        results = await asyncio.gather(*(task for _, task in calls), return_exceptions=True)
        for (call_id, _), result in zip(calls, results, strict=True):
            if isinstance(result, BaseException):
                result = ToolResult(json.dumps({"error": f"{type(result).__name__}: {result}"}), str(result), None, 0)
            item = next((i for i in self.conversation if i.type == "function_call" and i.call_id == call_id), None)
            name = item.name if item is not None else ""
            await self.add_item({"type": "function_call_output", "call_id": call_id, "output": result.output})
            self._emit(ToolCall(name or "", call_id, result.arguments, result.output, result.error,
                                result.duration_ms, state.id))
        if respond and calls:
            await self.create_response(_kind="tool")

    # ==========================================================================================
    # commands
    # ==========================================================================================

    async def send(self, event: dict[str, Any]) -> None:
        """Send a raw client event (queued while reconnecting)."""
        await self._send_text(_dumps(event))

    async def _send_text(self, text: str) -> None:
        transport = self._transport
        if self.state == "closed":
            raise RealtimeError("The client is closed.")
        if transport is None or self.state != "connected":
            self._outbox.append(text)
            return
        try:
            await transport.send(text)
        except TransportClosed:
            self._outbox.append(text)

    def _config(self) -> dict[str, Any]:
        config = copy.deepcopy(self._desired)
        if len(self.tools):
            own = [t for t in config.get("tools") or [] if isinstance(t, dict) and t.get("name") not in self.tools]
            config["tools"] = own + self.tools.definitions
            config.setdefault("tool_choice", "auto")
        return config

    async def update_session(self, session: dict[str, Any] | None = None, *, wait: bool = True,
                             **fields: Any) -> dict[str, Any]:
        """Change the session config (kept and re-applied to every later session).

        Returns the server's effective session (`session.updated`) when `wait`."""
        patch = {**(session or {}), **fields}
        patch.pop("type", None)
        _deep_merge(self._desired, patch)
        return await self._send_session_patch(patch, wait=wait)

    async def _send_session_patch(self, patch: dict[str, Any], *, wait: bool) -> dict[str, Any]:
        payload = copy.deepcopy(patch)
        if len(self.tools):
            payload["tools"] = self._config()["tools"]
            payload.setdefault("tool_choice", self._desired.get("tool_choice", "auto"))
        eid = "parley_update_" + secrets.token_hex(4)
        event = {"type": "session.update", "event_id": eid, "session": {"type": self._session_type, **payload}}
        if self.state != "connected" or not wait:
            if self.state == "connected":
                await self.send(event)
            return self.session
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def check(event: Any) -> None:
            if future.done():
                return
            if event.type == "session.updated" or (event.type == "error" and event.client_event_id == eid):
                future.set_result(event)

        unsubscribe = self._subscribe(("session.updated", "error"), check)
        try:
            await self.send(event)
            reply = await asyncio.wait_for(future, self.policy.handshake_timeout)
        finally:
            unsubscribe()
        if reply.type == "error":
            raise RealtimeError(f"session.update refused: {reply.code}: {reply.message}")
        return dict(reply.session)

    async def add_item(self, item: dict[str, Any], *, previous_item_id: str | None = None) -> str:
        """`conversation.item.create`; returns the item's id (given or made here).

        The item is re-sent after a reconnect until the server acknowledges it."""
        wire = dict(item)
        item_id = wire.setdefault("id", _new_item_id())
        event: dict[str, Any] = {"type": "conversation.item.create", "event_id": f"create_{item_id}", "item": wire}
        if previous_item_id is not None:
            event["previous_item_id"] = previous_item_id
            if previous_item_id == "root":
                self._root_inserts.add(item_id)
        if self.state == "closed":
            raise RealtimeError("The client is closed.")
        self._unacked[item_id] = event
        if self.state == "connected" and self._transport is not None:
            await self._send_now(_dumps(event))
        return str(item_id)

    async def send_text(self, text: str, *, role: Literal["user", "system"] = "user", respond: bool = True,
                        **response: Any) -> str:
        """Add a text message and (by default) ask for a response. Returns the item id."""
        item_id = await self.add_item({"type": "message", "role": role,
                                       "content": [{"type": "input_text", "text": text}]})
        if respond:
            await self.create_response(**response)
        return item_id

    async def create_response(self, *, instructions: str | None = None,
                              output_modalities: list[str] | None = None,
                              conversation: Literal["auto", "none"] | None = None,
                              input: list[dict[str, Any]] | None = None,
                              metadata: dict[str, str] | None = None,
                              tools: list[dict[str, Any]] | None = None,
                              tool_choice: Any = None,
                              max_output_tokens: int | Literal["inf"] | None = None,
                              _kind: str = "request", **extra: Any) -> ResponseHandle:
        """`response.create`. `conversation="none"` makes an out-of-band response (its items stay
        out of the conversation; read them from the returned handle)."""
        params: dict[str, Any] = {k: v for k, v in {
            "instructions": instructions, "output_modalities": output_modalities, "conversation": conversation,
            "input": input, "tools": tools, "tool_choice": tool_choice, "max_output_tokens": max_output_tokens,
        }.items() if v is not None}
        params.update(extra)
        self._req_seq += 1
        tag = f"req_{self._req_seq}_{secrets.token_hex(3)}"
        meta = dict(metadata or {})
        if len(meta) < 16:
            meta[TAG_KEY] = tag
        params["metadata"] = meta
        event = {"type": "response.create", "event_id": tag, "response": params}
        handle = ResponseHandle(self, tag, out_of_band=conversation == "none")
        if self.state == "closed":
            raise RealtimeError("The client is closed.")
        self._requests[tag] = _Request(event, handle, _kind)
        if self.state == "connected" and self._transport is not None:
            await self._send_now(_dumps(event))
        return handle

    async def cancel_response(self, response_id: str | None = None) -> None:
        event: dict[str, Any] = {"type": "response.cancel"}
        if response_id:
            event["response_id"] = response_id
        await self.send(event)

    async def truncate(self, item_id: str | None = None, audio_end_ms: float | None = None,
                       content_index: int = 0) -> None:
        """Cut an assistant audio item where the listener stopped hearing it (default: the last
        assistant item, at the player's played position)."""
        item = self.conversation.get(item_id) if item_id else self.conversation.last("assistant")
        if item is None:
            raise RealtimeError(f"No assistant item {item_id or ''} to truncate.")
        if audio_end_ms is None:
            audio_end_ms = self.player.played_ms(item.id) if self.player is not None else item.audio_ms
        end = int(max(0.0, min(audio_end_ms, item.audio_ms or audio_end_ms)))
        item.truncated_ms = float(end)
        await self.send({"type": "conversation.item.truncate", "item_id": item.id, "content_index": content_index,
                         "audio_end_ms": end})

    async def interrupt(self) -> None:
        """Stop the assistant now: cancel its response, drop the audio not yet heard, and make the
        server forget what was not heard (truncate; WebRTC: `output_audio_buffer.clear`)."""
        if self.active_response_id is not None:
            await self.cancel_response(self.active_response_id)
        if self._transport is not None and not self._transport.audio_in_events:
            await self.send({"type": "output_audio_buffer.clear"})
            return
        if self.player is not None:
            item_id, played = self.player.clear()
            item = self.conversation.get(item_id)
            if item is not None and item.role == "assistant" and played < item.audio_ms - 1:
                await self.truncate(item.id, played)
        if self._speaking is not None:
            rid, speaking_item = self._speaking
            self._speaking = None
            self._emit(SpeakingStopped(rid, speaking_item, "interrupted"))

    async def delete_item(self, item_id: str) -> None:
        await self.send({"type": "conversation.item.delete", "item_id": item_id})

    async def retrieve_item(self, item_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The server's copy of an item (with audio), or RealtimeError."""
        eid = "retrieve_" + secrets.token_hex(4)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def check(event: Any) -> None:
            if future.done():
                return
            if (event.type == "conversation.item.retrieved" and event.item_id == item_id) or (
                    event.type == "error" and event.client_event_id == eid):
                future.set_result(event)

        unsubscribe = self._subscribe(("conversation.item.retrieved", "error"), check)
        try:
            await self.send({"type": "conversation.item.retrieve", "event_id": eid, "item_id": item_id})
            reply = await asyncio.wait_for(future, timeout)
        finally:
            unsubscribe()
        if reply.type == "error":
            raise RealtimeError(f"{reply.code}: {reply.message}")
        return dict(reply.item)

    # -- audio in ------------------------------------------------------------------------------

    def _to_pcm24k(self, audio: Any, rate: int) -> bytes:
        if isinstance(audio, bytes | bytearray | memoryview):
            data = bytes(audio)
            carry = self._odd_byte.pop(rate, b"")
            if carry:
                data = carry + data
            if len(data) % 2:
                self._odd_byte[rate] = data[-1:]
                data = data[:-1]
            if rate == SAMPLE_RATE:
                return data
            samples = pcm16_to_float(data)
        else:
            array = np.asarray(audio)
            if array.ndim == 2:
                array = array.mean(axis=1) if array.shape[1] <= 8 else array.mean(axis=0)
            if array.dtype == np.int16:
                samples = int16_to_float(array)
            else:
                samples = np.clip(array.astype(np.float32, copy=False), -1.0, 1.0)
        if rate != SAMPLE_RATE:
            resampler = self._resamplers.get(rate)
            if resampler is None:
                resampler = self._resamplers[rate] = StreamResampler(rate, SAMPLE_RATE)
            samples = resampler.process(samples)
        return float_to_pcm16(samples)

    async def send_audio(self, audio: bytes | np.ndarray[Any, Any], rate: int = SAMPLE_RATE) -> None:
        """Microphone audio: PCM16 LE mono bytes or a float32/int16 array, at any `rate`
        (resampled to 24 kHz with soxr, one stream per input rate)."""
        pcm = self._to_pcm24k(audio, rate)
        transport = self._transport
        if transport is not None and not transport.audio_in_events and self.state == "connected":
            if pcm:
                await transport.send_audio(pcm)
            return
        async with self._audio_lock:
            if self._audio_backlog and transport is not None and self.state == "connected":
                pcm, self._audio_backlog = self._audio_backlog + pcm, b""
            if not pcm:
                return
            self._remember(pcm)
            if transport is None or self.state != "connected":
                return  # kept in the recent-audio buffer; what was not committed is re-sent on reconnect
            wire = pcm if self._encoder is None else self._encoder.encode(pcm16_to_float(pcm))
            try:
                for offset in range(0, len(wire), MAX_APPEND_BYTES):
                    await transport.send_audio(wire[offset:offset + MAX_APPEND_BYTES])
            except TransportClosed:
                pass

    def _remember(self, pcm: bytes) -> None:
        self._ring += pcm
        self._sent_ms += len(pcm) / BYTES_PER_MS
        excess = len(self._ring) - self._keep_audio_bytes
        if excess > self._keep_audio_bytes // 4:
            excess -= excess % 2
            del self._ring[:excess]
            self._ring_start_ms += excess / BYTES_PER_MS

    def _ring_slice(self, start_ms: float | None, end_ms: float | None) -> bytes:
        if start_ms is None:
            return b""
        end = self._sent_ms if end_ms is None else min(end_ms, self._sent_ms)
        a = int(max(start_ms, self._ring_start_ms) - self._ring_start_ms) * BYTES_PER_MS
        b = int(end - self._ring_start_ms) * BYTES_PER_MS
        return bytes(self._ring[a:b]) if b > a else b""

    def _audio_to_resume(self) -> bytes:
        """Audio the old session had not committed: the user's unfinished utterance (from 300 ms
        before it started), or, when the server never said speech started, whatever sound came
        after the last commit (leading silence trimmed). At most RESUME_MAX_MS."""
        start: float
        if self._speech_start_ms is not None:
            start = self._speech_start_ms - PREFIX_MS
        else:
            start = self._uncommitted_from_ms
        pcm = self._ring_slice(max(start, self._sent_ms - RESUME_MAX_MS, 0.0), None)
        if self._speech_start_ms is None:
            pcm = _trim_leading_silence(pcm)
        return pcm

    async def commit_audio(self) -> None:
        await self.send({"type": "input_audio_buffer.commit"})

    async def clear_audio(self) -> None:
        self._speech_start_ms = None
        await self.send({"type": "input_audio_buffer.clear"})

    # -- misc -----------------------------------------------------------------------------------

    @property
    def cost(self) -> float:
        """Dollars spent so far (responses and transcription), at the price table's rates."""
        return self.usage.cost

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

