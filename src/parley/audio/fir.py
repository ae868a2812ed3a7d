"""A streaming resampler for small rational ratios (8 <-> 24 kHz for the phone) that holds nothing back
but its filter's 3 ms look-ahead.

soxr works in blocks: at 8 -> 24 kHz with 20 ms packets it releases ~60 ms at a time (HQ) or
~37 ms (LQ), so the end of a caller's sentence reaches the VAD that much later, and an agent answer
in small pieces waits as long on the way out. Here each output sample is a dot product of a
windowed-sinc FIR (Kaiser window) with the zero-stuffed input as soon as its input has arrived.
Like soxr, the filter delay is compensated: output sample k corresponds to input time k / out_rate,
and the total over a stream plus `flush()` is ceil(n_in * out_rate / in_rate) samples.
"""

from __future__ import annotations

from math import ceil, gcd

import numpy as np
import numpy.typing as npt

from parley.audio.pcm import FloatArray

LOOKAHEAD_S = 0.003  # half the filter's length: the only audio held back
KAISER_BETA = 7.0  # ~-70 dB stopband
CUTOFF = 0.92  # of the lower Nyquist: flat to ~3.3 kHz at 8 kHz (telephone speech), -70 dB from 4 kHz
MAX_FACTOR = 6  # up * down: beyond this a polyphase FIR this simple costs too much


def supports(in_rate: int, out_rate: int) -> bool:
    g = gcd(in_rate, out_rate)
    return (in_rate // g) * (out_rate // g) <= MAX_FACTOR


def design(in_rate: int, out_rate: int) -> tuple[int, int, int, FloatArray]:
    """(up, down, half-length, taps at in_rate * up) of the anti-imaging/anti-aliasing low-pass."""
    g = gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    rate = in_rate * up
    half = max(1, round(LOOKAHEAD_S * rate))
    k = np.arange(-half, half + 1, dtype=np.float64)
    fc = CUTOFF * min(in_rate, out_rate) / 2 / rate  # cycles per sample at `rate`
    taps = 2 * fc * np.sinc(2 * fc * k) * np.kaiser(2 * half + 1, KAISER_BETA)
    taps *= up / taps.sum()  # unity gain after zero-stuffing
    return up, down, half, taps[::-1].astype(np.float32)  # reversed: a dot product with the window


class FirResampler:
    """Streaming mono float32 resampler by a rational up/down ratio (see the module doc)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if not supports(in_rate, out_rate):
            raise ValueError(f"{in_rate} -> {out_rate} Hz is not a small rational ratio")
        self.in_rate, self.out_rate = in_rate, out_rate
        self._up, self._down, self._half, self._taps = design(in_rate, out_rate)
        self.reset()

    def reset(self) -> None:
        # _buf holds the zero-stuffed input from upsampled index _base on; indices below 0 are zeros.
        self._buf = np.zeros(self._half, dtype=np.float32)
        self._base = -self._half
        self._inputs = 0  # input samples so far
        self._next = 0  # the next output sample's index

    def process(self, x: npt.ArrayLike) -> FloatArray:
        a = np.ascontiguousarray(x, dtype=np.float32)
        if a.ndim != 1:
            raise ValueError(f"expected a 1-D mono array, got shape {a.shape}")
        if a.size:
            stuffed = np.zeros(a.size * self._up, dtype=np.float32)
            stuffed[:: self._up] = a
            self._buf = np.concatenate([self._buf, stuffed])
            self._inputs += a.size
        return self._outputs(self._inputs * self._up - 1)

    def _outputs(self, known: int) -> FloatArray:
        """The output samples whose window ends at or before upsampled index `known`."""
        up_pos = self._next * self._down  # upsampled index of the next output
        last = (known - self._half) // self._down  # the last output computable
        count = last - self._next + 1
        if count <= 0:
            return np.zeros(0, dtype=np.float32)
        width = 2 * self._half + 1
        start = up_pos - self._half - self._base
        stop = start + (count - 1) * self._down + width
        windows = np.lib.stride_tricks.sliding_window_view(self._buf[start:stop], width)[:: self._down]
        out: FloatArray = (windows @ self._taps).astype(np.float32)
        self._next += count
        drop = self._next * self._down - self._half - self._base  # no longer needed by any window
        self._buf, self._base = self._buf[drop:], self._base + drop
        return out

    def flush(self) -> FloatArray:
        """The samples still held (the last 3 ms), then a fresh stream."""
        remaining = ceil(self._inputs * self._up / self._down) - self._next
        self._buf = np.concatenate([self._buf, np.zeros(self._half + self._down, dtype=np.float32)])
        out = self._outputs(self._inputs * self._up - 1 + self._half + self._down)[:remaining]
        self.reset()
        return out
