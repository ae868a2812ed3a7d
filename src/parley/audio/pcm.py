"""PCM16 <-> float32 conversion.

The wire carries little-endian signed 16-bit PCM; everything inside Parley works on float32
arrays in [-1, 1] so DSP code never has to think about integer overflow or scaling.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: The Realtime protocol's PCM rate ("audio/pcm" is 24 kHz mono PCM16 LE).
SAMPLE_RATE = 24000

FloatArray = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]

# 32768 (not 32767) so that -32768 maps exactly to -1.0 and the round trip is lossless.
_SCALE = 32768.0


def pcm16_to_float(data: bytes | bytearray | memoryview) -> FloatArray:
    """Decode PCM16 LE bytes to float32 in [-1, 1). Raises ValueError on an odd byte count."""
    if len(data) % 2:
        raise ValueError(f"PCM16 payload has an odd number of bytes ({len(data)})")
    ints = np.frombuffer(data, dtype="<i2")
    return ints.astype(np.float32) / np.float32(_SCALE)


def int16_to_float(x: npt.NDArray[np.integer]) -> FloatArray:
    """int16 samples -> float32 in [-1, 1)."""
    return np.asarray(x, dtype=np.int16).astype(np.float32) / np.float32(_SCALE)


def float_to_int16(x: npt.ArrayLike) -> Int16Array:
    """float samples -> int16, clipped (never wraps around on overs)."""
    a = np.asarray(x, dtype=np.float32) * np.float32(_SCALE)
    # Round to nearest rather than truncate: truncation adds a -0.5 LSB bias and harmonic distortion.
    out: Int16Array = np.clip(np.rint(a), -32768.0, 32767.0).astype(np.int16)
    return out


def float_to_pcm16(x: npt.ArrayLike) -> bytes:
    """float samples in [-1, 1] -> PCM16 LE bytes, clipped."""
    return float_to_int16(x).astype("<i2", copy=False).tobytes()


def duration_ms(nbytes_pcm16: int, rate: int = SAMPLE_RATE) -> float:
    """Duration in milliseconds of `nbytes_pcm16` bytes of mono PCM16 at `rate`."""
    return (nbytes_pcm16 // 2) * 1000.0 / rate


def samples_for_ms(ms: float, rate: int = SAMPLE_RATE) -> int:
    """Number of samples covering `ms` milliseconds at `rate` (rounded to nearest)."""
    return round(ms * rate / 1000.0)
