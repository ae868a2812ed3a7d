"""The low-latency FIR resampler of the phone paths (parley.audio.fir): the same signal as soxr's,
released as soon as its input has arrived (3 ms held back, not soxr's 37-60 ms blocks)."""

from __future__ import annotations

import numpy as np
import pytest

from parley.audio.fir import FirResampler, supports
from parley.audio.levels import dbfs
from parley.audio.resample import LOW_LATENCY, StreamResampler, resample


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def streamed(r: FirResampler | StreamResampler, x: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, list[int]]:
    parts, i, k = [], 0, 0
    while i < x.size:
        n = sizes[k % len(sizes)]
        parts.append(r.process(x[i:i + n]))
        i, k = i + n, k + 1
    got = [p.size for p in parts]
    parts.append(r.flush())
    return np.concatenate(parts), got


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 24000), (24000, 8000), (24000, 16000)])
def test_streaming_in_odd_chunks_is_exact_and_matches_soxr(in_rate: int, out_rate: int) -> None:
    x = tone(1000, in_rate, amp=0.3) + tone(2900, in_rate, amp=0.1)
    y, _ = streamed(FirResampler(in_rate, out_rate), x, [1, 7, 333, 479, 2, 1024, 13, 960])
    whole, _ = streamed(FirResampler(in_rate, out_rate), x, [x.size])
    assert y.size == whole.size == out_rate
    np.testing.assert_allclose(y, whole, atol=1e-5)
    ref = resample(x, in_rate, out_rate)
    err = y[300:-300] - ref[300:-300]
    assert 10 * np.log10(np.mean(ref[300:-300] ** 2) / np.mean(err ** 2)) > 60  # the same signal, aligned


def test_each_20ms_packet_is_released_at_once() -> None:
    _, up = streamed(StreamResampler(8000, 24000, LOW_LATENCY), tone(500, 8000, 0.2), [160])
    assert up[0] == 480 - 72 and set(up[1:]) == {480}  # only the 3 ms look-ahead held, once
    _, down = streamed(StreamResampler(24000, 8000, LOW_LATENCY), tone(500, 24000, 0.2), [480])
    assert down[0] == 160 - 24 and set(down[1:]) == {160}


def test_telephone_band_passes_and_the_rest_is_stopped() -> None:
    def gain(in_rate: int, out_rate: int, freq: float) -> float:
        x = tone(freq, in_rate)
        y, _ = streamed(FirResampler(in_rate, out_rate), x, [480])
        return dbfs(y[500:-500]) - dbfs(x)
    for freq in (300, 1000, 3000, 3300):
        assert abs(gain(8000, 24000, freq)) < 0.1 and abs(gain(24000, 8000, freq)) < 0.1
    for freq in (4100, 6000, 10000):  # would alias into the 8 kHz band
        assert gain(24000, 8000, freq) < -65


def test_flush_resets_reset_drops_and_unsupported_ratios_are_refused() -> None:
    r = StreamResampler(24000, 8000, LOW_LATENCY)
    x = tone(440, 24000, 0.1)
    first = np.concatenate([r.process(x), r.flush()])
    np.testing.assert_array_equal(first, np.concatenate([r.process(x), r.flush()]))
    r.process(x)
    r.reset()
    np.testing.assert_array_equal(first, np.concatenate([r.process(x), r.flush()]))
    assert not r.passthrough and StreamResampler(8000, 8000, LOW_LATENCY).passthrough
    assert not supports(22050, 24000)
    with pytest.raises(ValueError):
        FirResampler(22050, 24000)
    with pytest.raises(ValueError):
        FirResampler(8000, 24000).process(np.zeros((4, 2), dtype=np.float32))
