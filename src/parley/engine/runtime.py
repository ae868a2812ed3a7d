"""The async driver around a sans-I/O `Session`.

It sends the session's events (in order, through one sender task), carries out its effects —
speech-to-text on the shared STT thread, the responder and TTS per response, playback control —
and feeds the results back. Transports (WebSocket, WebRTC) only move bytes in and out of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from parley.audio.pcm import FloatArray
from parley.audio.resample import resample
from parley.engine.responders.base import FunctionCall, Responder, TextDelta
from parley.engine.session import (
    CancelResponse,
    ClearPlayback,
    CloseSession,
    Effect,
    Session,
    StartResponse,
    Transcribe,
)
from parley.engine.speech.pieces import Segmenter
from parley.protocol import beta as beta_shapes
from parley.protocol import events as ev
from parley.protocol.client_events import parse_client_event

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
STT_RATE = 16_000


class Speech(Protocol):
    """What the runner needs from the speech models (engine.speech provides them)."""

    def stream(self, text: str, voice: str, speed: float) -> Any: ...  # AsyncIterator[FloatArray]

    async def transcribe(self, audio_16k: FloatArray, prompt: str | None, language: str,
                         careful: bool = False) -> Heard: ...


class Heard(Protocol):
    """A transcript, and whether the STT was sure of it (else the session asks for a careful pass)."""

    @property
    def text(self) -> str: ...

    @property
    def sure(self) -> bool: ...

    @property
    def processing_s(self) -> float: ...  # time in the model: 0 when it did not run (silence)


class Playout(Protocol):
    """WebRTC: the media track that plays the agent's audio in real time."""

    def enqueue(self, response_id: str, item_id: str, pcm: FloatArray) -> None: ...

    def clear(self) -> tuple[str | None, str | None, float]: ...  # (response_id, item_id, played ms)


class SessionRunner:
    def __init__(
        self,
        session: Session,
        send: Send,
        *,
        responder: Responder,
        speech: Speech,
        beta: bool = False,
        playout: Playout | None = None,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self.session = session
        self._send = send
        self._responder = responder
        self._speech = speech
        self._beta = beta
        self._playout = playout
        self._on_close = on_close
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._responses: dict[str, asyncio.Task[None]] = {}
        self._stt: dict[str, asyncio.Task[None]] = {}
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._sender: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self.close_reason: str | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._sender = asyncio.create_task(self._send_loop())
        self._spawn(self._tick_loop())
        self._spawn(self._expiry())
        self.session.start(announce_conversation=self._beta)
        self.pump()

    async def close(self, reason: str = "closed") -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason
        self._closed.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.session.close()
        self._queue.put_nowait(None)
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._sender, 2)
        if self._on_close is not None:
            self._on_close(reason)

    async def wait_closed(self) -> str | None:
        await self._closed.wait()
        return self.close_reason

    def listen(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Also hand every server event (GA shape) to `callback` (sideband, recording)."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("engine task failed", exc_info=task.exception())

    # -- input ------------------------------------------------------------------------------

    def feed(self, raw: str | bytes | dict[str, Any]) -> None:
        """One client event from the transport (or a sideband connection)."""
        if self._closed.is_set():
            return
        self.session.receive(parse_client_event(raw, beta=self._beta))
        self.pump()

    def feed_audio(self, pcm: FloatArray) -> None:
        """Microphone audio at 24 kHz from a media track."""
        if self._closed.is_set():
            return
        self.session.receive_audio(pcm)
        self.pump()

    def announce(self, event: dict[str, Any]) -> None:
        """A server event that comes from the transport, not the session (a SIP caller's keypad
        digit): sent and listened to like the session's own."""
        if self._closed.is_set():
            return
        for listener in list(self._listeners):
            listener(event)
        if not self._beta:
            self._queue.put_nowait(event)

    # -- output -----------------------------------------------------------------------------

    def pump(self) -> None:
        """Route everything the session produced: events to the sender, effects to workers."""
        for out in self.session.take():
            if isinstance(out, dict):
                for listener in list(self._listeners):
                    listener(out)
                if self._beta:
                    for event in beta_shapes.server_event_to_beta(out):
                        self._queue.put_nowait(event)
                else:
                    self._queue.put_nowait(out)
            else:
                self._execute(out)

    async def _send_loop(self) -> None:
        while True:
            event = await self._queue.get()
            if event is None:
                return
            try:
                await self._send(event)
            except Exception:  # the peer is gone; the transport will close us
                log.debug("send failed", exc_info=True)
                return

    def _execute(self, effect: Effect) -> None:
        if isinstance(effect, Transcribe):
            old = self._stt.pop(effect.item_id, None)
            if old is not None:
                old.cancel()  # a superseded attempt still waiting for the STT thread
            self._stt[effect.item_id] = self._spawn(self._transcribe(effect))
        elif isinstance(effect, StartResponse):
            self._responses[effect.response_id] = self._spawn(self._respond(effect))
        elif isinstance(effect, CancelResponse):
            task = self._responses.pop(effect.response_id, None)
            if task is not None:
                task.cancel()
        elif isinstance(effect, ClearPlayback):
            if self._playout is not None:
                response_id, item_id, played_ms = self._playout.clear()
                self.session.playback_cleared(response_id or effect.response_id, item_id, played_ms)
                self.pump()
        elif isinstance(effect, CloseSession):
            self._spawn(self.close(effect.reason))

    # -- work -------------------------------------------------------------------------------

    async def _transcribe(self, job: Transcribe) -> None:
        asked = time.perf_counter()
        try:
            heard = await self._speech.transcribe(resample(job.audio, 24_000, STT_RATE), job.prompt,
                                                  job.language or "en", careful=job.careful)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("transcription failed")
            self.session.transcription_result(job.item_id, job.attempt, None, error=str(exc))
        else:
            # the time includes the queue on the shared STT thread: it is what the turn waits; a
            # clip the level gate skipped says nothing of what a pass costs
            took_ms = (time.perf_counter() - asked) * 1000 if heard.processing_s > 0 else None
            self.session.transcription_result(job.item_id, job.attempt, heard.text, sure=heard.sure, took_ms=took_ms)
        finally:
            if self._stt.get(job.item_id) is asyncio.current_task():
                del self._stt[job.item_id]
        self.pump()

    async def _respond(self, job: StartResponse) -> None:
        rid = job.response_id
        segmenter = Segmenter()
        try:
            async for chunk in self._responder.respond(job.request):
                if isinstance(chunk, TextDelta):
                    self.session.response_text(rid, chunk.text)
                    self.pump()
                    if job.audio:
                        for piece in segmenter.push(chunk.text):
                            await self._speak(job, piece)
                elif isinstance(chunk, FunctionCall):
                    for piece in segmenter.flush():
                        await self._speak(job, piece)
                    self.session.response_function_call(rid, chunk.name, chunk.arguments, chunk.call_id)
                    self.pump()
            for piece in segmenter.flush():
                await self._speak(job, piece)
            self.session.response_complete(rid)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("response %s failed: %s", rid, exc)
            self.session.response_failed(rid, f"The responder failed: {exc}")
        finally:
            self._responses.pop(rid, None)
        self.pump()

    async def _speak(self, job: StartResponse, piece: str) -> None:
        first: str | None = piece
        stream = self._speech.stream(piece, job.voice, job.speed)
        async with contextlib.aclosing(stream):
            async for pcm in stream:
                self.session.response_audio(job.response_id, pcm, first)
                first = None
                if self._playout is not None:
                    item_id = self.session.message_item_id(job.response_id)
                    if item_id is not None:
                        self._playout.enqueue(job.response_id, item_id, pcm)
                self.pump()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self.session.tick(time.monotonic())
            self.pump()

    async def _expiry(self) -> None:
        await asyncio.sleep(max(0.0, self.session.expires_at - time.time()))
        self._queue.put_nowait(ev.error_event(
            "session_expired", "Your session hit the maximum duration of 60 minutes.", type="invalid_request_error"))
        self._spawn(self.close("session_expired"))
