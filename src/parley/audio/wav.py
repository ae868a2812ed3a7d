"""Minimal WAV reading and writing.

We parse RIFF ourselves rather than use the stdlib `wave` module because `wave` cannot read
IEEE-float WAVs (which many tools write) and only learned WAVE_FORMAT_EXTENSIBLE in 3.12.
Reading always returns mono float32 (channels averaged) plus the file's sample rate; writing
produces 16-bit PCM, which every consumer (browsers, Chromium's fake mic, ffmpeg) accepts.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from parley.audio.pcm import FloatArray, float_to_int16

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE

PathOrBytes = str | os.PathLike[str] | bytes | bytearray | memoryview


def _decode_samples(raw: bytes, tag: int, bits: int) -> FloatArray:
    if tag == _WAVE_FORMAT_PCM:
        if bits == 8:  # 8-bit WAV is unsigned with a 128 offset
            return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
        if bits == 16:
            return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        if bits == 24:
            b = np.frombuffer(raw[: len(raw) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            v = np.where(v & 0x800000, v - 0x1000000, v)
            return v.astype(np.float32) / 8388608.0
        if bits == 32:
            return (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    elif tag == _WAVE_FORMAT_IEEE_FLOAT:
        if bits == 32:
            return np.frombuffer(raw, dtype="<f4").astype(np.float32)
        if bits == 64:
            return np.frombuffer(raw, dtype="<f8").astype(np.float32)
    raise ValueError(f"unsupported WAV encoding: format tag {tag:#x}, {bits} bits")


def read_wav(source: PathOrBytes) -> tuple[FloatArray, int]:
    """Read a WAV file (path or bytes) -> (mono float32 samples in [-1, 1], sample rate)."""
    data = bytes(source) if isinstance(source, bytes | bytearray | memoryview) else Path(source).read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int, int] | None = None  # tag, channels, rate, block_align, bits
    raw: bytes | None = None
    while pos + 8 <= len(data):
        cid, size = struct.unpack_from("<4sI", data, pos)
        body = pos + 8
        if cid == b"fmt ":
            tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40:
                # The real format tag is the first two bytes of the SubFormat GUID.
                (tag,) = struct.unpack_from("<H", data, body + 24)
            fmt = (tag, channels, rate, block_align, bits)
        elif cid == b"data":
            # Streamed WAVs may carry 0 or 0xFFFFFFFF as size: take what is there.
            end = len(data) if size in (0, 0xFFFFFFFF) else min(len(data), body + size)
            raw = data[body:end]
            if fmt is not None:
                break
        pos = body + size + (size & 1)  # chunks are word-aligned
    if fmt is None or raw is None:
        raise ValueError("WAV file lacks a fmt or data chunk")
    tag, channels, rate, block_align, bits = fmt
    if channels < 1 or block_align < 1:
        raise ValueError("invalid WAV header")
    raw = raw[: len(raw) // block_align * block_align]
    samples = _decode_samples(raw, tag, bits)
    if channels > 1:
        # Downmix by averaging: keeps the level of a centred (identical L/R) voice unchanged.
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(samples, dtype=np.float32), int(rate)


def wav_bytes(samples: npt.ArrayLike, rate: int) -> bytes:
    """Encode samples as a 16-bit PCM WAV.

    float input is taken as [-1, 1] and clipped; int16 input is written as is.
    A 2-D array is (frames, channels).
    """
    a = np.asarray(samples)
    ints = a.astype(np.int16, copy=False) if a.dtype == np.int16 else float_to_int16(a)
    channels = 1 if ints.ndim == 1 else int(ints.shape[1])
    payload = np.ascontiguousarray(ints).astype("<i2", copy=False).tobytes()
    buf = io.BytesIO()
    buf.write(b"RIFF" + struct.pack("<I", 36 + len(payload)) + b"WAVE")
    buf.write(
        b"fmt "
        + struct.pack("<IHHIIHH", 16, _WAVE_FORMAT_PCM, channels, rate, rate * channels * 2, channels * 2, 16)
    )
    buf.write(b"data" + struct.pack("<I", len(payload)) + payload)
    return buf.getvalue()


def write_wav(path: str | os.PathLike[str], samples: npt.ArrayLike, rate: int) -> Path:
    """Write samples as a 16-bit PCM WAV file (see wav_bytes); returns the path."""
    p = Path(path)
    p.write_bytes(wav_bytes(samples, rate))
    return p
