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
    return up, down, half, taps.astype(np.float32)


class FirResampler:
    """Streaming mono float32 resampler by a rational up/down ratio (see the module doc).

    Polyphase: output n sits at n * down on the upsampled grid, and only the input samples
    x[j] with |n * down - j * up| <= half touch it, weighted by taps[n * down - j * up + half].
    Outputs n and n + up use the same weights, `down` inputs further on: one dot product per
    output over ~(2 * half + 1) / up inputs, never the zero-stuffed signal."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if not supports(in_rate, out_rate):
            raise ValueError(f"{in_rate} -> {out_rate} Hz is not a small rational ratio")
        self.in_rate, self.out_rate = in_rate, out_rate
        self._up, self._down, self._half, taps = design(in_rate, out_rate)
        # per phase (n mod up): the first input index for n = phase, and the weights in input order
        self._phases: list[tuple[int, FloatArray]] = []
        for phase in range(self._up):
            m = phase * self._down
            lo, hi = -((self._half - m) // self._up), (m + self._half) // self._up  # ceil, floor
            js = np.arange(lo, hi + 1)
            self._phases.append((lo, np.ascontiguousarray(taps[m - js * self._up + self._half])))
        self.reset()

    def reset(self) -> None:
        # _x holds the input from index _base on; indices below 0 are zeros (the stream's start).
        pad = -self._phases[0][0]
        self._x = np.zeros(pad, dtype=np.float32)
        self._base = -pad
        self._inputs = 0  # input samples so far
        self._next = 0  # the next output sample's index

    def process(self, x: npt.ArrayLike) -> FloatArray:
        a = np.ascontiguousarray(x, dtype=np.float32)
        if a.ndim != 1:
            raise ValueError(f"expected a 1-D mono array, got shape {a.shape}")
        if a.size:
            self._x = np.concatenate([self._x, a])
            self._inputs += a.size
        return self._outputs(self._inputs)

    def _outputs(self, known: int) -> FloatArray:
        """The output samples that need no input at or beyond index `known`."""
        up, down = self._up, self._down
        last = (known * up - 1 - self._half) // down  # the last output computable
        count = last - self._next + 1
        if count <= 0:
            return np.zeros(0, dtype=np.float32)
        out = np.empty(count, dtype=np.float32)
        for phase, (lo, weights) in enumerate(self._phases):
            first = self._next + (phase - self._next) % up  # the first output of this phase
            if first > last:
                continue
            n = (last - first) // up + 1
            start = lo + (first - phase) // up * down - self._base
            span = self._x[start:start + (n - 1) * down + weights.size]
            windows = np.lib.stride_tricks.sliding_window_view(span, weights.size)[::down]
            out[first - self._next::up] = windows @ weights
        self._next += count
        lo0 = -((self._half - self._next * down) // up)  # the first input the next output needs
        drop = max(0, lo0 - self._base)
        self._x, self._base = self._x[drop:], self._base + drop
        return out

    def flush(self) -> FloatArray:
        """The samples still held (the last 3 ms), then a fresh stream."""
        remaining = ceil(self._inputs * self._up / self._down) - self._next
        pad = self._half // self._up + self._down + 1
        self._x = np.concatenate([self._x, np.zeros(pad, dtype=np.float32)])
        out = self._outputs(self._inputs + pad)[:remaining]
        self.reset()
        return out
