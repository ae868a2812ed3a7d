"""Sample-rate conversion with soxr.

soxr's streaming resampler keeps its filter state between calls, so audio cut into arbitrary
network-sized chunks resamples to the same signal as the whole clip at once (no clicks at chunk
boundaries). soxr compensates its own filter delay: output sample k always corresponds to input
time k / out_rate; the last few ms of a stream are only held back until more input or flush().
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from parley.audio.fir import FirResampler
from parley.audio.pcm import FloatArray

# A quality for live phone audio: a short FIR (parley.audio.fir) instead of soxr, which releases
# G.711's 8 kHz in 37-60 ms blocks; this holds back only 3 ms.
LOW_LATENCY = "low_latency"

_EMPTY = np.zeros(0, dtype=np.float32)


def _as_mono_f32(x: npt.ArrayLike) -> FloatArray:
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"expected a 1-D mono array, got shape {a.shape}")
    return a


class StreamResampler:
    """Streaming mono float32 resampler; one instance per continuous stream.

    `process()` may return fewer (or more) samples than in_len * out_rate / in_rate because of
    the filter's look-ahead; the total over a stream plus `flush()` is exact.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._quality = quality
        # Equal rates: no resampler at all, so pass-through costs nothing and adds no delay.
        self._fir = FirResampler(in_rate, out_rate) if quality == LOW_LATENCY and in_rate != out_rate else None
        self._stream: soxr.ResampleStream | None = (
            None if in_rate == out_rate or self._fir is not None
            else soxr.ResampleStream(in_rate, out_rate, 1, "float32", quality)
        )

    @property
    def passthrough(self) -> bool:
        return self._stream is None and self._fir is None

    def process(self, x: npt.ArrayLike) -> FloatArray:
        """Resample the next chunk of the stream."""
        a = _as_mono_f32(x)
        if self._fir is not None:
            return self._fir.process(a)
        if self._stream is None:
            return a
        if a.size == 0:
            return _EMPTY.copy()
        out: FloatArray = self._stream.resample_chunk(a)
        return out

    def flush(self) -> FloatArray:
        """Return the samples still held in the filter and reset for a new stream."""
        if self._fir is not None:
            return self._fir.flush()
        if self._stream is None:
            return _EMPTY.copy()
        out: FloatArray = self._stream.resample_chunk(_EMPTY, last=True)
        # soxr refuses input after last=True; clear() makes the object reusable.
        self._stream.clear()
        return out

    def reset(self) -> None:
        """Drop buffered input (e.g. on barge-in) and start a fresh stream."""
        if self._fir is not None:
            self._fir.reset()
        if self._stream is not None:
            self._stream.clear()


def resample(x: npt.ArrayLike, in_rate: int, out_rate: int, quality: str = "HQ") -> FloatArray:
    """One-shot resample of a whole mono float32 clip."""
    a = _as_mono_f32(x)
    if in_rate == out_rate or a.size == 0:
        return a
    out: FloatArray = soxr.resample(a, in_rate, out_rate, quality)
    return np.asarray(out, dtype=np.float32)
