"""ITU-T G.711 mu-law and A-law codecs, vectorized with lookup tables.

`audioop` is gone in Python 3.13, so we carry our own. The tables are generated once at import
from the ITU/Sun reference algorithm (the same one audioop and most telephony stacks use), so
encoding is a single fancy-indexing operation: 64 KiB table per law for int16 -> code, and 256
entries for code -> int16.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from parley.audio.pcm import Int16Array

UInt8Array = npt.NDArray[np.uint8]

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # in 14-bit units (i.e. after >> 2)
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _segment(v: npt.NDArray[np.int32], ends: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    # Index of the first segment end >= v (8 when above the last one), like the C `search()`.
    return np.searchsorted(ends, v, side="left").astype(np.int32)


def _ulaw_encode_ref(pcm: npt.NDArray[np.int32]) -> UInt8Array:
    v = pcm >> 2  # arithmetic shift: 16-bit -> 14-bit, rounds toward -inf like C on 2's complement
    mask = np.where(v < 0, 0x7F, 0xFF).astype(np.int32)
    v = np.minimum(np.abs(v), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segment(v, _SEG_UEND)
    uval = (np.minimum(seg, 7) << 4) | ((v >> (np.minimum(seg, 7) + 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F ^ mask, uval ^ mask)
    return code.astype(np.uint8)


def _ulaw_decode_ref(code: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    u = ~code & 0xFF
    t = ((u & 0x0F) << 3) + _ULAW_BIAS
    t = t << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS)


def _alaw_encode_ref(pcm: npt.NDArray[np.int32]) -> UInt8Array:
    v = pcm >> 3  # 16-bit -> 13-bit
    neg = v < 0
    mask = np.where(neg, 0x55, 0xD5).astype(np.int32)
    v = np.where(neg, -v - 1, v)
    seg = _segment(v, _SEG_AEND)
    segc = np.minimum(seg, 7)
    shift = np.where(segc < 2, 1, segc)
    aval = (segc << 4) | ((v >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F ^ mask, aval ^ mask)
    return code.astype(np.uint8)


def _alaw_decode_ref(code: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t)


# Tables indexed by the int16 sample reinterpreted as uint16 (so no offset arithmetic at run time).
_ALL_PCM = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
_ALL_CODES = np.arange(256, dtype=np.int32)
_ULAW_ENC: UInt8Array = _ulaw_encode_ref(_ALL_PCM)
_ALAW_ENC: UInt8Array = _alaw_encode_ref(_ALL_PCM)
_ULAW_DEC: Int16Array = _ulaw_decode_ref(_ALL_CODES).astype(np.int16)
_ALAW_DEC: Int16Array = _alaw_decode_ref(_ALL_CODES).astype(np.int16)


def _as_uint16_index(samples: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    a = np.asarray(samples)
    if a.dtype != np.int16:
        raise TypeError(f"G.711 encoders take int16 samples, got {a.dtype}")
    return np.ascontiguousarray(a).view(np.uint16)


def ulaw_encode(samples: npt.ArrayLike) -> bytes:
    """int16 samples -> G.711 mu-law bytes (one byte per sample)."""
    return _ULAW_ENC[_as_uint16_index(samples)].tobytes()


def alaw_encode(samples: npt.ArrayLike) -> bytes:
    """int16 samples -> G.711 A-law bytes (one byte per sample)."""
    return _ALAW_ENC[_as_uint16_index(samples)].tobytes()


def ulaw_decode(data: bytes | bytearray | memoryview) -> Int16Array:
    """G.711 mu-law bytes -> int16 samples."""
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes | bytearray | memoryview) -> Int16Array:
    """G.711 A-law bytes -> int16 samples."""
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)]
