"""Session audio formats: wire bytes <-> internal float32 at 24 kHz.

The GA protocol names formats "audio/pcm" (PCM16 LE mono 24 kHz), "audio/pcmu" and "audio/pcma"
(G.711 mu-law / A-law, 8 kHz). The beta names ("pcm16", "g711_ulaw", "g711_alaw") are accepted
too so callers need not translate first. One decoder/encoder per session direction: the G.711
paths hold a streaming resampler whose state must follow a single audio stream (a low-latency
FIR: phone audio is live, and soxr would hold back up to 60 ms of it).
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from parley.audio import g711
from parley.audio.pcm import (
    SAMPLE_RATE,
    FloatArray,
    float_to_int16,
    float_to_pcm16,
    int16_to_float,
    pcm16_to_float,
)
from parley.audio.resample import LOW_LATENCY, StreamResampler

AudioFormat = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]

PCM: Final = "audio/pcm"
PCMU: Final = "audio/pcmu"
PCMA: Final = "audio/pcma"
G711_RATE: Final = 8000

_ALIASES: dict[str, AudioFormat] = {
    "audio/pcm": "audio/pcm",
    "pcm16": "audio/pcm",
    "audio/pcmu": "audio/pcmu",
    "g711_ulaw": "audio/pcmu",
    "audio/pcma": "audio/pcma",
    "g711_alaw": "audio/pcma",
}


def normalize_format(fmt: str) -> AudioFormat:
    """Canonical GA name for a format string (GA or beta spelling); ValueError if unknown."""
    try:
        return _ALIASES[fmt.strip().lower()]
    except KeyError:
        raise ValueError(f"unsupported audio format {fmt!r}") from None


def format_rate(fmt: str) -> int:
    """Wire sample rate of a format."""
    return SAMPLE_RATE if normalize_format(fmt) == PCM else G711_RATE


def bytes_per_ms(fmt: str) -> float:
    """Wire bytes per millisecond (48 for 24 kHz PCM16, 8 for G.711)."""
    return 48.0 if normalize_format(fmt) == PCM else 8.0


class InputDecoder:
    """Decodes one session's incoming audio (input_audio_buffer.append payloads) to float32 @ 24 kHz."""

    def __init__(self, fmt: str = PCM) -> None:
        self.format: AudioFormat = normalize_format(fmt)
        self._resampler = StreamResampler(format_rate(self.format), SAMPLE_RATE, LOW_LATENCY)

    def decode(self, data: bytes | bytearray | memoryview) -> FloatArray:
        if self.format == PCM:
            # pcm16_to_float raises ValueError on an odd byte count: a PCM16 payload that is not
            # a whole number of samples is a client bug, and silently dropping a byte would
            # shift every later sample.
            return pcm16_to_float(data)
        codes = g711.ulaw_decode(data) if self.format == PCMU else g711.alaw_decode(data)
        return self._resampler.process(int16_to_float(codes))

    def flush(self) -> FloatArray:
        """Samples still inside the resampler (G.711 only); call at the end of a stream."""
        return self._resampler.flush()

    def reset(self) -> None:
        self._resampler.reset()


class OutputEncoder:
    """Encodes float32 @ 24 kHz agent audio to one session's wire format."""

    def __init__(self, fmt: str = PCM) -> None:
        self.format: AudioFormat = normalize_format(fmt)
        self._resampler = StreamResampler(SAMPLE_RATE, format_rate(self.format), LOW_LATENCY)

    def _pack(self, x: npt.NDArray[np.float32]) -> bytes:
        if self.format == PCM:
            return float_to_pcm16(x)
        ints = float_to_int16(x)
        return g711.ulaw_encode(ints) if self.format == PCMU else g711.alaw_encode(ints)

    def encode(self, x: npt.ArrayLike) -> bytes:
        return self._pack(self._resampler.process(x))

    def flush(self) -> bytes:
        """Bytes still held by the resampler; call at the end of each response's audio."""
        return self._pack(self._resampler.flush())

    def reset(self) -> None:
        """Drop pending audio (barge-in / truncate) without emitting it."""
        self._resampler.reset()
