"""Signal levels for gating and diagnostics."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

#: Level reported for digital silence instead of -inf, so values stay JSON-serializable.
DBFS_FLOOR = -120.0


def rms(x: npt.ArrayLike) -> float:
    """Root mean square of a float signal (0.0 for an empty one)."""
    a = np.asarray(x, dtype=np.float32)
    if a.size == 0:
        return 0.0
    # Accumulate in float64: summing many float32 squares loses precision on long clips.
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def dbfs(x: npt.ArrayLike) -> float:
    """RMS level in dB relative to full scale (a full-scale square wave is 0 dBFS, a sine -3 dBFS).

    Clamped at DBFS_FLOOR.
    """
    r = rms(x)
    if r <= 0.0:
        return DBFS_FLOOR
    return max(DBFS_FLOOR, 20.0 * math.log10(r))


def peak(x: npt.ArrayLike) -> float:
    """Largest absolute sample value."""
    a = np.asarray(x, dtype=np.float32)
    return float(np.max(np.abs(a))) if a.size else 0.0


def is_silent(x: npt.ArrayLike, threshold_dbfs: float = -50.0) -> bool:
    """True when the RMS level is below `threshold_dbfs`."""
    return dbfs(x) < threshold_dbfs


def loud_until(x: npt.ArrayLike, block: int, threshold_dbfs: float = -50.0) -> int:
    """Sample index just after the last `block`-long stretch above `threshold_dbfs` (0 if none)."""
    a = np.asarray(x, dtype=np.float32)
    n = a.size // block
    if n == 0:
        return 0
    power = np.mean(np.square(a[a.size - n * block :].reshape(n, block), dtype=np.float64), axis=1)
    loud = np.flatnonzero(power > 10 ** (threshold_dbfs / 10))
    return a.size - n * block + (int(loud[-1]) + 1) * block if loud.size else 0
