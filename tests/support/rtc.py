"""A WebRTC peer for tests: an aiortc client that speaks PCM and listens to the agent."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCSessionDescription

from parley.audio.levels import dbfs
from parley.audio.pcm import SAMPLE_RATE
from parley.engine.webrtc import FRAME_SAMPLES, MicReceiver, PacedAudioTrack, set_jitter_buffer
from parley.ice import peer_connection, pin_host_addresses


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
        # No ICE servers: loopback host candidates only (pinned here too, for a test process that
        # runs no engine itself and so never pinned them).
        pin_host_addresses(["127.0.0.1"])
        self.pc = peer_connection()
        self.mic = PcmTrack()
        self.pc.addTrack(self.mic)
        self.channel = self.pc.createDataChannel("oai-events")
        self.events: list[dict[str, Any]] = []
        self.event_times: list[float] = []
        self._new_event = asyncio.Event()
        self.opened = asyncio.Event()
        # (monotonic time, dBFS) of each packet of agent audio received
        self.heard: list[tuple[float, float]] = []

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
            # Hear each packet as it arrives (what "received by the client" means here; a browser
            # plays it out 20-40 ms later on loopback), decoded the engine's way, without aiortc's
            # codec threads: the peers share the measured machine, so they should cost little.
            for transceiver in self.pc.getTransceivers():
                set_jitter_buffer(transceiver.receiver, MicReceiver(self._hear))

    def _hear(self, pcm: np.ndarray) -> None:
        if pcm.size:
            self.heard.append((time.monotonic(), dbfs(pcm)))

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
        await self.pc.close()


def of_type(*types: str) -> Any:
    return lambda e: e["type"] in types
