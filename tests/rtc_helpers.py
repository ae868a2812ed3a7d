"""A WebRTC peer for tests: an aiortc client that speaks PCM and listens to the agent."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError

from parley.audio.levels import dbfs
from parley.audio.pcm import SAMPLE_RATE
from parley.engine.webrtc import FRAME_SAMPLES, PacedAudioTrack, set_jitter_buffer


class PcmTrack(PacedAudioTrack):
    """A microphone that plays queued float32 24 kHz audio in real time, silence otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, dtype=np.float32)
        self.speech_end_at: float | None = None  # monotonic time the last audible queued frame went out

    def say(self, pcm: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, pcm.astype(np.float32)])
        self.speech_end_at = None

    @property
    def busy(self) -> bool:
        return self._pending.size > 0

    def _next_samples(self) -> np.ndarray:
        chunk = self._pending[:FRAME_SAMPLES]
        self._pending = self._pending[FRAME_SAMPLES:]
        if chunk.size and dbfs(chunk) > -50:
            self.speech_end_at = time.monotonic() + FRAME_SAMPLES / SAMPLE_RATE  # when this frame ends
        out = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        out[: chunk.size] = chunk
        return out


class RtcPeer:
    """Offer, data channel `oai-events`, a speaking microphone and a listening ear."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.mic = PcmTrack()
        self.pc.addTrack(self.mic)
        self.channel = self.pc.createDataChannel("oai-events")
        self.events: list[dict[str, Any]] = []
        self.event_times: list[float] = []
        self._new_event = asyncio.Event()
        self.opened = asyncio.Event()
        # (monotonic time, dBFS) of every 20 ms of agent audio received
        self.heard: list[tuple[float, float]] = []
        self._tasks: list[asyncio.Task[None]] = []

        @self.channel.on("open")
        def _open() -> None:
            self.opened.set()

        @self.channel.on("message")
        def _message(message: str) -> None:
            self.events.append(json.loads(message))
            self.event_times.append(time.monotonic())
            self._new_event.set()

        @self.pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            # Receive like a browser on loopback (its adaptive buffer holds ~20-40 ms), not with
            # aiortc's fixed 80 ms: a frame is released when the next packet shows it whole.
            for transceiver in self.pc.getTransceivers():
                set_jitter_buffer(transceiver.receiver, JitterBuffer(capacity=16, prefetch=1))
            self._tasks.append(asyncio.ensure_future(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            data = frame.to_ndarray().astype(np.float32).reshape(-1) / 32768
            self.heard.append((time.monotonic(), dbfs(data)))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await asyncio.wait_for(self.opened.wait(), 15)

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def wait_for(self, predicate: Any, timeout: float = 30.0, start: int = 0) -> dict[str, Any]:
        """The first event from index `start` on that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.events):
                if predicate(self.events[index]):
                    return self.events[index]
                index += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching event in {[e['type'] for e in self.events[start:]]}")
            self._new_event.clear()
            try:
                await asyncio.wait_for(self._new_event.wait(), left)
            except TimeoutError:
                pass

    def first_audible_after(self, t: float, threshold_dbfs: float = -45.0) -> float | None:
        for when, level in self.heard:
            if when >= t and level > threshold_dbfs:
                return when
        return None

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


def of_type(*types: str) -> Any:
    return lambda e: e["type"] in types
