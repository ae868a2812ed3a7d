"""Playing the assistant's audio on the client (WebSocket sessions), with barge-in.

Over WebSocket the server sends audio faster than real time and the client owns playback, so
only the client knows how much the listener actually heard. `AudioPlayer` is a queue of PCM16
24 kHz chunks tagged with their item id; an output pulls from it in real time. `clear()` drops
everything queued at once (barge-in) and says how many ms of the item being played were heard,
which is what `conversation.item.truncate` needs.

Outputs: `"sounddevice"` plays on the default device (optional dependency: `pip install
parley[audio]`, needs PortAudio); `"clock"` consumes the queue in real time without a device
(headless runs, tests); `"auto"` picks sounddevice when it can open a device, else the clock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

SAMPLE_RATE = 24_000
BYTES_PER_MS = SAMPLE_RATE * 2 / 1000  # 48

__all__ = ["AudioPlayer", "sounddevice_available"]


def sounddevice_available() -> bool:
    """True when sounddevice imports and PortAudio reports at least one output device."""
    try:
        import sounddevice as sd

        return any(d.get("max_output_channels", 0) > 0 for d in sd.query_devices())
    except Exception:
        return False


class AudioPlayer:
    """A real-time playback queue of PCM16 LE mono 24 kHz chunks."""

    def __init__(self, output: Literal["auto", "sounddevice", "clock"] = "clock", *, device: Any = None,
                 blocksize_ms: int = 20, on_played: Callable[[bytes], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._queue: deque[list[Any]] = deque()  # [item_id, bytes, offset]
        self._queued_bytes = 0
        self._played: dict[str | None, int] = {}
        self._received: dict[str | None, int] = {}
        self._current: str | None = None
        self._on_played = on_played
        self._stream: Any = None
        self._clock_at: float | None = None
        self._blocksize = int(SAMPLE_RATE * blocksize_ms / 1000)
        if output == "auto":
            output = "sounddevice" if sounddevice_available() else "clock"
        self.output = output
        if output == "sounddevice":
            import sounddevice as sd

            self._stream = sd.RawOutputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16", device=device,
                                              blocksize=self._blocksize, callback=self._callback)
            self._stream.start()

    # -- feeding ------------------------------------------------------------------------------

    def feed(self, pcm: bytes, item_id: str | None = None) -> None:
        """Queue audio of `item_id` for playback."""
        if not pcm:
            return
        with self._lock:
            self._advance_clock()
            if not self._queue and self.output == "clock":
                self._clock_at = time.monotonic()
            self._queue.append([item_id, pcm, 0])
            self._queued_bytes += len(pcm)
            self._received[item_id] = self._received.get(item_id, 0) + len(pcm)

    def clear(self) -> tuple[str | None, float]:
        """Drop all queued audio now. Returns (item being played, ms of it that were played)."""
        with self._lock:
            self._advance_clock()
            # the item heard last (the queue may have run dry while its audio was still coming)
            item_id = self._current if self._current is not None else (self._queue[0][0] if self._queue else None)
            self._queue.clear()
            self._queued_bytes = 0
            self._clock_at = None
            played = self._played.get(item_id, 0)
            return item_id, played / BYTES_PER_MS

    # -- reading ------------------------------------------------------------------------------

    def played_ms(self, item_id: str | None) -> float:
        with self._lock:
            self._advance_clock()
            return self._played.get(item_id, 0) / BYTES_PER_MS

    def received_ms(self, item_id: str | None) -> float:
        with self._lock:
            return self._received.get(item_id, 0) / BYTES_PER_MS

    @property
    def queued_ms(self) -> float:
        with self._lock:
            self._advance_clock()
            return self._queued_bytes / BYTES_PER_MS

    @property
    def playing(self) -> bool:
        return self.queued_ms > 0

    @property
    def current_item(self) -> str | None:
        """The item whose audio is playing now (or next)."""
        with self._lock:
            self._advance_clock()
            if self._queue:
                return str(self._queue[0][0]) if self._queue[0][0] is not None else None
            return None

    def forget(self, item_id: str | None) -> None:
        with self._lock:
            self._played.pop(item_id, None)
            self._received.pop(item_id, None)

    # -- the output side ----------------------------------------------------------------------

    def pull(self, nbytes: int) -> bytes:
        """Take `nbytes` of audio for the output (silence where the queue runs dry)."""
        with self._lock:
            return self._pull(nbytes)

    def _pull(self, nbytes: int) -> bytes:
        out = bytearray()
        while len(out) < nbytes and self._queue:
            entry = self._queue[0]
            item_id, data, offset = entry
            take = min(nbytes - len(out), len(data) - offset)
            out += data[offset:offset + take]
            entry[2] = offset + take
            self._queued_bytes -= take
            self._played[item_id] = self._played.get(item_id, 0) + take
            self._current = item_id
            if entry[2] >= len(data):
                self._queue.popleft()
        if self._on_played is not None and out:
            self._on_played(bytes(out))
        if len(out) < nbytes:
            out += bytes(nbytes - len(out))
        return bytes(out)

    def _advance_clock(self) -> None:
        if self.output != "clock" or self._clock_at is None:
            return
        now = time.monotonic()
        due = int((now - self._clock_at) * SAMPLE_RATE) * 2
        if due <= 0:
            return
        take = min(due, self._queued_bytes)
        if take:
            self._pull(take)
        self._clock_at += take / (SAMPLE_RATE * 2)
        if not self._queue:
            self._clock_at = None

    def _callback(self, outdata: Any, frames: int, _time: Any, _status: Any) -> None:
        outdata[:] = self.pull(frames * 2)

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            finally:
                self._stream = None
        self.clear()
