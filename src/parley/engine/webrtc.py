"""The engine's WebRTC transport: one aiortc peer per call.

The microphone track is resampled into the session's pipeline; the agent's speech goes out on
a local track paced in 20 ms frames (silence in between); the `oai-events` data channel carries
the same JSON events as the WebSocket, minus audio deltas, plus `output_audio_buffer.*`.
The protocol itself stays in `engine.session`; this module only moves media and messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add
from av import AudioFrame

from parley.audio.pcm import SAMPLE_RATE, FloatArray
from parley.audio.resample import StreamResampler, Upsampler2x
from parley.engine.runtime import SessionRunner
from parley.engine.session import Session
from parley.protocol import ids

log = logging.getLogger(__name__)

FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
# What goes to the Opus encoder. Frames at Opus's own rate pass aiortc's resampler without the
# 20 ms it holds back at 24 -> 48 kHz (its fixed 960-sample output frames).
WIRE_RATE = 48_000
# A call whose peer never connects is dropped after this long.
CONNECT_TIMEOUT_S = 30.0
# aiortc's (and browsers' usual) SCTP message size limit.
MAX_CHANNEL_MESSAGE = 65_536


def pin_host_addresses(hosts: list[str]) -> None:
    """Offer only these host addresses as ICE candidates (e.g. 127.0.0.1 for loopback tests).

    aioice looks the function up at gathering time, so this works after aiortc is imported.
    """
    import aioice.ice

    addresses = list(hosts)

    def get_host_addresses(use_ipv4: bool = True, use_ipv6: bool = False) -> list[str]:
        return list(addresses)

    aioice.ice.get_host_addresses = get_host_addresses


class PacedAudioTrack(MediaStreamTrack):
    """An audio track that sends 20 ms frames in real time; subclasses say what to play (24 kHz),
    it goes out at 48 kHz."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._timestamp = 0  # in samples at WIRE_RATE
        self._upsample = Upsampler2x()
        self.late_frames = 0  # frames produced more than one frame late (audible stutter)

    def _next_samples(self) -> FloatArray:
        return np.zeros(FRAME_SAMPLES, dtype=np.float32)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._timestamp += 2 * FRAME_SAMPLES
            wait = self._start + self._timestamp / WIRE_RATE - now
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -FRAME_MS / 1000:
                self.late_frames += 1
        samples = self._upsample.process(self._next_samples())
        frame = AudioFrame.from_ndarray(
            (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = WIRE_RATE
        frame.pts = self._timestamp
        frame.time_base = fractions.Fraction(1, WIRE_RATE)
        return frame


class AgentAudioTrack(PacedAudioTrack):
    """The agent's voice, played in real time: 20 ms frames, silence when there is nothing to say.

    It knows what was actually played, per item, so barge-in can truncate at that point.
    """

    def __init__(self, on_drained: Callable[[str], None]) -> None:
        super().__init__()
        self._queue: deque[tuple[str, str, FloatArray]] = deque()
        self._on_drained = on_drained
        self._finished: set[str] = set()
        self._current: tuple[str, str] | None = None  # (response_id, item_id) last played
        self._played: dict[str, int] = {}  # item_id -> samples played

    def enqueue(self, response_id: str, item_id: str, pcm: FloatArray) -> None:
        if pcm.size:
            self._queue.append((response_id, item_id, pcm))

    def finish(self, response_id: str) -> None:
        """No more audio will come for this response."""
        self._finished.add(response_id)
        if not self._queue and self._current is not None and self._current[0] == response_id:
            self._drained()

    def clear(self) -> tuple[str | None, str | None, float]:
        """Drop everything queued; returns what was playing and how much of its item was heard."""
        current = self._current or (self._queue[0][:2] if self._queue else None)
        self._queue.clear()
        self._current = None
        if current is None:
            return None, None, 0.0
        response_id, item_id = current
        self._finished.discard(response_id)
        return response_id, item_id, self._played.get(item_id, 0) * 1000 / SAMPLE_RATE

    def _drained(self) -> None:
        assert self._current is not None
        response_id = self._current[0]
        self._current = None
        self._finished.discard(response_id)
        self._on_drained(response_id)

    def _next_samples(self) -> FloatArray:
        out = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        filled = 0
        while filled < FRAME_SAMPLES and self._queue:
            response_id, item_id, pcm = self._queue[0]
            take = min(FRAME_SAMPLES - filled, pcm.size)
            out[filled : filled + take] = pcm[:take]
            filled += take
            if self._current is not None and self._current[0] != response_id and self._current[0] in self._finished:
                self._drained()  # the previous response played out right before this one
            self._current = (response_id, item_id)
            self._played[item_id] = self._played.get(item_id, 0) + take
            if take == pcm.size:
                self._queue.popleft()
            else:
                self._queue[0] = (response_id, item_id, pcm[take:])
        if not self._queue and self._current is not None and self._current[0] in self._finished:
            self._drained()
        return out


class ArrivalBuffer(JitterBuffer):
    """Releases every audio packet the moment it arrives; one arriving after a newer one is dropped.

    aiortc's buffer holds four frames (80 ms) for the whole call, and even with no prefetch it
    knows a frame is whole only when the next packet comes: 20 ms on every turn. An Opus packet
    is a whole frame, and the VAD and STT are better served by a rare 20 ms gap (reordering is
    rare on loopback and LANs) than by a fixed delay on every turn.
    """

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self._last: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._last is not None and not 0 < uint16_add(packet.sequence_number, -self._last) < 0x8000:
            return False, None  # a duplicate, or older than one already played
        self._last = packet.sequence_number
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


def set_jitter_buffer(receiver: Any, buffer: JitterBuffer) -> None:
    """Replace an aiortc receiver's audio jitter buffer. (A private attribute: if aiortc renames
    it, its default buffer stays and only latency suffers.)"""
    name = "_RTCRtpReceiver__jitter_buffer"
    if isinstance(getattr(receiver, name, None), JitterBuffer):
        setattr(receiver, name, buffer)


def _mono_float(frame: AudioFrame) -> FloatArray:
    data = frame.to_ndarray()
    scale = np.float32(1 / 32768) if np.issubdtype(data.dtype, np.integer) else np.float32(1)
    channels = len(frame.layout.channels)
    if channels > 1:
        data = data if frame.format.is_planar else data.reshape(-1, channels).T
        return data.astype(np.float32).mean(axis=0) * scale
    return data.reshape(-1).astype(np.float32) * scale


class Call:
    """One WebRTC call: the peer, its session runner, and sideband listeners."""

    def __init__(self, session: Session, runner_factory: Callable[..., SessionRunner],
                 on_end: Callable[[Call], None]) -> None:
        self.id = ids.rtc_call_id()
        self.session = session
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = AgentAudioTrack(self._on_drained)
        self._channel: RTCDataChannel | None = None
        self._pending: list[str] = []
        self._on_end = on_end
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self.runner = runner_factory(session, self._send, playout=self.track)
        self.runner.listen(self._watch)

    # -- signalling --------------------------------------------------------------------------

    async def answer(self, offer_sdp: str) -> str:
        pc = self.pc

        @pc.on("datachannel")
        def _on_channel(channel: RTCDataChannel) -> None:
            if channel.label != "oai-events":
                return
            self._channel = channel

            @channel.on("message")
            def _on_message(message: str | bytes) -> None:
                self.runner.feed(message)

            for text in self._pending:
                channel.send(text)
            self._pending.clear()

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self._spawn(self._consume(track))

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.close(f"peer_{pc.connectionState}")

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                set_jitter_buffer(transceiver.receiver, ArrivalBuffer())
                transceiver.sender.replaceTrack(self.track)
                transceiver.direction = "sendrecv"
                break
        else:
            pc.addTrack(self.track)
        await pc.setLocalDescription(await pc.createAnswer())
        await self.runner.start()
        self._spawn(self._connect_deadline())
        self._spawn(self._end_with_session())
        return pc.localDescription.sdp

    async def _end_with_session(self) -> None:
        reason = await self.runner.wait_closed()  # e.g. session_expired
        await self.close(reason or "session_closed")

    async def _connect_deadline(self) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT_S)
        if self.pc.connectionState != "connected":
            await self.close("peer_never_connected")

    # -- media and events --------------------------------------------------------------------

    async def _consume(self, track: MediaStreamTrack) -> None:
        resampler: StreamResampler | None = None
        rate = 0
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, AudioFrame)
            if resampler is None or frame.sample_rate != rate:
                rate = frame.sample_rate
                # LQ: HQ holds back ~32 ms at 48 -> 24 kHz, which every turn would wait for.
                resampler = StreamResampler(rate, SAMPLE_RATE, quality="LQ")
            self.runner.feed_audio(resampler.process(_mono_float(frame)))

    async def _send(self, event: dict[str, Any]) -> None:
        text = json.dumps(event, separators=(",", ":"))
        if len(text) > MAX_CHANNEL_MESSAGE and event["type"] == "conversation.item.retrieved":
            # A whole item's audio does not fit a data channel message; the sideband carries it.
            item = {**event["item"], "content": [{k: v for k, v in p.items() if k != "audio"}
                                                 for p in event["item"].get("content", [])]}
            text = json.dumps({**event, "item": item}, separators=(",", ":"))
        channel = self._channel
        if channel is None or channel.readyState != "open":
            self._pending.append(text)  # session.created etc. wait for the channel to open
            return
        try:
            channel.send(text)
        except Exception:
            log.warning("dropped a %s event the data channel refused", event["type"], exc_info=True)

    def _watch(self, event: dict[str, Any]) -> None:
        if event["type"] == "response.done":
            self.track.finish(event["response"]["id"])

    def _on_drained(self, response_id: str) -> None:
        self.session.playback_stopped(response_id)
        self.runner.pump()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- ending ------------------------------------------------------------------------------

    async def close(self, reason: str = "hangup") -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self.track.stop()
        await self.runner.close(reason)
        with contextlib.suppress(Exception):
            await self.pc.close()
        self._on_end(self)
