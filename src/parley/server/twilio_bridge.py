"""A phone call the server carries itself: Twilio's media stream on one side, a realtime session on
the upstream's WebSocket on the other, recorded, capped and kept in History like any call.

Twilio's protocol rules (frames, marks, what the caller heard) are in `parley.telephony.twilio_stream`;
this is the I/O around them. Audio is G.711 mu-law both ways (the session asks the upstream for
`audio/pcmu` in and out), so bytes pass through untouched. The upstream's events go through the
call's `Recorder` (and the persona's agent) exactly as a sideband's do.

Barge-in: when the upstream hears the caller start speaking (`input_audio_buffer.speech_started`)
while Twilio is still playing agent audio (marks not yet echoed), the bridge sends Twilio `clear`
and truncates each unplayed answer at what the caller heard, per the echoed marks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.exceptions import ConnectionClosed

from parley.apps.negotiator.agent import NegotiatorAgent
from parley.apps.scenarios import Persona
from parley.http.errors import ApiError
from parley.telephony import twilio_stream as ts
from parley.telephony.tokens import Ticket

from .auth import Principal
from .calls import new_call_id
from .personas import persona_session
from .recorder import Recorder
from .state import ServerState

log = logging.getLogger(__name__)

PCMU = {"type": "audio/pcmu"}
MAX_BAD_FRAMES = 200  # a stream that keeps sending garbage is closed
DTMF_GAP_SECONDS = 0.8  # digits typed within this of each other are one keypad entry
KEYPAD_LABEL = "[keypad]"


def phone_session(persona: Persona, state: ServerState) -> dict[str, Any]:
    """The persona's session for a phone line: mu-law in and out (no resampling anywhere)."""
    session = persona_session(persona, state.settings, update=True)
    audio = session.setdefault("audio", {})
    audio.setdefault("input", {})["format"] = dict(PCMU)
    audio.setdefault("output", {})["format"] = dict(PCMU)
    return session


class TwilioCall:
    """One Twilio media stream, from its `start` to its end."""

    def __init__(self, state: ServerState, ws: WebSocket, reader: ts.StreamReader, start: ts.Start,
                 ticket: Ticket, persona: Persona, *, self_url: str | None) -> None:
        self.state, self.ws, self.reader, self.start, self.ticket = state, ws, reader, start, ticket
        self.persona, self.self_url = persona, self_url
        self.id = new_call_id()
        self.user_id = state.settings.twilio_user
        self.sid = start.stream_sid
        self.agent: NegotiatorAgent | None = None
        self.recorder: Recorder | None = None
        self.conn: Any = None  # the SDK's AsyncRealtimeConnection
        self.playout = ts.Playout()
        self.end_reason: str | None = None
        self._stop = asyncio.Event()
        self._finished = asyncio.Event()
        self._cut: set[str] = set()  # answers truncated at barge-in: their late audio is not played
        self._digits: list[str] = []
        self._dtmf_timer: asyncio.Task[None] | None = None
        self._greeted = False
        self._bad = 0

    # -- the call ---------------------------------------------------------------------------------

    async def run(self) -> None:
        calls, metrics = self.state.calls, self.state.metrics
        principal = Principal(self.user_id, f"phone:{self.user_id}", "twilio")
        try:
            await calls.take_slot(principal, self.id)
        except ApiError as exc:
            await self._close(1013, exc.code or "refused")
            return
        try:
            await calls.check_daily_cap(self.user_id)
            self.conn = await self.state.upstream.realtime(self_url=self.self_url)
            await self.state.store.create_call(
                id=self.id, user_id=self.user_id, kind="phone", persona=self.persona.id,
                persona_name=self.persona.name, model=self.state.settings.model, channel="phone",
                caller=self.ticket.caller or None)
        except ApiError as exc:
            await calls.slots.release(self.id)
            log.info("twilio call %s: not started: %s", self.ticket.call_sid, exc.message)
            await self._close(1011 if exc.status >= 500 else 1008, exc.code or "refused")
            await self._close_upstream()
            return
        except BaseException:
            await calls.slots.release(self.id)
            await self._close_upstream()
            await self._close(1011, "server_error")
            raise
        calls.bridged[self.id] = self
        metrics.inc("parley_calls_total", kind="phone")
        log.info("phone call %s: Twilio call %s, stream %s, persona %s", self.id, self.ticket.call_sid, self.sid,
                 self.persona.id)
        self.recorder = calls._recorder(self.id, self.user_id, self.persona, self.state.settings.model, send=self.conn.send,
                                        on_cost=self._check_costs)
        agent = calls._agent(self.id, self.persona, self.recorder, send=self.conn.send)
        self.agent = agent if isinstance(agent, NegotiatorAgent) else None
        reason = "upstream_closed"
        tasks: list[asyncio.Task[Any]] = []
        try:
            await self.conn.send({"type": "session.update", "session": phone_session(self.persona, self.state)})
            tasks = [asyncio.create_task(self._from_twilio(), name=f"twilio-in-{self.id}"),
                     asyncio.create_task(self._from_upstream(), name=f"twilio-out-{self.id}"),
                     asyncio.create_task(self._deadline(), name=f"deadline-{self.id}"),
                     asyncio.create_task(self._stop.wait())]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            ended = [t.result() for t in done if not t.cancelled() and t.exception() is None
                     and isinstance(t.result(), str)]
            failed = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
            for error in failed:
                log.error("phone call %s failed", self.id, exc_info=error)
            reason = ended[0] if ended else ("server_error" if failed else reason)
        except ConnectionClosed:
            reason = "upstream_closed"
        except asyncio.CancelledError:
            reason = "server_shutdown"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._finish(self.end_reason or reason)

    async def end(self, reason: str) -> None:
        """Hang up (a cap, the API's hangup, shutdown) and wait until the call is recorded as over."""
        self._request_stop(reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._finished.wait(), 10)

    def _request_stop(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        self._stop.set()

    async def _finish(self, reason: str) -> None:
        calls = self.state.calls
        calls.bridged.pop(self.id, None)
        await calls.slots.release(self.id)
        if self._dtmf_timer is not None:
            self._dtmf_timer.cancel()
        await self._close_upstream()
        try:
            if await self.state.store.end_call(self.id, reason=reason):
                self.state.metrics.inc("parley_calls_ended_total", reason=reason.split(":")[0])
        except Exception:
            log.exception("phone call %s: could not record its end", self.id)
        await self._close(1000, reason)
        log.info("phone call %s ended: %s", self.id, reason)
        self._finished.set()

    async def _close_upstream(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), 3)

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, reason=reason[:120])

    async def _deadline(self) -> str:
        await asyncio.sleep(self.state.settings.max_call_seconds)
        self.state.metrics.inc("parley_caps_total", cap="max_duration")
        return "max_duration"

    async def _check_costs(self) -> None:
        assert self.recorder is not None
        settings = self.state.settings
        reason = None
        if self.recorder.cost >= settings.max_call_cost_usd:
            reason = "max_cost"
        elif await self.state.calls.day_costs.spent(self.user_id) >= settings.daily_cost_cap_usd:
            reason = "daily_cost_cap"
        if reason is not None and self.end_reason is None:
            self.state.metrics.inc("parley_caps_total", cap=reason)
            self._request_stop(reason)  # not awaited: this runs inside the upstream loop

    # -- Twilio -> upstream -----------------------------------------------------------------------

    async def _from_twilio(self) -> str:
        while True:
            try:
                message = await self.ws.receive()
            except WebSocketDisconnect:
                return "caller_hangup"
            if message["type"] == "websocket.disconnect":
                return "caller_hangup"
            data = message.get("text")
            frame = self.reader.feed(data if data is not None else (message.get("bytes") or b""))
            if isinstance(frame, ts.Bad):
                if self.dropped(frame):
                    return "bad_input"
            elif isinstance(frame, ts.Media):
                if frame.payload:
                    await self.conn.send({"type": "input_audio_buffer.append", "audio": frame.payload_b64})
            elif isinstance(frame, ts.Mark):
                self.playout.played(frame.name)
            elif isinstance(frame, ts.Dtmf):
                self._digit(frame.digit)
            elif isinstance(frame, ts.Stop):
                return "caller_hangup"

    def dropped(self, bad: ts.Bad) -> bool:
        """Count and log a frame we drop; True when the stream has sent too many of them."""
        self._bad += 1
        self.state.metrics.inc("parley_phone_frames_dropped_total", reason=bad.reason)
        if self._bad <= 20 or self._bad % 100 == 0:
            log.info("phone call %s: dropped a Twilio frame (%s%s), %d so far", self.id, bad.reason,
                     f": {bad.detail}" if bad.detail else "", self._bad)
        return self._bad > MAX_BAD_FRAMES

    def _digit(self, digit: str) -> None:
        self._digits.append(digit)
        if self._dtmf_timer is not None:
            self._dtmf_timer.cancel()
        self._dtmf_timer = asyncio.create_task(self._keypad(0.0 if digit == "#" else DTMF_GAP_SECONDS))

    async def _keypad(self, wait: float) -> None:
        """The digits typed as one user message the agent reads, and a response to them."""
        await asyncio.sleep(wait)
        digits, self._digits = "".join(self._digits), []
        self._dtmf_timer = None
        if not digits:
            return
        self.state.metrics.inc("parley_phone_dtmf_total")
        try:
            await self.conn.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": f"{KEYPAD_LABEL} {digits}"}]}})
            await self._respond()
        except ConnectionClosed:
            log.info("phone call %s: keypad entry lost, the upstream closed", self.id)

    async def _respond(self) -> None:
        if self.agent is not None:
            await self.agent.request_response()
        else:
            await self.conn.send({"type": "response.create"})

    # -- upstream -> Twilio -----------------------------------------------------------------------

    async def _from_upstream(self) -> str:
        assert self.recorder is not None
        while True:
            try:
                raw = await self.conn.recv_bytes()
            except ConnectionClosed as exc:
                close = exc.rcvd
                return f"upstream_closed:{close.reason}"[:128] if close is not None and close.reason else "upstream_closed"
            try:
                event: Any = json.loads(raw)
            except ValueError:
                event = raw  # the recorder counts it as an invalid event
            if isinstance(event, dict):
                try:
                    await self._act(event)
                except (WebSocketDisconnect, RuntimeError, OSError):
                    return "caller_hangup"  # Twilio's side went away while we were sending to it
            try:
                await self.state.calls._apply(self.recorder, self.agent, event)
            except (asyncio.CancelledError, ConnectionClosed):
                raise
            except Exception:
                self.state.metrics.inc("parley_recorder_errors_total")
                log.exception("phone call %s: recording an event failed", self.id)

    async def _act(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "response.output_audio.delta":
            await self._play(event)
        elif kind == "input_audio_buffer.speech_started":
            if self.playout.playing:
                await self._barge_in()
        elif kind == "session.updated" and not self._greeted:
            self._greeted = True
            await self._respond()  # on the phone the agent speaks first

    async def _play(self, event: dict[str, Any]) -> None:
        item_id, delta = event.get("item_id"), event.get("delta")
        if not isinstance(item_id, str) or not isinstance(delta, str) or item_id in self._cut:
            return
        try:
            audio = base64.b64decode(delta, validate=True)
        except (binascii.Error, ValueError):
            return  # the recorder reports the malformed event
        for at in range(0, len(audio), ts.MARK_EVERY_BYTES):
            chunk = audio[at:at + ts.MARK_EVERY_BYTES]
            for frame in ts.media_frames(self.sid, chunk):
                await self.ws.send_text(frame)
            await self.ws.send_text(ts.mark_frame(self.sid, self.playout.queued(item_id, len(chunk))))

    async def _barge_in(self) -> None:
        cuts = self.playout.interrupt()
        await self.ws.send_text(ts.clear_frame(self.sid))
        self.state.metrics.inc("parley_phone_barge_ins_total")
        for cut in cuts:
            self._cut.add(cut.item_id)
            log.info("phone call %s: barge-in, %s heard to %d ms", self.id, cut.item_id, cut.audio_end_ms)
            await self.conn.send({"type": "conversation.item.truncate", "item_id": cut.item_id, "content_index": 0,
                                  "audio_end_ms": cut.audio_end_ms})
