"""Microphone audio on its way to the server: resampled to 24 kHz, coded to the session's input
format, sent in events of at most the protocol's size, and remembered for a while.

The memory is a ring of the last `keep_seconds` of what was sent, in session time (ms since the
session's first audio), so a reconnect can re-send the user's unfinished utterance and replay an
untranscribed audio item.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from parley.audio.formats import OutputEncoder
from parley.audio.pcm import float_to_pcm16, int16_to_float, pcm16_to_float
from parley.audio.resample import StreamResampler
from parley.client.transport import Transport, TransportClosed
from parley.protocol.limits import MAX_APPEND_BYTES

SAMPLE_RATE = 24_000
BYTES_PER_MS = 48
PREFIX_MS = 300  # the server's default prefix padding: resumed audio starts this long before speech
RESUME_MAX_MS = 15_000
SILENCE_RMS = 180  # int16 RMS of a 20 ms frame below which it counts as silence (about -45 dBFS)
# Raw bytes per append event: its base64 stays within the protocol's limit.
APPEND_CHUNK = MAX_APPEND_BYTES * 3 // 4 - 1024


def trim_leading_silence(pcm: bytes) -> bytes:
    """From 300 ms before the first 20 ms frame with sound (b"" when there is none)."""
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


class AudioInput:
    def __init__(self, keep_seconds: float = 30.0) -> None:
        self._keep_bytes = int(keep_seconds * SAMPLE_RATE * 2)
        self._resamplers: dict[int, StreamResampler] = {}
        self._odd_byte: dict[int, bytes] = {}
        self._encoder: OutputEncoder | None = None
        self.lock = asyncio.Lock()
        self.backlog = b""  # audio to send first on the next session (the unfinished utterance)
        self._ring = bytearray()
        self._ring_start_ms = 0.0
        self.sent_ms = 0.0
        self.uncommitted_from_ms = 0.0  # where the audio the server has not committed begins
        self.speech_start_ms: int | None = None  # the server heard speech start here (None: not speaking)

    def set_format(self, name: str) -> None:
        """The session's input format ("audio/pcm", "audio/pcmu", "audio/pcma")."""
        self._encoder = None if name == "audio/pcm" else OutputEncoder(name)

    def new_session(self) -> None:
        """Session time starts again at 0."""
        self._ring.clear()
        self._ring_start_ms = self.sent_ms = self.uncommitted_from_ms = 0.0
        self.speech_start_ms = None

    # -- in ---------------------------------------------------------------------------------------

    def to_pcm24k(self, audio: Any, rate: int) -> bytes:
        """PCM16 LE mono bytes or a float32/int16 array (mono or 2-D) at `rate`, as PCM16 at 24 kHz."""
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

    async def send(self, pcm: bytes, transport: Transport | None, connected: bool) -> None:
        """Send 24 kHz PCM16 (the backlog first); while disconnected it is only remembered."""
        if transport is not None and not transport.audio_in_events and connected:
            if pcm:
                await transport.send_audio(pcm)  # WebRTC: the media track, nothing to remember
            return
        async with self.lock:
            if self.backlog and transport is not None and connected:
                pcm, self.backlog = self.backlog + pcm, b""
            if not pcm:
                return
            self.remember(pcm)
            if transport is None or not connected:
                return  # kept in the ring; what was not committed is re-sent on reconnect
            wire = pcm if self._encoder is None else self._encoder.encode(pcm16_to_float(pcm))
            try:
                for offset in range(0, len(wire), APPEND_CHUNK):
                    await transport.send_audio(wire[offset:offset + APPEND_CHUNK])
            except TransportClosed:
                pass

    # -- the ring -------------------------------------------------------------------------------

    def remember(self, pcm: bytes) -> None:
        self._ring += pcm
        self.sent_ms += len(pcm) / BYTES_PER_MS
        excess = len(self._ring) - self._keep_bytes
        if excess > self._keep_bytes // 4:
            excess -= excess % 2
            del self._ring[:excess]
            self._ring_start_ms += excess / BYTES_PER_MS

    def slice(self, start_ms: float | None, end_ms: float | None) -> bytes:
        """What was sent between two points of session time (b"" for what the ring no longer holds)."""
        if start_ms is None:
            return b""
        end = self.sent_ms if end_ms is None else min(end_ms, self.sent_ms)
        a = int(max(start_ms, self._ring_start_ms) - self._ring_start_ms) * BYTES_PER_MS
        b = int(end - self._ring_start_ms) * BYTES_PER_MS
        return bytes(self._ring[a:b]) if b > a else b""

    def to_resume(self) -> bytes:
        """Audio the old session had not committed: the user's unfinished utterance (from 300 ms
        before it started), or, when the server never said speech started, whatever sound came
        after the last commit (leading silence trimmed). At most RESUME_MAX_MS."""
        start = self.speech_start_ms - PREFIX_MS if self.speech_start_ms is not None else self.uncommitted_from_ms
        pcm = self.slice(max(start, self.sent_ms - RESUME_MAX_MS, 0.0), None)
        if self.speech_start_ms is None:
            pcm = trim_leading_silence(pcm)
        return pcm
