"""What a program tells the conversation: raw events, session changes, items, responses, cancel,
truncate and interrupt, microphone audio, and the tools it offers.

Commands sent while the connection is down wait: items and `response.create`s until the server
acknowledges them, raw events in an outbox, audio in the ring (`audio_input`); all of it goes out
once a session is live again (`resume`).
"""

from __future__ import annotations

import asyncio
import copy
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from parley.client.audio_input import SAMPLE_RATE, AudioInput
from parley.client.events import SpeakingStopped
from parley.client.playback import AudioPlayer
from parley.client.policy import ReconnectPolicy
from parley.client.responses import TAG_KEY, PendingRequest, ResponseHandle
from parley.client.resume import InFlight, _dumps
from parley.client.tools import Tool, ToolRegistry
from parley.client.transport import RealtimeError, Transport, TransportClosed
from parley.protocol import ids
from parley.protocol.conversation import ConversationState
from parley.protocol.session import merge_config

if TYPE_CHECKING:
    from parley.client.connection import Connection
    from parley.client.subscriptions import Subscriptions


class Commands:
    """The client's commands (a part of `RealtimeClient`)."""

    if TYPE_CHECKING:  # the client's state the commands use
        state: str
        policy: ReconnectPolicy
        conversation: ConversationState
        tools: ToolRegistry
        player: AudioPlayer | None

        @property
        def session(self) -> dict[str, Any]: ...

        @property
        def active_response_id(self) -> str | None: ...

        _transport: Transport | None
        _connection: Connection
        _subs: Subscriptions
        _audio: AudioInput
        _inflight: InFlight
        _desired: dict[str, Any]
        _session_type: str
        _req_seq: int
        _speaking: tuple[str | None, str | None] | None

        def _spawn(self, coro: Any) -> asyncio.Task[Any]: ...
        def _emit(self, event: Any) -> None: ...

    # -- commands -------------------------------------------------------------------------------

    async def send(self, event: dict[str, Any]) -> None:
        """Send a raw client event (queued while reconnecting)."""
        text = _dumps(event)
        transport = self._transport
        if self.state == "closed":
            raise RealtimeError("The client is closed.")
        if transport is None or self.state != "connected":
            self._inflight.outbox.append(text)
            return
        try:
            await transport.send(text)
        except TransportClosed:
            self._inflight.outbox.append(text)

    def _config(self) -> dict[str, Any]:
        config = copy.deepcopy(self._desired)
        if len(self.tools):
            own = [t for t in config.get("tools") or [] if isinstance(t, dict) and t.get("name") not in self.tools]
            config["tools"] = own + self.tools.definitions
            config.setdefault("tool_choice", "auto")
        return config

    async def update_session(self, session: dict[str, Any] | None = None, *, wait: bool = True,
                             **fields: Any) -> dict[str, Any]:
        """Change the session config (kept and re-applied to every later session, merged the way
        the server merges `session.update`). Returns the server's effective session when `wait`."""
        patch = {**(session or {}), **fields}
        patch.pop("type", None)
        self._desired = merge_config(self._desired, patch)
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
            if not future.done() and (event.type == "session.updated"
                                      or (event.type == "error" and event.client_event_id == eid)):
                future.set_result(event)

        unsubscribe = self._subs.subscribe(("session.updated", "error"), check)
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
        item_id = wire.setdefault("id", ids.item_id())
        event: dict[str, Any] = {"type": "conversation.item.create", "event_id": f"create_{item_id}", "item": wire}
        if previous_item_id is not None:
            event["previous_item_id"] = previous_item_id
        if self.state == "closed":
            raise RealtimeError("The client is closed.")
        self._inflight.unacked[item_id] = event
        if self.state == "connected" and self._transport is not None:
            await self._connection.send_now(_dumps(event))
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
        handle = ResponseHandle(self.conversation, tag, out_of_band=conversation == "none")
        if self.state == "closed":
            raise RealtimeError("The client is closed.")
        self._inflight.requests[tag] = PendingRequest(event, handle, _kind)
        if self.state == "connected" and self._transport is not None:
            await self._connection.send_now(_dumps(event))
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
        item.truncated_ms = float(end)  # heard_text is right before the server confirms
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
            if not future.done() and ((event.type == "conversation.item.retrieved" and event.item_id == item_id)
                                      or (event.type == "error" and event.client_event_id == eid)):
                future.set_result(event)

        unsubscribe = self._subs.subscribe(("conversation.item.retrieved", "error"), check)
        try:
            await self.send({"type": "conversation.item.retrieve", "event_id": eid, "item_id": item_id})
            reply = await asyncio.wait_for(future, timeout)
        finally:
            unsubscribe()
        if reply.type == "error":
            raise RealtimeError(f"{reply.code}: {reply.message}")
        return dict(reply.item)

    # -- audio in -------------------------------------------------------------------------------

    async def send_audio(self, audio: bytes | np.ndarray[Any, Any], rate: int = SAMPLE_RATE) -> None:
        """Microphone audio: PCM16 LE mono bytes or a float32/int16 array, at any `rate`
        (resampled to 24 kHz with soxr, one stream per input rate)."""
        pcm = self._audio.to_pcm24k(audio, rate)
        await self._audio.send(pcm, self._transport, self.state == "connected")

    async def commit_audio(self) -> None:
        await self.send({"type": "input_audio_buffer.commit"})

    async def clear_audio(self) -> None:
        self._audio.speech_start_ms = None
        await self.send({"type": "input_audio_buffer.clear"})


    # -- tools -----------------------------------------------------------------------------------

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
